"""Restore in place (the risky path): the environment's database replaced by a backup.

Maintenance on, a verified pre-restore backup, the backup restored into a fresh database, names
swapped, the live database verified, maintenance off. The live database is never overwritten: until
the swap it is untouched; after it, the replaced one is kept under another name.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pgrunbook.backup.method import RestoreReport, VerifyResult, method_for
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment
from pgrunbook.errors import (
    ConfigError,
    DatabaseError,
    LocalStateError,
    ManifestInconsistent,
    PgRunbookError,
    VerificationFailed,
)
from pgrunbook.journal import Run
from pgrunbook.postgres.connect import connect_maintenance
from pgrunbook.postgres.database_swap import (
    carry_over_refusals,
    database_exists,
    drop_statement,
    refuse_sessions_in_the_way,
    replaced_name,
    staging_name,
)
from pgrunbook.postgres.database_swap import describe as describe_carried
from pgrunbook.postgres.database_swap import swap as swap_databases
from pgrunbook.postgres.names import derived_dbname, quote_ident
from pgrunbook.postgres.url import DatabaseTarget
from pgrunbook.procedures.steps import (
    free_stamp,
    maintenance_off,
    maintenance_off_command,
    maintenance_on,
    verified_backup,
)
from pgrunbook.progress import ProgressFn, no_progress


@dataclass
class _Leftovers:
    """What an in-place restore has left at each moment, written to the run's recovery note before each
    change, so that a run killed anywhere (SIGKILL included) names every leftover: what is live, the
    staging database with the exact statement that drops it (never the live one), the maintenance
    state with the command that ends it, and the pre-restore backup."""

    env: Environment
    run: Run
    live: str
    staging: str
    replaced: str
    backup_id: str
    maintenance: str = "off"  # off | turning on | on | kept on | turning off
    stage: str = "before"  # before | restoring | restored | swapping | swapped
    safety: str | None = None

    def write(self) -> None:
        parts = (self._live(), self._staging(), self._maintenance(), self._backup())
        self.run.set_recovery(" ".join(p for p in parts if p))

    def set(self, **changes: str | None) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        self.write()

    def _live(self) -> str:
        live, replaced = self.live, self.replaced
        if self.stage == "swapped":
            return (
                f"live: {live} holds backup {self.backup_id} (the swap committed); the previous {live} is kept as "
                f"{replaced}; to go back: ALTER DATABASE {quote_ident(live)} RENAME TO {quote_ident(self.staging)}; "
                f"ALTER DATABASE {quote_ident(replaced)} RENAME TO {quote_ident(live)};"
            )
        if self.stage == "swapping":
            return (
                f"live: the swap is one transaction: if {replaced} exists it committed and {live} holds backup "
                f"{self.backup_id}; otherwise {live} is untouched."
            )
        return f"live: {live} is untouched (the backup has not replaced it)."

    def _staging(self) -> str:
        drop = drop_statement(self.staging)
        if self.stage == "restoring":
            return f"leftover: staging database {self.staging} may hold a partial restore (it is not live): {drop}"
        if self.stage == "restored":
            return (
                f"leftover: staging database {self.staging} holds the complete, verified restore of backup "
                f"{self.backup_id} (it is not live); drop it once you no longer want it: {drop}"
            )
        if self.stage == "swapping":
            return (
                f"leftover: if {self.staging} still exists the swap did not commit; it holds the complete, verified "
                f"restore of backup {self.backup_id} and is not live: {drop}"
            )
        return ""

    def _maintenance(self) -> str:
        hooks = self.env.settings.hooks
        if "maintenance_on" not in hooks:
            return "maintenance: no maintenance hooks are configured."
        off = hooks.get("maintenance_off")
        how = "turn it off by hand (no maintenance_off hook)"
        if off:
            how = f"to turn it off, run the maintenance_off hook: {off}"
        return {
            "off": "maintenance: off.",
            "turning on": f"maintenance: the maintenance_on hook was running, so maintenance may be on; {how}",
            "on": f"maintenance: on; {how}",
            "kept on": f"maintenance: on, kept on after the failure as asked; {how}",
            "turning off": "maintenance: the maintenance_off hook was about to run or running, so maintenance may "
            f"still be on; {how}",
        }[self.maintenance]

    def _backup(self) -> str:
        return f"pre-restore backup: {self.safety}." if self.safety else ""

    def settle(self, target: DatabaseTarget) -> None:
        """After a failure the process survived: the staging database is looked up (the restore drops
        it on failure), so the note says exactly what is left."""
        if self.stage not in ("restoring", "swapping"):
            self.write()
            return
        try:
            with connect_maintenance(target, avoid=(self.live,), purpose="restore leftovers") as admin:
                staging_left, swapped = database_exists(admin, self.staging), database_exists(admin, self.replaced)
        except PgRunbookError:
            self.write()  # cannot look: the note keeps both possibilities
            return
        restored = self.stage == "swapping"  # the swap starts only after the restore was verified
        self.stage = "swapped" if swapped else ("restored" if restored else "restoring") if staging_left else "before"
        self.write()


def restore_in_place(
    env: Environment,
    backup_id: str,
    *,
    confirm: str | None,
    run: Run,
    progress: ProgressFn = no_progress,
    keep_maintenance_on_failure: bool = False,
    options: RestoreOptions | None = None,
) -> RestoreReport:
    """Maintenance on, verified pre-restore backup, restore into a fresh database, swap names, verify,
    maintenance off. Refused (ConfigError) unless ``confirm`` is the live database's name; a backup that
    fails its integrity check (VerificationFailed) stops it before maintenance starts. The run's
    recovery note names every leftover at each moment (`_Leftovers`)."""
    method = method_for(env)
    target = env.target(direct=True)
    live = target.dbname
    if confirm != live:
        raise ConfigError(
            f"in-place restore replaces database {live!r}: pass --confirm {shlex.quote(live)}"
            + (f" (you gave {confirm!r})" if confirm else ""),
            hint=f"or restore into a new database: pgrunbook restore {backup_id} --into "
            + shlex.quote(derived_dbname(live, "_restored")),
        )
    with run.step("check backup"):
        _require_intact(method.verify(env, backup_id, progress=progress, record=False))
    _refuse_sessions_in_the_way(target, live)
    with run.step("check swap") as info:
        refused = _swap_refusals(target, live)
        info["detail"] = (
            f"the swap will carry {live}'s own settings over"
            if not refused
            else f"the swap will NOT carry {len(refused)} of {live}'s own settings over (the runbook's role is "
            f"refused them; the restore goes ahead without them), run as a superuser afterwards: {'; '.join(refused)}"
        )
    stamp = free_stamp(env, live, lambda s: (staging_name(live, s), replaced_name(live, s)))
    staging, replaced = staging_name(live, stamp), replaced_name(live, stamp)
    left = _Leftovers(env, run, live, staging, replaced, backup_id)
    left.write()
    ok = False
    failure: BaseException | None = None
    try:
        left.set(maintenance="turning on")
        maintenance_on(env, run)
        left.set(maintenance="on")
        safety = verified_backup(env, run, "pre-restore backup", label="pre-restore", progress=progress, method=method)
        left.set(safety=safety.id, stage="restoring")
        report = method.restore_into(env, backup_id, staging, progress=progress, run=run, options=options)
        left.set(stage="restored")
        report.pre_restore_backup = safety.id
        with run.step("swap databases") as info:
            left.set(stage="swapping")
            try:
                report.carried_over = _swap(target, live, staging, replaced)
            except DatabaseError as exc:
                if "nothing was swapped" in exc.message:  # rolled back: the recovery note is settled below
                    exc.message += f"; {live} is untouched, {staging} holds the verified restore"
                raise
            left.set(stage="swapped")
            info["detail"] = (
                f"{staging} -> {live} with the live database's {report.carried_over}; "
                f"the previous {live} is now {replaced}"
            )
        report.database, report.replaced_database = live, replaced
        with run.step("verify live database"):
            checks = method.verify_database(env, backup_id, target)
            if not all(c.ok for c in checks):
                raise VerificationFailed(f"database {live} after the swap differs from the backup")
        ok = True
        return report
    except BaseException as exc:
        failure = exc
        raise
    finally:
        # every journal write here is best effort: a full journal disk never skips maintenance_off (break11 #10)
        keep = not ok and keep_maintenance_on_failure
        if keep:
            left.maintenance = "kept on"
        elif left.maintenance != "off":
            _best_effort(left.set, maintenance="turning off")
        try:
            maintenance_off(env, run, keep=keep, why_kept="kept on after a failure, as asked")
            if left.maintenance == "turning off":
                left.maintenance = "off"
        except PgRunbookError as off_exc:
            still = (
                f"the application is still in maintenance: maintenance_off failed ({off_exc.message}); "
                f"{maintenance_off_command(env)}"
            )
            if isinstance(failure, PgRunbookError):
                failure.message += f"; {still}"
            elif failure is None:
                raise PgRunbookError(
                    f"restore in place done ({live} holds backup {backup_id}), but {still}",
                    hint=off_exc.hint,
                ) from None
        finally:
            _best_effort(left.write if ok else lambda: left.settle(target))


def _best_effort(write: Callable[..., None], **kwargs: str | None) -> None:
    """A recovery-note write that may fail (the journal's disk full): said on stderr, never fatal."""
    try:
        write(**kwargs)
    except LocalStateError as exc:
        print(f"warning: the recovery note could not be written: {exc.message}", file=sys.stderr, flush=True)


def _require_intact(result: VerifyResult) -> None:
    cause = result.cause or {}
    if cause.get("kind") == "manifest":  # the manifest, not the file: never called damage (trial8 #9)
        raise ManifestInconsistent(
            f"{cause['message']}; no database was created or changed", hint=cause.get("hint") or None
        )
    bad = [c for c in result.checks if not c.ok]
    if bad:
        raise VerificationFailed(
            f"backup {result.id} failed its integrity check ({bad[0].name}: {bad[0].detail}); "
            "no database was created or changed",
            hint="choose another backup: pgrunbook backup list",
        )


def _refuse_sessions_in_the_way(target: DatabaseTarget, live: str) -> None:
    """Before maintenance and the pre-restore backup: a session on the live database that the runbook's
    role may not end (a superuser's psql, a monitoring agent) would stop the swap at its very end."""
    with connect_maintenance(target, avoid=(live,), purpose="restore swap") as admin:
        refuse_sessions_in_the_way(admin, live, "nothing was changed", transient=False)


def _swap_refusals(target: DatabaseTarget, live: str) -> list[str]:
    """Before maintenance: the carry-over statements the swap would be refused (trial11 F9: found only at
    the swap, after the pre-restore backup and the whole restore)."""
    with connect_maintenance(target, avoid=(live,), purpose="restore swap") as admin:
        return carry_over_refusals(admin, live)


def _swap(target: DatabaseTarget, live: str, staging: str, replaced: str) -> str:
    """Rename live -> replaced and staging -> live in one transaction from a connection to another
    database, carrying the live database's own settings over (postgres/database_swap.py); returns a
    description of what was carried."""
    with connect_maintenance(target, avoid=(live, staging, replaced), purpose="restore swap") as admin:
        return describe_carried(swap_databases(admin, live, staging, replaced))

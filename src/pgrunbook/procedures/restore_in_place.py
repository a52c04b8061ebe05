"""Restore in place (the risky path): the environment's database replaced by a backup.

Maintenance on, a verified pre-restore backup, the backup restored into a fresh database, names
swapped, the live database verified, maintenance off. The live database is never overwritten: until
the swap it is untouched; after it, the replaced one is kept under another name.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pgrunbook.backup.method import RestoreReport, VerifyResult, method_for
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import ConfigError, VerificationFailed
from pgrunbook.journal import Run
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.database_swap import describe as describe_carried
from pgrunbook.postgres.database_swap import swap as swap_databases
from pgrunbook.postgres.url import DatabaseTarget
from pgrunbook.procedures.steps import maintenance_off, maintenance_on, verified_backup


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
    fails its integrity check (VerificationFailed) stops it before maintenance starts."""
    method = method_for(env)
    target = env.target(direct=True)
    live = target.dbname
    if confirm != live:
        raise ConfigError(
            f"in-place restore replaces database {live!r}: pass --confirm {live}"
            + (f" (you gave {confirm!r})" if confirm else ""),
            hint=f"or restore into a new database: pgrunbook restore {backup_id} --into {live}_restored",
        )
    with run.step("check backup"):
        _require_intact(method.verify(env, backup_id, progress=progress, record=False))
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    staging, replaced = f"{live[:40]}_restore_{stamp}", f"{live[:40]}_replaced_{stamp}"
    run.set_recovery(f"database {live} is untouched; nothing to undo")
    ok = False
    try:
        maintenance_on(env, run)
        safety = verified_backup(env, run, "pre-restore backup", label="pre-restore", progress=progress, method=method)
        run.set_recovery(f"database {live} is untouched; a pre-restore backup {safety.id} exists")
        report = method.restore_into(env, backup_id, staging, progress=progress, run=run, options=options)
        report.pre_restore_backup = safety.id
        with run.step("swap databases") as info:
            run.set_recovery(
                f"the swap is one transaction: {live} is either untouched or replaced by {staging} (then kept as "
                f"{replaced}); the pre-restore backup is {safety.id}"
            )
            report.carried_over = _swap(target, live, staging, replaced)
            info["detail"] = (
                f"{staging} -> {live} with the live database's {report.carried_over}; "
                f"the previous {live} is now {replaced}"
            )
        run.set_recovery(
            f'to go back to the state before the restore: ALTER DATABASE "{live}" RENAME TO "{staging}"; '
            f'ALTER DATABASE "{replaced}" RENAME TO "{live}" (or restore the pre-restore backup {safety.id})'
        )
        report.database, report.replaced_database = live, replaced
        report.database_url = env.target(direct=False).with_dbname(live).full_url()
        with run.step("verify live database"):
            checks = method.verify_database(env, backup_id, target)
            if not all(c.ok for c in checks):
                raise VerificationFailed(f"database {live} after the swap differs from the backup")
        ok = True
        return report
    finally:
        maintenance_off(
            env, run, keep=not ok and keep_maintenance_on_failure, why_kept="kept on after a failure, as asked"
        )


def _require_intact(result: VerifyResult) -> None:
    bad = [c for c in result.checks if not c.ok]
    if bad:
        raise VerificationFailed(
            f"backup {result.id} failed its integrity check ({bad[0].name}: {bad[0].detail}); "
            "no database was created or changed",
            hint="choose another backup: pgrunbook backup list",
        )


def _swap(target: DatabaseTarget, live: str, staging: str, replaced: str) -> str:
    """Rename live -> replaced and staging -> live in one transaction from a connection to another
    database, carrying the live database's own settings over (postgres/database_swap.py); returns a
    description of what was carried."""
    maint = "postgres" if live != "postgres" else "template1"
    with connect(target.with_dbname(maint), purpose="restore swap") as admin:
        return describe_carried(swap_databases(admin, live, staging, replaced))

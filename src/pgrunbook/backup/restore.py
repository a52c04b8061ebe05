"""Restores into a new database: the logical dump's restore engine, shared by ``restore --into``, the
rollback's restore and the drill (``backup verify --drill`` restores into a scratch database, then
drops it, on this same code).

A backup is checked (size, sha256, archive readable) before any database is created or changed, and
a restore is verified (exact row counts equal to the manifest, the read query) before anyone is told
it worked. Replacing the live database (restore in place) is a procedure: procedures/restore_in_place.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg

from pgrunbook.backup import restore_checks
from pgrunbook.backup.archive import archive_bytes, stored_bytes, tools_to_restore
from pgrunbook.backup.manifest import Check, Manifest
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.backup.restore_archive import CheckedArchive, check_backup
from pgrunbook.backup.restore_database import (
    LookedAt,
    comment_on_database,
    create_database,
    drop_partial,
    leftover_hint,
    look_at_target,
    marker,
    replace_unfinished,
    still_open,
    validate_dbname,
)
from pgrunbook.backup.restore_run import choose_method, restore_data
from pgrunbook.backup.restore_verify import difference_hint, read_query_failed, verify_restored
from pgrunbook.backup.targets import refuse_restore_target
from pgrunbook.environment import Environment
from pgrunbook.errors import DatabaseError, PgRunbookError, ReadQueryFailed, Stopped, VerificationFailed
from pgrunbook.postgres.connect import connect, connect_server
from pgrunbook.postgres.tools import ClientTools
from pgrunbook.postgres.url import DatabaseTarget, redact
from pgrunbook.progress import ProgressFn, no_progress


class Steps(Protocol):
    """Where a restore records its steps ("check backup", "create database", "restore", "verify
    restore"): the procedures' journal run satisfies it; the engine knows nothing more of the journal."""

    def step(self, name: str) -> AbstractContextManager[dict[str, Any]]: ...


@dataclass
class RestoreReport:
    backup_id: str
    database: str
    duration_s: float = 0.0
    verified: bool = False
    method: str = ""
    checks: list[Check] = field(default_factory=list)
    replaced_database: str | None = None
    pre_restore_backup: str | None = None
    cleared_unfinished: str | None = None  # the marker of an interrupted restore this one replaced
    skipped: list[str] = field(default_factory=list)  # entries left out on an explicit flag
    options: list[str] = field(default_factory=list)  # --owner / --skip-… as given
    carried_over: str | None = None  # in place: what of the live database's own settings was carried over
    next_step: str | None = None  # after the app was pointed here: pgrunbook's own URL to set
    #: what the on-call engineer should know and nothing stopped for (restore.behind_note)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "backup_id": self.backup_id,
            "database": self.database,
            "duration_s": self.duration_s,
            "verified": self.verified,
            "method": self.method,
            "checks": [c.model_dump() for c in self.checks],
            "replaced_database": self.replaced_database,
            "pre_restore_backup": self.pre_restore_backup,
            "cleared_unfinished": self.cleared_unfinished,
            "skipped": self.skipped,
            "options": self.options,
            "carried_over": self.carried_over,
            "next_step": self.next_step,
            "warnings": self.warnings,
        }


def _source_dbname(env: Environment) -> str | None:
    try:
        return env.target(direct=True).dbname
    except PgRunbookError:
        return None


# --- restoring into a new database ---------------------------------------------------------------------


def restore_into_new_database(
    env: Environment,
    backup_id: str,
    dbname: str,
    *,
    progress: ProgressFn = no_progress,
    run: Steps | None = None,
    options: RestoreOptions | None = None,
) -> RestoreReport:
    """Check the backup, pre-flight the target, create the database (refused if it exists and is not
    empty), restore with owners and privileges, verify (rows, owners, privileges)."""
    t0 = time.monotonic()
    validate_dbname(dbname)
    options = options or RestoreOptions()
    refuse_restore_target(dbname, _source_dbname(env))  # a lost one is recreated by procedures/restore.py
    manifest = env.repository.get(backup_id)
    # prune skips a backup while it is read (its in-use marker); one whose archive is gone is refused
    with env.repository.reading(manifest, f"restore --into {dbname}"):
        return _restore_new(env, manifest, dbname, t0, progress, run, options)


def _restore_new(
    env: Environment,
    manifest: Manifest,
    dbname: str,
    t0: float,
    progress: ProgressFn,
    run: Steps | None,
    options: RestoreOptions,
) -> RestoreReport:
    method, jobs, in_memory = choose_method(env, manifest)
    archive: CheckedArchive | None = None
    stack = contextlib.ExitStack()
    if method == "parallel":  # the read-back (most of the check) runs while the tools are chosen
        archive = CheckedArchive(env, manifest, progress, workers=jobs, in_memory=in_memory).start()
    try:
        server = env.target(direct=True)
        admin = connect_server(server, purpose=f"restore {env.name}")  # its own database may be the lost one
        stack.callback(admin.close)
        tools = tools_to_restore(env, manifest, server, conn=admin)
        report = RestoreReport(manifest.id, dbname, options=options.describe())
        where = "memory" if archive is not None and archive.in_memory else "a temp file"
        report.method = f"{method} (-j {jobs}, archive in {where})" if method == "parallel" else method
        looked: LookedAt | None = None
        not_yet: Exception | None = None
        try:  # read-only, beside the read-back; what it finds wrong is said after the check, as before
            looked = look_at_target(admin, server, dbname)
        except Exception as exc:
            not_yet = exc
        listing: list[str] = []
        with _maybe_step(run, "check backup"):
            if archive is not None:
                report.checks.extend(archive.check(tools))
                listing.append(archive.listing)
            else:
                report.checks.extend(check_backup(env, manifest, tools, progress, listing))
        if not_yet is not None:
            raise not_yet
        if looked is not None and not still_open(looked.admin):  # idle through a long check: closed by the server
            looked = None  # restore_into looks again, on a new connection
        source = (
            restore_checks.Source(path=archive.path, pass_fds=archive.inherit_fds)
            if archive is not None
            else restore_checks.Source(stream=lambda: archive_bytes(env, manifest, stored_bytes(env, manifest)))
        )
        report.checks.extend(
            restore_into(
                env,
                manifest,
                tools,
                server,
                dbname,
                report,
                jobs,
                archive,
                run,
                progress,
                options=options,
                listing="".join(listing),
                source=source,
                looked=looked,
            )
        )
    finally:
        stack.close()
        if archive is not None:
            archive.cleanup()
    report.verified = True
    report.duration_s = round(time.monotonic() - t0, 3)
    return report


def restore_into(
    env: Environment,
    manifest: Manifest,
    tools: ClientTools,
    server: DatabaseTarget,
    dbname: str,
    report: RestoreReport,
    jobs: int = 1,
    archive: CheckedArchive | None = None,
    run: Steps | None = None,
    progress: ProgressFn = no_progress,
    *,
    verify_strictly: bool = True,
    options: RestoreOptions | None = None,
    listing: str = "",
    source: restore_checks.Source | None = None,
    give_owner: bool = True,
    looked: LookedAt | None = None,
) -> list[Check]:
    """Restore a checked backup into database ``dbname`` of ``server`` (hints name
    ``server.variable``) and verify it; returns the verification's checks. The database is created (marked
    unfinished until verified) unless it exists empty; a database this call created is dropped again if
    anything fails. Raises DatabaseError for an existing non-empty database (nothing changed),
    CannotCreate when the database cannot be created, RestoreFailed when pg_restore fails,
    VerificationFailed when the copy differs from the manifest (unless not ``verify_strictly``: the
    drill reports a difference as failed checks). ``archive``: the decompressed archive for a parallel
    restore, or None to stream from storage. ``options``/``listing``/``source``: the pre-flight's (see
    backup/restore_checks.py), which raises PreflightFailed before anything is created; ``give_owner``:
    the new database gets the backed-up database's owner (not for a drill's scratch database);
    ``looked``: the target as already looked at (look_at_target), its admin connection then closed here."""
    created = False
    source = source or restore_checks.Source(stream=lambda: archive_bytes(env, manifest, stored_bytes(env, manifest)))
    with contextlib.ExitStack() as stack:
        if looked is None:
            looked = look_at_target(stack.enter_context(connect(server, purpose=f"restore {env.name}")), server, dbname)
        else:
            stack.enter_context(looked.admin)
        admin, state, comment = looked.admin, looked.state, looked.comment
        if state == "non-empty":
            raise DatabaseError(
                f"database {dbname!r} already exists and is not empty; nothing was changed",
                hint="choose a new name for --into, or drop that database yourself",
            )
        with _maybe_step(run, "preflight") as info:  # nothing is created before it passes
            plan = restore_checks.preflight(
                admin, tools, manifest, listing, options or RestoreOptions(), source, dbname=dbname,
                creates=state != "empty", facts=looked.facts,
            )  # fmt: skip
            report.skipped = list(plan.preflight.skipped)
            if info is not None:
                info["detail"] = plan.summary()
            if plan.downgrade is not None:  # said before anything is created (break11 #7)
                env.notice("downgrade", plan.downgrade.warning(), {"database": dbname})
        if state == "unfinished":  # a killed restore's database, not in use: replaced, and said so
            replace_unfinished(admin, dbname)
            report.cleared_unfinished = comment
            state = "missing"
        if state == "missing":
            with _maybe_step(run, "create database"):
                create_database(admin, server, dbname)
                created = True  # from here on a failure or a stop drops it (even mid journal write)
                comment_on_database(admin, dbname, marker(manifest.id))
        if created and give_owner:
            restore_checks.give_database(admin, dbname, plan)
        else:
            plan.database_owner = None  # a scratch database, or one made beforehand, keeps its owner
        new_target = server.with_dbname(dbname)
        try:
            with _maybe_step(run, "restore") as info:
                early = restore_data(
                    env, manifest, tools, new_target, jobs, archive,
                    owned=created, progress=progress, plan=plan,
                )  # fmt: skip
                if archive is not None:
                    archive.release()  # pg_restore has ended: its input is freed while the rest runs
                restore_checks.apply_deferred(new_target, plan)
                if info is not None:
                    info["detail"] = f"{report.method} into {dbname}"
            with _maybe_step(run, "verify restore"):
                checks = verify_restored(env, manifest, new_target, known=early)
                checks.extend(restore_checks.compare_privileges(manifest, new_target, plan))
                # the read query is the application's: its failure says nothing of the data (trial8 #8)
                bad = [c for c in checks if not c.ok and c.name != "read query"]
                if bad and verify_strictly:
                    raise VerificationFailed(
                        f"restored database {dbname} differs from the backup: {bad[0].name}: {bad[0].detail}",
                        hint=difference_hint(bad[0]),
                    )
                query = next((c for c in checks if not c.ok and c.name == "read query"), None)
                if query is not None and verify_strictly:
                    if created:  # kept: marked so that no sweep takes it for a killed restore's leftover
                        _mark_verified(admin, manifest, dbname, f"; read query failed: {query.detail}")
                    raise read_query_failed(dbname, query, kept=created)
            if created:
                _mark_verified(admin, manifest, dbname)
        except ReadQueryFailed:
            raise  # the copy passed its own checks: kept, as the error says
        except BaseException as exc:
            if created:
                why = drop_partial(admin, server, dbname)
                if why is not None:
                    if isinstance(exc, Stopped):
                        exc.note(f"the restore into {dbname} broke off", leftover_hint(dbname, why))
                    elif not isinstance(exc, PgRunbookError):
                        raise DatabaseError(
                            f"restore into {dbname!r} broke off: {redact(str(exc), server.secrets())}".splitlines()[0],
                            hint=leftover_hint(dbname, why),
                        ) from None
                    exc.hint = leftover_hint(dbname, why)
                elif isinstance(exc, Stopped):
                    dropped = f"the restore into {dbname} broke off and {dbname} was dropped again"
                    exc.note(f"{dropped}; the backup is not at fault")
                elif isinstance(exc, PgRunbookError):
                    exc.message += f"; {dbname} was dropped again, nothing was kept"
            elif isinstance(exc, Stopped):
                exc.note(
                    f"the restore into {dbname} broke off: {dbname} (it existed, empty, before) holds a partial "
                    "restore and was not put into use; the backup is not at fault",
                    f"drop {dbname} and create it empty again (or choose another name), then run the same "
                    "command again",
                )
            elif isinstance(exc, PgRunbookError):
                exc.message += f"; {dbname} holds a partial restore and was not put into use"
            raise
    return checks


def _mark_verified(admin: psycopg.Connection, manifest: Manifest, dbname: str, note: str = "") -> None:
    """The database's comment once its restore verified (replacing the unfinished marker), durable."""
    verified_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    admin.execute("SET synchronous_commit = on")  # durable: see restore_settings
    comment_on_database(admin, dbname, f"pgrunbook: restored from backup {manifest.id}, verified {verified_at}{note}")


@contextlib.contextmanager
def _no_step() -> Iterator[None]:
    yield None


def _maybe_step(run: Steps | None, name: str) -> AbstractContextManager[dict[str, Any] | None]:
    return run.step(name) if run is not None else _no_step()

"""``backup verify``: are the stored bytes the ones written, and do they restore?

Checksum and table of contents are read in one streaming pass over storage (backup/archive.py);
``--drill`` restores into a scratch database on the code of ``restore --into`` (backup/restore.py),
compares row counts with the manifest, and always drops it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from pgrunbook import __version__
from pgrunbook.backup.archive import (
    INCONSISTENT,
    MANIFEST_HINT,
    check_stored,
    manifest_problem,
    tools_for_archive,
    tools_to_restore,
)
from pgrunbook.backup.manifest import Check, Manifest, Verification
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.backup.restore import RestoreReport, restore_into
from pgrunbook.backup.restore_database import CannotCreate, drop_dead_leftovers
from pgrunbook.backup.restore_run import RestoreFailed
from pgrunbook.backup.restore_verify import difference_hint
from pgrunbook.config import database_target
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError, PreflightFailed, Stopped, StorageError
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.tools import ClientTools
from pgrunbook.postgres.url import DatabaseTarget
from pgrunbook.progress import ProgressFn, no_progress


@dataclass
class VerifyResult:
    """``ok``: every check passed. ``damaged``: the backup's own checks (size, checksum, frames, table
    of contents) failed. A drill that failed otherwise has ``cause`` (kind, where, message, hint)."""

    id: str
    ok: bool
    checks: list[Check] = field(default_factory=list)
    duration_s: float = 0.0
    damaged: bool = False
    cause: dict[str, str] | None = None
    #: whether the result was written into the manifest; why not, when it could not be (read-only storage)
    recorded: bool = False
    not_recorded: str = ""

    @property
    def drill_could_not_run(self) -> bool:
        """The backup passed its own checks and the drill failed because of its server (no right to create
        databases, missing roles, a server too old): never the backup's failure (issue #16)."""
        cause = self.cause or {}
        return not self.damaged and cause.get("where") == "target" and cause.get("kind") != "read query"

    def headline(self, label: str) -> str:
        """The first line of the text report: ``label`` is the id as the user gave it (``latest``)."""
        if self.ok:
            return f"{label}: verified"
        if self.drill_could_not_run:
            server = (self.cause or {}).get("server") or "the drill's server"
            return (
                f"{label}: drill could not run on {server}, a problem of that server, not of the backup "
                "(it passed its own checks and is not marked failed)"
            )
        return f"{label}: FAILED verification"

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "ok": self.ok,
            # the backup's own checks passed (size, checksum, frames, table of contents); with
            # drill_could_not_run the drill failed because of its server, and the backup is not marked failed
            "backup_ok": not self.damaged and (self.cause or {}).get("kind") != "manifest",
            "drill_could_not_run": self.drill_could_not_run,
            "checks": [c.model_dump() for c in self.checks],
            "duration_s": self.duration_s,
            "damaged": self.damaged,
            "cause": self.cause,
            "recorded": self.recorded,
            "not_recorded": self.not_recorded or None,
        }


class DrillProblem(Exception):
    """The drill could not restore for a reason outside the backup; carries the classified cause."""

    def __init__(self, cause: dict[str, str], check: Check):
        super().__init__(cause.get("message", ""))
        self.cause = cause
        self.check = check


def drill_target(env: Environment) -> DatabaseTarget:
    """Where drills restore: a dedicated server if configured, else the environment's own server."""
    var = env.config.backup.drill_database_url_env
    if var:
        return database_target(
            env.name, env.settings.model_copy(update={"database_url_env": var, "direct_url_env": None})
        )
    return env.target(direct=True)


def drill(
    env: Environment,
    manifest: Manifest,
    tools: ClientTools,
    progress: ProgressFn = no_progress,
    *,
    listing: str = "",
    options: RestoreOptions | None = None,
) -> list[Check]:
    """Restore into a scratch database (the code of ``restore --into``, pre-flight included, streaming
    from storage), compare exact row counts, owners and privileges, run the read query, drop it. A
    differing copy is a failed check; a drill that cannot restore for a reason outside the backup (the
    drill server, the database's definition) raises DrillProblem with the classified cause."""
    server = drill_target(env)
    _may_create_databases(env, server)
    leftovers = _drop_leftovers(server)
    scratch = f"{DRILL_PREFIX}{secrets.token_hex(4)}"
    report = RestoreReport(manifest.id, scratch, method="stream")
    t0 = time.monotonic()
    settled = False  # the drill came to a result: a failure to drop the scratch database is then an error
    try:
        try:
            checks = restore_into(
                env, manifest, tools, server, scratch, report,
                verify_strictly=False, options=options, listing=listing, give_owner=False,
            )  # fmt: skip
        except RestoreFailed as exc:
            settled = True
            cause = exc.cause or {"kind": "unknown", "where": "tool", "message": exc.message, "hint": exc.hint or ""}
            raise DrillProblem(cause, Check(name="drill restore", ok=False, detail=exc.message)) from None
        except PreflightFailed as exc:
            message = exc.message + (": " + "; ".join(exc.details) if exc.details else "")
            cause = {
                "kind": "preflight",
                "where": "target",
                "message": message,
                "hint": exc.hint or "",
                "server": server.display,
            }
            raise DrillProblem(cause, Check(name="drill restore", ok=False, detail=message)) from None
        except Stopped as exc:  # the scratch database is dropped below, whatever the stop interrupted
            exc.within("nothing half-done is listed or kept")
            raise
        except CannotCreate as exc:
            message = f"cannot create the drill's scratch database on {server.display}: {exc.reason}"
            hint = "grant CREATEDB, or set [backup] drill_database_url_env to a server where it may"
            cause = {"kind": "target", "where": "target", "message": message, "hint": hint, "server": server.display}
            raise DrillProblem(cause, Check(name="drill restore", ok=False, detail=message)) from None
        settled = True
        swept = [Check(name="leftover scratch databases", ok=True, detail="dropped " + "; ".join(leftovers))]
        restored = Check(name="drill restore", ok=True, detail=f"restored in {time.monotonic() - t0:.1f}s")
        return [*(swept if leftovers else []), restored, *checks]
    finally:
        try:
            _drop(server, scratch)
        except (PgRunbookError, psycopg.Error):
            if settled:
                raise


DRILL_PREFIX = "pgrunbook_drill_"


def drill_createdb_hint(env: Environment, role: str) -> str:
    """What lets drills (and every restore into a new database) run when ``role`` may not create
    databases: a drill's scratch name is random, so creating it beforehand is no remedy (trial11 F23)."""
    where = (
        f"point {env.config.backup.drill_database_url_env} at a server where a role may"
        if env.config.backup.drill_database_url_env
        else "set [backup] drill_database_url_env to the URL variable of a scratch server where it may"
    )
    return f'ALTER ROLE "{role}" CREATEDB, run pgrunbook with an admin\'s URL that may create databases, or {where}'


def _may_create_databases(env: Environment, server: DatabaseTarget) -> None:
    """Refuse (DrillProblem, a problem of the drill's server) before anything is read when the role may
    not create the scratch database there; a server that cannot be reached is left to the restore,
    which names its real cause."""
    try:
        with connect(server, purpose="drill") as conn:
            row = conn.execute(
                "SELECT rolname, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except (PgRunbookError, psycopg.Error):
        return
    if row is None or row[1]:
        return
    role = str(row[0])
    message = (
        f"role {role} may not create databases on {server.display}, so the drill cannot create its scratch "
        "database there"
    )
    cause = {
        "kind": "target",
        "where": "target",
        "message": message,
        "hint": drill_createdb_hint(env, role),
        "server": server.display,
    }
    raise DrillProblem(cause, Check(name="drill restore", ok=False, detail="could not run: " + message))


def _drop_leftovers(server: DatabaseTarget) -> list[str]:
    """Scratch databases of earlier drills that were killed (SIGKILL, OOM, a lost machine) before they
    could drop their own: a full copy of the database each, dropped here. Best effort: a server that
    cannot be reached fails the drill's own restore with the real cause."""
    with contextlib.suppress(PgRunbookError, psycopg.Error), connect(server, purpose="drill") as admin:
        return drop_dead_leftovers(admin, DRILL_PREFIX)
    return []


def _drop(server: DatabaseTarget, scratch: str) -> None:
    with connect(server, purpose="drill") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))


def _drill_tools(env: Environment, manifest: Manifest) -> ClientTools:
    """pg_restore able to read this archive and restore it into the drill's server."""
    return tools_to_restore(env, manifest, drill_target(env))


def verify_backup(
    env: Environment,
    backup_id: str,
    *,
    drill_restore: bool = False,
    progress: ProgressFn = no_progress,
    record: bool = True,
    options: RestoreOptions | None = None,
) -> VerifyResult:
    """All checks; the result is recorded in the manifest (rewritten atomically) unless ``record`` is off."""
    t0 = time.monotonic()
    manifest = env.repository.get(backup_id)
    # prune skips a backup while it is read (its in-use marker); one whose archive is gone is refused
    with env.repository.reading(manifest, "backup verify" + (" --drill" if drill_restore else "")):
        return _verify(env, manifest, t0, drill_restore, progress, record, options)


def _verify(
    env: Environment,
    manifest: Manifest,
    t0: float,
    drill_restore: bool,
    progress: ProgressFn,
    record: bool,
    options: RestoreOptions | None,
) -> VerifyResult:
    tools = tools_for_archive(env, manifest)
    # a drill's pg_restore is chosen for the drill's server before anything is read: tools that cannot
    # restore there are refused (a problem of this machine), never recorded against the backup
    drill_tools = _drill_tools(env, manifest) if drill_restore else tools
    listing: list[str] = []
    checks = check_stored(env, manifest, tools, progress, listing_out=listing)
    wrong = manifest_problem(checks)  # the manifest, not the file: never called damage (trial8 #9)
    sound = wrong is not None or all(c.ok for c in checks)  # the backup's own checks: only these call it damaged
    cause: dict[str, str] | None = None
    if wrong is not None:
        cause = {
            "kind": "manifest",
            "where": "manifest",
            "message": f"the manifest of {manifest.id} is {wrong.detail}",
            "hint": MANIFEST_HINT,
        }
    if drill_restore:
        if wrong is not None:
            checks.append(Check(name="drill restore", ok=False, detail="skipped: the manifest is " + INCONSISTENT))
        elif sound:
            try:
                drilled = drill(env, manifest, drill_tools, progress, listing="".join(listing), options=options)
            except DrillProblem as problem:
                drilled, cause = [problem.check], problem.cause
            checks.extend(drilled)
            if cause is None and not all(c.ok for c in drilled):
                cause = _drill_difference(drilled)
        else:
            checks.append(Check(name="drill restore", ok=False, detail="skipped: the stored file failed its checks"))
    ok = all(c.ok for c in checks)
    result = VerifyResult(manifest.id, ok, checks, damaged=not sound, cause=cause)
    if record:
        verification = Verification(
            at=datetime.now(UTC),
            kind="drill" if drill_restore else "checksum",
            ok=sound and wrong is None and (cause is not None or ok),
            checks=checks,
            tool_version=__version__,
            cause=cause,
        )
        manifest.verifications.append(verification)
        # raises BackupRemoved (nothing recorded, no result claimed) when prune or a hand removed the
        # backup meanwhile: a manifest is never written into a folder whose backup is gone (break11 #9)
        result.recorded, result.not_recorded = record_verification(env, manifest)
        if drill_restore:
            env.repository.record_drill(manifest.id, verification)
    result.duration_s = round(time.monotonic() - t0, 3)
    return result


def record_verification(env: Environment, manifest: Manifest) -> tuple[bool, str]:
    """Rewrite the manifest with its new verification; (False, why) when storage refuses the write
    (a NAS mounted read-only): the checks stand and are reported, only their record is missing."""
    try:
        env.repository.rewrite_manifest(manifest)
    except StorageError as exc:
        return False, exc.message
    return True, ""


def _drill_difference(drilled: list[Check]) -> dict[str, str]:
    """A drill that restored but did not reproduce the backup: the rows count against the archive;
    owners, privileges and the read query against the drill server's setup."""
    failed = [c for c in drilled if not c.ok]
    bad = next((c for c in failed if c.name != "read query"), failed[0])
    if bad.name == "read query":  # the copy passed its own checks: the query's problem (trial8 #8)
        return {
            "kind": "read query",
            "where": "target",
            "message": f"the read query failed on the drill's restored copy: {bad.detail}",
            "hint": f"{difference_hint(bad)}; the backup restored and its rows, owners and privileges verified",
        }
    rows = bad.name == "row counts"
    return {
        "kind": "rows" if rows else "target",
        "where": "archive" if rows else "target",
        "message": f"the drill's {bad.name} check failed: {bad.detail}",
        "hint": difference_hint(bad),
    }

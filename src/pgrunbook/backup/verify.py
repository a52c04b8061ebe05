"""``backup verify``: are the stored bytes the ones written, and do they restore?

Checksum and table of contents are read in one streaming pass over storage (backup/archive.py);
``--drill`` restores into a scratch database on the code of ``restore --into`` (backup/restore.py),
compares row counts with the manifest, and always drops it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from pgrunbook import __version__
from pgrunbook.backup.archive import check_stored, tools_for_archive, tools_to_restore
from pgrunbook.backup.manifest import Check, Manifest, Verification
from pgrunbook.backup.restore import CannotCreate, RestoreFailed, RestoreReport, restore_into
from pgrunbook.config import database_target
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import DatabaseError, PgRunbookError
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.tools import ClientTools
from pgrunbook.postgres.url import DatabaseTarget


@dataclass
class VerifyResult:
    id: str
    ok: bool
    checks: list[Check] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "ok": self.ok,
            "checks": [c.model_dump() for c in self.checks],
            "duration_s": self.duration_s,
        }


def drill_target(env: Environment) -> tuple[DatabaseTarget, str]:
    """Where drills restore: a dedicated server if configured, else the environment's own server."""
    var = env.config.backup.drill_database_url_env
    if var:
        return database_target(
            env.name, env.settings.model_copy(update={"database_url_env": var, "direct_url_env": None})
        ), var
    return env.target(direct=True), env.url_var()


def drill(env: Environment, manifest: Manifest, tools: ClientTools, progress: ProgressFn = no_progress) -> list[Check]:
    """Restore into a scratch database (the code of ``restore --into``, streaming from storage), compare
    exact row counts, run the read query, drop it. A failed pg_restore or a differing copy is a failed
    check; a scratch database that cannot be created is a DatabaseError."""
    server, var = drill_target(env)
    scratch = f"pgrunbook_drill_{secrets.token_hex(4)}"
    report = RestoreReport(manifest.id, scratch, method="stream")
    t0 = time.monotonic()
    settled = False  # the drill came to a result: a failure to drop the scratch database is then an error
    try:
        try:
            checks = restore_into(env, manifest, tools, server, var, scratch, report, verify_strictly=False)
        except RestoreFailed as exc:
            settled = True
            return [Check(name="drill restore", ok=False, detail=exc.message)]
        except CannotCreate as exc:
            raise DatabaseError(
                f"cannot create the drill's scratch database on {server.display}: {exc.cause}",
                hint="grant CREATEDB, or set [backup] drill_database_url_env to a server where it may",
            ) from None
        settled = True
        return [Check(name="drill restore", ok=True, detail=f"restored in {time.monotonic() - t0:.1f}s"), *checks]
    finally:
        try:
            _drop(server, var, scratch)
        except (PgRunbookError, psycopg.Error):
            if settled:
                raise


def _drop(server: DatabaseTarget, var: str, scratch: str) -> None:
    with connect(server, purpose="drill", var=var) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))


def _drill_tools(env: Environment, manifest: Manifest) -> ClientTools:
    """pg_restore able to read this archive and restore it into the drill's server."""
    target, var = drill_target(env)
    return tools_to_restore(env, manifest, target, var)


def verify_backup(
    env: Environment,
    backup_id: str,
    *,
    drill_restore: bool = False,
    progress: ProgressFn = no_progress,
    record: bool = True,
) -> VerifyResult:
    """All checks; the result is recorded in the manifest (rewritten atomically) unless ``record`` is off."""
    t0 = time.monotonic()
    manifest = env.repository.get(backup_id)
    tools = tools_for_archive(env, manifest)
    # a drill's pg_restore is chosen for the drill's server before anything is read: tools that cannot
    # restore there are refused (a problem of this machine), never recorded against the backup
    drill_tools = _drill_tools(env, manifest) if drill_restore else tools
    checks = check_stored(env, manifest, tools, progress)
    if drill_restore:
        if all(c.ok for c in checks):
            checks.extend(drill(env, manifest, drill_tools, progress))
        else:
            checks.append(Check(name="drill restore", ok=False, detail="skipped: the stored file failed its checks"))
    ok = all(c.ok for c in checks)
    if record:
        manifest.verifications.append(
            Verification(
                at=datetime.now(UTC),
                kind="drill" if drill_restore else "checksum",
                ok=ok,
                checks=checks,
                tool_version=__version__,
            )
        )
        env.repository.write_manifest(manifest)
    return VerifyResult(manifest.id, ok, checks, round(time.monotonic() - t0, 3))

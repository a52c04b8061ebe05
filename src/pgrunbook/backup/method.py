"""The backup-method seam: what procedures (deploy, rollback, restore in place) and monitoring ask of a
backup, whatever its method. One method today, the logical dump (pg_dump's custom-format archive);
a physical method (base backup + WAL archive, point-in-time recovery) is another implementation of
`BackupMethod`, chosen by `method_for`, and touches neither deploy, rollback nor monitor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pgrunbook.backup.codec import named_by
from pgrunbook.backup.create import create_backup
from pgrunbook.backup.manifest import Check, Manifest
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.backup.restore import RestoreReport, Steps, restore_into_new_database
from pgrunbook.backup.restore_database import UNFINISHED
from pgrunbook.backup.restore_verify import verify_restored
from pgrunbook.backup.verify import VerifyResult, verify_backup
from pgrunbook.environment import Environment
from pgrunbook.postgres.url import DatabaseTarget
from pgrunbook.progress import ProgressFn, no_progress


@dataclass(frozen=True)
class Description:
    """What a backup is, in words an operator reads: the method, what wrote it, how it is stored, and
    the command that restores it by hand with standard tools."""

    method: str
    written_by: str
    stored_as: str
    restore_by_hand: str


class BackupMethod(Protocol):
    """Create, verify, restore into a new database, verify a database against a backup, describe.
    Every call raises PgRunbookError (or a subclass) for what the operator can act on."""

    name: str

    def create(self, env: Environment, *, label: str, progress: ProgressFn = no_progress) -> Manifest:
        """Take a backup of ``env``; listed only when complete."""
        ...

    def verify(
        self,
        env: Environment,
        backup_id: str,
        *,
        drill: bool = False,
        progress: ProgressFn = no_progress,
        record: bool = True,
        options: RestoreOptions | None = None,
    ) -> VerifyResult:
        """Check the stored backup (with ``drill``: restore it into a scratch database and compare;
        ``options``: how the drill treats roles, as for a restore)."""
        ...

    def restore_into(
        self,
        env: Environment,
        backup_id: str,
        dbname: str,
        *,
        progress: ProgressFn = no_progress,
        run: Steps | None = None,
        options: RestoreOptions | None = None,
    ) -> RestoreReport:
        """Restore into the new (or empty) database ``dbname`` of ``env``'s server, verified (rows,
        owners, privileges); ``options``: --owner / --skip-… (backup/preflight.py)."""
        ...

    def verify_database(self, env: Environment, backup_id: str, target: DatabaseTarget) -> list[Check]:
        """Does the database ``target`` (its URL in ``target.variable``) hold what the backup holds? (exact row
        counts, the read query; after a restore in place's swap)."""
        ...

    def describe(self, manifest: Manifest) -> Description: ...


class LogicalDump:
    """pg_dump's custom-format archive through a stack of codecs (backup/codec.py: a compression, then
    optionally age encryption); restored by pg_restore."""

    name = "logical dump"

    def create(self, env: Environment, *, label: str, progress: ProgressFn = no_progress) -> Manifest:
        return create_backup(env, label=label, progress=progress)

    def verify(
        self,
        env: Environment,
        backup_id: str,
        *,
        drill: bool = False,
        progress: ProgressFn = no_progress,
        record: bool = True,
        options: RestoreOptions | None = None,
    ) -> VerifyResult:
        return verify_backup(env, backup_id, drill_restore=drill, progress=progress, record=record, options=options)

    def restore_into(
        self,
        env: Environment,
        backup_id: str,
        dbname: str,
        *,
        progress: ProgressFn = no_progress,
        run: Steps | None = None,
        options: RestoreOptions | None = None,
    ) -> RestoreReport:
        return restore_into_new_database(env, backup_id, dbname, progress=progress, run=run, options=options)

    def verify_database(self, env: Environment, backup_id: str, target: DatabaseTarget) -> list[Check]:
        return verify_restored(env, env.repository.get(backup_id), target)

    def describe(self, manifest: Manifest) -> Description:
        codecs = named_by(manifest)
        stored = f"{manifest.file}, {codecs.label}"
        # the manifest's own command names the pg_restore that reads the archive (CodecStack.restore_command)
        by_hand = manifest.restore_command or codecs.restore_command(manifest.file)
        return Description(self.name, f"pg_dump {manifest.pg_dump_version}", stored, by_hand)


LOGICAL_DUMP = LogicalDump()

__all__ = [
    "LOGICAL_DUMP",
    "UNFINISHED",
    "BackupMethod",
    "Description",
    "LogicalDump",
    "RestoreReport",
    "Steps",
    "VerifyResult",
    "method_for",
]


def method_for(env: Environment) -> BackupMethod:
    """The backup method of ``env``: the logical dump (the only one so far)."""
    return LOGICAL_DUMP

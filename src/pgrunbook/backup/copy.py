"""``backup copy``: a second copy elsewhere (NAS -> S3, S3 -> another region), verified at the destination.

Order matters, because a copy is the last good version of a backup as often as not:
1. a destination copy that already verifies (size and sha256 equal the manifest's) is never replaced;
2. the source is read through a hash while it streams into the destination's writer, which keeps the
   bytes under a temporary name (a multipart upload in S3); only when the source's bytes equal the
   manifest's is the writer committed, so a rotted source never reaches the destination;
3. the destination is read back and checked, and only then is its manifest written: a copy is listed
   only when complete. A destination that reads back wrong is reported; nothing is deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pgrunbook.backup.create import create_backup
from pgrunbook.backup.naming import IN_PROGRESS_NAME, MANIFEST_NAME
from pgrunbook.backup.repository import BackupRepository
from pgrunbook.environment import Environment
from pgrunbook.errors import BackupNotFound, PgRunbookError, StorageError, VerificationFailed
from pgrunbook.progress import ProgressFn, no_progress

if TYPE_CHECKING:
    from pgrunbook.backup.manifest import Manifest


def _digest(chunks: Iterator[bytes]) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), size


def _intact_at(repo: BackupRepository, manifest: Manifest) -> bool:
    """Whether ``repo`` already holds this backup's dump with the manifest's size and sha256."""
    key = repo.dump_key(manifest)
    if not repo.storage.list(key):
        return False
    try:
        return _digest(repo.storage.read(key)) == (manifest.sha256, manifest.size)
    except StorageError:
        return False


def copy_backup(env: Environment, backup_id: str, destination: str) -> Manifest:
    """Copy one of this project's backups to ``destination``; returns its manifest. Raises
    VerificationFailed when the source no longer matches its manifest (nothing at the destination is
    touched) or the destination reads back wrong (its manifest is not written)."""
    manifest = env.repository.get(backup_id)
    dest = env.repository_for(env.open_storage(destination))
    with env.repository.reading(manifest, "backup copy"):  # prune skips the source meanwhile
        return _copy(env, manifest, dest)


def _whose(m: Manifest) -> str:
    project = f"project {m.project_name or m.project_id}" if m.project_id else "a project without [project] id"
    server = f", server {m.system_identifier}" if m.system_identifier else ""
    return f"{project}'s backup of database {m.database}{server} taken {m.started_at:%Y-%m-%d %H:%M:%S} UTC"


def _same_backup(a: Manifest, b: Manifest) -> bool:
    """Whether two manifests describe the same backup: same owner (project, database, server) and the
    same archive (taken at the same instant, same sha256)."""
    key = ("project_id", "database", "system_identifier", "started_at", "sha256", "size", "file")
    return all(getattr(a, k) == getattr(b, k) for k in key)


def _refuse_taken(dest: BackupRepository, manifest: Manifest) -> None:
    """A destination folder under this id may only hold this same backup (complete, or a copy of it
    that was interrupted or does not verify: then it is replaced). Another project's or database's
    backup, or another backup of this one that got the same id (ids are per storage: two projects
    sharing a destination take the same id the same night), is never replaced (break11 #11): like
    pgBackRest refusing a stanza of another system identifier, the copy is refused and nothing at the
    destination changes."""
    where = f"{dest.storage.display}/{dest.environment}/{manifest.id}"
    names = {o.key.rsplit("/", 1)[-1] for o in dest.storage.list(f"{dest.environment}/{manifest.id}/")}
    hint = (
        "nothing was copied or replaced; give this project a destination of its own (another folder or "
        "prefix, such as <destination>/<project>), or remove that backup there by hand if you know it is "
        "not needed"
    )
    if MANIFEST_NAME in names:
        try:
            there = dest.read_manifest(manifest.id)
        except (VerificationFailed, BackupNotFound) as exc:
            raise PgRunbookError(
                f"cannot copy backup {manifest.id}: its id is taken at {where} by a backup whose manifest cannot "
                f"be read ({exc.message})",
                hint=hint,
            ) from None
        if not _same_backup(there, manifest):
            raise PgRunbookError(
                f"cannot copy backup {manifest.id}: its id is taken at {where} by {_whose(there)}",
                hint=hint,
            )
        return
    if IN_PROGRESS_NAME in names:  # a backup being written there under this id (or killed while it was)
        try:
            record = json.loads(dest.storage.read_bytes(dest.key(manifest.id, IN_PROGRESS_NAME)))
            owner = (record.get("project_id"), record.get("database"))
        except (ValueError, AttributeError, StorageError):
            owner = None
        if owner != (manifest.project_id, manifest.database):
            raise PgRunbookError(
                f"cannot copy backup {manifest.id}: its id is taken at {where} by a backup of another "
                "project or database that is being written there, or was interrupted",
                hint=hint,
            )


def _copy(env: Environment, manifest: Manifest, dest: BackupRepository) -> Manifest:
    _refuse_taken(dest, manifest)
    if _intact_at(dest, manifest):
        dest.claim(manifest.database, manifest.system_identifier)
        if not dest.storage.list(dest.key(manifest.id, MANIFEST_NAME)):
            dest.write_manifest(manifest)
        return manifest
    dest.claim(manifest.database, manifest.system_identifier)
    key = dest.dump_key(manifest)
    sha, size = hashlib.sha256(), 0
    writer = dest.storage.writer(key)
    try:
        for chunk in env.storage.read(env.repository.dump_key(manifest)):
            sha.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        if (sha.hexdigest(), size) != (manifest.sha256, manifest.size):
            raise VerificationFailed(
                f"backup {manifest.id} in {env.storage.display} no longer matches its manifest "
                f"({size} bytes, sha256 {sha.hexdigest()[:16]}…); nothing was copied to {dest.storage.display}",
                hint=f"pgrunbook backup verify {manifest.id} says what is wrong; a good copy elsewhere "
                "can be copied back with pgrunbook backup copy --env ... from that storage",
            )
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    if _digest(dest.storage.read(key)) != (manifest.sha256, manifest.size):
        raise VerificationFailed(
            f"the copy of {manifest.id} at {dest.storage.display} reads back different bytes than were "
            "written; its manifest was not written, so it is not listed there",
            hint="check that storage's health, then copy again",
        )
    dest.write_manifest(manifest)
    return manifest


def make_copies(env: Environment, manifest: Manifest) -> list[str]:
    """``[backup] copies``: after every backup. A failed copy is an error, but the backup itself stands."""
    done = []
    for location in env.config.backup.copies:
        try:
            copy_backup(env, manifest.id, location)
        except PgRunbookError as exc:
            raise PgRunbookError(
                f"backup {manifest.id} is stored in {env.storage.display}, but its copy to "
                f"{location} failed: {exc.message}",
                hint=exc.hint,
            ) from None
        done.append(location)
    return done


def backup_with_copies(
    env: Environment, *, label: str, progress: ProgressFn = no_progress
) -> tuple[Manifest, list[str]]:
    """``backup create``: a backup of ``env``, then its ``[backup] copies`` (make_copies). Returns the
    manifest and the copies' locations; a failed copy raises PgRunbookError after the backup is stored."""
    manifest = create_backup(env, label=label, progress=progress)
    return manifest, make_copies(env, manifest)

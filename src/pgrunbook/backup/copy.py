"""``backup copy``: a second copy elsewhere (NAS -> S3, S3 -> another region), verified at the destination.

The dump is streamed across (bounded memory), read back at the destination and checked against the
manifest's sha256, and only then is the manifest written there: a copy is visible only when complete.
"""

from __future__ import annotations

import hashlib

from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.repository import BackupRepository
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError, VerificationFailed


def copy_backup(env: Environment, backup_id: str, destination: str) -> Manifest:
    manifest = env.repository.get(backup_id)
    dest = BackupRepository(env.open_storage(destination), env.name)
    key = dest.key(manifest.id, manifest.file)
    writer = dest.storage.writer(key)
    try:
        for chunk in env.storage.read(env.repository.dump_key(manifest)):
            writer.write(chunk)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    sha, size = hashlib.sha256(), 0
    for chunk in dest.storage.read(key):
        sha.update(chunk)
        size += len(chunk)
    if sha.hexdigest() != manifest.sha256 or size != manifest.size:
        dest.storage.delete(key)
        raise VerificationFailed(
            f"the copy of {manifest.id} at {dest.storage.display} does not match the manifest "
            f"({size} bytes); it was removed",
            hint="check the source with pgrunbook backup verify, then copy again",
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

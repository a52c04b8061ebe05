"""The backup layout in storage: ``<env>/<id>/db.dump[.zst]`` and ``<env>/<id>/manifest.json``.

Only a folder with a readable manifest is a backup. Everything else under an environment is a
leftover: a run in progress (its marker names a live process) or the remains of a killed one.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pgrunbook.backup.manifest import IN_PROGRESS_NAME, MANIFEST_NAME, Manifest
from pgrunbook.backup.storage import ObjectInfo, Storage
from pgrunbook.errors import BackupNotFound, VerificationFailed

# A marker from another host cannot be checked for liveness; after this long it is presumed dead.
FOREIGN_RUN_STALE_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class Leftover:
    backup_id: str
    keys: tuple[str, ...]
    size: int
    active: bool
    reason: str


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # pragma: no cover - Windows adapter: assume alive, age decides
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BackupRepository:
    def __init__(self, storage: Storage, environment: str):
        self.storage = storage
        self.environment = environment

    def key(self, backup_id: str, name: str) -> str:
        return f"{self.environment}/{backup_id}/{name}"

    def _grouped(self) -> dict[str, list[ObjectInfo]]:
        groups: dict[str, list[ObjectInfo]] = {}
        for obj in self.storage.list(self.environment + "/"):
            parts = obj.key.split("/")
            if len(parts) >= 3:
                groups.setdefault(parts[1], []).append(obj)
        return groups

    def exists(self, backup_id: str) -> bool:
        return bool(self.storage.list(f"{self.environment}/{backup_id}/"))

    def list_backups(self) -> list[Manifest]:
        """Complete backups, newest first. Unreadable manifests are skipped here, reported by doctor."""
        out = []
        for backup_id, objs in self._grouped().items():
            if any(o.key.endswith("/" + MANIFEST_NAME) for o in objs):
                try:
                    out.append(self.read_manifest(backup_id))
                except (VerificationFailed, BackupNotFound):
                    continue
        return sorted(out, key=lambda m: (m.started_at, m.id), reverse=True)

    def newest(self) -> Manifest | None:
        """The newest complete backup from one listing and one manifest read (ids sort by time), for
        cheap estimates; list_backups reads every manifest."""
        groups = self._grouped()
        for backup_id in sorted(groups, reverse=True):
            if any(o.key.endswith("/" + MANIFEST_NAME) for o in groups[backup_id]):
                try:
                    return self.read_manifest(backup_id)
                except (VerificationFailed, BackupNotFound):
                    continue
        return None

    def read_manifest(self, backup_id: str) -> Manifest:
        key = self.key(backup_id, MANIFEST_NAME)
        if not self.storage.list(key):
            raise BackupNotFound(
                f"no backup {backup_id!r} in environment {self.environment!r} ({self.storage.display})",
                hint=f"pgrunbook backup list --env {self.environment} shows the ids",
            )
        return Manifest.from_json(self.storage.read_bytes(key), key)

    def get(self, backup_id: str) -> Manifest:
        """A backup by id; ``latest`` is the newest complete one (for schedules)."""
        if backup_id == "latest":
            newest = next(iter(self.list_backups()), None)
            if newest is None:
                raise BackupNotFound(
                    f"no backup in environment {self.environment!r} ({self.storage.display})",
                    hint=f"pgrunbook backup create --env {self.environment}",
                )
            return newest
        return self.read_manifest(backup_id)

    def write_manifest(self, manifest: Manifest) -> None:
        self.storage.write_bytes(self.key(manifest.id, MANIFEST_NAME), manifest.to_json())

    def dump_key(self, manifest: Manifest) -> str:
        return self.key(manifest.id, manifest.file)

    def mark_in_progress(self, backup_id: str, started: datetime) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": started.isoformat()}
        self.storage.write_bytes(self.key(backup_id, IN_PROGRESS_NAME), json.dumps(record).encode())

    def clear_in_progress(self, backup_id: str) -> None:
        self.storage.delete(self.key(backup_id, IN_PROGRESS_NAME))

    def delete_backup(self, backup_id: str) -> None:
        """Manifest first: once it is gone the rest is an ordinary leftover, whatever happens next."""
        objs = self.storage.list(f"{self.environment}/{backup_id}/")
        manifest_key = self.key(backup_id, MANIFEST_NAME)
        if any(o.key == manifest_key for o in objs):
            self.storage.delete(manifest_key)
        for obj in objs:
            if obj.key != manifest_key:
                self.storage.delete(obj.key)

    def leftovers(self, now: datetime | None = None) -> list[Leftover]:
        """Folders without a manifest and writers' temp files: what killed runs leave behind."""
        now = now or datetime.now(UTC)
        out = []
        for backup_id, objs in self._grouped().items():
            complete = any(o.key.endswith("/" + MANIFEST_NAME) for o in objs)
            temps = [o for o in objs if Storage.TEMP_MARK in o.key.rsplit("/", 1)[-1]]
            if complete and not temps:
                continue
            junk = temps if complete else objs
            active, reason = self._activity(backup_id, objs, now)
            if complete:
                reason = "temporary files of an interrupted manifest update"
            out.append(Leftover(backup_id, tuple(o.key for o in junk), sum(o.size for o in junk), active, reason))
        return out

    def _activity(self, backup_id: str, objs: list[ObjectInfo], now: datetime) -> tuple[bool, str]:
        marker = self.key(backup_id, IN_PROGRESS_NAME)
        if not any(o.key == marker for o in objs):
            newest = max(o.modified for o in objs)
            if now - newest < timedelta(minutes=10):
                return True, "no manifest yet, written to in the last 10 minutes"
            return False, "no manifest: an interrupted or failed backup"
        try:
            record = json.loads(self.storage.read_bytes(marker))
            pid, host = int(record["pid"]), str(record["host"])
            started = datetime.fromisoformat(record["started_at"])
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            return False, "no manifest and an unreadable in-progress marker"
        if host == socket.gethostname():
            if _pid_alive(pid):
                return True, f"backup in progress (pid {pid} on this host)"
            return False, f"its backup process (pid {pid}) is gone: killed or crashed"
        if now - started < FOREIGN_RUN_STALE_AFTER:
            return True, f"backup in progress on {host} (pid {pid}), presumed alive for 24 h"
        return False, f"started on {host} over 24 h ago and never finished"

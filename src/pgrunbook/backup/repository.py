"""The backup layout in storage: ``<env>/<id>/db.dump[.zst]`` and ``<env>/<id>/manifest.json``.

Only a folder named like a backup id with a readable manifest is a backup, and only the backups of
this project and database (backup/identity.py) are listed, restored, counted by retention or removed.
Leftovers are the remains of this project's killed runs: only files pgrunbook writes (its file names,
its temporary names) inside folders named like its ids are ever deleted; anything else is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pgrunbook.backup.identity import (
    BACKUP_FILES,
    ENVIRONMENT_MARKERS,
    IN_USE,
    REPOSITORY_MARKERS,
    EnvironmentMarker,
    Owner,
    Scope,
    foreign_key,
    is_backup_id,
    is_temp_name,
    marker_key,
    own_file_name,
    repository_marker,
    why_foreign,
)
from pgrunbook.backup.naming import IN_PROGRESS_NAME, MANIFEST_NAME
from pgrunbook.backup.storage import ObjectInfo, Storage
from pgrunbook.errors import BackupNotFound, ObjectMissing, PgRunbookError, StorageError, VerificationFailed
from pgrunbook.postgres.names import derived_dbname
from pgrunbook.postgres.runner import pid_alive

if TYPE_CHECKING:
    from pgrunbook.backup.manifest import Manifest, Verification

# A marker from another host cannot be checked for liveness; after this long it is presumed dead.
FOREIGN_RUN_STALE_AFTER = timedelta(hours=24)
#: manifests and markers read at once (each is a request to an object store)
READ_AHEAD = 8
#: a manifest is a few kB (one line per table and object privilege); anything larger is not read: a
#: hostile or damaged file must not make every listing slow and memory-hungry
MANIFEST_MAX_BYTES = 16 * 2**20
#: the archive names a manifest may give: files pgrunbook writes inside the backup's own folder
DUMP_FILES = frozenset(BACKUP_FILES - {MANIFEST_NAME, IN_PROGRESS_NAME})
#: drills kept in the drill log (a weekly drill: about a year)
DRILL_LOG_SIZE = 50


# the start of an ownership doubt that only an unreachable database causes (prune's hint tells it apart)
DATABASE_UNREACHABLE = "the database cannot be reached or read"


class BackupRemoved(BackupNotFound):
    """The backup was removed while it was being read (a prune, or by hand)."""


@dataclass
class Scan:
    """One pass over an environment folder: this owner's backups (newest first), the others' (id and
    what they are), and the manifests that cannot be read (id and why)."""

    ours: list[Manifest]
    foreign: list[tuple[str, str]]
    unreadable: list[tuple[str, str]]

    def foreign_note(self) -> str | None:
        if not self.foreign:
            return None
        kinds = sorted({reason for _id, reason in self.foreign})
        n = len(self.foreign)
        return f"{n} backup{'s' if n != 1 else ''} of another project/database ignored ({'; '.join(kinds[:3])})"


@dataclass(frozen=True)
class DrillRecord:
    """One restore drill in the drill log: which backup, when, whether it passed, and (when it could not
    run for a reason outside the backup) that reason."""

    backup_id: str
    at: datetime
    passed: bool
    problem: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"backup": self.backup_id, "at": self.at.isoformat(), "passed": self.passed, "problem": self.problem}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> DrillRecord:
        at = datetime.fromisoformat(str(raw["at"]))
        if at.tzinfo is None:
            raise ValueError("drill time without a time zone")
        problem = raw.get("problem")
        return cls(str(raw["backup"]), at, raw.get("passed") is True, str(problem) if problem is not None else None)


@dataclass(frozen=True)
class Leftover:
    backup_id: str
    keys: tuple[str, ...]
    size: int
    active: bool
    reason: str


@dataclass(frozen=True)
class Elsewhere:
    """This owner's backups under another environment's folder of the same storage (trial11 F1: an
    environment renamed in pgrunbook.toml leaves its backups under the old name, and every command of
    the new name says "no backups")."""

    environment: str  # the folder they are under
    count: int
    here: str  # the environment asked about
    where: str  # the storage, as displayed
    configured: bool  # whether that environment is still configured (then --env reaches them)

    def note(self) -> str:
        n = self.count
        return (
            f"{n} backup{'s' if n != 1 else ''} of this project and database {'are' if n != 1 else 'is'} under "
            f"environment {self.environment!r} in {self.where} (renamed?)"
        )

    def hint(self) -> str:
        reach = (
            f"use --env {self.environment}"
            if self.configured
            else f"name the environment {self.environment!r} again in pgrunbook.toml"
        )
        return (
            f"if environment {self.environment!r} was renamed to {self.here!r}, move its backup folders from "
            f"{self.where}/{self.environment} into {self.where}/{self.here}; or {reach}"
        )


class BackupRepository:
    def __init__(
        self, storage: Storage, environment: str, owner: Owner | None = None, configured: frozenset[str] = frozenset()
    ):
        self.storage = storage
        self.environment = environment
        #: whose backups count; None (tools and tests) takes every backup in the folder as its own
        self.owner = owner
        #: the environments pgrunbook.toml defines (hints name --env only for those)
        self.configured = configured

    def key(self, backup_id: str, name: str) -> str:
        return f"{self.environment}/{backup_id}/{name}"

    def _grouped(self) -> dict[str, list[ObjectInfo]]:
        """Objects of folders named like backup ids; nothing else under the environment is a backup."""
        groups: dict[str, list[ObjectInfo]] = {}
        for obj in self.storage.list(self.environment + "/"):
            parts = obj.key.split("/")
            if len(parts) == 3 and is_backup_id(parts[1]):
                groups.setdefault(parts[1], []).append(obj)
        return groups

    def exists(self, backup_id: str) -> bool:
        return bool(self.storage.list(f"{self.environment}/{backup_id}/"))

    # --- whose is what -----------------------------------------------------------------------------

    def markers(self) -> list[EnvironmentMarker]:
        """The environment's markers (one listing, then the marker files read at once)."""
        keys = [
            o.key
            for o in self.storage.list(f"{self.environment}/{ENVIRONMENT_MARKERS}/")
            if o.key.endswith(".json") and not is_temp_name(o.key.rsplit("/", 1)[-1])
        ]

        def one(key: str) -> EnvironmentMarker | None:
            try:
                return EnvironmentMarker.from_json(self.storage.read_bytes(key), key)
            except StorageError:
                return None

        if len(keys) <= 1:
            found = [one(k) for k in keys]
        else:
            with ThreadPoolExecutor(min(READ_AHEAD, len(keys)), thread_name_prefix="marker") as pool:
                found = list(pool.map(one, keys))
        return [m for m in found if m is not None]

    def _scope(self) -> Scope:
        """Whose backups count here, from the markers. A project with an id: its own, from any server, and
        by database name only when markers of that id name a database outside this one's lineage (one
        id deployed for two databases). A project without one is told apart by its database: by name
        when the folder holds markers of more than one database (a name a restored copy took, recorded
        in ``also``, counts as the same), and when backups of its name come from several servers, by the live
        server's system identifier (one connection). With one server only, its backups stay the
        project's also when the database now lives on another server (after a disaster)."""
        if self.owner is None:
            return Scope()
        markers = self.markers()
        if not markers:
            return Scope()
        if self.owner.project_id is not None:
            # break11 #13: one pgrunbook.toml (one id) deployed for two databases sharing the folder; each
            # took the other's backups for its own, and one's prune deleted the other's
            project = [m for m in markers if m.project_id == self.owner.project_id]
            until: dict[str, str] = {}
            names = self._names(project, markers, until)
            apart = self.owner.database is not None and not {m.database for m in project if m.database} <= names
            sole = len(project) == len(markers)
            return Scope(names if apart else None, set(), any(m.adopts_legacy for m in project), sole, until)
        unnamed = [m for m in markers if m.project_id is None]
        until = {}
        names = self._names(unnamed, markers, until)
        mine = [m for m in unnamed if self.owner.database is None or m.database == self.owner.database]
        if {m.database for m in unnamed if m.database} <= names or self.owner.database is None:
            mine, scope_names = unnamed, None  # one database (lineage) writes here: no need to tell apart
        else:
            scope_names = names
            mine = [m for m in unnamed if m.database in names]
        sysids = {m.system_identifier for m in mine if m.system_identifier and m.database == self.owner.database}
        if len(sysids) > 1:
            live = self.owner.system_identifier_of() if self.owner.system_identifier_of else None
            if live not in sysids:
                raise StorageError(
                    f"backups of database {self.owner.database!r} from {len(sysids)} servers are in "
                    f"{self.storage.display}/{self.environment}, and "
                    + (
                        "the database cannot be reached to tell which is this one"
                        if live is None
                        else f"this server ({live}) is none of them"
                    ),
                    hint="give each project sharing this storage its own [project] id in pgrunbook.toml "
                    "(see docs/backups.md), or make the database reachable",
                )
            mine = [m for m in mine if m.system_identifier in (live, None) or m.database != self.owner.database]
            sysids = {live}
        return Scope(scope_names, sysids, any(m.adopts_legacy for m in mine), len(mine) == len(markers), until)

    def id_shared_with(self) -> list[str]:
        """The other databases this project's id writes backups of in this environment folder (sorted):
        one pgrunbook.toml deployed for several databases. Each then keeps to its own backups (_scope);
        said by doctor, since each should have its own id."""
        if self.owner is None or self.owner.project_id is None or self.owner.database is None:
            return []
        scope = self._scope()
        if scope.names is None:
            return []
        project = [m for m in self.markers() if m.project_id == self.owner.project_id]
        return sorted({m.database for m in project if m.database and m.database not in scope.names})

    def _names(
        self, candidates: list[EnvironmentMarker], markers: list[EnvironmentMarker], until: dict[str, str]
    ) -> set[str]:
        """The database names that are this owner's among ``candidates`` (markers of its project, or of
        projects without id): its own, the earlier names its markers record (``also``), and, never
        backed up under this name, the names of the database a copy pgrunbook restored (rollback,
        restore --into) came from, whose history the copy the application now uses continues. Fills
        ``until``: an earlier name's history is the owner's up to the backup it was restored from."""
        assert self.owner is not None
        mine = [m for m in candidates if self.owner.database is None or m.database == self.owner.database]
        names = {self.owner.database} if self.owner.database else {m.database for m in mine if m.database}
        for m in mine:
            names.update(m.also)
            until.update(m.until)
        if not mine and candidates and self.owner.restored_from_of is not None:
            earlier = self._lineage(self.owner.restored_from_of(), self.owner.database, markers)
            names.update(earlier)
            until.update(earlier)
        return {n for n in names if n}

    def ownership_doubt(self) -> str | None:
        """Why this owner's backups in the folder are only presumed its own, or None when that is proven.

        Proven: by the project id, or (a project without one) by a marker of its database written from
        the live server (same system identifier; one connection). A folder whose backups come from one
        other server is presumed the project's (its database may have moved after a disaster), but
        it may as well be another project's database of the same name: then nothing may be deleted
        or replaced on that presumption (pgBackRest refuses a stanza of another system identifier).
        Backups from before markers existed, in a folder nobody has claimed, stay adopted."""
        if self.owner is None or self.owner.project_id is not None:
            return None
        markers = [m for m in self.markers() if m.project_id is None]
        if not markers:
            return None
        if self.owner.database is None:
            return "the database URL is not set here, so which database's backups these are cannot be checked"
        scope = self._scope()
        mine = [m for m in markers if scope.names is None or m.database in scope.names]
        servers = sorted({m.system_identifier for m in mine if m.system_identifier})
        live = self.owner.system_identifier_of() if self.owner.system_identifier_of else None
        if live is not None and live in servers:
            return None
        if not servers:
            return "the server's system identifier could not be read when they were taken"
        if live is None:  # down, not foreign: say so, the likeliest case is a database that is only down now
            return (
                f"{DATABASE_UNREACHABLE}, so whether the server that took them (system identifier "
                f"{', '.join(servers)}) is this database's cannot be checked"
            )
        return (
            f"they were taken on another server (system identifier {', '.join(servers)}); this server ({live}) "
            "has written no backup here"
        )

    def _foreign(self, manifest: Manifest, scope: Scope) -> str | None:
        if self.owner is None:
            return None
        return why_foreign(
            manifest.project_id, manifest.database, manifest.system_identifier, self.owner, scope, manifest.id
        )

    def scan(self) -> Scan:
        """Every complete backup in the folder, sorted into this owner's and the others'."""
        scope = self._scope()
        ours, foreign, unreadable = [], [], []
        groups = self._grouped()
        ids = [i for i, objs in groups.items() if any(o.key.endswith("/" + MANIFEST_NAME) for o in objs)]
        for backup_id, manifest in zip(ids, self._read_manifests(ids), strict=True):
            if isinstance(manifest, PgRunbookError):
                unreadable.append((backup_id, manifest.message))
                continue
            if not any(o.key == self.dump_key(manifest) for o in groups[backup_id]):
                # a manifest without its archive is no backup: never listed, restored or kept by retention
                # as "newest verified" (break11 #9: a drill once rewrote one into a pruned folder)
                unreadable.append((backup_id, self.archive_missing(manifest).message))
                continue
            reason = self._foreign(manifest, scope)
            if reason is None:
                ours.append(manifest)
            else:
                foreign.append((backup_id, reason))
        ours.sort(key=lambda m: (m.started_at, m.id), reverse=True)
        return Scan(ours, sorted(foreign), sorted(unreadable))

    def elsewhere(self) -> Elsewhere | None:
        """The other environment folder of this storage holding the most backups of this owner, or None;
        asked only when this environment has none (it lists the whole storage and reads those folders'
        manifests). A folder whose ownership cannot be told is passed over."""
        if self.owner is None:
            return None
        try:
            names = sorted(
                {
                    parts[0]
                    for o in self.storage.list("")
                    if len(parts := o.key.split("/")) == 3
                    and parts[0] != self.environment
                    and is_backup_id(parts[1])
                    and parts[2] == MANIFEST_NAME
                }
            )
        except StorageError:
            return None
        best: Elsewhere | None = None
        for name in names:
            try:
                count = len(BackupRepository(self.storage, name, self.owner).list_backups())
            except PgRunbookError:
                continue
            if count and (best is None or count > best.count):
                best = Elsewhere(name, count, self.environment, self.storage.display, name in self.configured)
        return best

    def _none_here(self, error: BackupNotFound) -> BackupNotFound:
        """``error`` (nothing of this name here), saying where this owner's backups are if elsewhere."""
        found = self.elsewhere()
        if found is not None:
            return BackupNotFound(f"{error.message}; {found.note()}", hint=found.hint())
        if self.owner is None or self.owner.project_id is None:
            return error
        # this project's backups under other database names (breaker13 F9: the copy the app had moved to,
        # lost before its first backup, no longer names the database it came from)
        same = sorted(i for i, reason in self.scan().foreign if reason.startswith("database "))
        if not same:
            return error
        db = self.owner.database or "NAME"
        there = self.owner.databases_of() if self.owner.databases_of is not None else None
        if there is not None and db in there:  # it exists: a restore --into its own name would be refused
            db = derived_dbname(db, "_restored")
        db = shlex.quote(db)
        return BackupNotFound(
            f"{error.message}; {len(same)} backup(s) of this project under another database name are there, "
            f"the newest {same[-1]}",
            hint=f"if that is this database's history, restore it by its id: pgrunbook restore {same[-1]} --into "
            f"{db} --env {self.environment}; else {error.hint}",
        )

    def list_backups(self) -> list[Manifest]:
        """This owner's complete backups, newest first. Unreadable manifests are skipped here, listed by
        doctor; other projects' backups are skipped (scan() says how many)."""
        return self.scan().ours

    def newest(self) -> Manifest | None:
        """The newest complete backup of this owner, reading manifests newest id first until one is
        this owner's (ids sort by time), for cheap estimates; list_backups reads every manifest."""
        groups = self._grouped()
        scope = self._scope()
        for backup_id in sorted(groups, reverse=True):
            if any(o.key.endswith("/" + MANIFEST_NAME) for o in groups[backup_id]):
                try:
                    manifest = self.read_manifest(backup_id)
                except (VerificationFailed, BackupNotFound, StorageError):
                    continue
                if not any(o.key == self.dump_key(manifest) for o in groups[backup_id]):
                    continue
                if self._foreign(manifest, scope) is None:
                    return manifest
        return None

    def read_manifest(self, backup_id: str) -> Manifest:
        """The manifest of ``backup_id``, read straight away (no listing first: on an object store each
        request is a round trip); BackupNotFound when there is none."""
        key = self.key(backup_id, MANIFEST_NAME)
        try:
            if not is_backup_id(backup_id):
                raise ObjectMissing(key)
            # at most one byte over the cap is read: a huge file is refused without being held or parsed
            data = b"".join(self.storage.read(key, 0, MANIFEST_MAX_BYTES + 1))
        except ObjectMissing:
            raise self._missing(backup_id) from None
        where = f"{self.storage.display}/{key}"
        if len(data) > MANIFEST_MAX_BYTES:
            raise VerificationFailed(
                f"manifest {where} is unreadable: over {MANIFEST_MAX_BYTES // 2**20} MiB, more than a manifest "
                "can be; it was not read",
                hint="the file is damaged or not pgrunbook's: the backup cannot be trusted and prune leaves it "
                "alone; move the folder aside by hand (pgrunbook doctor lists them)",
            )
        from pgrunbook.backup.manifest import Manifest  # start-up time: see backup/naming.py

        return self._placed(Manifest.from_json(data, where), backup_id, where)

    def _missing(self, backup_id: str) -> BackupNotFound:
        """No manifest for ``backup_id``: no such backup, or a folder a backup never finished (killed,
        failed, or still running), which is said as such: it will never be restorable (trial7 #18)."""
        unknown = BackupNotFound(
            f"no backup {backup_id!r} in environment {self.environment!r} ({self.storage.display})",
            hint=f"pgrunbook backup list --env {self.environment} shows the ids",
        )
        if not is_backup_id(backup_id):
            return unknown
        try:
            objs = [
                o
                for o in self.storage.list(f"{self.environment}/{backup_id}/")
                if o.key.count("/") == 2 and own_file_name(o.key.rsplit("/", 1)[-1])
            ]
        except StorageError:
            return unknown
        if not objs:
            return self._none_here(unknown)
        active, reason = self._activity(backup_id, objs, datetime.now(UTC))
        if active:
            return BackupNotFound(
                f"backup {backup_id} in environment {self.environment!r} is not finished: {reason}; it has no "
                "manifest yet",
                hint="wait for it to finish, then run this again; pgrunbook backup list shows the finished ones",
            )
        return BackupNotFound(
            f"backup {backup_id} in environment {self.environment!r} was interrupted (no manifest: {reason}); "
            "it can never be restored or verified",
            hint=f"pgrunbook backup prune --env {self.environment} removes it; pgrunbook backup list shows the "
            "complete backups",
        )

    def _read_manifests(self, ids: list[str]) -> list[Manifest | PgRunbookError]:
        """The manifests of ``ids`` (in that order), read at once (READ_AHEAD at a time): each is a round
        trip on an object store. A manifest that cannot be read stands as its error."""

        def one(backup_id: str) -> Manifest | PgRunbookError:
            try:
                return self.read_manifest(backup_id)
            except (VerificationFailed, BackupNotFound, StorageError) as exc:
                return exc

        if len(ids) <= 1:
            return [one(i) for i in ids]
        with ThreadPoolExecutor(min(READ_AHEAD, len(ids)), thread_name_prefix="manifest") as pool:
            return list(pool.map(one, ids))

    def _placed(self, manifest: Manifest, backup_id: str, where: str) -> Manifest:
        """A manifest describes the folder it lies in: its id is the folder's name and its archive a file
        of pgrunbook's in that folder (the environment may differ: a folder moved after a rename). A
        folder copied or renamed by hand, or a manifest naming a file elsewhere, is unreadable
        (verifying it would write to another backup's manifest, restoring it would read elsewhere)."""
        moved = "; move the folder aside by hand (pgrunbook backup copy makes copies that keep their id)"
        if manifest.id != backup_id:
            raise VerificationFailed(
                f"manifest {where} is unreadable: it describes backup {manifest.id}, not its own folder "
                f"{backup_id} (copied or renamed by hand?)",
                hint="a backup's folder is named by its id and cannot be renamed or duplicated" + moved,
            )
        if manifest.file not in DUMP_FILES:
            raise VerificationFailed(
                f"manifest {where} is unreadable: it names the archive {manifest.file!r}, which is not a file "
                f"pgrunbook writes in the backup's own folder ({', '.join(sorted(DUMP_FILES))})",
                hint="the manifest is damaged or hand-made and points elsewhere: nothing outside the folder is "
                "read; the backup cannot be trusted" + moved,
            )
        return manifest

    def latest(self, skip_labels: tuple[str, ...] = ()) -> Manifest:
        """The newest complete backup of this owner whose label is not in ``skip_labels``; raises
        BackupNotFound when there is none."""
        backups = self.list_backups()
        newest = next((m for m in backups if m.label not in skip_labels), None)
        if newest is None:
            skipped = f" other than {', '.join(skip_labels)} backups" if backups else ""
            error = BackupNotFound(
                f"no backup{skipped} in environment {self.environment!r} ({self.storage.display})",
                hint=f"pgrunbook backup create --env {self.environment}"
                + (" (or name a backup by its id: pgrunbook backup list)" if backups else ""),
            )
            raise self._none_here(error) if not backups else error
        return newest

    def get(self, backup_id: str) -> Manifest:
        """A backup of this owner by id; ``latest`` is the newest complete one (for schedules). Another
        project's or database's backup is refused as not found, saying whose it is."""
        if backup_id == "latest":
            return self.latest()
        if self.owner is None:
            return self.read_manifest(backup_id)
        with ThreadPoolExecutor(1, thread_name_prefix="scope") as pool:  # the markers travel meanwhile
            scope = pool.submit(self._scope)
            manifest = self.read_manifest(backup_id)
            reason = self._foreign(manifest, scope.result())
            if reason is not None and not self._same_project(manifest):
                raise BackupNotFound(
                    f"backup {backup_id} in {self.storage.display} is a backup of {reason}, not of "
                    f"{self.owner.describe()}; nothing was changed",
                    hint=f"pgrunbook backup list --env {self.environment} shows this project's backups",
                )
        return manifest

    def _same_project(self, manifest: Manifest) -> bool:
        """A backup of this project (by its id) under another database name, named by its id: restored
        or verified as asked (a database renamed outside pgrunbook keeps reaching its old backups
        so); only ``latest``, list and prune keep to this database's own."""
        return (
            self.owner is not None
            and self.owner.project_id is not None
            and (manifest.project_id == self.owner.project_id)
        )

    # --- claiming: markers -------------------------------------------------------------------------

    def claim(self, database: str | None, system_identifier: str | None, restored_from: str | None = None) -> None:
        """Before this owner's first write: check that the storage root holds nothing but pgrunbook's
        layout (else refuse: it is someone else's folder), then write the markers that say this project
        and database write here. The first marker in an environment folder adopts its older backups."""
        owner = self.owner or Owner()
        roots = self.storage.list(REPOSITORY_MARKERS + "/")
        if not roots:
            stray = next((o.key for o in self.storage.list("") if foreign_key(o.key)), None)
            if stray is not None:
                raise StorageError(
                    f"storage {self.storage.display} holds other files than pgrunbook's backups "
                    f"(for example {stray}); pgrunbook writes and prunes only in a folder of its own",
                    hint="point [backup] storage at an empty folder (or prefix) used only for backups, "
                    "such as backups/",
                )
        root_key = f"{REPOSITORY_MARKERS}/{marker_key(owner.project_id, None, None)}.json"
        if not any(o.key == root_key for o in roots):
            self.storage.write_bytes(root_key, repository_marker(owner))
        markers = self.markers()
        name = database or owner.database
        if name is None:  # which database writes here is not known: no marker is better than a nameless one
            return
        mine = [m for m in markers if m.project_id == owner.project_id and m.database == name]
        if mine:
            self._learn_lineage(mine, restored_from, name, markers)
        if mine and (system_identifier is None or any(m.system_identifier == system_identifier for m in mine)):
            return
        unset = next((m for m in mine if m.system_identifier is None), None)
        if unset is not None and system_identifier is not None:  # learnt the server: fill it in
            unset.system_identifier = system_identifier
            self.storage.write_bytes(unset.key, unset.to_json())
            return
        if unset is not None:
            return
        key = marker_key(owner.project_id, name, system_identifier)
        lineage = self._lineage(restored_from, name, markers)
        marker = EnvironmentMarker(
            project_id=owner.project_id,
            project_name=owner.project_name,
            environment=self.environment,
            database=name,
            system_identifier=system_identifier,
            adopts_legacy=not markers,
            also=sorted(lineage),
            until=lineage,
        )
        self.storage.write_bytes(f"{self.environment}/{ENVIRONMENT_MARKERS}/{key}.json", marker.to_json())

    def _learn_lineage(
        self,
        mine: list[EnvironmentMarker],
        restored_from: str | None,
        name: str | None,
        markers: list[EnvironmentMarker],
    ) -> None:
        """A marker written without the database's lineage (by a prune that could not read the database's
        comment, or before lineages existed) gets it once a later claim knows it: without it, a restored
        copy's list, check and ``restore latest`` would see none of the history it continues (newuser14)."""
        lineage = self._lineage(restored_from, name, markers)
        for m in mine:
            missing = {n: cut for n, cut in lineage.items() if n not in m.also}
            if missing:
                m.also = sorted({*m.also, *missing})
                m.until = {**missing, **m.until}
                self.storage.write_bytes(m.key, m.to_json())

    def _lineage(self, restored_from: str | None, name: str | None, markers: list[EnvironmentMarker]) -> dict[str, str]:
        """Earlier names of this database, each with the last backup id of it that is this database's
        history: it was restored (verified) by pgrunbook from this project's backup ``restored_from`` of
        another name, so that database's backups up to that one are its history too, and so are the
        earlier names that database continues, each up to its own cut or this one, the earlier
        (breaker13b N12: a copy of a copy took the first source's backups after the first fork)."""
        if not restored_from or not is_backup_id(restored_from):
            return {}
        try:
            origin = self.read_manifest(restored_from)
        except (BackupNotFound, VerificationFailed, StorageError):
            return {}
        owner = self.owner or Owner()
        if origin.project_id != owner.project_id or origin.database == name:
            return {}
        cuts = {origin.database: restored_from}
        for m in markers:
            if m.project_id == owner.project_id and m.database == origin.database:
                for n in m.also:
                    cuts[n] = min(m.until.get(n, restored_from), restored_from, cuts.get(n, restored_from))
        cuts.pop(name or "", None)
        return cuts

    # --- the drill log: drill results outlive the backups they drilled ------------------------------

    def _drill_log_key(self) -> str:
        owner = self.owner or Owner()
        name = marker_key(owner.project_id, owner.database, None)
        return f"{self.environment}/{ENVIRONMENT_MARKERS}/drills-{name}.json"

    def drill_log(self) -> list[DrillRecord]:
        """This owner's recorded drills, oldest first (the last DRILL_LOG_SIZE); [] when none or unreadable
        (the manifests still carry their own drills)."""
        key = self._drill_log_key()
        try:
            if not any(o.key == key for o in self.storage.list(key)):
                return []
            raw = json.loads(self.storage.read_bytes(key))
            return [DrillRecord.from_dict(r) for r in raw["drills"] if isinstance(r, dict)]
        except (StorageError, ValueError, KeyError, TypeError):
            return []

    def record_drill(self, backup_id: str, verification: Verification) -> None:
        """Append a drill's outcome to the log, so monitoring knows the newest drill (and the newest good
        one) after prune removed its backup. A storage that refuses the write loses only this record."""
        record = DrillRecord(
            backup_id,
            verification.at,
            verification.drill_passed,
            (verification.cause or {}).get("message") if verification.cause else None,
        )
        drills = [*self.drill_log(), record][-DRILL_LOG_SIZE:]
        data = {"kind": "pgrunbook-drills", "format": 1, "drills": [d.to_dict() for d in drills]}
        with contextlib.suppress(StorageError):
            self.storage.write_bytes(self._drill_log_key(), (json.dumps(data, indent=1) + "\n").encode())

    # --- writing and removing ----------------------------------------------------------------------

    def write_manifest(self, manifest: Manifest) -> None:
        self.storage.write_bytes(self.key(manifest.id, MANIFEST_NAME), manifest.to_json())

    def archive_missing(self, manifest: Manifest) -> BackupNotFound:
        """The error for a manifest whose archive is not in its folder (removed by hand, or by a prune
        that ran while the backup was read): no backup, said so, with what to do."""
        return BackupNotFound(
            f"backup {manifest.id} in {self.storage.display}/{self.environment} has a manifest but no archive "
            f"({manifest.file} is missing: removed by hand, or pruned while it was being read); it cannot be "
            "restored or verified",
            hint=f"choose another backup (pgrunbook backup list --env {self.environment}); pgrunbook doctor "
            f"lists the folder; remove {self.environment}/{manifest.id}/ by hand once you know why its archive went",
        )

    def rewrite_manifest(self, manifest: Manifest) -> None:
        """Record something in an existing backup's manifest (a verification), atomically, and only while
        the backup is still there: its manifest and archive are listed right before the replace, so a
        prune that removed the backup meanwhile is never undone into a manifest without an archive
        (break11 #9). Raises BackupNotFound (BackupRemoved) when the backup is gone."""
        names = {o.key.rsplit("/", 1)[-1] for o in self.storage.list(f"{self.environment}/{manifest.id}/")}
        if MANIFEST_NAME not in names or manifest.file not in names:
            raise BackupRemoved(
                f"backup {manifest.id} was removed from {self.storage.display}/{self.environment} while it was "
                "being read (by pgrunbook backup prune, or by hand); nothing was recorded and it cannot be restored",
                hint=f"pgrunbook backup list --env {self.environment} shows the backups that remain; verify or "
                "restore one of those",
            )
        self.write_manifest(manifest)

    @contextlib.contextmanager
    def reading(self, manifest: Manifest, command: str) -> Iterator[None]:
        """While a verify, drill, restore or copy reads this backup: an in-use marker in its folder
        (pid, host, started_at, command; one per reader), which prune honours (in_use()). Then the
        folder is listed: a backup removed before the marker landed, or whose archive is missing, is
        refused here, before anything is read. A storage that refuses the marker (mounted read-only)
        is still read: nothing can prune it either."""
        key = self.key(manifest.id, f".in-use-{secrets.token_hex(8)}.json")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(),
            "command": command,
        }
        try:
            self.storage.write_bytes(key, json.dumps(record).encode())
        except StorageError:
            written = False
        else:
            written = True
        try:
            names = {o.key.rsplit("/", 1)[-1] for o in self.storage.list(f"{self.environment}/{manifest.id}/")}
            if MANIFEST_NAME not in names:  # removed since its manifest was read
                raise BackupRemoved(
                    f"backup {manifest.id} was removed from {self.storage.display}/{self.environment} just as it "
                    "was to be read (by pgrunbook backup prune, or by hand); nothing was read or changed",
                    hint=f"pgrunbook backup list --env {self.environment} shows the backups that remain",
                )
            if manifest.file not in names:
                raise self.archive_missing(manifest)
            yield
        finally:
            if written:
                with contextlib.suppress(StorageError):
                    self.storage.delete(key)

    def in_use(self, backup_id: str, now: datetime | None = None) -> str | None:
        """Who reads ``backup_id`` now ("backup verify --drill pid 123 on db1"), from the live in-use
        markers in its folder: a live pid on this host, or one on another host started < 24 h ago. The
        markers of dead readers are ignored (prune removes them with the backup)."""
        now = now or datetime.now(UTC)
        for obj in self.storage.list(f"{self.environment}/{backup_id}/"):
            name = obj.key.rsplit("/", 1)[-1]
            if obj.key.count("/") != 2 or not IN_USE.fullmatch(name):
                continue
            try:
                record = json.loads(self.storage.read_bytes(obj.key))
                pid, host = int(record["pid"]), str(record["host"])
                started = datetime.fromisoformat(record["started_at"])
                command = str(record.get("command") or "a reader")
            except (ValueError, KeyError, TypeError, StorageError):
                continue
            if host == socket.gethostname():
                if pid_alive(pid):
                    return f"{command} pid {pid}"
            elif started.tzinfo is not None and now - started < FOREIGN_RUN_STALE_AFTER:
                return f"{command} pid {pid} on {host}"
        return None

    def dump_key(self, manifest: Manifest) -> str:
        return self.key(manifest.id, manifest.file)

    def mark_in_progress(self, backup_id: str, started: datetime) -> None:
        owner = self.owner or Owner()
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": started.isoformat(),
            "project_id": owner.project_id,
            "database": owner.database,
        }
        self.storage.write_bytes(self.key(backup_id, IN_PROGRESS_NAME), json.dumps(record).encode())

    def clear_in_progress(self, backup_id: str) -> None:
        self.storage.delete(self.key(backup_id, IN_PROGRESS_NAME))

    def delete_backup(self, backup_id: str) -> None:
        """Manifest first: once it is gone the rest is an ordinary leftover, whatever happens next. Only
        the files pgrunbook writes are removed; anything else in the folder stays (and so does it)."""
        if not is_backup_id(backup_id):
            raise StorageError(f"refusing to delete {backup_id!r}: not a pgrunbook backup id")
        objs = [o for o in self.storage.list(f"{self.environment}/{backup_id}/") if o.key.count("/") == 2]
        manifest_key = self.key(backup_id, MANIFEST_NAME)
        if any(o.key == manifest_key and not o.link for o in objs):
            self.storage.delete(manifest_key)
        for obj in objs:
            if obj.key != manifest_key and own_file_name(obj.key.rsplit("/", 1)[-1]) and not obj.link:
                self.storage.delete(obj.key)

    def leftovers(self, now: datetime | None = None) -> list[Leftover]:
        """This owner's folders without a manifest and writers' temp files: what killed runs leave
        behind. Only pgrunbook's own file names count; another project's remains are never included."""
        now = now or datetime.now(UTC)
        scope = self._scope()
        out = []
        for backup_id, all_objs in self._grouped().items():
            named = [o for o in all_objs if own_file_name(o.key.rsplit("/", 1)[-1])]
            # a manifest of any kind (a link too) makes the folder a backup, never a killed run's remains
            complete = any(o.key.endswith("/" + MANIFEST_NAME) for o in named)
            objs = [o for o in named if not o.link]  # links are not pgrunbook's: never removed
            if not objs:
                continue
            temps = [o for o in objs if is_temp_name(o.key.rsplit("/", 1)[-1])]
            if complete and not temps:
                continue
            if complete:
                try:
                    if self._foreign(self.read_manifest(backup_id), scope) is not None:
                        continue
                except (VerificationFailed, BackupNotFound, StorageError):
                    continue  # an unreadable manifest: doctor reports it; whose it is cannot be told
            elif not self._left_by_us(backup_id, objs, scope.sole):
                continue
            junk = temps if complete else objs
            active, reason = self._activity(backup_id, objs, now)
            if complete:
                reason = "temporary files of an interrupted manifest update"
            out.append(Leftover(backup_id, tuple(o.key for o in junk), sum(o.size for o in junk), active, reason))
        return out

    def _left_by_us(self, backup_id: str, objs: list[ObjectInfo], sole: bool) -> bool:
        """A folder without a manifest is ours when its in-progress marker names this project and
        database; without a marker that names anyone, only when no other project writes here."""
        if self.owner is None:
            return True
        marker = self.key(backup_id, IN_PROGRESS_NAME)
        if any(o.key == marker for o in objs):
            try:
                record = json.loads(self.storage.read_bytes(marker))
            except (ValueError, StorageError):
                record = {}
            if isinstance(record, dict) and "project_id" in record:
                return record.get("project_id") == self.owner.project_id and record.get("database") in (
                    None,
                    self.owner.database,
                )
        return sole

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
            if pid_alive(pid):
                return True, f"backup in progress (pid {pid} on this host)"
            return False, f"its backup process (pid {pid}) is gone: killed or crashed"
        if now - started < FOREIGN_RUN_STALE_AFTER:
            return True, f"backup in progress on {host} (pid {pid}), presumed alive for 24 h"
        return False, f"started on {host} over 24 h ago and never finished"

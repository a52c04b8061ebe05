"""What in a backup repository is this project's own: markers, the owner of a backup, the shapes
pgrunbook writes.

Ideas from restic (a repository announces itself with a ``config`` object and every snapshot names its
host and paths) and pgBackRest (``backup.info``/``archive.info`` record the database's system
identifier, and a backup of another cluster is refused). Layout::

    <storage>/.pgrunbook-repository/<key>.json          one per project: the root was checked and claimed
    <storage>/<env>/.pgrunbook-environment/<key>.json   one per project and database: who writes here
    <storage>/<env>/<id>/manifest.json, db.dump[.zst][.age], .in-progress.json

A backup belongs to this project and database when its manifest names the same project id, database
name and server (system identifier). Manifests written before markers existed name none of these:
the first project to write a marker into an environment folder that has no marker of anyone adopts
them (``adopts_legacy``); a project arriving later never does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgrunbook import __version__

REPOSITORY_MARKERS = ".pgrunbook-repository"
ENVIRONMENT_MARKERS = ".pgrunbook-environment"
MARKER_FORMAT = 1
#: a backup id: YYYYMMDDTHHMMSSZ-<label>[-N]; nothing else under an environment is ever a backup
ID_PATTERN = re.compile(r"\d{8}T\d{6}Z-[a-z0-9][a-z0-9._-]{0,47}")
ENV_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
#: the only file names pgrunbook writes inside a backup's folder (temporary names derive from these):
#: the manifest, the in-progress note, and the archive as every stack of codecs names it (spelt out, not
#: asked of backup/codec.py, so that every command's start-up does not load the codecs; a unit test,
#: test_codec.py::test_every_stack_is_a_file_name_of_the_repository_layout, keeps them equal)
BACKUP_FILES = frozenset(
    {"manifest.json", ".in-progress.json", "db.dump", "db.dump.zst", "db.dump.age", "db.dump.zst.age"}
)
_TEMP = re.compile(r"\.(?P<name>[^/]+)\.tmp-[0-9a-f]{6,32}")
#: what operating systems and NAS firmware drop into any folder; never a reason to refuse one
LITTER = re.compile(
    r"(^|/)(\.DS_Store|Thumbs\.db|desktop\.ini|\._[^/]*)$|^(lost\+found|@eaDir|#recycle|\.snapshots?|\.Trash-\d+)/"
)
PROBE = ".pgrunbook-probe"


def is_backup_id(name: str) -> bool:
    return bool(ID_PATTERN.fullmatch(name))


#: a reader's in-use marker (verify, drill, restore, copy of the backup): one per reader, so prune
#: skips the backup while it is read (break11 #9)
IN_USE = re.compile(r"\.in-use-[0-9a-f]{8,32}\.json")


def own_file_name(name: str) -> bool:
    """A file pgrunbook writes in a backup folder, or a writer's temporary of one."""
    if name in BACKUP_FILES or IN_USE.fullmatch(name):
        return True
    m = _TEMP.fullmatch(name)
    return bool(m and (m.group("name") in BACKUP_FILES or IN_USE.fullmatch(m.group("name"))))


def is_temp_name(name: str) -> bool:
    m = _TEMP.fullmatch(name)
    return bool(m and (m.group("name") in BACKUP_FILES or m.group("name").endswith(".json")))


def foreign_key(key: str) -> bool:
    """Whether a key at the storage root is something other than pgrunbook's own layout."""
    if LITTER.search(key) or key == PROBE or key.startswith(REPOSITORY_MARKERS + "/"):
        return False
    parts = key.split("/")
    if len(parts) == 3 and ENV_PATTERN.fullmatch(parts[0]) and parts[1] == ENVIRONMENT_MARKERS:
        return False
    return not (
        len(parts) == 3 and ENV_PATTERN.fullmatch(parts[0]) and is_backup_id(parts[1]) and own_file_name(parts[2])
    )


@dataclass
class Owner:
    """Who is asking: this project (``[project] id``/``name``) and its database (name from the URL;
    the server's system identifier read on demand by ``system_identifier_of``, which connects)."""

    project_id: str | None = None
    project_name: str | None = None
    database: str | None = None
    system_identifier_of: Callable[[], str | None] | None = field(default=None, repr=False)
    #: the backup id the live database was restored from (its comment), read on demand (connects)
    restored_from_of: Callable[[], str | None] | None = field(default=None, repr=False)
    #: the names of the databases on the live server, read on demand (connects); None when unreachable
    databases_of: Callable[[], set[str] | None] | None = field(default=None, repr=False)

    def describe(self) -> str:
        project = f"project {self.project_name or self.project_id}" if self.project_id else "this project"
        return f"{project}, database {self.database or '?'}"


_RESTORED = re.compile(r"pgrunbook: restored from backup (\S+), verified ")


def restored_from(comment: str | None) -> str | None:
    """The backup id a database was restored from, by its comment (restore writes it once verified)."""
    m = _RESTORED.match(comment or "")
    return m.group(1) if m else None


def marker_key(project_id: str | None, database: str | None, system_identifier: str | None) -> str:
    """A file name that cannot collide between projects or databases (and needs no escaping)."""
    digest = hashlib.sha256(f"{project_id}\0{database}\0{system_identifier}".encode()).hexdigest()
    return digest[:20]


@dataclass
class EnvironmentMarker:
    project_id: str | None
    project_name: str | None
    environment: str
    database: str | None
    system_identifier: str | None
    adopts_legacy: bool
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    key: str = ""
    #: earlier names of the same database: it was restored by pgrunbook from a backup of one of them
    #: (rollback, restore --into) and the application pointed at the copy
    also: list[str] = field(default_factory=list)
    #: per ``also`` name, the last backup of it that is this database's history (the backup it, or the
    #: database it came from, was restored from): later ones are that source's own, which may go on
    #: being backed up (breaker13 F5); a name without an entry has no cut
    until: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        data = {
            "kind": "pgrunbook-environment",
            "format": MARKER_FORMAT,
            "project": {"id": self.project_id, "name": self.project_name},
            "environment": self.environment,
            "database": {"name": self.database, "system_identifier": self.system_identifier},
            "adopts_legacy": self.adopts_legacy,
            "also": self.also,
            "until": self.until,
            "created_at": self.created_at,
            "tool_version": __version__,
        }
        return (json.dumps(data, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, key: str) -> EnvironmentMarker | None:
        try:
            raw: dict[str, Any] = json.loads(data)
            if raw.get("kind") != "pgrunbook-environment":
                return None
            return cls(
                project_id=raw["project"]["id"],
                project_name=raw["project"].get("name"),
                environment=str(raw["environment"]),
                database=raw["database"]["name"],
                system_identifier=raw["database"]["system_identifier"],
                adopts_legacy=bool(raw.get("adopts_legacy", False)),
                created_at=str(raw.get("created_at", "")),
                key=key,
                also=[str(n) for n in raw.get("also", [])],
                until={str(k): str(v) for k, v in raw["until"].items()} if isinstance(raw.get("until"), dict) else {},
            )
        except (ValueError, KeyError, TypeError):
            return None

    def matches(self, owner: Owner) -> bool:
        return self.project_id == owner.project_id and (owner.database is None or self.database == owner.database)


@dataclass
class Scope:
    """What counts as the owner's in one environment folder, worked out from its markers.

    ``names``: database names that are the owner's (None: any; a project with an id keeps its backups
    whatever the database is called unless its id writes for another database here too); ``sysids``:
    its servers (empty: any); ``adopts_legacy``: it owns the manifests from before markers; ``sole``: no
    other project writes here; ``until``: where an earlier name's history stops being the owner's."""

    names: set[str] | None = None
    sysids: set[str] = field(default_factory=set)
    adopts_legacy: bool = True
    sole: bool = True
    #: an earlier name → the last backup id of it that is the owner's (the backup it was restored from)
    until: dict[str, str] = field(default_factory=dict)


def repository_marker(owner: Owner) -> bytes:
    data = {
        "kind": "pgrunbook-repository",
        "format": MARKER_FORMAT,
        "project": {"id": owner.project_id, "name": owner.project_name},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "layout": "<environment>/<backup id>/{manifest.json, db.dump[.zst][.age]}",
    }
    return (json.dumps(data, indent=2) + "\n").encode()


def why_foreign(
    project_id: str | None,
    database: str,
    system_identifier: str | None,
    owner: Owner,
    scope: Scope,
    backup_id: str = "",
) -> str | None:
    """None when a backup with these facts is the owner's; else what it is instead (for the note)."""
    if project_id is None and system_identifier is None:  # written before markers existed
        if scope.names is not None and database not in scope.names:
            return f"database {database}"
        return None if scope.adopts_legacy else "from before repository markers, adopted by another project"
    if project_id != owner.project_id:
        return f"project {project_id}" if project_id else "another project (no project id)"
    if scope.names is not None and database not in scope.names:
        return f"database {database}"
    if system_identifier and scope.sysids and system_identifier not in scope.sysids:
        return f"database {database} on another server (system identifier {system_identifier})"
    cut = scope.until.get(database) if database != owner.database else None
    if cut is not None and backup_id > cut:  # ids begin with their UTC time: later ids sort after
        return f"database {database}, taken after {owner.database or 'this database'} was restored from {cut}"
    return None

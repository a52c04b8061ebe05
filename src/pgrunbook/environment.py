"""One environment resolved from the configuration: its database, storage and backup repository."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pgrunbook.backup.identity import Owner, restored_from
from pgrunbook.config import Config, EnvironmentConfig, database_target
from pgrunbook.errors import PgRunbookError
from pgrunbook.postgres.catalog import database_comment, system_identifier
from pgrunbook.postgres.connect import connect, connect_server
from pgrunbook.postgres.url import DatabaseTarget
from pgrunbook.progress import NoticeFn, no_notice

if TYPE_CHECKING:
    from pgrunbook.backup.repository import BackupRepository
    from pgrunbook.backup.storage import Storage


@dataclass
class Environment:
    config: Config
    name: str
    settings: EnvironmentConfig
    _storage: Storage | None = field(default=None, repr=False)
    notice: NoticeFn = field(default=no_notice, repr=False)

    @classmethod
    def resolve(cls, config: Config, name: str | None = None) -> Environment:
        env_name, settings = config.environment(name)
        return cls(config, env_name, settings)

    def target(self, direct: bool = True) -> DatabaseTarget:
        """The database URL, parsed; ``direct`` prefers the pooler-bypassing variable when it is set.
        The target carries the variable it came from (``.variable``) for hints and errors."""
        return database_target(self.name, self.settings, direct=direct)

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = self.open_storage(self.config.backup.storage)
        return self._storage

    def open_storage(self, location: str) -> Storage:
        """The storage at ``location`` with the backends' own options tables (``[backup.s3]`` …)."""
        # Loaded here, not at the top: the storage backends (and their clients) are start-up time that
        # commands which never touch backups (status, migrate, health) should not pay.
        from pgrunbook.backup.storage import open_storage

        return open_storage(
            location,
            self.config.root,
            self.config.backup.storage_options(),
            lambda table: self.config.override_for(("backup", table)),
            self.config.source,
        )

    @cached_property
    def owner(self) -> Owner:
        """This project and database, as backup storage knows them (backup/identity.py)."""
        try:
            database: str | None = self.target(direct=True).dbname
        except PgRunbookError:  # the URL is not set here: the project id alone decides
            database = None
        project = self.config.project
        return Owner(
            project.id,
            project.name or project.id,
            database,
            self._system_identifier,
            self._restored_from,
            self._databases,
        )

    def _databases(self) -> set[str] | None:
        """The names of the databases on the environment's server, or None when it cannot be reached."""
        try:
            with connect_server(
                self.target(direct=True),
                purpose=f"identify {self.name}",
                connect_timeout=self.config.postgres.connect_timeout,
            ) as conn:
                return {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
        except Exception:  # unreachable: never a reason to stop a backup command
            return None

    def _restored_from(self) -> str | None:
        """The backup id the database was restored from by pgrunbook (its comment), or None."""
        return self._identify(lambda conn: restored_from(database_comment(conn)))

    def _system_identifier(self) -> str | None:
        """The server's system identifier, or None when the database cannot be reached or read."""
        return self._identify(system_identifier)

    def _identify(self, ask: Callable[[Any], str | None]) -> str | None:
        """One answer about the database for its backups' identity; None when it cannot be reached or
        read (markers and the database's name decide then, as for a listing while the server is down)."""
        try:
            with connect(
                self.target(direct=True),
                purpose=f"identify {self.name}",
                connect_timeout=self.config.postgres.connect_timeout,
            ) as conn:
                return ask(conn)
        except Exception:  # unreachable or unreadable: never a reason to stop a backup command
            return None

    def repository_for(self, storage: Storage) -> BackupRepository:
        """This environment's backups in ``storage`` (the configured one, or a copy's destination)."""
        # Loaded here for start-up time, as open_storage above: manifests, privileges and their models.
        from pgrunbook.backup.repository import BackupRepository

        return BackupRepository(storage, self.name, self.owner, frozenset(self.config.environments))

    @cached_property
    def repository(self) -> BackupRepository:
        return self.repository_for(self.storage)

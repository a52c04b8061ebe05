"""Which databases a restore may write into: never a template, the maintenance database, or the source.

``CREATE DATABASE`` copies ``template1`` by default, so a backup restored into it appears in every
database created afterwards; ``template0`` must stay pristine (it is what pgrunbook itself creates
from); ``postgres`` is where tools and operators connect to administer the server; and the source
database is the one being protected. These are refused before anything is read or created.
"""

from __future__ import annotations

import shlex
from typing import Any

from pgrunbook.errors import ConfigError
from pgrunbook.postgres.names import derived_dbname

MAINTENANCE_DATABASES = ("template0", "template1", "postgres")


def refuse_restore_target(dbname: str, source: str | None) -> None:
    """Raise ConfigError (exit 3) when ``dbname`` must never receive a restore; ``source`` is the
    environment's own database (a lost one is recreated by procedures/restore.py under a staging name,
    then renamed). Names compare exactly, as PostgreSQL's do."""
    if dbname in MAINTENANCE_DATABASES:
        kind = "a template database" if dbname.startswith("template") else "the server's maintenance database"
        raise ConfigError(
            f"refusing to restore into {dbname!r}: it is {kind}"
            + (" and every database created later would copy the backup" if dbname == "template1" else "")
            + "; nothing was changed",
            hint="restore into a new database instead: --into "
            + shlex.quote(derived_dbname(source or "app", "_restored")),
        )
    if source is not None and dbname == source:
        raise ConfigError(
            f"refusing to restore into {dbname!r}: it is this environment's own database; nothing was changed",
            hint=f"restore into a new database (--into {shlex.quote(derived_dbname(dbname, '_restored'))}), "
            f"or replace it with --in-place --confirm {shlex.quote(dbname)}",
        )


def refuse_template(admin: Any, dbname: str) -> None:
    """Raise ConfigError when the server marks ``dbname`` as a template or closed to connections
    (a template made by ``CREATE DATABASE ... IS_TEMPLATE``, whatever its name)."""
    row = admin.execute("SELECT datistemplate, datallowconn FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    if row is not None and (row[0] or not row[1]):
        raise ConfigError(
            f"refusing to restore into {dbname!r}: the server marks it as a template"
            + ("" if row[1] else " closed to connections")
            + "; nothing was changed",
            hint=f"restore into a new database instead: --into {shlex.quote(derived_dbname(dbname, '_restored'))}",
        )

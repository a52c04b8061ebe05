"""Connections through psycopg 3, with failures turned into one line the operator can act on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from pgrunbook.errors import DatabaseError, MissingDatabase
from pgrunbook.postgres.url import DatabaseTarget, redact

APPLICATION_NAME = "pgrunbook"

_KNOWN_FAILURES: list[tuple[str, str, str]] = [
    (
        r"password authentication failed|no password supplied",
        "authentication failed for {where}",
        "check the password in {var}",
    ),
    (
        r'database ".*" does not exist',
        "database {db!r} does not exist on {server}",
        "check the database name in {var}, or create it if it is a new one",
    ),
    (r"role \"[^\"]*\" does not exist", "role {user!r} does not exist on {server}", "check the user name in {var}"),
    (
        r"Connection refused",
        "cannot connect to {server}: connection refused",
        "is PostgreSQL running there and accepting TCP connections? check host and port in {var}",
    ),
    (
        r"could not translate host name|Name or service not known|nodename nor servname",
        "cannot resolve the host of {server}",
        "check the host name in {var}",
    ),
    (
        r"timeout expired|timed out",
        "cannot connect to {server}: timed out",
        "is the host reachable from here (firewall, VPN)? check host and port in {var}",
    ),
    (
        r"No such file or directory",
        "cannot connect to {server}: no server socket there",
        "is PostgreSQL running? check host in {var}",
    ),
]


def describe_connect_error(exc: BaseException, target: DatabaseTarget) -> DatabaseError:
    """Map libpq's multi-line text to one line plus a hint naming the variable the target came from
    (``target.variable``); the password never survives."""
    var = target.origin or target.variable  # a project config's default is named as such, not as the variable
    text = redact(str(exc), target.secrets())
    fields = {
        "server": target.display,
        "where": f"user {target.params.get('user', '?')!r} on {target.display}",
        "db": target.dbname,
        "user": target.params.get("user", "?"),
        "var": var,
    }
    note = f"; {target.note}" if target.note else ""
    for pattern, message, hint in _KNOWN_FAILURES:
        if re.search(pattern, text):
            text, said = message.format(**fields), hint.format(**fields) + note
            if message.startswith("database {db!r}"):
                return MissingDatabase(text, hint=said, dbname=target.dbname, variable=target.variable)
            return DatabaseError(text, hint=said)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "unknown error")
    return DatabaseError(f"cannot connect to {target.display}: {first}", hint=f"check {var}{note}")


def connect(
    target: DatabaseTarget,
    *,
    autocommit: bool = True,
    purpose: str = "",
    connect_timeout: int = 10,
) -> psycopg.Connection:
    """Open a connection named after pgrunbook, so that pg_stat_activity shows who holds what. A failure
    is a DatabaseError whose hint names ``target.variable``."""
    kwargs = target.connect_kwargs()
    kwargs.setdefault("connect_timeout", str(connect_timeout))
    kwargs["application_name"] = f"{APPLICATION_NAME} {purpose}".strip()[:63]
    try:
        return psycopg.connect(**kwargs, autocommit=autocommit)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise describe_connect_error(exc, target) from None


MAINTENANCE_DBNAMES = ("postgres", "template1")


def missing_database(exc: BaseException) -> bool:
    """Is ``exc`` (psycopg's or ours) the server saying the database of the URL does not exist?"""
    if isinstance(exc, MissingDatabase):  # told by describe_connect_error, whatever the name's quotes
        return True
    return not isinstance(exc, DatabaseError) and bool(re.search(r'FATAL:  database ".*" does not exist', str(exc)))


def connect_maintenance(
    target: DatabaseTarget, *, avoid: tuple[str, ...] = (), purpose: str = "", connect_timeout: int = 10
) -> psycopg.Connection:
    """A connection to ``target``'s server on its maintenance database, ``postgres`` then ``template1``
    (as createdb's connectMaintenanceDatabase), skipping the names in ``avoid`` (the databases about to
    be renamed or dropped: no session may sit on them). Raises the last DatabaseError, its hint naming
    the GRANT CONNECT a role refused by both needs."""
    last: DatabaseError | None = None
    for name in MAINTENANCE_DBNAMES:
        if name in avoid:
            continue
        try:
            return connect(target.with_dbname(name), purpose=purpose, connect_timeout=connect_timeout)
        except DatabaseError as exc:
            last = exc
    role = target.params.get("user", "this role")
    assert last is not None  # both names avoided cannot happen: they are two
    raise DatabaseError(
        last.message,
        hint=f"{last.hint}; pgrunbook works from the maintenance database postgres or template1: as an admin, "
        f"GRANT CONNECT ON DATABASE template1 TO {role} (or postgres)",
    )


def connect_server(target: DatabaseTarget, *, purpose: str = "", connect_timeout: int = 10) -> psycopg.Connection:
    """A connection to ``target``'s server for work on other databases (CREATE DATABASE, pg_database):
    to the target's database, or, when that database does not exist (lost, dropped: the disaster a
    restore recovers from), to the maintenance database ``postgres`` or ``template1`` with the same
    credentials, as createdb does (PostgreSQL src/fe_utils/connect_utils.c, connectMaintenanceDatabase:
    postgres, then template1). Raises the target's own MissingDatabase, with what each maintenance
    database answered, when none of them can be reached."""
    try:
        return connect(target, purpose=purpose, connect_timeout=connect_timeout)
    except DatabaseError as exc:
        if not missing_database(exc):
            raise
        first = exc
    refused: list[str] = []
    for name in MAINTENANCE_DBNAMES:
        try:
            return connect(target.with_dbname(name), purpose=purpose, connect_timeout=connect_timeout)
        except DatabaseError as exc:
            refused.append(f"{name}: {exc.message.split(': ', 1)[-1]}")
    role = target.params.get("user", "this role")
    raise MissingDatabase(
        f"{first.message}, and its server's maintenance databases refuse {role} ({'; '.join(refused)}), so "
        "pgrunbook cannot work on the server without it",
        variable=target.variable,  # no dbname: the recovery command would fail the same way
        hint=f"as an admin: GRANT CONNECT ON DATABASE template1 TO {role} (or postgres); or run this as a role "
        "that may connect to one of them",
    )


def database_exists(conn: psycopg.Connection, dbname: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


def exists_on_server(target: DatabaseTarget, dbname: str | None = None, *, purpose: str = "") -> bool:
    """Does ``dbname`` (default: the target's own database) exist on ``target``'s server? Asked through
    connect_server, so a lost database is an answer, not an error. Raises DatabaseError when the server
    cannot be reached."""
    conn = connect_server(target, purpose=purpose)
    try:
        return database_exists(conn, dbname or target.dbname)
    finally:
        conn.close()


@contextmanager
def connection(target: DatabaseTarget, **kwargs: object) -> Iterator[psycopg.Connection]:
    conn = connect(target, **kwargs)  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        conn.close()


def server_version(conn: psycopg.Connection) -> tuple[int, int, str]:
    """(major, minor, full text) of the server, from server_version_num so that betas parse too."""
    num = conn.info.server_version
    text = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    major = num // 10000 if num >= 100000 else num // 100  # 9.6 is 906, as in tools.parse_tool_version
    return major, num % 10000 if num >= 100000 else num % 100, str(text).split()[0]


def quote_ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)

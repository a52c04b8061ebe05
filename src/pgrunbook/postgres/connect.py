"""Connections through psycopg 3, with failures turned into one line the operator can act on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from pgrunbook.errors import DatabaseError
from pgrunbook.postgres.url import DatabaseTarget, redact

APPLICATION_NAME = "pgrunbook"

_KNOWN_FAILURES: list[tuple[str, str, str]] = [
    (
        r"password authentication failed|no password supplied",
        "authentication failed for {where}",
        "check the password in {var}",
    ),
    (
        r'database "[^"]*" does not exist',
        "database {db!r} does not exist on {server}",
        "check the database name in {var}, or create it",
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
            return DatabaseError(message.format(**fields), hint=hint.format(**fields) + note)
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

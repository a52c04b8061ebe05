"""The database a restore goes into: its name checked, its state read (missing, empty, non-empty, or
left by a killed restore), created and marked unfinished until verified, dropped again when a restore
fails, and the leftovers of killed restores swept."""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from pgrunbook.backup.preflight import TargetFacts, target_facts
from pgrunbook.backup.targets import refuse_template
from pgrunbook.errors import ConfigError, DatabaseError, PgRunbookError, printable
from pgrunbook.postgres import runner
from pgrunbook.postgres.catalog import LOCK_CLASS, advisory_lock_holder, lock_key
from pgrunbook.postgres.connect import connect, connect_server
from pgrunbook.postgres.names import quote_ident, valid_dbname
from pgrunbook.postgres.url import DatabaseTarget, redact


def validate_dbname(name: str) -> str:
    """Any name PostgreSQL takes (every statement quotes it): 1 to 63 bytes, no NUL. Raises ConfigError."""
    if not valid_dbname(name):
        raise ConfigError(
            f"invalid database name {name!r} ({len(name.encode())} bytes)",
            hint="a PostgreSQL database name is 1 to 63 bytes (UTF-8) without NUL characters",
        )
    if printable(name, one_line=True) != name:
        raise ConfigError(
            f"invalid database name '{printable(name, one_line=True)}': it holds a control character, so it "
            "would print as another line (or reorder text) in every report about it; nothing was changed",
            hint="choose a name without control characters (newlines, tabs, escape, bidi overrides)",
        )
    return name


UNFINISHED = "pgrunbook: unfinished restore"


def marker(backup_id: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{UNFINISHED} of {backup_id} by pid {os.getpid()} on {socket.gethostname()} since {now}"


def _marker_alive(comment: str) -> bool:
    """Is the restore that wrote this marker still running? Only this host's processes can be seen;
    a marker from another host counts as alive (it may be)."""
    m = re.search(r" by pid (\d+) on (\S+) since", comment)
    if not m or m.group(2) != socket.gethostname():
        return True
    return runner.pid_alive(int(m.group(1)))


def dead_leftovers(admin: psycopg.Connection, prefix: str = "") -> list[tuple[str, str]]:
    """The databases named ``prefix``* that a killed restore left (SIGKILL, a lost machine): (name,
    marker comment) for each whose comment is the unfinished-restore marker and whose writer is gone from
    this host. Another host's marker, a live writer or no marker: not listed. Reads only."""
    rows = admin.execute(
        "SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
        "WHERE starts_with(datname, %s) ORDER BY datname",
        (prefix,),
    ).fetchall()
    return [(name, comment) for name, comment in rows if comment.startswith(UNFINISHED) and not _marker_alive(comment)]


def drop_dead_leftovers(admin: psycopg.Connection, prefix: str) -> list[str]:
    """Drop the databases :func:`dead_leftovers` lists for ``prefix``. Returns ``name (marker)`` for
    each dropped."""
    dropped = []
    for name, comment in dead_leftovers(admin, prefix):
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        dropped.append(f"{name} ({comment.removeprefix('pgrunbook: ')})")
    return dropped


def replace_unfinished(admin: psycopg.Connection, name: str) -> None:
    """Drop the database a killed restore left, so that the same name can be restored again.

    Without FORCE: a session connected to it means somebody may be using it (trial8 #1: rows written by
    hand into the leftover, or a psql left open on it), so it is refused and left untouched, naming the
    sessions. PostgreSQL itself waits up to 5 s for other sessions to end (the killed run's own may still
    be closing). Raises DatabaseError (exit 2) when it cannot drop it."""
    try:
        admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.ObjectInUse:
        rows = admin.execute(
            "SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), coalesce(client_addr::text, 'local') "
            "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
        who = "; ".join(
            f"pid {pid} ({user}, {app or 'no application name'}, from {addr})" for pid, user, app, addr in rows
        )
        raise DatabaseError(
            f"database {name!r} was left by an interrupted restore, but other sessions are connected to it "
            f"({who or 'they ended while being listed'}): it may be in use; nothing was changed",
            hint=f"if it is in use, choose another name for --into; to discard it, end those sessions and run "
            f"the restore again, or DROP DATABASE {quote_ident(name)} yourself",
        ) from None


@dataclass
class LookedAt:
    """What a restore learns of its target before changing anything: the admin connection it goes on
    with, the database's state (``database_state``) and comment, and the server's roles, rights and
    extensions (the pre-flight's facts)."""

    admin: psycopg.Connection
    state: str
    comment: str
    facts: TargetFacts


RACE_HINT = "wait for that restore, or choose another name for --into"


def claim_name(admin: psycopg.Connection, dbname: str) -> None:
    """Hold the name ``dbname`` for this restore: a session-level advisory lock on ``admin``, kept until
    that connection closes (the restore's end, or its death). Two restores into one new name, started
    at once (trial #5), both found it free and both ran CREATE DATABASE: the loser's failed on
    pg_database's unique index and was told to grant CREATEDB, and a look between the winner's CREATE
    and its unfinished-restore marker found an empty database to restore into. Now the second one stops
    here, naming the session holding the name. Raises DatabaseError."""
    key = lock_key(f"restore into:{dbname}")
    got = admin.execute("SELECT pg_try_advisory_lock(%s::int, %s::int)", (LOCK_CLASS, key)).fetchone()
    if got and got[0]:
        return
    holder = advisory_lock_holder(admin, LOCK_CLASS, key)
    since = f", since {holder.since:%Y-%m-%d %H:%M:%S %Z}" if holder and holder.since else ""
    who = f"pid {holder.pid}, {holder.application_name or 'no application_name'}{since}" if holder else "it ended"
    raise DatabaseError(
        f"database {dbname!r} is being restored right now by another restore into the same name ({who}); "
        "nothing was changed",
        hint=RACE_HINT,
    )


def look_at_target(admin: psycopg.Connection, target: DatabaseTarget, dbname: str) -> LookedAt:
    """Read-only but for the name's lock (claim_name, held while ``admin`` is open): raises ConfigError
    for a template, DatabaseError for a database another restore is filling right now (claim_name,
    database_state); a non-empty database is the caller's to refuse."""
    refuse_template(admin, dbname)
    claim_name(admin, dbname)
    state, comment = database_state(admin, target, dbname)
    return LookedAt(admin, state, comment, target_facts(admin))


def still_open(admin: psycopg.Connection) -> bool:
    """Does the server still answer on ``admin``? (It may have closed an idle session meanwhile:
    idle_session_timeout, a restart.)"""
    try:
        admin.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def database_state(admin: psycopg.Connection, target: DatabaseTarget, name: str) -> tuple[str, str]:
    """('missing' | 'empty' | 'non-empty' | 'unfinished', its comment).

    'unfinished' is a database pgrunbook created for a restore that was killed before it finished: its
    comment says so, and the process that wrote it is gone. It was never put into use.
    """
    row = admin.execute(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if row is None:
        return "missing", ""
    comment = str(row[0])
    if comment.startswith(UNFINISHED):
        if _marker_alive(comment):
            raise DatabaseError(
                f"database {name!r} is being restored right now ({comment.removeprefix('pgrunbook: ')}); "
                "nothing was changed",
                hint=RACE_HINT,
            )
        return "unfinished", comment
    with connect(target.with_dbname(name), purpose="restore") as conn:
        count = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
        ).fetchone()
    return ("empty" if count and count[0] == 0 else "non-empty"), comment


class CannotCreate(DatabaseError):
    """The database to restore into could not be created (no CREATEDB, or the server refused);
    ``reason``: the server's reason, redacted."""

    def __init__(self, message: str, reason: str, hint: str | None = None):
        super().__init__(message, hint=hint, cause={"kind": "target", "where": "target", "message": message})
        self.reason = reason


def drop_partial(admin: psycopg.Connection, target: DatabaseTarget, dbname: str) -> str | None:
    """Drop the half-restored database; None when gone, else why not.

    The server may have just restarted (that may be why the restore failed): the admin connection is
    then dead, so a fresh one is tried for a few seconds while the server comes back.
    """
    stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
    try:
        admin.execute(stmt)
        return None
    except psycopg.Error:
        pass
    deadline, why = time.monotonic() + 15, "the server did not answer"
    while time.monotonic() < deadline:
        try:
            # the server's maintenance database when the URL's own is the one restored (disaster recovery)
            with connect_server(target, purpose="drop a partial restore", connect_timeout=3) as conn:
                conn.execute(stmt)
            return None
        except (PgRunbookError, psycopg.Error) as exc:
            why = exc.message if isinstance(exc, PgRunbookError) else str(exc).splitlines()[0]
            time.sleep(0.5)
    return redact(why, target.secrets())


def leftover_hint(dbname: str, why: str) -> str:
    return (
        f"the partial database {dbname!r} could not be dropped ({why}); it was not put into use — "
        f"drop it when the server is back: DROP DATABASE {quote_ident(dbname)}"
    )


def comment_on_database(admin: psycopg.Connection, dbname: str, text: str) -> None:
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname), sql.Literal(text)))


def create_database(admin: psycopg.Connection, server: DatabaseTarget, dbname: str) -> None:
    try:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname)))
    except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation) as exc:
        # created meanwhile by another session (trial8 #7), or being created by it at this very moment:
        # both CREATEs in flight, this one fails on pg_database's unique index (trial #5)
        if isinstance(exc, psycopg.errors.UniqueViolation) and exc.diag.constraint_name != "pg_database_datname_index":
            raise _cannot_create(exc, server, dbname) from None
        m = None
        deadline = time.monotonic() + 3  # the other restore marks its database right after creating it
        while m is None and time.monotonic() < deadline:
            row = admin.execute(
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s",
                (dbname,),
            ).fetchone()
            m = re.search(r" by pid (\d+) on (\S+)", str(row[0]) if row else "")
            if m is None:
                time.sleep(0.1)
        who = f" (pid {m.group(1)} on {m.group(2)})" if m else ""
        raise DatabaseError(
            f"database {dbname!r} was just created by another session{who}, probably another restore into "
            "the same name; nothing was changed",
            hint=RACE_HINT,
        ) from None
    except psycopg.Error as exc:
        raise _cannot_create(exc, server, dbname) from None


def _cannot_create(exc: psycopg.Error, server: DatabaseTarget, dbname: str) -> CannotCreate:
    cause = redact(str(exc).splitlines()[0], server.secrets())
    return CannotCreate(
        f"cannot create database {dbname!r} on {server.display}: {cause}",
        cause,
        hint="grant CREATEDB to the URL's user, or create the empty database yourself",
    )

"""Catalog queries: which tables hold data, their exact row counts, the Prisma migration head."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from pgrunbook.errors import LockBusy

# The tables whose data pg_dump writes: leaf tables outside the system schemas, not extension members.
_DUMPED_TABLES = """
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
USER_TABLES = "SELECT n.nspname, c.relname" + _DUMPED_TABLES + "ORDER BY 1, 2"


def user_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Tables whose data pg_dump writes (leaf tables, not extension members)."""
    return [(r[0], r[1]) for r in conn.execute(USER_TABLES).fetchall()]


UNREADABLE_TABLES = (
    "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner), has_schema_privilege(n.oid, 'USAGE')"
    + _DUMPED_TABLES
    + "  AND NOT (has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'))\nORDER BY 1, 2"
)


@dataclass(frozen=True)
class Unreadable:
    """A table whose data pg_dump must dump and this role cannot read: ``no_usage`` when the schema's
    USAGE is missing (GRANT USAGE ON SCHEMA), else the table's SELECT (GRANT SELECT ON)."""

    schema: str
    table: str
    owner: str
    no_usage: bool


def unreadable_tables(conn: psycopg.Connection) -> list[Unreadable]:
    """The tables of :data:`USER_TABLES` the connected role may not read (catalog only, reads no data).
    pg_dump takes ``LOCK TABLE … IN ACCESS SHARE MODE`` on each and copies its rows, both refused without
    SELECT; when it fails there, its error is the secondary "could not import the requested snapshot"."""
    rows = conn.execute(UNREADABLE_TABLES).fetchall()
    return [Unreadable(r[0], r[1], r[2], not r[3]) for r in rows]


def exact_row_counts(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    """count(*) of every table in one statement: exact, and in the caller's snapshot."""
    return count_tables(conn, user_tables(conn))


def count_tables(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    if not tables:
        return {}
    parts = [
        sql.SQL("SELECT {i}, count(*) FROM {s}.{t}").format(i=sql.Literal(i), s=sql.Identifier(s), t=sql.Identifier(t))
        for i, (s, t) in enumerate(tables)
    ]
    rows = conn.execute(sql.SQL(" UNION ALL ").join(parts)).fetchall()
    return {tables[i]: int(n) for i, n in rows}


@dataclass(frozen=True)
class Head:
    name: str | None
    count: int


def run_read_query(conn: psycopg.Connection, query: str, schema: str) -> None:
    """Run the environment's read query as the application would: ``search_path`` set to the URL's
    ``?schema=`` schema first, as Prisma Client sets it, so an unqualified table name resolves the
    same way in ``health``, drills, restores and rollbacks. Raises what the query raises."""
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(query).fetchall()


def prisma_head(conn: psycopg.Connection, schema: str = "public") -> Head | None:
    """Last applied migration and how many are applied; None without a history table."""
    qualified = sql.Identifier(schema, "_prisma_migrations").as_string(conn)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT migration_name FROM {t} WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL"
            " ORDER BY started_at DESC, migration_name DESC LIMIT 1),"
            " (SELECT count(*) FROM {t} WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL)"
        ).format(t=sql.Identifier(schema, "_prisma_migrations"))
    ).fetchone()
    assert row is not None
    return Head(row[0], int(row[1]))


# Advisory locks of pgrunbook use the two-key form with this class id ("pgrb"), so they can never
# collide with Prisma's single-key lock 72707369.
LOCK_CLASS = 0x70677262


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) - (1 << 31)


@dataclass(frozen=True)
class LockHolder:
    pid: int
    application_name: str
    client: str
    since: datetime | None
    query: str

    @property
    def hidden(self) -> bool:
        """pg_stat_activity hides another role's session details (client, start, query) from a role
        without pg_read_all_stats: its query then reads ``<insufficient privilege>``."""
        return self.query.endswith("<insufficient privilege>")

    def describe(self) -> str:
        if self.hidden:  # client_addr is NULL then, which would read as a local socket (trial11 F16)
            return (
                f"pid {self.pid} ({self.application_name or 'no application_name'}; its client, start and "
                "query are hidden from this role: grant it pg_read_all_stats to see them)"
            )
        since = self.since.strftime("%Y-%m-%d %H:%M:%S %Z") if self.since else "unknown time"
        return (
            f"pid {self.pid} ({self.application_name or 'no application_name'}) "
            f"from {self.client or 'local socket'} since {since}"
        )


def advisory_lock_holder(conn: psycopg.Connection, classid: int, objid: int) -> LockHolder | None:
    row = conn.execute(
        """SELECT a.pid, a.application_name, coalesce(host(a.client_addr), ''), a.backend_start,
                  coalesce(a.query, '')
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.classid::bigint = (%s::bigint & 4294967295)
             AND l.objid::bigint = (%s::bigint & 4294967295) AND l.objsubid = 2
           LIMIT 1""",
        (classid, objid),
    ).fetchone()
    if row is None:
        return None
    return LockHolder(row[0], row[1], row[2], row[3], row[4][:200])


def try_session_lock(conn: psycopg.Connection, name: str, what: str) -> None:
    """Take a session-level advisory lock or say who holds it; released when the connection closes,
    so a killed run never leaves it behind."""
    key = lock_key(name)
    got = conn.execute("SELECT pg_try_advisory_lock(%s::int, %s::int)", (LOCK_CLASS, key)).fetchone()
    if got and got[0]:
        return
    holder = advisory_lock_holder(conn, LOCK_CLASS, key)
    who = holder.describe() if holder else "another session"
    raise LockBusy(
        f"another {what} is running: {who}",
        hint="wait for it to finish; if it is dead, its lock goes when its connection closes "
        + (f"(SELECT pg_terminate_backend({holder.pid}))" if holder else ""),
    )


def system_identifier(conn: psycopg.Connection) -> str | None:
    """The cluster's system identifier (pg_control_system(), set by initdb, the same on its physical
    replicas): with the database name, what tells one database from another of the same name. None when
    this role may not call it (some managed services revoke it)."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row and row[0] is not None else None


def database_comment(conn: psycopg.Connection) -> str | None:
    """The comment on the connected database (``COMMENT ON DATABASE``), or None."""
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    return str(row[0]) if row and row[0] is not None else None

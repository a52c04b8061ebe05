"""The ``_prisma_migrations`` table, read and written exactly as Prisma's schema engine does.

DDL: schema-engine/connectors/sql-schema-connector/src/flavour/postgres.rs (create_migrations_table).
Rows: .../sql_migration_persistence.rs: started -> INSERT (new UUID v4, checksum, started_at = client's
UTC now, logs NULL); success -> applied_steps_count + 1, then finished_at = now; failure -> logs;
resolve --applied -> INSERT with logs '' and started_at = finished_at = now; --rolled-back ->
rolled_back_at = now. Each write commits on its own, outside the migration's script.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

TABLE = "_prisma_migrations"
PRISMA_LOCK_ID = 72707369  # flavour/postgres.rs, acquire_lock

DDL = """CREATE TABLE {table} (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
);"""


@dataclass(frozen=True)
class HistoryRow:
    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int

    @property
    def applied(self) -> bool:
        return self.finished_at is not None and self.rolled_back_at is None

    @property
    def failed(self) -> bool:
        return self.finished_at is None and self.rolled_back_at is None


class History:
    """One schema's history table on one autocommit connection."""

    def __init__(self, conn: psycopg.Connection, schema: str = "public"):
        self.conn = conn
        self.schema = schema
        self.table = sql.Identifier(schema, TABLE)

    def exists(self) -> bool:
        row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table.as_string(self.conn),)).fetchone()
        return bool(row and row[0])

    def schema_tables(self) -> list[str]:
        """Tables in the target schema: a non-empty schema without history is not Prisma's (P3005)."""
        rows = self.conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
            (self.schema,),
        ).fetchall()
        return [r[0] for r in rows if r[0] != TABLE]

    def elsewhere(self) -> list[str]:
        """The other schemas of this database that hold a ``_prisma_migrations`` table, sorted: read from
        the catalog only, so a schema the role may not use is named too. One schema's history missing
        while another has one is what a mistyped ``?schema=`` looks like (trial11 F11)."""
        rows = self.conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND c.relkind IN ('r', 'p') AND n.nspname <> %s ORDER BY 1",
            (TABLE, self.schema),
        ).fetchall()
        return [r[0] for r in rows]

    def create(self) -> None:
        self.conn.execute(sql.SQL(DDL).format(table=self.table))

    def rows(self) -> list[HistoryRow]:
        if not self.exists():
            return []
        cur = self.conn.execute(
            sql.SQL(
                "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, "
                "applied_steps_count FROM {} ORDER BY started_at ASC"
            ).format(self.table)
        )
        return [HistoryRow(*r) for r in cur.fetchall()]

    def record_started(self, name: str, checksum: str) -> str:
        row_id = str(uuid.uuid4())
        self.conn.execute(
            sql.SQL("INSERT INTO {} (id, checksum, started_at, migration_name) VALUES (%s, %s, %s, %s)").format(
                self.table
            ),
            (row_id, checksum, datetime.now(UTC), name),
        )
        return row_id

    def record_success(self, row_id: str) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET applied_steps_count = applied_steps_count + 1 WHERE id = %s").format(self.table),
            (row_id,),
        )
        self.conn.execute(
            sql.SQL("UPDATE {} SET finished_at = %s WHERE id = %s").format(self.table), (datetime.now(UTC), row_id)
        )

    def record_failure(self, row_id: str, logs: str) -> None:
        self.conn.execute(sql.SQL("UPDATE {} SET logs = %s WHERE id = %s").format(self.table), (logs, row_id))

    def mark_applied(self, name: str, checksum: str) -> str:
        row_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, checksum, logs, started_at, finished_at, migration_name) "
                "VALUES (%s, %s, '', %s, %s, %s)"
            ).format(self.table),
            (row_id, checksum, now, now, name),
        )
        return row_id

    def mark_rolled_back(self, row_id: str) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET rolled_back_at = %s WHERE id = %s").format(self.table), (datetime.now(UTC), row_id)
        )

"""``pgrunbook drift A B``: are two environments' migration histories and live schemas the same?

Golden rule 3 of the runbook ("keep staging and production schemas aligned"), checked from the
catalogs rather than trusted: an out-of-band column, index, enum value or constraint shows up here
even when both histories agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgrunbook.environment import Environment
from pgrunbook.postgres.connect import connect, server_version
from pgrunbook.prisma.history import TABLE, History

SYSTEM = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"

QUERIES: dict[str, str] = {
    "table": f"""SELECT n.nspname || '.' || c.relname, c.relkind::text FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND {SYSTEM}
        AND c.relname <> '{TABLE}'""",
    "column": f"""SELECT n.nspname || '.' || c.relname || '.' || a.attname,
        format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE ' NULL' END
        || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm') AND {SYSTEM}
        AND c.relname <> '{TABLE}'""",
    # NOT NULL is compared as a column's nullability (above): PostgreSQL 18 also stores it as a
    # constraint row (contype 'n'), which older majors do not have
    "constraint": f"""SELECT n.nspname || '.' || c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {SYSTEM} AND c.relname <> '{TABLE}' AND k.contype <> 'n'""",
    "index": f"""SELECT n.nspname || '.' || i.relname, pg_get_indexdef(i.oid) FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = i.relnamespace WHERE {SYSTEM} AND c.relname <> '{TABLE}'""",
    "enum": f"""SELECT n.nspname || '.' || t.typname, string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE {SYSTEM} GROUP BY 1""",
    "sequence": f"""SELECT n.nspname || '.' || c.relname, format_type(s.seqtypid, NULL) FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SYSTEM}""",
    "view": f"""SELECT n.nspname || '.' || c.relname, pg_get_viewdef(c.oid) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {SYSTEM}""",
    "function": f"""SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
        md5(pg_get_functiondef(p.oid)) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {SYSTEM} AND p.prokind IN ('f', 'p') AND NOT EXISTS (SELECT 1 FROM pg_depend d
        WHERE d.objid = p.oid AND d.deptype = 'e')""",
    "trigger": f"""SELECT n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {SYSTEM}""",
    # an extension's version, and whether it is the one this server installs by default
    "extension": """SELECT e.extname, e.extversion || CASE WHEN e.extversion = a.default_version
        THEN ' (default)' ELSE '' END FROM pg_extension e LEFT JOIN pg_available_extensions a ON a.name = e.extname""",
}


@dataclass
class DriftResult:
    a: str
    b: str
    history: list[str] = field(default_factory=list)
    schema: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # differences that come with the server majors, not drift

    @property
    def aligned(self) -> bool:
        return not self.history and not self.schema

    def to_dict(self) -> dict[str, object]:
        return {
            "environments": [self.a, self.b],
            "aligned": self.aligned,
            "history": self.history,
            "schema": self.schema,
            "notes": self.notes,
        }


def snapshot(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    snap = {
        kind: {str(k): str(v) for k, v in conn.execute(q).fetchall()}  # type: ignore[arg-type]
        for kind, q in QUERIES.items()
    }
    snap["view"] = {k: canonical_view(v) for k, v in snap["view"].items()}
    return snap


def canonical_view(definition: str) -> str:
    """A view's query as pglast deparses it, column references unqualified where the query reads one
    relation only. pg_get_viewdef's text changes between majors: 16 stopped qualifying columns of a
    single-relation query (`SELECT id FROM member` where 15 says `SELECT member.id FROM member`), and
    spacing and parentheses differ; the query is the same. Unparsable text is compared as it is."""
    from pglast import parse_sql
    from pglast.parser import ParseError
    from pglast.stream import RawStream
    from pglast.visitors import Visitor

    class _Refs(Visitor):  # type: ignore[misc]
        def __init__(self) -> None:
            self.relations, self.joins = 0, 0
            self.columns: list[Any] = []

        def visit_RangeVar(self, ancestors: object, node: object) -> None:
            self.relations += 1

        def visit_JoinExpr(self, ancestors: object, node: object) -> None:
            self.joins += 1

        def visit_ColumnRef(self, ancestors: object, node: object) -> None:
            self.columns.append(node)

    try:
        statements = parse_sql(definition)
        refs = _Refs()
        refs(statements)
        if refs.relations == 1 and not refs.joins:
            for column in refs.columns:
                column.fields = column.fields[-1:]
        return str(RawStream()(statements[0]))
    except (ParseError, IndexError, ValueError):
        return definition


def diff_maps(kind: str, a: Mapping[str, str], b: Mapping[str, str], name_a: str, name_b: str) -> list[str]:
    """Pure: what is only in one side, and what differs, named so an operator can find it."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            out.append(f"{kind} {key}: only in {name_a} ({a[key]})")
        elif key not in a:
            out.append(f"{kind} {key}: only in {name_b} ({b[key]})")
        elif a[key] != b[key]:
            out.append(f"{kind} {key}: {name_a} has {a[key]!r}, {name_b} has {b[key]!r}")
    return out


def _history(conn: psycopg.Connection, schema: str) -> tuple[dict[str, str], list[str]]:
    history = History(conn, schema)
    if not history.exists():
        return {}, []
    rows = history.rows()
    return ({r.migration_name: r.checksum for r in rows if r.applied}, [r.migration_name for r in rows if r.failed])


def compare_environments(env_a: Environment, env_b: Environment) -> DriftResult:
    result = DriftResult(env_a.name, env_b.name)
    snaps = []
    histories = []
    found: list[int] = []
    for env in (env_a, env_b):
        with connect(env.target(direct=True), purpose="drift") as conn:
            snaps.append(snapshot(conn))
            histories.append(_history(conn, env.target().schema))
            found.append(server_version(conn)[0])
    majors = (found[0], found[1])
    (applied_a, failed_a), (applied_b, failed_b) = histories
    result.history = diff_maps("migration", applied_a, applied_b, env_a.name, env_b.name)
    for name in failed_a:
        result.history.append(f"migration {name}: failed (unresolved) in {env_a.name}")
    for name in failed_b:
        result.history.append(f"migration {name}: failed (unresolved) in {env_b.name}")
    for kind in QUERIES:
        if kind == "extension":
            continue
        result.schema.extend(diff_maps(kind, snaps[0][kind], snaps[1][kind], env_a.name, env_b.name))
    drift, notes = extension_differences(snaps[0]["extension"], snaps[1]["extension"], env_a.name, env_b.name, majors)
    result.schema.extend(drift)
    result.notes.extend(notes)
    return result


def extension_differences(
    a: Mapping[str, str], b: Mapping[str, str], name_a: str, name_b: str, majors: tuple[int, int]
) -> tuple[list[str], list[str]]:
    """(drift, notes). Pure. An extension at each server's own default version, on servers of different
    majors, differs only because the majors do (pgcrypto is 1.3 on 15, 1.4 on 18): a note, not drift.
    Otherwise a version difference is drift: someone ran ALTER EXTENSION ... UPDATE on one side."""
    drift, notes = [], []
    for line in diff_maps("extension", a, b, name_a, name_b):
        key = line.split(" ", 2)[1].rstrip(":")
        both_default = key in a and key in b and a[key].endswith(" (default)") and b[key].endswith(" (default)")
        if both_default and majors[0] != majors[1]:
            va, vb = a[key].removesuffix(" (default)"), b[key].removesuffix(" (default)")
            notes.append(
                f"extension {key}: {name_a} has {va}, {name_b} has {vb}: each is its server's default "
                f"(PostgreSQL {majors[0]} and {majors[1]}); not drift"
            )
        else:
            drift.append(line)
    return drift, notes

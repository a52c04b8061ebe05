"""Who owns the app's schema: the owners of its tables, sequences, views, types and functions, the role
they belong to ("the app's role"), and what to run when some belong to another role.

A migration applied by an admin (a superuser, or an operator's role) leaves the objects it creates
owned by that admin; the app's role, which owned everything before, then cannot ALTER them in its next
migration ("must be owner of table …"). `migrate deploy` uses `SchemaOwnership.app_role` to run the
scripts as that role (SET ROLE), and `doctor` reports the objects that belong to someone else.
Objects that belong to an extension are left out (the extension's owner owns them by design).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import psycopg
from psycopg import sql

_OBJECTS = """
SELECT o.kind, o.name, o.owner, o.follows
FROM (
  SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                        WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind,
         format('%%I.%%I', n.nspname, c.relname) AS name, pg_get_userbyid(c.relowner) AS owner,
         c.oid, 'pg_class'::regclass AS cls,
         -- a serial's or identity column's sequence follows its table's owner (ALTER TABLE moves both)
         (SELECT format('%%I.%%I', tn.nspname, t.relname)
            FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
           WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) AS follows
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  UNION ALL
  SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%%I.%%I', n.nspname, t.typname),
         pg_get_userbyid(t.typowner), t.oid, 'pg_type'::regclass, NULL
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname = %(schema)s AND t.typtype IN ('e', 'd', 'r', 'c')
    AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
         format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
         pg_get_userbyid(p.proowner), p.oid, 'pg_proc'::regclass, NULL
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = %(schema)s
) o
WHERE NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = o.cls AND e.objid = o.oid AND e.deptype = 'e')
ORDER BY o.name
"""


@dataclass(frozen=True)
class SchemaObject:
    """One object of the schema: ``kind`` as ALTER spells it ("TABLE", "SEQUENCE", "FUNCTION" …),
    ``name`` quoted and schema-qualified (functions with their argument types), its ``owner``, and for a
    serial/identity sequence the table it ``follows``."""

    kind: str
    name: str
    owner: str
    follows: str | None = None

    def describe(self) -> str:
        return f"{self.kind.lower()} {self.name}"


@dataclass(frozen=True)
class SchemaOwnership:
    """The owners of a schema's objects, the database's owner and which roles are superusers."""

    schema: str
    objects: tuple[SchemaObject, ...]
    database_owner: str
    superusers: frozenset[str]

    def counts(self) -> Counter[str]:
        return Counter(o.owner for o in self.objects)

    @property
    def app_role(self) -> str | None:
        """The role the app's objects belong to: among the owners, the non-superuser owning the most
        objects (a tie goes to the database's owner, then by name); when only superusers own objects,
        the one owning the most; an empty schema: the database's owner unless it is a superuser. None
        when nothing says (an empty schema in a database a superuser owns)."""
        counts = self.counts()
        if not counts:
            return None if self.database_owner in self.superusers else self.database_owner
        regular = {r: n for r, n in counts.items() if r not in self.superusers}
        pool = regular or dict(counts)
        return max(pool, key=lambda r: (pool[r], r == self.database_owner, r))

    def foreign(self) -> list[SchemaObject]:
        """Objects owned by a role other than `app_role`."""
        role = self.app_role
        return [o for o in self.objects if role is not None and o.owner != role]

    def fix_statements(self) -> list[str]:
        """``ALTER … OWNER TO <app role>`` for each foreign object. A serial's or identity column's
        sequence is left to its table: PostgreSQL refuses to change its owner alone, and ALTER TABLE
        moves it along."""
        role = self.app_role
        if role is None:
            return []
        quoted = _ident(role)
        return [f"ALTER {o.kind} {o.name} OWNER TO {quoted};" for o in self.foreign() if not o.follows]


def _ident(name: str) -> str:
    """A role name as SQL writes it, always double-quoted (a plain name may still be a keyword)."""
    return '"' + name.replace('"', '""') + '"'


def schema_ownership(conn: psycopg.Connection, schema: str) -> SchemaOwnership:
    """Read the owners of ``schema``'s objects (tables, views, sequences, types, domains, functions;
    extension members left out), the connected database's owner and the superuser roles."""
    rows = conn.execute(_OBJECTS, {"schema": schema}).fetchall()
    db = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()").fetchone()
    supers = conn.execute("SELECT rolname FROM pg_roles WHERE rolsuper").fetchall()
    return SchemaOwnership(
        schema=schema,
        objects=tuple(SchemaObject(str(k), str(n), str(o), f) for k, n, o, f in rows),
        database_owner=str(db[0]) if db else "",
        superusers=frozenset(str(r[0]) for r in supers),
    )


def current_role(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else ""


def is_member(conn: psycopg.Connection, member: str, role: str) -> bool:
    """May ``member`` SET ROLE to ``role`` (pg_has_role … 'MEMBER'; superusers may, to any role)?
    False when ``role`` does not exist."""
    row = conn.execute(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s) THEN pg_has_role(%s, %s, 'MEMBER')"
        " ELSE false END",
        (role, member, role),
    ).fetchone()
    return bool(row and row[0])


def set_role(conn: psycopg.Connection, role: str) -> None:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))

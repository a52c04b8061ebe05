"""Who owns what, and who may do what: recorded at backup time, compared after every restore.

Row counts say the data came back; they do not say the app can still use it. The manifest records the
owner and access privileges (ACL) of every object pg_dump dumps — schemas, tables, views, sequences,
functions, types, column grants, default privileges — and of the database itself, read in the dump's
own snapshot. A restore is verified when the restored objects have the same owners and privileges
(mapped to one role with ``--owner``), not only the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from pydantic import BaseModel, ConfigDict, Field

# One row per object: kind, qualified name, owner, ACL ('' when the default). Extension members are
# left out: CREATE EXTENSION re-creates them, owned by whoever runs it.
OBJECTS_SQL = r"""
WITH ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e'),
nsp AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_toast%'
    AND nspname NOT LIKE 'pg\_temp%'
)
SELECT 'schema', quote_ident(n.nspname), pg_get_userbyid(n.nspowner), coalesce(n.nspacl::text, '')
FROM pg_namespace n JOIN nsp ON nsp.oid = n.oid
WHERE NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_namespace'::regclass AND objid = n.oid)
UNION ALL
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
         WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' ELSE 'foreign table' END,
       quote_ident(nsp.nspname) || '.' || quote_ident(c.relname), pg_get_userbyid(c.relowner),
       coalesce(c.relacl::text, '')
FROM pg_class c JOIN nsp ON nsp.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_class'::regclass AND objid = c.oid)
UNION ALL
SELECT 'column', quote_ident(nsp.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(a.attname),
       pg_get_userbyid(c.relowner), a.attacl::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN nsp ON nsp.oid = c.relnamespace
WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped
  AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_class'::regclass AND objid = c.oid)
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
       quote_ident(nsp.nspname) || '.' || quote_ident(p.proname) || '(' ||
         pg_get_function_identity_arguments(p.oid) || ')',
       pg_get_userbyid(p.proowner), coalesce(p.proacl::text, '')
FROM pg_proc p JOIN nsp ON nsp.oid = p.pronamespace
WHERE NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_proc'::regclass AND objid = p.oid)
UNION ALL
SELECT 'type', quote_ident(nsp.nspname) || '.' || quote_ident(t.typname), pg_get_userbyid(t.typowner),
       coalesce(t.typacl::text, '')
FROM pg_type t JOIN nsp ON nsp.oid = t.typnamespace
WHERE (t.typtype IN ('e', 'd', 'r', 'm')
       OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
  AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_type'::regclass AND objid = t.oid)
UNION ALL
SELECT 'default privileges',
       pg_get_userbyid(d.defaclrole) || coalesce(' in ' || quote_ident(n.nspname), '') || ' on ' ||
         CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
           WHEN 'T' THEN 'types' ELSE 'schemas' END,
       pg_get_userbyid(d.defaclrole), d.defaclacl::text
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
ORDER BY 1, 2
"""

DATABASE_SQL = """
SELECT pg_get_userbyid(datdba), coalesce(datacl::text, '') FROM pg_database WHERE datname = current_database()
"""


KINDS = (
    "default privileges", "materialized view", "foreign table", "aggregate", "procedure", "function",
    "sequence", "column", "schema", "table", "type", "view",
)  # fmt: skip


class Privileges(BaseModel):
    """The manifest's record, compact: ``owners`` maps each owner to its objects ("table public.t"),
    ``acl`` holds the objects whose privileges are not the default."""

    model_config = ConfigDict(extra="forbid")
    database_owner: str
    database_acl: str = ""
    owners: dict[str, list[str]] = Field(default_factory=dict)
    acl: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, database_owner: str, database_acl: str, rows: Iterable[tuple[str, str, str, str]]) -> Privileges:
        owners: dict[str, list[str]] = {}
        acl: dict[str, str] = {}
        for kind, name, owner, items in rows:
            key = f"{kind} {name}"
            owners.setdefault(owner, []).append(key)
            if items:
                acl[key] = items
        return cls(database_owner=database_owner, database_acl=database_acl, owners=owners, acl=acl)

    @property
    def objects(self) -> list[tuple[str, str, str, str]]:
        """[(kind, name, owner, acl)], sorted."""
        out = []
        for owner, keys in self.owners.items():
            for key in keys:
                kind = next((k for k in KINDS if key.startswith(k + " ")), key.partition(" ")[0])
                out.append((kind, key[len(kind) + 1 :], owner, self.acl.get(key, "")))
        return sorted(out)

    def roles(self) -> set[str]:
        """Every role named as an owner or in a grant."""
        named = set(self.owners) | {self.database_owner}
        for text in [*self.acl.values(), self.database_acl]:
            named |= {g for g, _, _ in acl_items(text) if g} | {r for _, _, r in acl_items(text) if r}
        return named


def read_privileges(conn: psycopg.Connection) -> Privileges:
    """Owners and privileges of the database ``conn`` is on, in its current snapshot."""
    rows = conn.execute(OBJECTS_SQL).fetchall()
    db = conn.execute(DATABASE_SQL).fetchone()
    assert db is not None
    return Privileges.of(str(db[0]), str(db[1]), [(str(k), str(n), str(o), str(a)) for k, n, o, a in rows])


def acl_items(acl: str) -> list[tuple[str, str, str]]:
    """'{app=arwdDxt/app,=r/app,"odd role"=r/app}' → [(grantee, privileges, grantor)]; '' grantee is PUBLIC."""
    body = acl.strip()
    if not body or body == "{}":
        return []
    body = body[1:-1] if body.startswith("{") else body
    items, cur, quoted = [], "", False
    for ch in body:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    out = []
    for item in items:
        grantee, rest = _take_role(item)
        privs, _, grantor = rest.removeprefix("=").partition("/")
        out.append((grantee, privs, _take_role(grantor)[0]))
    return out


def _take_role(text: str) -> tuple[str, str]:
    """A role name at the start of ``text`` (double-quoted with "" inside, or bare) and what follows."""
    if not text.startswith('"'):
        name, sep, rest = text.partition("=")
        return name, sep + rest
    i, name = 1, ""
    while i < len(text):
        if text[i] == '"':
            if text[i + 1 : i + 2] == '"':
                name += '"'
                i += 2
                continue
            return name, text[i + 1 :]
        name += text[i]
        i += 1
    return name, ""


def _unquote_role(name: str) -> str:
    name = name.strip()
    if name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name


@dataclass(frozen=True)
class Mapping:
    """How a restore was told to treat roles: every owner → ``owner`` (``--owner``), and roles whose
    grants were left out (``--skip-missing-roles``)."""

    owner: str | None = None
    skipped_roles: frozenset[str] = frozenset()
    # the target's own owner of a new database's ``public`` (preflight.TargetFacts.public_owner): with
    # ``--owner`` pg_restore (--no-owner) leaves ``public`` as the server made it
    public_owner: str | None = None


_KEEP_OWNER = {"pg_database_owner"}  # the public schema's owner (PostgreSQL 15+): follows the database


def expected(source: Privileges, mapping: Mapping) -> dict[tuple[str, str], tuple[str, frozenset[tuple[str, str]]]]:
    """What the restored objects should show: (kind, name) → (owner, {(grantee, privileges)}).

    Grantors are left out of the comparison: a superuser's GRANT is recorded as made by the owner, and
    with ``--owner`` the owner changes."""
    out = {}
    for kind, name, owner, acl in source.objects:
        new_owner = mapping.owner if mapping.owner and owner not in _KEEP_OWNER else owner
        if mapping.owner and mapping.public_owner and (kind, name) == ("schema", "public"):
            new_owner = mapping.public_owner
        items = set()
        for grantee, privs, _grantor in acl_items(acl):
            if grantee in mapping.skipped_roles:
                continue
            if mapping.owner and grantee == owner and owner not in _KEEP_OWNER:
                grantee = new_owner
            items.add((grantee, privs))
        out[(kind, name)] = (new_owner, frozenset(items))
    return out


def _actual(restored: Privileges) -> dict[tuple[str, str], tuple[str, frozenset[tuple[str, str]]]]:
    return {(k, n): (o, frozenset((g, p) for g, p, _ in acl_items(a))) for k, n, o, a in restored.objects}


def compare(source: Privileges, restored: Privileges, mapping: Mapping) -> list[str]:
    """Differences between the source's owners and privileges and the restored ones, one line each
    (empty when equal). Default privileges of a mapped owner cannot be expected exactly and are
    compared only without ``--owner``."""
    want = expected(source, mapping)
    have = _actual(restored)
    diffs: list[str] = []
    for key in sorted(set(want) | set(have)):
        kind, name = key
        if mapping.owner and kind == "default privileges":
            continue
        if key not in have:
            diffs.append(f"{kind} {name}: missing after the restore")
            continue
        if key not in want:
            diffs.append(f"{kind} {name}: not in the backup")
            continue
        (w_owner, w_acl), (h_owner, h_acl) = want[key], have[key]
        if w_owner != h_owner:
            diffs.append(f"{kind} {name}: owned by {h_owner}, expected {w_owner}")
        elif w_acl != h_acl and not (_default_acl(w_acl, kind, w_owner) and _default_acl(h_acl, kind, h_owner)):
            diffs.append(f"{kind} {name}: privileges {_show(h_acl)}, expected {_show(w_acl)}")
    return diffs


# What an empty (NULL) ACL grants, as PostgreSQL's acldefault() spells it (src/backend/utils/adt/acl.c):
# the owner every privilege of the kind (tables gained MAINTAIN, "m", in 17), PUBLIC EXECUTE on
# routines and USAGE on types. Columns have no owner entry: their NULL ACL adds nothing to the table's.
_OWNER_DEFAULT = {
    "schema": {"UC"}, "table": {"arwdDxt", "arwdDxtm"}, "view": {"arwdDxt", "arwdDxtm"},
    "materialized view": {"arwdDxt", "arwdDxtm"}, "foreign table": {"arwdDxt", "arwdDxtm"},
    "sequence": {"rwU"}, "function": {"X"}, "procedure": {"X"}, "aggregate": {"X"}, "type": {"U"},
}  # fmt: skip
_PUBLIC_DEFAULT = {"function": "X", "procedure": "X", "aggregate": "X", "type": "U"}


def _default_acl(items: frozenset[tuple[str, str]], kind: str, owner: str) -> bool:
    """Whether ``items`` grant what an empty ACL grants: empty, or written out as acldefault() would
    (an owner's explicit full grant left alone when ``--skip-missing-roles`` dropped the others)."""
    if not items:
        return True
    owner_privs = {p for g, p in items if g == owner}
    others = {(g, p) for g, p in items if g != owner}
    public = {("", _PUBLIC_DEFAULT[kind])} if kind in _PUBLIC_DEFAULT else set()
    return len(owner_privs) == 1 and owner_privs <= _OWNER_DEFAULT.get(kind, set()) and others == public


def _show(items: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{g or 'PUBLIC'}={p}" for g, p in sorted(items)) + "}"


def summary(source: Privileges, mapping: Mapping) -> str:
    roles = sorted(set(source.owners) if not mapping.owner else {mapping.owner})
    return f"{len(source.objects)} objects; owners {', '.join(roles)}"

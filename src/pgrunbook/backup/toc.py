"""The archive's table of contents, read for what a restore needs from the target before it starts.

``pg_restore --list`` names every entry with its type, schema, name and owner; the SQL of the entries
that name other roles (grants, default privileges, policies) comes from ``pg_restore -f - --use-list``
of just those entries, which reads only the archive's header. Both are parsed here, purely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgrunbook.postgres.tool_errors import Entry, parse_entry

_LIST_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
# Entries whose SQL names roles other than the owner.
ROLE_ENTRY_TYPES = ("ACL", "DEFAULT ACL", "POLICY")
# pg_dump's script: "-- TOC entry 3360 (class 0 OID 0)" starts each entry's block (with --verbose).
_SCRIPT_ENTRY = re.compile(r"^-- TOC entry (\d+) \(class \d+ OID \d+\)$", re.MULTILINE)
_BUILTIN_ROLES = {"PUBLIC", "CURRENT_USER", "SESSION_USER", "CURRENT_ROLE"}


@dataclass(frozen=True)
class TocEntry(Entry):
    """One line of ``pg_restore --list``: ``215; 1259 16390 TABLE public Customer app``."""

    line: str = ""


def parse_listing(listing: str) -> list[TocEntry]:
    """Entries of a ``pg_restore --list`` output, in archive order; comment lines are skipped.

    The list prints type, schema, name and owner separated by single spaces without quoting; the type
    is matched against pg_dump's known types, the schema is one word, the owner the last word (a role
    name with a space in it is read wrongly: pg_dump prints it unquoted)."""
    out = []
    for line in listing.splitlines():
        m = _LIST_LINE.match(line)
        if not m:
            continue
        e = parse_entry(m.group(4), int(m.group(1)))
        schema, _, name = e.name.partition(" ")
        if not name:  # entries without a schema print "-"; a bare word is the name
            schema, name = "-", schema
        out.append(TocEntry(e.dump_id, e.type, name, "" if schema == "-" else schema, e.owner, line))
    return out


def by_id(entries: list[TocEntry]) -> dict[int, Entry]:
    return {e.dump_id: e for e in entries}


def split_script(script: str) -> dict[int, str]:
    """SQL of each entry in a ``pg_restore --verbose -f -`` script, by dump id (comments dropped)."""
    out: dict[int, str] = {}
    marks = list(_SCRIPT_ENTRY.finditer(script))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(script)
        body = script[m.end() : end]
        sql = "\n".join(
            ln for ln in body.splitlines() if ln.strip() and not ln.startswith("--") and not ln.startswith("\\")
        )
        out[int(m.group(1))] = sql.strip()
    return out


def statements(sql: str) -> list[str]:
    """The statements of an ACL / DEFAULT ACL / POLICY entry (one per line as pg_dump writes them)."""
    out, current = [], ""
    for line in sql.splitlines():
        current = f"{current}\n{line}" if current else line
        if line.rstrip().endswith(";"):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'  # an SQL identifier, quoted or not
_IDENT = IDENT
_ROLE_LIST = rf"({_IDENT}(?:\s*,\s*{_IDENT})*)"


def _unquote(ident: str) -> str:
    ident = ident.strip()
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower() if ident.upper() not in _BUILTIN_ROLES else ident.upper()


def _roles(listed: str) -> set[str]:
    return {_unquote(r) for r in re.findall(_IDENT, listed)}


def roles_named(statement: str) -> set[str]:
    """Roles a GRANT / REVOKE / ALTER DEFAULT PRIVILEGES / CREATE POLICY statement names (PUBLIC and
    CURRENT_USER and the like are not roles the target must have)."""
    found: set[str] = set()
    m = re.search(rf"\bFOR ROLE\s+{_ROLE_LIST}", statement, re.IGNORECASE)
    if m:
        found |= _roles(m.group(1))
    if re.match(r"^\s*(ALTER DEFAULT PRIVILEGES\b.*?\s)?GRANT\b", statement, re.IGNORECASE | re.DOTALL):
        m = re.search(rf"\sTO\s+{_ROLE_LIST}", statement, re.IGNORECASE)
        if m:
            found |= _roles(m.group(1))
    elif re.match(r"^\s*(ALTER DEFAULT PRIVILEGES\b.*?\s)?REVOKE\b", statement, re.IGNORECASE | re.DOTALL):
        m = re.search(rf"\sFROM\s+{_ROLE_LIST}", statement, re.IGNORECASE)
        if m:
            found |= _roles(m.group(1))
    elif re.match(r"^\s*CREATE POLICY\b", statement, re.IGNORECASE):
        m = re.search(rf"\sTO\s+{_ROLE_LIST}", statement, re.IGNORECASE)
        if m:
            found |= _roles(m.group(1))
    m = re.search(rf"\sGRANTED BY\s+({_IDENT})", statement, re.IGNORECASE)
    if m:
        found |= _roles(m.group(1))
    return {r for r in found if r not in _BUILTIN_ROLES}


# Entries only a superuser may create; extensions and languages depend on the target (see preflight).
SUPERUSER_TYPES = ("EVENT TRIGGER", "FOREIGN DATA WRAPPER", "TRANSFORM", "ACCESS METHOD", "SUBSCRIPTION")

"""Before a restore or drill creates anything: can this target take this archive?

From the archive's table of contents (owners, grants, default privileges, policies and the roles they
name; event triggers, extensions) and the target's catalog (its roles, whether the restoring role is a
superuser or a member of the owners, which extensions need a superuser there), every problem pg_restore
would otherwise meet half-way through is named before, one line each, with what to do: create the role,
restore with ``--owner ROLE``, or leave the objects out with an explicit flag the report shows.

``plan`` is pure; ``target_facts`` reads the catalog.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from pgrunbook.backup.toc import (
    IDENT,
    ROLE_ENTRY_TYPES,
    SUPERUSER_TYPES,
    TocEntry,
    roles_named,
    split_script,
    statements,
)
from pgrunbook.postgres import runner


@dataclass(frozen=True)
class RestoreOptions:
    """How roles are treated: ``owner`` gives every object (and the database) to one role;
    ``skip_missing_roles`` leaves out grants and policies naming roles the target lacks;
    ``skip_superuser_objects`` leaves out what only a superuser may create."""

    owner: str | None = None
    skip_missing_roles: bool = False
    skip_superuser_objects: bool = False

    def describe(self) -> list[str]:
        out = [f"--owner {self.owner}"] if self.owner else []
        if self.skip_missing_roles:
            out.append("--skip-missing-roles")
        if self.skip_superuser_objects:
            out.append("--skip-superuser-objects")
        return out


@dataclass(frozen=True)
class TargetFacts:
    """What the target server says about roles and extensions, as seen by the restoring role."""

    role: str
    superuser: bool
    roles: frozenset[str]
    member_of: frozenset[str]  # roles the restoring role may give objects to (itself included)
    extensions: Mapping[str, bool] = field(default_factory=dict)  # available name → needs a superuser
    createdb: bool = True
    superusers: frozenset[str] = frozenset()
    # the owner of ``public`` in a database created from template0 on this server: pg_database_owner
    # on 15+, the bootstrap superuser before (PostgreSQL 15 release notes, "public schema")
    public_owner: str | None = None


@dataclass(frozen=True)
class Finding:
    kind: str  # missing_role, owner_rights, superuser, missing_extension, owner
    subject: str
    what: tuple[str, ...]  # entries that need it, e.g. "ACL on TABLE public.t"
    action: str

    def line(self) -> str:
        what = tuple(dict.fromkeys(self.what))  # an object named twice (two entries) is listed once
        shown = ", ".join(what[:3]) + (f" and {len(what) - 3} more" if len(what) > 3 else "")
        return f"{self.subject} ({shown}): {self.action}" if shown else f"{self.subject}: {self.action}"


@dataclass
class Preflight:
    findings: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # entries left out on an explicit flag, one line each
    skip_ids: set[int] = field(default_factory=set)
    deferred: list[str] = field(default_factory=list)  # statements of partly skipped grant entries
    skipped_roles: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.findings

    def use_list(self, entries: Iterable[TocEntry]) -> str:
        """A ``pg_restore --use-list`` file: every entry, the skipped ones commented out."""
        return "".join(f"{';' if e.dump_id in self.skip_ids else ''}{e.line}\n" for e in entries)


def _what(e: TocEntry) -> str:
    return e.describe()


def plan(
    entries: list[TocEntry],
    definitions: Mapping[int, str],
    facts: TargetFacts,
    options: RestoreOptions,
    database_owner: str | None = None,
    creates: bool = False,
) -> Preflight:
    """Findings that block the restore, and what the explicit flags leave out.

    ``definitions``: SQL of the ACL, DEFAULT ACL and POLICY entries by dump id (``toc.split_script``).
    ``database_owner``: the backed-up database's owner (the manifest's), given to the new database."""
    out = Preflight()
    if creates and not facts.superuser and not facts.createdb:
        out.findings.append(
            Finding(
                "createdb",
                f"role {facts.role}",
                (),
                f'may not create databases: ALTER ROLE "{facts.role}" CREATEDB, or create the database '
                "beforehand (an empty one is used)",
            )
        )
    if options.owner:
        _map_default_privileges(out, entries, definitions, options.owner)
    _owners(out, entries, facts, options, database_owner)
    _named_roles(out, entries, definitions, facts, options)
    if not facts.superuser:
        _superuser_only(out, entries, facts, options)
    _extensions_missing(out, entries, facts)
    return out


def _owners(
    out: Preflight, entries: list[TocEntry], facts: TargetFacts, options: RestoreOptions, database_owner: str | None
) -> None:
    if options.owner:
        if options.owner not in facts.roles:
            out.findings.append(
                Finding(
                    "missing_role",
                    f"role {options.owner}",
                    (),
                    f'given to --owner, it does not exist on the target: create it (CREATE ROLE "{options.owner}") '
                    "or name another",
                )
            )
        elif not facts.superuser and options.owner not in facts.member_of:
            superuser = options.owner in facts.superusers
            out.findings.append(
                Finding(
                    "owner_rights",
                    f"role {options.owner}",
                    (),
                    f"{facts.role} may not act as it (a superuser): restore as a superuser, or give the objects "
                    f"to a role {facts.role} may act as (--owner {facts.role})"
                    if superuser
                    else f'{facts.role} may not act as it: GRANT "{options.owner}" TO "{facts.role}", or restore '
                    "as a superuser",
                )
            )
        return
    by_owner: dict[str, list[str]] = {}
    for e in entries:
        # data entries fill objects their own entries create (and own): listed once, as the object
        if e.owner and e.type not in ("ACL", "COMMENT", "DEFAULT ACL", "SECURITY LABEL", "TABLE DATA", "SEQUENCE SET"):
            if _server_default_public(e, facts):
                continue  # pg_restore's ALTER SCHEMA public OWNER TO changes nothing: no right needed
            by_owner.setdefault(e.owner, []).append(_what(e))
    if database_owner:
        by_owner.setdefault(database_owner, []).insert(0, "the database")
    for owner, what in sorted(by_owner.items()):
        if owner not in facts.roles:
            out.findings.append(
                Finding(
                    "missing_role",
                    f"role {owner}",
                    tuple(what),
                    f'owns objects but does not exist on the target: create it (CREATE ROLE "{owner}"), '
                    "or restore with --owner ROLE to give every object to one role",
                )
            )
        elif not facts.superuser and owner not in facts.member_of:
            grant = "" if owner in facts.superusers else f'GRANT "{owner}" TO "{facts.role}", '
            out.findings.append(
                Finding(
                    "owner_rights",
                    f"role {owner}",
                    tuple(what),
                    f"owns objects that {facts.role} may not give to it"
                    + (" (a superuser: only a superuser may)" if not grant else "")
                    + f": {grant}restore as a superuser, or restore with --owner ROLE",
                )
            )


def _server_default_public(e: TocEntry, facts: TargetFacts) -> bool:
    """The archive's ``public`` schema already has the owner a new database's ``public`` has there (the
    bootstrap superuser on PostgreSQL 13/14): restoring it needs no right, as pg_restore itself shows."""
    default = facts.public_owner
    return e.type == "SCHEMA" and e.name == "public" and default is not None and e.owner == default


def _map_default_privileges(
    out: Preflight, entries: list[TocEntry], definitions: Mapping[int, str], owner: str
) -> None:
    """With ``--owner``, default privileges an owner set for itself (``FOR ROLE app``) become the new
    owner's: the entry is run after pg_restore with the role replaced, instead of failing on it."""
    for e in entries:
        if e.type != "DEFAULT ACL" or e.dump_id not in definitions:
            continue
        out.skip_ids.add(e.dump_id)
        for stmt in statements(definitions[e.dump_id]):
            out.deferred.append(re.sub(rf"\bFOR ROLE\s+{IDENT}", f"FOR ROLE {_quote(owner)}", stmt, count=1))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _named_roles(
    out: Preflight,
    entries: list[TocEntry],
    definitions: Mapping[int, str],
    facts: TargetFacts,
    options: RestoreOptions,
) -> None:
    missing_by_role: dict[str, list[str]] = {}
    for e in entries:
        if e.type not in ROLE_ENTRY_TYPES or e.dump_id not in definitions or e.dump_id in out.skip_ids:
            continue
        stmts = statements(definitions[e.dump_id])
        lacking = [(s, roles_named(s) - facts.roles) for s in stmts]
        names = set().union(*(m for _, m in lacking)) if lacking else set()
        if not names:
            continue
        if options.skip_missing_roles:
            out.skip_ids.add(e.dump_id)
            out.skipped_roles |= names
            if e.type != "POLICY":  # the grants to roles that exist still go in, after pg_restore
                out.deferred.extend(s for s, m in lacking if not m)
            roles = ", ".join(sorted(names))
            out.skipped.append(f"{_what(e)}: names role(s) {roles} the target lacks (--skip-missing-roles)")
            continue
        for name in names:
            missing_by_role.setdefault(name, []).append(_what(e))
    for role, what in sorted(missing_by_role.items()):
        out.findings.append(
            Finding(
                "missing_role",
                f"role {role}",
                tuple(what),
                f'is named by grants or policies but does not exist on the target: create it (CREATE ROLE "{role}"), '
                "or restore with --skip-missing-roles to leave those out",
            )
        )


def _superuser_only(out: Preflight, entries: list[TocEntry], facts: TargetFacts, options: RestoreOptions) -> None:
    needs = [
        e
        for e in entries
        if e.type in SUPERUSER_TYPES or (e.type == "EXTENSION" and facts.extensions.get(e.name, False))
    ]
    if not needs:
        return
    if options.skip_superuser_objects:
        names = {f"{e.type} {e.name}" for e in needs}
        for e in needs:
            out.skip_ids.add(e.dump_id)
            out.skipped.append(f"{_what(e)}: needs a superuser (--skip-superuser-objects)")
        for e in entries:  # their comments and grants would fail without them
            if e.type in ("COMMENT", "ACL", "SECURITY LABEL") and e.name in names:
                out.skip_ids.add(e.dump_id)
        return
    out.findings.append(
        Finding(
            "superuser",
            f"role {facts.role} is not a superuser",
            tuple(_what(e) for e in needs),
            "only a superuser may create these: restore as a superuser, or with --skip-superuser-objects to "
            "leave them out",
        )
    )


def _extensions_missing(out: Preflight, entries: list[TocEntry], facts: TargetFacts) -> None:
    if not facts.extensions:
        return
    for e in entries:
        if e.type == "EXTENSION" and e.name not in facts.extensions and e.dump_id not in out.skip_ids:
            out.findings.append(
                Finding(
                    "missing_extension",
                    f"extension {e.name}",
                    (),
                    "is not installed on the target server: install its package there (e.g. postgresql-contrib)",
                )
            )


def target_facts(conn: psycopg.Connection) -> TargetFacts:
    """The target's roles and extensions, and the connected role's rights."""
    me = conn.execute(
        "SELECT current_user, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert me is not None
    roles = frozenset(r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall())
    member = frozenset(
        r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER')")
    )
    ext = {
        str(name): bool(superuser and not trusted)
        for name, superuser, trusted in conn.execute(
            "SELECT v.name, v.superuser, v.trusted FROM pg_available_extension_versions v "
            "JOIN pg_available_extensions a ON a.name = v.name AND a.default_version = v.version"
        ).fetchall()
    }
    superusers = frozenset(r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolsuper").fetchall())
    public = conn.execute(
        "SELECT CASE WHEN current_setting('server_version_num')::int >= 150000 THEN 'pg_database_owner' "
        "ELSE (SELECT rolname FROM pg_roles WHERE oid = 10) END"
    ).fetchone()
    return TargetFacts(
        str(me[0]), bool(me[1]), roles, member, ext, bool(me[2]), superusers, str(public[0]) if public else None
    )


def report_lines(pre: Preflight) -> list[str]:
    return [f.line() for f in pre.findings]


# What to do, per kind of finding, for the hint under the report (one kind: only its remedy)
_REMEDIES = {
    "createdb": "let the role create databases (ALTER ROLE … CREATEDB) or create the database beforehand",
    "missing_role": "create the missing role, or restore with --owner ROLE (owners) / --skip-missing-roles "
    "(grants and policies)",
    "owner_rights": "restore as a superuser, or with --owner ROLE",
    "superuser": "restore as a superuser, or with --skip-superuser-objects",
    "missing_extension": "install the extension's package on the target server",
}


def remedy(pre: Preflight) -> str:
    """The hint for a refused pre-flight: one finding, its own action; several, the remedy of each kind
    found, once, in the report's order — never the remedies of problems that are not there (trial7 #18:
    a CREATEDB-only problem was told to create roles and pass --owner)."""
    if len(pre.findings) == 1:
        return f"{pre.findings[0].subject}: {pre.findings[0].action}"
    kinds = list(dict.fromkeys(f.kind for f in pre.findings))
    return "each line says what to do: " + "; ".join(_REMEDIES.get(k, "see the line") for k in kinds)


def read_definitions(
    pg_restore: str,
    entries: list[TocEntry],
    *,
    path: str | None = None,
    stream: Iterator[bytes] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> dict[int, str]:
    """SQL of the entries that name roles (grants, default privileges, policies), by dump id.

    ``pg_restore -f - --use-list`` of just those entries prints them from the archive's header, which
    holds every entry's definition: the table data after it is never read (from a stream, reading
    stops once pg_restore has what it needs)."""
    wanted = [e for e in entries if e.type in ROLE_ENTRY_TYPES]
    if not wanted:
        return {}
    fd, list_path = tempfile.mkstemp(prefix="pgrunbook-toc-", suffix=".list")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(e.line + "\n" for e in wanted)
        args = ["--verbose", "--file=-", f"--use-list={list_path}"] + ([path] if path else [])
        out: list[bytes] = []
        with runner.start(
            Path(pg_restore),
            args,
            stdin=subprocess.PIPE if stream is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            inherit_fds=pass_fds,
        ) as tool:
            reader = threading.Thread(target=lambda: out.append(tool.stdout.read()), daemon=True)
            reader.start()
            if stream is not None:
                try:  # not runner.feed: the rest of the stream (the table data) is never needed here
                    for chunk in stream:
                        tool.stdin.write(chunk)
                    tool.stdin.close()
                except (BrokenPipeError, OSError):
                    pass  # pg_restore read what it needed
            tool.wait()
            reader.join()
    finally:
        os.unlink(list_path)
    return split_script(b"".join(out).decode(errors="replace"))

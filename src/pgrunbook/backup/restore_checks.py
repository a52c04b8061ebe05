"""What every restore path (into a new database, in place, rollback, drill) does around pg_restore so
that the app gets its database back: pre-flight the target, restore owners and privileges (or map
them to one role), give the database its owner, compare owners and privileges afterwards, and explain
a failure by its real cause.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from pgrunbook.backup.manifest import Check, Manifest
from pgrunbook.backup.preflight import (
    Preflight,
    RestoreOptions,
    TargetFacts,
    plan,
    read_definitions,
    remedy,
    target_facts,
)
from pgrunbook.backup.privileges import Mapping, compare, read_privileges, summary
from pgrunbook.backup.toc import TocEntry, by_id, parse_listing
from pgrunbook.errors import PreflightFailed
from pgrunbook.postgres.connect import connect, server_version
from pgrunbook.postgres.tool_errors import Cause, cause_of
from pgrunbook.postgres.tools import ClientTools, version_of
from pgrunbook.postgres.url import DatabaseTarget


@dataclass
class Source:
    """Where pg_restore can read the archive: a checked file (path, descriptors to pass), or a fresh
    stream of its bytes from storage."""

    path: str | None = None
    pass_fds: tuple[int, ...] = ()
    stream: Callable[[], Iterator[bytes]] | None = None


@dataclass
class Plan:
    options: RestoreOptions
    preflight: Preflight
    entries: list[TocEntry]
    facts: TargetFacts | None = None
    database_owner: str | None = None  # the owner the new database gets
    notes: list[str] = field(default_factory=list)
    downgrade: Downgrade | None = None  # a backup of a newer major into this older server

    def summary(self) -> str:
        how = f"every object to {self.options.owner}" if self.options.owner else "owners and privileges kept"
        left = f"; {len(self.preflight.skipped)} entries left out" if self.preflight.skipped else ""
        warn = f"; warning: {self.downgrade.warning()}" if self.downgrade is not None else ""
        return f"target ok: {how}{left}{warn}"

    def pg_restore_args(self) -> list[str]:
        """Owners: kept (pg_restore's ALTER … OWNER TO) unless ``--owner`` maps them to one role;
        then created as that role (``--role``, a SET ROLE after connecting)."""
        if not self.options.owner:
            return []
        args = ["--no-owner"]
        if self.facts is None or self.options.owner != self.facts.role:
            args.append(f"--role={self.options.owner}")
        return args

    @contextlib.contextmanager
    def use_list(self) -> Iterator[list[str]]:
        """pg_restore's extra arguments for the duration of its run: owner flags, and a --use-list file
        that leaves out the skipped entries."""
        args = self.pg_restore_args()
        if not self.preflight.skip_ids:
            yield args
            return
        fd, path = tempfile.mkstemp(prefix="pgrunbook-use-", suffix=".list")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.preflight.use_list(self.entries))
            yield [*args, f"--use-list={path}"]
        finally:
            os.unlink(path)

    def mapping(self) -> Mapping:
        public_owner = self.facts.public_owner if self.facts is not None else None
        return Mapping(self.options.owner, frozenset(self.preflight.skipped_roles), public_owner)


@dataclass(frozen=True)
class Downgrade:
    """A backup of a newer server major restored into an older server (break11 #7): PostgreSQL does not
    support loading a newer major's dump into an older server; whatever uses a newer feature fails there
    (a view calling any_value(), new syntax, a newer catalog's options), and only that tells."""

    source: str  # the backed-up server's version, as the manifest records it
    target: str  # the target server's

    def warning(self) -> str:
        return (
            f"backup of PostgreSQL {self.source} into PostgreSQL {self.target} (an older major): PostgreSQL "
            "does not support this; objects using newer features will fail"
        )

    def hint(self) -> str:
        major = version_of(self.source).major
        return (
            f"the backup is of PostgreSQL {self.source} and the target server is PostgreSQL {self.target}, an "
            f"older major, which PostgreSQL does not support: restore into a server of PostgreSQL {major} or "
            "newer (for drills, [backup] drill_database_url_env naming one); the backup itself is not at fault"
        )


def downgrade(manifest: Manifest, target_version: str) -> Downgrade | None:
    """A `Downgrade` when ``manifest``'s server major is newer than ``target_version``'s, else None (an
    unreadable version too: nothing is claimed then)."""
    try:
        newer = version_of(manifest.server_version).major > version_of(target_version).major
    except ValueError:
        return None
    return Downgrade(manifest.server_version.split()[0], target_version.split()[0]) if newer else None


def preflight(
    admin: psycopg.Connection,
    tools: ClientTools,
    manifest: Manifest,
    listing: str,
    options: RestoreOptions,
    source: Source,
    *,
    dbname: str,
    creates: bool = True,
    facts: TargetFacts | None = None,
) -> Plan:
    """Raises PreflightFailed (nothing created) when the target cannot take the archive as it is.
    ``facts``: the target's, when already read (else read here on ``admin``)."""
    entries = parse_listing(listing)
    facts = facts or target_facts(admin)
    version = server_version(admin)[2]
    definitions = read_definitions(
        str(tools.pg_restore),
        entries,
        path=source.path,
        pass_fds=source.pass_fds,
        stream=source.stream() if source.path is None and source.stream is not None else None,
    )
    db_owner = manifest.privileges.database_owner if manifest.privileges else None
    pre = plan(entries, definitions, facts, options, database_owner=db_owner, creates=creates)
    if not pre.ok:
        raise PreflightFailed(
            f"pre-flight: the target cannot take backup {manifest.id} as it is "
            f"({len(pre.findings)} problem{'s' if len(pre.findings) > 1 else ''}); nothing was created",
            hint=remedy(pre),
            details=[f.line() for f in pre.findings],
            cause={"kind": "preflight", "where": "target", "message": "; ".join(f.line() for f in pre.findings)},
        )
    return Plan(options, pre, entries, facts, options.owner or db_owner, downgrade=downgrade(manifest, version))


def give_database(admin: psycopg.Connection, dbname: str, plan: Plan) -> None:
    """The new database gets the backed-up database's owner (or ``--owner``'s role)."""
    owner = plan.database_owner
    if owner and plan.facts is not None and owner != plan.facts.role:
        admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname), sql.Identifier(owner)))


def apply_deferred(target: DatabaseTarget, plan: Plan) -> None:
    """The grants of entries left out for naming missing roles, minus the statements naming them."""
    if not plan.preflight.deferred:
        return
    with connect(target, purpose="restore grants") as conn:
        if plan.options.owner and plan.facts is not None and plan.options.owner != plan.facts.role:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(plan.options.owner)))
        conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
        for stmt in plan.preflight.deferred:
            conn.execute(stmt.encode())


def compare_privileges(manifest: Manifest, target: DatabaseTarget, plan: Plan) -> list[Check]:
    """Owners and privileges of the restored objects against the manifest's (none for old manifests)."""
    if manifest.privileges is None:
        return [
            Check(
                name="owners and privileges",
                ok=True,
                detail="not compared: the backup was taken before pgrunbook recorded them",
            )
        ]
    with connect(target, purpose="verify privileges") as conn:
        restored = read_privileges(conn)
    diffs = compare(manifest.privileges, restored, plan.mapping())
    if plan.database_owner and restored.database_owner != plan.database_owner:
        diffs.insert(0, f"the database: owned by {restored.database_owner}, expected {plan.database_owner}")
    left = f"; {len(plan.preflight.skipped)} entries left out as asked" if plan.preflight.skipped else ""
    return [
        Check(
            name="owners and privileges",
            ok=not diffs,
            detail=(f"equal to the backup's: {summary(manifest.privileges, plan.mapping())}{left}")
            if not diffs
            else "differ: " + "; ".join(diffs[:5]) + (f" and {len(diffs) - 5} more" if len(diffs) > 5 else ""),
        )
    ]


def cause_of_restore(
    lines: list[str], rc: int, target: DatabaseTarget, plan: Plan | None, ignorable: Sequence[re.Pattern[str]] = ()
) -> Cause:
    """pg_restore's failure explained (postgres/tool_errors.py), its entry named with the archive's
    schema, the role named the one that acted (``--owner``, else the connecting one)."""
    toc = by_id(plan.entries) if plan is not None else None
    acting = plan.options.owner if plan is not None and plan.options.owner else target.params.get("user")
    cause = cause_of(
        "pg_restore", lines, rc=rc, role=str(acting or ""), toc=toc, ignorable=ignorable, secrets=target.secrets()
    )
    if plan is not None and plan.downgrade is not None and cause.where in ("definition", "tool"):
        # the definition is not at fault, nor the tool: the target is older than what the backup holds
        return replace(cause, kind="downgrade", where="target", hint=plan.downgrade.hint())
    return cause

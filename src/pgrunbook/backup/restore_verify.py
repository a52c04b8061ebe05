"""Verifying a restored database: exact row counts equal to the manifest (counted in parallel, or
already while pg_restore built indexes) and the application's read query."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from pgrunbook.backup.manifest import Check, Manifest
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError, ReadQueryFailed
from pgrunbook.postgres.catalog import count_tables, run_read_query, user_tables
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.names import quote_ident
from pgrunbook.postgres.url import DatabaseTarget


def parallel_row_counts(
    target: DatabaseTarget, manifest: Manifest, known: dict[tuple[str, str], int] | None = None
) -> dict[tuple[str, str], int]:
    """Exact counts of a restored copy, biggest tables spread over one connection per core: nothing
    writes to it, so no shared snapshot is needed, and verification costs less of the restore's time.
    `known`: tables already counted once their data was restored (restore_counts), not counted again."""
    known = known or {}
    with connect(target, purpose="verify") as conn:
        every = user_tables(conn)
    tables = [t for t in every if t not in known]
    size = {(t.schema_, t.name): t.rows for t in manifest.tables}
    jobs = max(1, min(os.cpu_count() or 1, 4, len(tables)))
    groups: list[list[tuple[str, str]]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for table in sorted(tables, key=lambda t: size.get(t, 0), reverse=True):
        i = loads.index(min(loads))
        groups[i].append(table)
        loads[i] += size.get(table, 0) + 1

    def count(group: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        with connect(target, purpose="verify") as c:
            return count_tables(c, group)

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(count, [g for g in groups if g]))
    return {**{t: n for t, n in known.items() if t in every}, **{k: v for r in results for k, v in r.items()}}


def difference_hint(bad: Check) -> str:
    """What to do when a restored copy fails one of its checks: each check has its own cause."""
    if bad.name == "read query":
        return READ_QUERY_HINT
    if bad.name == "row counts":
        return "the archive does not hold what its manifest says; take a new backup"
    return (
        "the restore did not reproduce the backup's owners or privileges: check the target server's roles "
        "(--owner ROLE / --skip-missing-roles restore onto a server without them)"
    )


#: a failing read query is the query's (or the target's) problem: the backup is not in question
READ_QUERY_FIX = (
    "the query, not the backup: fix [environments] read_query (it runs with search_path set to the URL's ?schema="
)
READ_QUERY_HINT = f"{READ_QUERY_FIX}; try it with pgrunbook health against the live database)"


def read_query_failed(dbname: str, query: Check, *, kept: bool) -> ReadQueryFailed:
    """The error of a restore whose copy passed its own checks but not the application's read query
    (trial8 #8): the query's own error, the copy kept (``kept``) and how to drop it."""
    where = (
        f"{dbname} was kept, not put into use (its rows, owners and privileges equal the backup's)"
        if kept
        else f"{dbname} was not put into use"
    )
    return ReadQueryFailed(
        f"the read query failed on the restored database {dbname}: {query.detail}; {where}",
        hint=f"{READ_QUERY_HINT}; then use {dbname} or drop it: DROP DATABASE {quote_ident(dbname)}",
        cause={"kind": "read query", "where": "target", "message": query.detail},
    )


def app_schema(env: Environment, target: DatabaseTarget) -> str:
    """The schema the application reads (its URL's ``?schema=``, as ``health`` uses it): a restored
    copy, a drill server's scratch database or a rollback database is read the way the app will read it.
    The restore target's own schema when the environment has no URL set."""
    try:
        return env.target(direct=False).schema
    except PgRunbookError:
        return target.schema


def verify_restored(
    env: Environment,
    manifest: Manifest,
    target: DatabaseTarget,
    known: dict[tuple[str, str], int] | None = None,
) -> list[Check]:
    """The "row counts" (exact, equal to the manifest) and "read query" checks of a restored database."""
    counts = parallel_row_counts(target, manifest, known)
    early = f" ({len(known)} counted while pg_restore built indexes)" if known else ""
    with connect(target, purpose="drill") as conn:
        expected = manifest.row_counts()
        diffs = [
            f"{s}.{n}: {counts.get((s, n), 'missing')} vs {rows}"
            for (s, n), rows in expected.items()
            if counts.get((s, n)) != rows
        ]
        extra = sorted(set(counts) - set(expected))
        ok = not diffs and not extra
        detail = (
            f"{len(expected)} tables, {sum(expected.values())} rows, all equal to the manifest{early}"
            if ok
            else "differ: " + "; ".join(diffs[:5] + [f"{s}.{n}: not in manifest" for s, n in extra[:5]])
        )
        checks = [Check(name="row counts", ok=ok, detail=detail)]
        try:
            run_read_query(conn, env.settings.read_query, app_schema(env, target))
            checks.append(Check(name="read query", ok=True, detail=env.settings.read_query))
        except Exception as exc:
            checks.append(
                Check(name="read query", ok=False, detail=f"{env.settings.read_query}: " + str(exc).splitlines()[0])
            )
    return checks

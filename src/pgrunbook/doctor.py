"""``pgrunbook doctor``: every precondition of a safe run, one line each, before 2 a.m. finds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import psycopg
from psycopg import sql

from pgrunbook.app_url import admin_reason, admin_url_error, app_target, try_app_login
from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.restore_database import dead_leftovers
from pgrunbook.backup.verify import drill_createdb_hint
from pgrunbook.config import database_target
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError
from pgrunbook.journal import Journal, journal_path, unsettled, where_interrupted
from pgrunbook.monitor.moved import app_moved, lost_database_note
from pgrunbook.postgres.connect import connect, missing_database, server_version
from pgrunbook.postgres.database_swap import drop_statement, staging_databases
from pgrunbook.postgres.names import quote_ident
from pgrunbook.postgres.ownership import schema_ownership
from pgrunbook.postgres.runner import login_check
from pgrunbook.postgres.tool_errors import explain
from pgrunbook.postgres.tools import (
    TRANSACTION_TIMEOUT_SINCE,
    ClientTools,
    find_client_tools,
    needs_timeout_tolerance,
    restore_tools,
)
from pgrunbook.postgres.url import redact
from pgrunbook.prisma.engine import invalid_indexes, prisma_lock_holder
from pgrunbook.prisma.history import History
from pgrunbook.prisma.splitter import config_splits
from pgrunbook.prisma.status import elsewhere_warning, resolve_hint, running_row

Status = Literal["ok", "warning", "failed", "skipped"]


@dataclass(frozen=True)
class DoctorCheck:
    name: str
    status: Status
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "hint": self.hint}


def exit_code(checks: list[DoctorCheck]) -> int:
    if any(c.status == "failed" for c in checks):
        return 2
    return 1 if any(c.status == "warning" for c in checks) else 0


def run_doctor(env: Environment) -> list[DoctorCheck]:
    """Checks in dependency order; a failed connection skips what needs it instead of stopping."""
    checks: list[DoctorCheck] = []
    cfg = env.config
    checks.append(
        DoctorCheck("config", "ok", f"{cfg.source or 'no pgrunbook.toml: built-in defaults'}; environment {env.name!r}")
    )
    _check_prisma_project(env, checks)
    conn = _check_connection(env, checks)
    db_size: int | None = None
    if conn is not None:
        with conn:
            db_size = _database_size(conn)
            _check_tools(env, conn, checks)
            _check_history(env, conn, checks)
            _guard(checks, "ownership", lambda: _ownership(env, conn))
            _guard(checks, "leftovers", lambda: _leftovers(env, conn))
            if "point_app" in env.settings.hooks:
                _guard(checks, "app url", lambda: _app_url(env, conn))
            _check_invalid_indexes(conn, checks)
    else:
        for name in ("client tools", "restore tools", "prisma history", "ownership", "leftovers", "invalid indexes"):
            checks.append(DoctorCheck(name, "skipped", "needs a database connection"))
    _guard(checks, "storage", lambda: _storage(env))
    _guard(checks, "free space", lambda: _free_space(env, db_size))
    _guard(checks, "manifests", lambda: _manifests(env))
    _guard(checks, "interrupted runs", lambda: _interrupted_runs(env))
    _guard(checks, "app database", lambda: _app_database(env))
    _guard(checks, "backup ownership", lambda: _backup_ownership(env))
    return checks


def _check_prisma_project(env: Environment, checks: list[DoctorCheck]) -> None:
    """Where each value taken from the project's Prisma files came from, and how scripts will run."""
    cfg = env.config
    origins = cfg.origins
    taken = [
        f"{key} = {value!r} from {origins[key]}"
        for key, value in (
            ("project.migrations", cfg.project.migrations),
            ("environments.default.database_url_env", env.settings.database_url_env),
            ("environments.default.direct_url_env", env.settings.direct_url_env),
        )
        if key in origins
    ]
    for key in ("prisma config", "prisma schema", "prisma schemas"):
        if key in origins:
            taken.append(f"{key}: {origins[key]}")
    try:
        var = env.target().variable
    except PgRunbookError:  # unset or malformed: the connection check reports it
        var = env.settings.database_url_env
    if f"env:{var}" in origins:
        taken.append(f"{var} from {origins[f'env:{var}']}")
    if taken:
        checks.append(DoctorCheck("prisma project", "ok", "; ".join(taken)))
    if "unreadable" in origins:
        checks.append(
            DoctorCheck(
                "prisma config",
                "warning",
                f"not read: {origins['unreadable']}",
                "pgrunbook.toml sets what pgrunbook needs of it; keep the two in step by hand",
            )
        )
    version = cfg.migrate.prisma_version
    how = "statement by statement (Prisma 7.4+)" if config_splits(cfg) else "each script as one string"
    if version is None:
        checks.append(
            DoctorCheck(
                "prisma version",
                "ok",
                f"unknown (no package.json, lock file or node_modules names prisma): migrations run {how}",
                'set [migrate] prisma_version = "x.y.z" in pgrunbook.toml',
            )
        )
    else:
        origin = origins.get("migrate.prisma_version", "pgrunbook.toml")
        checks.append(DoctorCheck("prisma version", "ok", f"{version} from {origin}: migrations run {how}"))


def _guard(checks: list[DoctorCheck], name: str, fn: Callable[[], DoctorCheck]) -> None:
    try:
        checks.append(fn())
    except PgRunbookError as exc:
        checks.append(DoctorCheck(name, "failed", exc.message, exc.hint or ""))


def _check_connection(env: Environment, checks: list[DoctorCheck]) -> psycopg.Connection | None:
    target = None
    try:
        target = env.target(direct=True)
        conn = connect(target, purpose="doctor", connect_timeout=env.config.postgres.connect_timeout)
    except PgRunbookError as exc:
        hint = exc.hint or ""
        if target is not None and missing_database(exc):  # the server answered: the database is gone, or misnamed
            hint += f"; {lost_database_note(env, target.dbname)}"
        checks.append(DoctorCheck("connection", "failed", exc.message, hint))
        return None
    _, _, version = server_version(conn)
    checks.append(DoctorCheck("connection", "ok", f"{target.display}: PostgreSQL {version}"))
    pooler = target.pooler_warning(direct_named=bool(env.settings.direct_url_env))
    if pooler is not None:
        checks.append(DoctorCheck("pooler", "warning", *pooler))
    return conn


def _check_tools(env: Environment, conn: psycopg.Connection, checks: list[DoctorCheck]) -> None:
    """Which tools each operation will use here, and whether it will work: backup (pg_dump), restore of
    such a backup back into this server (automatic rollback, in place), and drills (on their server)."""
    major, _, version = server_version(conn)
    bin_dir = env.config.postgres.bin_dir
    try:
        tools = find_client_tools(major, version, bin_dir)
    except PgRunbookError as exc:
        checks.append(DoctorCheck("client tools", "failed", f"backup: {exc.message}", exc.hint or ""))
        checks.append(DoctorCheck("restore tools", "skipped", "needs a pg_dump that can back up this server"))
        return
    checks.append(_login_check(env, tools, version))
    checks.append(_restore_check("restore tools", "restore into this server", tools, major, version, bin_dir))
    drill_var = env.config.backup.drill_database_url_env
    checks.append(_create_databases(env, conn, drills=not drill_var))
    if drill_var:
        checks.append(_drill_check(env, tools, drill_var, major, version))


def _login_check(env: Environment, tools: ClientTools, version: str) -> DoctorCheck:
    """The chosen pg_dump logs in to the database the way a backup's will (break11 #8: pgrunbook's own
    connection took PGPASSWORD, pg_dump was not given it, and doctor said ok while every backup failed)."""
    detail = f"backup: pg_dump {tools.version} at {tools.pg_dump} (server {version})"
    target = env.target(direct=True)
    try:
        failure = login_check(tools.pg_dump, target, timeout=max(env.config.postgres.connect_timeout, 1) + 20)
    except OSError as exc:
        return DoctorCheck("client tools", "failed", f"{detail}: it does not start: {exc}", "reinstall it")
    if failure is None:
        return DoctorCheck("client tools", "ok", f"{detail}; it logs in")
    cause = explain(failure, role=str(target.params.get("user") or ""))
    secrets = target.secrets()
    return DoctorCheck(
        "client tools",
        "failed",
        redact(f"{detail}, but it cannot reach the database as a backup would: {cause.message}", secrets),
        redact(cause.hint, secrets),
    )


def _may_create(conn: psycopg.Connection) -> tuple[str, bool]:
    row = conn.execute("SELECT rolname, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return (str(row[0]), bool(row[1])) if row else ("?", True)


def _create_databases(env: Environment, conn: psycopg.Connection, *, drills: bool) -> DoctorCheck:
    """Every restore into a new database creates one: without CREATEDB they are all refused, found
    here rather than by the weekly drill or at 2 a.m. by a rollback (trial11 F23)."""
    role, may = _may_create(conn)
    refused = "restore --into, rollback --with-db and deploy --auto-rollback"
    if drills:
        refused = "drills (backup verify --drill), " + refused
    if may:
        return DoctorCheck("create databases", "ok", f"role {role} may create databases here ({refused})")
    return DoctorCheck(
        "create databases",
        "warning",
        f"role {role} may not create databases on this server: {refused} will be refused "
        "(backups, migrations and deploys without --auto-rollback still work)",
        drill_createdb_hint(env, role),
    )


def _restore_check(
    name: str, what: str, dump: ClientTools, major: int, version: str, bin_dir: str | None
) -> DoctorCheck:
    try:
        chosen = restore_tools(dump.version.text, major, version, bin_dir)
    except PgRunbookError as exc:
        return DoctorCheck(name, "failed", f"{what}: {exc.message}", exc.hint or "")
    detail = f"{what}: pg_restore {chosen.version} at {chosen.pg_restore} (server {version})"
    if needs_timeout_tolerance(chosen.major, major):
        detail += (
            f"; its one known harmless error on servers before {TRANSACTION_TIMEOUT_SINCE} "
            "(SET transaction_timeout) is tolerated, nothing else"
        )
    return DoctorCheck(name, "ok", detail)


def _drill_check(env: Environment, dump: ClientTools, var: str, source_major: int, source: str) -> DoctorCheck:
    # the drill's server, as backup.verify.drill_target names it: the URL in [backup] drill_database_url_env
    settings = env.settings.model_copy(update={"database_url_env": var, "direct_url_env": None})
    try:
        target = database_target(env.name, settings)
        with connect(target, purpose="doctor", connect_timeout=env.config.postgres.connect_timeout) as c:
            major, _, version = server_version(c)
            role, may = _may_create(c)
    except PgRunbookError as exc:
        return DoctorCheck("drill tools", "warning", f"drill server ({var}): {exc.message}", exc.hint or "")
    if not may:
        return DoctorCheck(
            "drill tools",
            "warning",
            f"drills on {target.display}: role {role} may not create databases there, so every drill is refused",
            f'ALTER ROLE "{role}" CREATEDB there, or point {var} at a role that may',
        )
    check = _restore_check(
        "drill tools", f"drills on {target.display}", dump, major, version, env.config.postgres.bin_dir
    )
    if check.status == "ok" and major < source_major:  # break11 #7: a drill server a major behind
        return DoctorCheck(
            "drill tools",
            "warning",
            f"{check.detail}; but backups of PostgreSQL {source} drilled into PostgreSQL {version} (an older "
            "major): PostgreSQL does not support this; objects using newer features will fail",
            f"point [backup] drill_database_url_env ({var}) at a server of PostgreSQL {source_major} or newer",
        )
    return check


def _check_history(env: Environment, conn: psycopg.Connection, checks: list[DoctorCheck]) -> None:
    schema = env.target().schema
    table = sql.Identifier(schema, "_prisma_migrations")
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table.as_string(conn),)).fetchone()
    if not exists or not exists[0]:
        note = elsewhere_warning(schema, History(conn, schema).elsewhere(), env.target().variable)
        if note is not None:
            hint = f"correct ?schema= in {env.target().variable}; if this is a new schema on purpose, go on"
            checks.append(DoctorCheck("prisma history", "warning", note, hint))
            return
        checks.append(
            DoctorCheck("prisma history", "ok", f"no {schema}._prisma_migrations table (not a Prisma database yet)")
        )
        return
    history = History(conn, schema).rows()
    holder = prisma_lock_holder(conn)
    running = running_row(history, holder is not None)
    failed = [r.migration_name for r in history if r.failed and r is not running]
    applied = sum(1 for r in history if r.applied)
    if running is not None and holder is not None:
        checks.append(
            DoctorCheck(
                "prisma history",
                "warning",
                f"{running.migration_name} is being applied right now by {holder.describe()}",
                "wait for it to finish; do not resolve it while it runs",
            )
        )
    if failed:
        checks.append(
            DoctorCheck(
                "prisma history",
                "failed",
                f"unresolved failed migration(s): {', '.join(failed)}",
                resolve_hint(
                    failed[0],
                    outcome_unknown=any(r.migration_name == failed[0] and r.failed and r.logs is None for r in history),
                ),
            )
        )
    elif running is None:
        checks.append(DoctorCheck("prisma history", "ok", f"{applied} migrations applied, none failed"))


_SHOWN = 8  # objects and statements named in one line; the count says how many more


def _ownership(env: Environment, conn: psycopg.Connection) -> DoctorCheck:
    """Objects of the app's schema owned by another role than the one owning the rest: a migration
    applied by an admin leaves them so, and the app's next migration cannot ALTER them."""
    owners = schema_ownership(conn, env.target().schema)
    role, foreign = owners.app_role, owners.foreign()
    if role is None or not owners.objects:
        return DoctorCheck("ownership", "ok", f"schema {owners.schema} has no objects yet")
    if not foreign:
        n = len(owners.objects)
        return DoctorCheck("ownership", "ok", f"all {n} objects in schema {owners.schema} belong to {role}")
    others = sorted({o.owner for o in foreign})
    named = ", ".join(f"{o.describe()} ({o.owner})" for o in foreign[:_SHOWN])
    more = f" and {len(foreign) - _SHOWN} more" if len(foreign) > _SHOWN else ""
    fixes = owners.fix_statements()
    statements = " ".join(fixes[:_SHOWN]) + (f" … ({len(fixes)} statements in all)" if len(fixes) > _SHOWN else "")
    reassign = [r for r in others if r not in owners.superusers]
    alt = "".join(f"; or REASSIGN OWNED BY {r} TO {role} (everything {r} owns in this database)" for r in reassign)
    return DoctorCheck(
        "ownership",
        "warning",
        f"{len(foreign)} of {len(owners.objects)} objects in schema {owners.schema} belong to {', '.join(others)}, "
        f"not to {role} (the owner of the rest): {named}{more}",
        f"{role}'s next migration cannot ALTER them; as a superuser or a member of both roles: {statements}{alt} "
        f'([migrate] role = "auto", the default, gives new ones to {role})',
    )


def _leftovers(env: Environment, conn: psycopg.Connection) -> DoctorCheck:
    """What killed restores left on this server (trial8 #10): staging databases of in-place restores and
    of the recovery of a lost database (``<db>_restore_<stamp>``, both) and databases of ``restore
    --into`` or drills whose marker names a process gone from this host. Each holds a partial or unused
    copy and takes disk space; the live database is never among them. Listed with the statement that
    drops it, never dropped here."""
    live = env.target().dbname
    staging = staging_databases(conn, live)
    unfinished = [(n, c) for n, c in dead_leftovers(conn) if n not in staging]  # each named once
    if not staging and not unfinished:
        return DoctorCheck("leftovers", "ok", f"no database left by an interrupted restore of {live}")
    parts = []
    if staging:
        parts.append(
            f"{len(staging)} staging database(s) of an interrupted restore of {live} (in place, or recreating it "
            f"after it was lost): {', '.join(staging)}"
        )
    if unfinished:
        parts.append(
            f"{len(unfinished)} database(s) left by a killed restore --into or drill: "
            + ", ".join(f"{name} ({comment.removeprefix('pgrunbook: ')})" for name, comment in unfinished)
        )
    # without FORCE for a restore --into's copy: somebody may have started using it (trial8 #1)
    drops = " ".join([*map(drop_statement, staging), *(f"DROP DATABASE {quote_ident(n)};" for n, _ in unfinished)])
    return DoctorCheck(
        "leftovers",
        "warning",
        "; ".join(parts),
        f"none is the live database ({live}); pgrunbook runs shows what the interrupted run did. Once nobody "
        f"is connected to them (pg_stat_activity), drop them: {drops}",
    )


def _app_url(env: Environment, conn: psycopg.Connection) -> DoctorCheck:
    """The URL point_app would hand the app (a rollback or restore --point-app): not an admin's, and
    it logs in. Found here rather than at 2 a.m., when a rollback's pre-flight refuses it (app_url.py).
    Only warnings: a plain deploy does not point the app, so none of this may stop its pre-flight."""
    try:
        app = app_target(env)
    except PgRunbookError as exc:  # app_url_env names an unset variable
        return DoctorCheck("app url", "warning", exc.message, exc.hint or "")
    if env.settings.app_url_env is None:
        why = admin_reason(conn, app)
        if why:
            problem = admin_url_error(env, app, why)
            return DoctorCheck("app url", "warning", problem.message, problem.hint or "")
    try:
        try_app_login(env, app)
    except PgRunbookError as exc:
        return DoctorCheck("app url", "warning", exc.message, exc.hint or "")
    user = app.params.get("user") or "the connecting role"
    return DoctorCheck("app url", "ok", f"point_app gets the URL in {app.variable} (role {user}); it logs in")


def _interrupted_runs(env: Environment) -> DoctorCheck:
    """Runs of this environment the journal shows as running whose process is gone: each one's recovery
    note names what it left (a staging database, maintenance on, …)."""
    path = journal_path(env.config)
    if not path.exists():
        return DoctorCheck("interrupted runs", "ok", "no journal yet")
    journal = Journal(path)
    try:
        records = unsettled(journal.runs(limit=50, environment=env.name))
    finally:
        journal.close()
    if not records:
        return DoctorCheck("interrupted runs", "ok", "none")
    detail = "; ".join(f"{r.kind} {r.id} {where_interrupted(r)}: {r.recovery or 'no recovery note'}" for r in records)
    return DoctorCheck(
        "interrupted runs",
        "warning",
        f"{len(records)} run(s) interrupted (process gone): {detail}",
        "follow each run's recovery note (pgrunbook runs shows them); a deploy resumes with "
        "pgrunbook deploy --resume RUN_ID",
    )


def _app_database(env: Environment) -> DoctorCheck:
    """Whether pgrunbook's own URL followed the app after a journaled run moved it (trial11 F10)."""
    moved = app_moved(env)
    if moved is None:
        return DoctorCheck("app database", "ok", "no journaled run moved the app away from the database named here")
    return DoctorCheck("app database", "warning", moved.message(), moved.hint())


def _check_invalid_indexes(conn: psycopg.Connection, checks: list[DoctorCheck]) -> None:
    """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index that slows writes and blocks a retry."""
    found = invalid_indexes(conn)
    if not found:
        checks.append(DoctorCheck("invalid indexes", "ok", "none"))
        return
    checks.append(
        DoctorCheck(
            "invalid indexes",
            "warning",
            f"{len(found)} invalid index(es): {', '.join(i for i, _ in found)}",
            f"clean up with: {' '.join(fix for _, fix in found)}",
        )
    )


def _storage(env: Environment) -> DoctorCheck:
    env.storage.probe()
    return DoctorCheck("storage", "ok", f"{env.storage.display} is writable")


def _manifests(env: Environment) -> DoctorCheck:
    """Backups whose manifest cannot be read: never listed, restored or pruned, so only this says so."""
    scan = env.repository.scan()
    note = f"; {scan.foreign_note()}" if scan.foreign else ""
    if not scan.unreadable:
        return DoctorCheck("manifests", "ok", f"{len(scan.ours)} backup(s), every manifest readable{note}")
    where = env.storage.display
    listed = "; ".join(f"{where}/{env.name}/{bid}: {why}" for bid, why in scan.unreadable[:5])
    more = f" (and {len(scan.unreadable) - 5} more)" if len(scan.unreadable) > 5 else ""
    return DoctorCheck(
        "manifests",
        "warning",
        f"{len(scan.unreadable)} unreadable manifest(s), those backups are not usable: {listed}{more}",
        "take a new backup; then move each folder named here aside by hand (prune never removes a backup "
        "whose manifest it cannot read: whose it is cannot be told)",
    )


def _backup_ownership(env: Environment) -> DoctorCheck:
    """Whether the listed backups are proven this database's (backup/repository.ownership_doubt):
    on presumption prune deletes nothing and restore latest --in-place is refused."""
    shared = env.repository.id_shared_with()
    if shared:
        return DoctorCheck(
            "backup ownership",
            "warning",
            f"[project] id {env.owner.project_id!r} also writes backups of database(s) {', '.join(shared)} in this "
            f"folder (one pgrunbook.toml used by several apps, or this database's earlier name?); each lists, "
            "restores latest and prunes only its own database's backups",
            "nothing is mixed up as it is, and a backup of the other name is still restored by its id (its "
            "folder's name); give the next app its own [project] id in pgrunbook.toml before its first backup",
        )
    if not env.repository.list_backups():
        found = env.repository.elsewhere()  # an environment renamed in pgrunbook.toml (trial11 F1)
        if found is not None:
            return DoctorCheck(
                "backup ownership",
                "warning",
                f"no backups under environment {env.name!r}, but {found.note()}",
                found.hint(),
            )
        return DoctorCheck("backup ownership", "ok", "no backups of this database yet")
    doubt = env.repository.ownership_doubt()
    if doubt is None:
        how = "project id" if env.owner.project_id else "this server's backups"
        return DoctorCheck("backup ownership", "ok", f"the backups listed are this database's ({how})")
    return DoctorCheck(
        "backup ownership",
        "warning",
        f"the backups listed are presumed this database's, not proven: {doubt}; prune removes none of them",
        "if other projects share this storage folder, give each its own [project] id in pgrunbook.toml; if "
        "this database moved to this server, take a backup here (pgrunbook backup create)",
    )


#: Without a backup to size the next one by, a compressed backup is taken to need up to this fraction of
#: the database's size (pg_database_size): zstd/gzip archives are typically 5-30 % of it (indexes are
#: not dumped, only their definitions). Less free space than this is a warning (trial11 F24).
FIRST_BACKUP_FRACTION = 0.30


def _database_size(conn: psycopg.Connection) -> int | None:
    try:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    except psycopg.Error:  # no CONNECT right on another database cannot happen here; be safe anyway
        conn.rollback()
        return None
    return int(row[0]) if row and row[0] is not None else None


def _free_space(env: Environment, db_size: int | None = None) -> DoctorCheck:
    free = env.storage.free_bytes()
    if free is None:
        return DoctorCheck("free space", "skipped", "not measurable for this storage")
    backups = env.repository.list_backups()
    if not backups:
        if db_size is None:
            return DoctorCheck("free space", "ok", f"{free / 1e9:.2f} GB free; no backup yet to compare with")
        detail = (
            f"{free / 1e9:.2f} GB free; no backup yet, the database is {db_size / 1e9:.2f} GB "
            f"(a compressed backup is typically 5-30 % of it)"
        )
        if free < db_size * FIRST_BACKUP_FRACTION:
            return DoctorCheck(
                "free space",
                "warning",
                detail,
                f"the first backup may not fit: keep at least {db_size * FIRST_BACKUP_FRACTION / 1e9:.2f} GB "
                f"({FIRST_BACKUP_FRACTION:.0%} of the database) free there, or point [backup] storage at a larger "
                "volume; after the first backup this line compares with its size",
            )
        return DoctorCheck("free space", "ok", detail)
    newest = newest_real(backups, datetime.now(UTC))
    need = newest.size
    detail = f"{free / 1e9:.2f} GB free; last backup {need / 1e9:.2f} GB ({newest.id})"
    if free < need:
        return DoctorCheck("free space", "failed", detail, "the next backup will not fit: free space or move storage")
    if free < need * 2:
        return DoctorCheck("free space", "warning", detail, "room for less than two more backups")
    return DoctorCheck("free space", "ok", detail)


def newest_real(backups: list[Manifest], now: datetime) -> Manifest:
    """The newest backup not dated ahead of ``now`` (over a minute: a clock-skewed or hand-made
    manifest, trial7 #18), to size the next one by; when all are, the largest."""
    real = [m for m in backups if m.created_at <= now + timedelta(minutes=1)]
    return max(real, key=lambda m: m.created_at) if real else max(backups, key=lambda m: m.size)


__all__ = ["DoctorCheck", "exit_code", "newest_real", "redact", "run_doctor"]

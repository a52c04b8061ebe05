"""Running Prisma Migrate's commands natively: status, deploy, resolve.

Behaviour follows schema-engine/core/src/commands/ (apply_migrations.rs, mark_migration_applied.rs) and
flavour/postgres.rs: the advisory lock 72707369 held for the whole command, the history table created
only in an empty schema (else P3005), deploy refused while a failed migration is unresolved (P3009),
each script sent as the project's Prisma version sends it (prisma/splitter.py: one string before 7.4,
statement by statement from 7.4), with search_path set to the URL's ``?schema=`` as quaint sets it, and
that schema created when missing (postgres.rs, setup_connection).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError, DatabaseError, LockBusy, PgRunbookError
from pgrunbook.postgres.catalog import LockHolder
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.ownership import current_role, is_member, schema_ownership, set_role
from pgrunbook.postgres.url import redact
from pgrunbook.prisma.history import PRISMA_LOCK_ID, History, HistoryRow
from pgrunbook.prisma.logs import apply_migration_logs, logs_error, said_by_postgres
from pgrunbook.prisma.migrations_dir import LocalMigration, read_migrations
from pgrunbook.prisma.splitter import config_splits, plan_script
from pgrunbook.prisma.status import LocalScript, MigrationStatus, compute_status, elsewhere_warning, resolve_hint
from pgrunbook.progress import MigrationProgress, no_migration_progress


class MigrationFailed(PgRunbookError):
    """A migration script failed; its history row holds the logs."""


class MigrationRefused(MigrationFailed):
    """Migrate deploy stopped before any migration ran (P3005: a schema with tables and no history): the
    database is as it was, so a deploy has nothing to roll back (breaker14: it restored the pre-deploy
    backup all the same, and spoke of a failed migration's history row there was none of)."""


@dataclass
class AppliedMigration:
    name: str
    duration_s: float


@dataclass
class DeployReport:
    environment: str
    pending: list[str]
    applied: list[AppliedMigration] = field(default_factory=list)
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    engine: str = "native"
    #: the role the scripts run as (SET ROLE), or None for the connecting role; ``role_note`` says why
    run_as: str | None = None
    connected_as: str | None = None
    role_note: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "environment": self.environment,
            "engine": self.engine,
            "run_as": self.run_as or self.connected_as,
            "connected_as": self.connected_as,
            "role_note": self.role_note,
            "dry_run": self.dry_run,
            "pending": self.pending,
            "applied": [{"name": a.name, "duration_s": a.duration_s} for a in self.applied],
            "warnings": self.warnings,
        }


def _connect(env: Environment, purpose: str) -> psycopg.Connection:
    """The migration connection, its search_path the URL's schema (quaint: SET search_path = "schema")."""
    target = env.target(direct=True)
    conn = connect(
        target,
        purpose=f"{purpose} {env.name}",
        connect_timeout=env.config.postgres.connect_timeout,
    )
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema)))
    return conn


def ensure_schema(conn: psycopg.Connection, schema: str, owner: str | None = None) -> None:
    """setup_connection in flavour/postgres.rs: a missing ``?schema=`` schema is created before anything
    else; with ``owner``, owned by that role (the role the migrations run as)."""
    found = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)).fetchone()
    if not (found and found[0]):
        query = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
        if owner:
            query = sql.SQL("{} AUTHORIZATION {}").format(query, sql.Identifier(owner))
        conn.execute(query)


def migration_role(conn: psycopg.Connection, env: Environment, schema: str) -> tuple[str | None, str, str]:
    """Which role the scripts run as, from ``[migrate] role``: (role to SET ROLE to or None, the
    connecting role, a sentence saying why). "auto": the role that owns the schema's objects
    (postgres/ownership.py), when the connecting role is another role and a member of it; "none": the
    connecting role; a role name: that role, refused (ConfigError, nothing applied) when the
    connecting role may not SET ROLE to it."""
    setting = env.config.migrate.role
    me = current_role(conn)
    if setting == "none":
        return None, me, f'migrations run as {me}, the connecting role ([migrate] role = "none")'
    if setting != "auto":
        if setting == me:
            return None, me, f"migrations run as {me} ([migrate] role)"
        if not is_member(conn, me, setting):
            raise ConfigError(
                f"[migrate] role = {setting!r}, but {me} (the role in {env.target(direct=True).variable}) "
                f"may not SET ROLE to it (no such role, or {me} is not a member of it); nothing was applied",
                hint=f'GRANT {setting} TO {me}, or set [migrate] role = "auto" or "none"',
            )
        return setting, me, f"migrations run as {setting} (SET ROLE from {me}, [migrate] role)"
    owners = schema_ownership(conn, schema)
    app = owners.app_role
    if app is None or app == me:
        return None, me, f"migrations run as {me}" + (", the owner of the schema's objects" if app else "")
    if is_member(conn, me, app):
        return app, me, f"migrations run as {app} (SET ROLE from {me}): {app} owns schema {schema}'s objects"
    return (
        None,
        me,
        (
            f"migrations run as {me}, which is not a member of {app}, the owner of schema {schema}'s objects: "
            f"what they create will belong to {me} (pgrunbook doctor lists such objects)"
        ),
    )


def local_scripts(migrations: list[LocalMigration]) -> list[LocalScript]:
    return [LocalScript(m.name, m.script if m.has_script else None) for m in migrations]


def migration_status(env: Environment) -> MigrationStatus:
    migrations = read_migrations(env.config.migrations_dir)
    with _connect(env, "status") as conn:
        history = History(conn, env.target().schema)
        exists = history.exists()
        rows = history.rows() if exists else []
        elsewhere = [] if exists else history.elsewhere()
        invalid = invalid_indexes(conn)
        holder = prisma_lock_holder(conn)
    status = compute_status(local_scripts(migrations), rows, history_table=exists, lock_held=holder is not None)
    status.invalid_indexes = invalid
    status.history_elsewhere = elsewhere
    newest_logs = {r.migration_name: r.logs for r in rows if r.failed}  # rows by started_at: the newest wins
    status.errors = {n: e for n in status.failed if (e := logs_error(newest_logs.get(n)))}
    if status.running and holder is not None:
        status.running_by = {
            "pid": holder.pid,
            "application_name": holder.application_name,
            "client": holder.client,
            "since": holder.since.isoformat() if holder.since else None,
        }
    return status


def status_in(env: Environment, dbname: str) -> MigrationStatus:
    """Migration status of database ``dbname`` (same server and schema as ``env``) against the local
    folder: a restored copy's distance from the checkout's code (``pending``, ``failed``). Raises
    ConfigError when the migrations folder cannot be read, PgRunbookError when the database cannot be
    read."""
    migrations = read_migrations(env.config.migrations_dir)
    target = env.target(direct=True)
    with connect(
        target.with_dbname(dbname), purpose=f"status {env.name}", connect_timeout=env.config.postgres.connect_timeout
    ) as conn:
        history = History(conn, target.schema)
        rows = history.rows() if history.exists() else []
    return compute_status(local_scripts(migrations), rows)


def invalid_indexes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Indexes a failed CREATE INDEX CONCURRENTLY left INVALID, with the statement that removes them."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid ORDER BY 1, 2"
    ).fetchall()
    return [
        (f"{s}.{n}", sql.SQL("DROP INDEX CONCURRENTLY {};").format(sql.Identifier(s, n)).as_string(conn))
        for s, n in rows
    ]


# --- the advisory lock -------------------------------------------------------------------------------


def prisma_lock_holder(conn: psycopg.Connection) -> LockHolder | None:
    row = conn.execute(
        """SELECT a.pid, a.application_name, coalesce(host(a.client_addr), ''), a.xact_start, a.backend_start,
                  coalesce(a.query, ''), a.state
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s AND l.objsubid = 1
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           LIMIT 1""",
        (PRISMA_LOCK_ID,),
    ).fetchone()
    if row is None:
        return None
    return LockHolder(row[0], row[1], row[2], row[4], f"{row[6] or '?'}: {row[5][:160]}")


def _wait_for_prisma_lock(conn: psycopg.Connection, wait_s: float) -> bool:
    """pg_advisory_lock(72707369) as Prisma takes it, given up after ``wait_s`` seconds: True when taken."""
    deadline = time.monotonic() + wait_s
    while True:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (PRISMA_LOCK_ID,)).fetchone()
        if got and got[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def acquire_prisma_lock(conn: psycopg.Connection, wait_s: float) -> None:
    """pg_advisory_lock(72707369) as Prisma takes it, but when it is held, say who holds it (P1002 is
    the most common production complaint about prisma migrate deploy)."""
    if _wait_for_prisma_lock(conn, wait_s):
        return
    holder = prisma_lock_holder(conn)
    who = (
        holder.describe() + ("" if holder.hidden else f", last query {holder.query!r}")
        if holder
        else "a session that has since ended"
    )
    hint = (
        "if that is a migrator that was killed or a pooler connection, end it: "
        f"SELECT pg_terminate_backend({holder.pid}); if it is a running deploy, wait for it"
        if holder
        else "try again"
    )
    raise LockBusy(
        f"P1002: timed out after {wait_s:g}s waiting for the migration advisory lock "
        f"(pg_advisory_lock({PRISMA_LOCK_ID})), held by {who}",
        hint=hint + "; a transaction-mode pooler URL can also cause this: set direct_url_env",
    )


# --- deploy ------------------------------------------------------------------------------------------


def failed_migrations_error(failed: list[HistoryRow]) -> MigrationFailed:
    details = []
    for row in failed:
        logs = (row.logs or "").strip()
        details.append(
            f"The `{row.migration_name}` migration started at {row.started_at} failed"
            + (f" with the following logs:\n{logs}" if logs else "")
        )
    first = failed[0].migration_name
    return MigrationFailed(
        "P3009: migrate found failed migrations in the target database, new migrations will not be applied. "
        + " ".join(d.splitlines()[0] for d in details),
        hint=resolve_hint(first, outcome_unknown=failed[0].logs is None) + " (https://pris.ly/d/migrate-resolve)",
    )


def migrate_deploy(
    env: Environment,
    *,
    dry_run: bool = False,
    before_apply: Callable[[str], None] | None = None,
    progress: MigrationProgress = no_migration_progress,
) -> DeployReport:
    """Apply pending migrations in order, Prisma-compatible; the first failure stops and is recorded.
    ``before_apply(dbname)`` runs once pending migrations are known, before the first is applied: the
    deploy use case's own rules (procedures/migrate.py) raise there to stop."""
    if env.config.migrate.engine == "prisma":
        return _deploy_with_prisma(env, dry_run=dry_run, before_apply=before_apply)
    migrations = read_migrations(env.config.migrations_dir)
    target = env.target(direct=True)
    report = DeployReport(env.name, [], dry_run=dry_run)
    pooler = target.pooler_warning(direct_named=bool(env.settings.direct_url_env))
    if pooler is not None:
        report.warnings.append(f"{pooler[0]}: {pooler[1]}")
    with _connect(env, "migrate") as conn:
        acquire_prisma_lock(conn, env.config.migrate.lock_wait_s)
        history = History(conn, target.schema)
        exists = history.exists()
        if not exists:
            others = history.schema_tables()
            if others:
                raise MigrationRefused(
                    f"P3005: the database schema {target.schema!r} is not empty "
                    f"({', '.join(others[:5])}{' …' if len(others) > 5 else ''}) and has no migration history",
                    hint="baseline it: pgrunbook migrate resolve --applied <each migration already in the "
                    "database> (https://pris.ly/d/migrate-baseline)",
                )
            note = elsewhere_warning(target.schema, history.elsewhere(), target.variable)
            if note is not None:
                report.warnings.append(note)
        rows = history.rows() if exists else []
        failed = [r for r in rows if r.failed]
        if failed:
            raise failed_migrations_error(failed)
        live = {r.migration_name for r in rows if r.rolled_back_at is None}
        pending = [m for m in migrations if m.name not in live]
        report.pending = [m.name for m in pending]
        missing = [m.name for m in pending if not m.has_script]
        if missing:
            raise ConfigError(
                f"pending migration {missing[0]!r} has no migration.sql", hint="add the file or remove the folder"
            )
        if not pending:
            return report
        report.run_as, report.connected_as, report.role_note = migration_role(conn, env, target.schema)
        if report.run_as is None and "not a member" in report.role_note:
            report.warnings.append(report.role_note)
        if dry_run:
            return report
        if before_apply is not None:
            before_apply(target.dbname)
        ensure_schema(conn, target.schema, report.run_as)
        if not exists:
            with _as_role(conn, report.run_as):  # the history table belongs to the app, as under Prisma
                history.create()
        _set_timeouts(conn, env)
        split = config_splits(env.config)
        for m in pending:
            report.applied.append(
                _apply_one(conn, history, m, progress, target.secrets(), split=split, run_as=report.run_as)
            )
    return report


@contextlib.contextmanager
def _as_role(conn: psycopg.Connection, role: str | None) -> Iterator[None]:
    """SET ROLE for the block, RESET ROLE after it (when the connection still works): the history
    rows are written as the connecting role, as before, and a script's own SET ROLE ends with it."""
    if role is None:
        yield
        return
    set_role(conn, role)
    try:
        yield
    finally:
        if not conn.closed and not getattr(conn, "broken", False):
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")  # the script's own BEGIN left the session in a failed transaction
            conn.execute("RESET ROLE")


def _set_timeouts(conn: psycopg.Connection, env: Environment) -> None:
    cfg = env.config.migrate
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(cfg.lock_timeout)))
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(cfg.statement_timeout)))


def _apply_one(
    conn: psycopg.Connection,
    history: History,
    m: LocalMigration,
    progress: MigrationProgress,
    secrets: list[str],
    *,
    split: bool = False,
    run_as: str | None = None,
) -> AppliedMigration:
    """One migration as Prisma runs it: row started, script (whole or statement by statement), row finished.

    Split or not, applied_steps_count goes to 1 only when the whole script succeeded, as in
    apply_migrations.rs (one step per script); after a failure the statements before the failing one
    stay committed under split semantics, and the logs show the failing statement's text."""
    try:
        script = m.script.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{m.script_path} is not UTF-8 text") from None
    plan = plan_script(script, split=split)
    progress("start", m.name, None)
    row_id = history.record_started(m.name, m.checksum)
    t0 = time.monotonic()
    piece, done = plan.pieces[0].text, 0  # done: how many pieces committed before the running one
    try:
        with _as_role(conn, run_as):
            for statement in plan.pieces:
                piece = statement.text
                conn.execute(piece)  # type: ignore[call-overload]  # no parameters: the simple query protocol
                done += 1
    except psycopg.Error as exc:
        elapsed = time.monotonic() - t0
        if conn.closed or getattr(conn, "broken", False):
            raise connection_lost_error(m.name, elapsed, exc, committed=done) from None
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")  # the script's own BEGIN left the session in a failed transaction
        logs = redact(apply_migration_logs(m.name, exc.diag, piece), secrets)
        history.record_failure(row_id, logs)
        progress("failed", m.name, elapsed)
        message = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
        said = said_by_postgres(exc.diag.sqlstate or "", message, exc.diag.message_detail, None)
        where = f" (statement {done + 1} of {len(plan.pieces)})" if plan.split else ""
        left = (
            f"the {done} statement(s) before it stayed applied (Prisma 7.4+ runs them one by one): undo them, then "
            f"pgrunbook migrate resolve --rolled-back {m.name}, or finish the rest by hand and --applied {m.name}"
            if done
            else f"fix the cause, then pgrunbook migrate resolve --rolled-back {m.name} (nothing applied) or "
            f"--applied {m.name} (completed by hand)"
        )
        if run_as and exc.diag.sqlstate == "42501":  # insufficient_privilege while running as the app's role
            left += (
                f'; it ran as {run_as} (SET ROLE, [migrate] role = "auto"): if it needs the connecting role\'s '
                'own rights (CREATE EXTENSION, …), set [migrate] role = "none" in pgrunbook.toml'
            )
        pg_hint = exc.diag.message_hint
        raise MigrationFailed(
            redact(f"migration {m.name} failed after {elapsed:.1f}s{where}: {said}", secrets),
            hint=redact(
                (f"PostgreSQL says: {' '.join(pg_hint.split())}; " if pg_hint else "")
                + f"its history row keeps the logs; {left}",
                secrets,
            ),
        ) from None
    history.record_success(row_id)
    elapsed = time.monotonic() - t0
    progress("ok", m.name, elapsed)
    return AppliedMigration(m.name, round(elapsed, 3))


def connection_lost_error(name: str, elapsed: float, exc: psycopg.Error, *, committed: int = 0) -> MigrationFailed:
    """The server went away mid-script (crash, restart, failover, network): nothing can be recorded.

    Sent statement by statement (Prisma 7.4+), the ``committed`` ones before it stay applied. The one
    running then may or may not have committed: a network loss can swallow the reply to a commit the
    server made, and a server that outlives its client finishes what it was running. So the outcome is
    unknown, and the hint is status.resolve_hint's for a row without logs: compare the schema, --applied
    if all of it is there, else undo and --rolled-back, never --rolled-back first (trial7b N4). The
    history row stays started and unfinished, which Prisma and pgrunbook both count as failed.
    """
    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    applied = f"its first {committed} statement(s) were applied and stay; " if committed else ""
    return MigrationFailed(
        f"lost the connection to PostgreSQL while migration {name} ran (after {elapsed:.1f}s): {why}",
        hint=f"when the server is back: {applied}{resolve_hint(name, outcome_unknown=True)}",
    )


def _deploy_with_prisma(env: Environment, *, dry_run: bool, before_apply: Callable[[str], None] | None) -> DeployReport:
    """``[migrate] engine = "prisma"``: Prisma's own binary runs the step; the URL goes in its environment."""
    status = migration_status(env)
    report = DeployReport(env.name, list(status.pending), dry_run=dry_run, engine="prisma")
    if dry_run or not status.pending:
        return report
    target = env.target(direct=True)
    if before_apply is not None:
        before_apply(target.dbname)
    child = {**os.environ, "DATABASE_URL": target.full_url()}
    t0 = time.monotonic()
    proc = subprocess.run(
        env.config.migrate.prisma_command, shell=True, cwd=env.config.root, env=child, capture_output=True, text=True
    )
    if proc.returncode != 0:
        last = next((ln for ln in reversed((proc.stderr + proc.stdout).splitlines()) if ln.strip()), "")
        raise MigrationFailed(
            f"{env.config.migrate.prisma_command!r} failed (exit {proc.returncode}): {redact(last, target.secrets())}",
            hint="pgrunbook status shows what was applied",
        )
    after = migration_status(env)
    report.applied = [AppliedMigration(n, 0.0) for n in status.pending if n in after.applied]
    if report.applied:
        report.applied[-1].duration_s = round(time.monotonic() - t0, 3)
    return report


# --- resolve -----------------------------------------------------------------------------------------


def _lock_for_resolve(conn: psycopg.Connection, env: Environment, name: str) -> None:
    """resolve takes the migration lock as deploy does (mark_migration_*.rs run under acquire_lock): while
    a migration is being applied, recording it applied or rolled back would write a history its still
    running script can contradict (it may yet commit, or fail)."""
    wait_s = env.config.migrate.lock_wait_s
    if _wait_for_prisma_lock(conn, wait_s):
        return
    holder = prisma_lock_holder(conn)
    if holder is None:
        raise LockBusy(
            f"cannot resolve {name}: a migration was being applied for {wait_s:g}s (the migration advisory lock "
            f"pg_advisory_lock({PRISMA_LOCK_ID}) was held) and has just finished",
            hint="pgrunbook status shows how it ended; then resolve again if it still needs to",
        )
    raise LockBusy(
        f"cannot resolve {name} while a migration is being applied: {holder.describe()} holds the migration "
        f"advisory lock (pg_advisory_lock({PRISMA_LOCK_ID})), running {holder.query!r}",
        hint="wait for it to finish (pgrunbook status shows it as running), then check the result; if its "
        f"client is gone and it must stop: SELECT pg_terminate_backend({holder.pid}) (its open transaction "
        "is rolled back), then pgrunbook status and resolve",
    )


def resolve_applied(env: Environment, name: str) -> None:
    """mark_migration_applied.rs: P3017 when no such folder, P3008 when already applied; failed rows of
    that name are marked rolled back first, then a finished row is inserted."""
    migrations = {m.name: m for m in read_migrations(env.config.migrations_dir)}
    m = migrations.get(name)
    if m is None or not m.has_script:
        raise ConfigError(
            f"P3017: the migration {name} could not be found in {env.config.migrations_dir}",
            hint="give the whole folder name, e.g. 20201207184859_initial_migration",
        )
    with _connect(env, "resolve") as conn:
        _lock_for_resolve(conn, env, name)
        ensure_schema(conn, env.target().schema)
        history = History(conn, env.target().schema)
        if not history.exists():
            history.create()
        relevant = [r for r in history.rows() if r.migration_name == name]
        if any(r.finished_at is not None for r in relevant):
            raise MigrationFailed(f"P3008: the migration `{name}` is already recorded as applied in the database.")
        for r in relevant:
            if r.failed:
                history.mark_rolled_back(r.id)
        history.mark_applied(name, m.checksum)


def resolve_rolled_back(env: Environment, name: str) -> None:
    """P3011 when never applied, P3012 when not in a failed state; else every failed row is rolled back."""
    with _connect(env, "resolve") as conn:
        _lock_for_resolve(conn, env, name)
        history = History(conn, env.target().schema)
        relevant = [r for r in history.rows() if r.migration_name == name] if history.exists() else []
        if not relevant:
            raise MigrationFailed(
                f"P3011: migration {name} cannot be rolled back because it was never applied to the database."
            )
        failed = [r for r in relevant if r.failed]
        if not failed:
            raise MigrationFailed(f"P3012: migration {name} cannot be rolled back because it is not in a failed state.")
        for r in failed:
            history.mark_rolled_back(r.id)


__all__ = ["DatabaseError", "DeployReport", "migrate_deploy", "migration_status", "resolve_applied"]

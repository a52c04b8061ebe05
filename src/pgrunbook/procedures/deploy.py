"""``pgrunbook deploy``: the runbook's production migration procedure, every step journaled.

preflight -> maintenance on -> pre-deploy backup (verified) -> migrate -> verify (health) ->
maintenance off. On failure the decision tree applies: automatically with --auto-rollback, otherwise
as the exact commands to run. maintenance_off runs at the end whatever happened, unless the operator
asks to stay in maintenance. An interrupted run is visible in ``pgrunbook runs`` and resumable.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from pgrunbook.backup.method import UNFINISHED, method_for
from pgrunbook.doctor import run_doctor
from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError, PgRunbookError
from pgrunbook.health import check_health
from pgrunbook.journal import Journal, Run, RunRecord
from pgrunbook.postgres.catalog import try_session_lock
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.names import derived_dbname
from pgrunbook.prisma.engine import MigrationFailed, migrate_deploy, migration_status
from pgrunbook.prisma.history import History
from pgrunbook.prisma.lint import lint_files
from pgrunbook.prisma.migrations_dir import read_migrations
from pgrunbook.prisma.splitter import config_splits
from pgrunbook.prisma.status import resolve_hint
from pgrunbook.procedures.hooks import env_hook
from pgrunbook.procedures.point_app import check_app_url, point_app, runbook_url_note
from pgrunbook.procedures.rollback import decide
from pgrunbook.procedures.steps import carry_database_settings, maintenance_off, maintenance_on, verified_backup
from pgrunbook.progress import ProgressFn, no_progress
from pgrunbook.timespec.window import parse_window

STEPS = ("preflight", "maintenance on", "pre-deploy backup", "migrate", "verify", "maintenance off")


@dataclass
class DeployOptions:
    auto_rollback: bool = False
    outside_window: bool = False
    allow_lint: tuple[str, ...] = ()
    skip_staging_check: bool = False
    keep_maintenance_on_failure: bool = False
    now: datetime | None = None  # for the quiet-window check; tests pin it
    progress: ProgressFn = no_progress  # the backup's and a rollback restore's bars on a terminal


@dataclass
class DeployReport:
    run_id: str
    environment: str
    outcome: str = "running"
    steps: list[dict[str, Any]] = field(default_factory=list)
    maintenance_window_s: float | None = None
    backup_id: str | None = None
    applied: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rollback: list[str] = field(default_factory=list)
    database: str | None = None
    replaced_database: str | None = None
    error: str | None = None
    #: after an automatic rollback to a new database: set pgrunbook's own URL variable(s) to it
    next_step: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "environment": self.environment,
            "outcome": self.outcome,
            "steps": self.steps,
            "maintenance_window_s": self.maintenance_window_s,
            "backup_id": self.backup_id,
            "applied": self.applied,
            "warnings": self.warnings,
            "rollback_commands": self.rollback,
            "database": self.database,
            "replaced_database": self.replaced_database,
            "error": self.error,
            "next_step": self.next_step,
        }


class DeployFailed(PgRunbookError):
    """The procedure failed; the report says what happened and what was rolled back."""

    def __init__(self, message: str, report: DeployReport, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.report = report


class _State:
    """What a run knows, rebuilt from the journal on --resume."""

    def __init__(self) -> None:
        self.backup_id: str | None = None
        self.applied: list[str] = []
        self.migrate_started = False
        self.maintenance_started: float | None = None
        self.migrate_error: str | None = None  # the interrupted run's migration had already failed: why


def deploy(env: Environment, journal: Journal, options: DeployOptions | None = None) -> DeployReport:
    opts = options or DeployOptions()
    lock_conn = _deploy_lock(env)
    try:
        run = journal.start("deploy", env.name, {"auto_rollback": opts.auto_rollback})
        report = DeployReport(run.id, env.name)
        return _execute(env, run, report, opts, _State(), done=set())
    finally:
        lock_conn.close()


def resume(
    env: Environment, journal: Journal, run_id: str, options: DeployOptions | None = None, *, roll_back: bool = False
) -> DeployReport:
    """Continue an interrupted deploy from its first unfinished step, or roll it back."""
    opts = options or DeployOptions()
    record = journal.get(run_id)
    if record is None or record.kind != "deploy":
        raise ConfigError(f"no deploy run {run_id!r} in the journal", hint="pgrunbook runs lists them")
    if record.outcome in ("succeeded", "rolled_back"):
        raise ConfigError(f"deploy {run_id} already ended: {record.outcome}")
    lock_conn = _deploy_lock(env)
    try:
        state, done = _rebuild(record)
        run = journal.reopen(run_id)
        report = DeployReport(run_id, env.name, backup_id=state.backup_id)
        if roll_back:
            return _roll_back_interrupted(env, run, report, opts, state)
        return _execute(env, run, report, opts, state, done=done, resumed=True)
    finally:
        lock_conn.close()


def _rebuild(record: RunRecord) -> tuple[_State, set[str]]:
    state = _State()
    done = {s.name for s in record.steps if s.status == "succeeded"}
    for s in record.steps:
        if s.name == "pre-deploy backup" and s.status == "succeeded":
            state.backup_id = s.detail.split()[0]
        if s.name == "migrate":
            state.migrate_started = True
            state.migrate_error = s.detail or "the migration failed" if s.status == "failed" else None
        if s.name == "maintenance on" and s.status in ("succeeded", "running"):
            state.maintenance_started = time.monotonic()
    return state, done


def _deploy_lock(env: Environment) -> psycopg.Connection:
    """An advisory lock on the environment's database, held for the whole run: two deploys never overlap."""
    conn = connect(
        env.target(direct=True),
        purpose=f"deploy {env.name}",
        connect_timeout=env.config.postgres.connect_timeout,
    )
    try:
        try_session_lock(conn, f"deploy:{env.name}", f"deploy of environment {env.name!r}")
    except BaseException:
        conn.close()
        raise
    return conn


def _execute(
    env: Environment,
    run: Run,
    report: DeployReport,
    opts: DeployOptions,
    state: _State,
    done: set[str],
    resumed: bool = False,
) -> DeployReport:
    failure: BaseException | None = None
    in_maintenance = state.maintenance_started is not None
    try:
        if "preflight" not in done:
            with run.step("preflight") as info:
                pending = _preflight(env, opts, report)
                info["detail"] = f"{len(pending)} pending: {', '.join(pending)}" if pending else "nothing pending"
            if not pending:
                report.outcome = "succeeded"
                run.finish("succeeded", "nothing to deploy")
                return report
        if "maintenance on" not in done:
            state.maintenance_started = time.monotonic()
            in_maintenance = True
            maintenance_on(env, run)
        if "pre-deploy backup" not in done:
            m = verified_backup(env, run, "pre-deploy backup", label="pre-deploy", progress=opts.progress)
            state.backup_id = report.backup_id = m.id
            run.set_recovery(f"nothing migrated yet; pre-deploy backup {state.backup_id}")
        report.backup_id = state.backup_id
        if "migrate" not in done and state.migrate_error is not None:
            # killed during the automatic rollback: the migration failed already (running it again only
            # meets its own failed history row, P3009); the rollback is what was left to do
            raise MigrationFailed(state.migrate_error)
        if "migrate" not in done:
            with run.step("migrate") as info:
                state.migrate_started = True
                run.set_recovery(f"if the schema is wrong: {rollback_line(env, 'with-db', state.backup_id)}")
                result_m = migrate_deploy(env)  # backed up just before: no protected-environment rule
                report.applied = [a.name for a in result_m.applied]
                info["detail"] = f"applied {', '.join(report.applied) or 'nothing'}" + (
                    f" as {result_m.run_as} (SET ROLE from {result_m.connected_as})" if result_m.run_as else ""
                )
        if "verify" not in done:
            with run.step("verify") as info:
                health = check_health(env, check_http=bool(env.settings.health_url))
                info["detail"] = health.summary
                if not health.ok:
                    raise _HealthFailed(f"health check failed after the migration: {health.summary}")
        report.outcome = "succeeded"
    except BaseException as exc:
        failure = exc
        report.error = str(getattr(exc, "message", exc))
        report.outcome = "failed"
        if isinstance(exc, PgRunbookError) and not isinstance(exc, KeyboardInterrupt):
            _on_failure(env, run, report, opts, state, exc)
    finally:
        if in_maintenance and "maintenance off" not in done:
            if failure is None or not opts.keep_maintenance_on_failure:
                try:
                    maintenance_off(env, run)
                except PgRunbookError as exc:
                    failure = failure or exc
                    report.outcome = "failed"
                    report.error = report.error or exc.message
            else:
                maintenance_off(
                    env, run, keep=True, why_kept="kept on after the failure, as asked (--keep-maintenance-on-failure)"
                )
        if state.maintenance_started is not None and not resumed:
            report.maintenance_window_s = round(time.monotonic() - state.maintenance_started, 3)
        report.steps = [dict(s) for s in run.steps]
        if report.outcome != "running":
            run.finish(report.outcome, "; ".join(filter(None, [report.error, report.next_step])))
    if failure is not None:
        if isinstance(failure, PgRunbookError):
            raise DeployFailed(
                f"deploy {report.outcome.replace('_', ' ')}: {report.error}",
                report,
                hint=" | ".join(report.rollback) or _after_rollback_hint(report) or failure.hint,
            ) from None
        raise failure
    return report


class _HealthFailed(PgRunbookError):
    """Migrations went through but the app is not healthy."""


def _after_rollback_hint(report: DeployReport) -> str | None:
    """Rolled back to a new database: what to do next there (the failed row stays in the replaced one)."""
    if not report.next_step:
        return None
    return (
        f"{report.next_step}; the failed migration's history row stays in {report.replaced_database} (kept for "
        f"forensics), {report.database} has none to resolve: fix the migration, then deploy again"
    )


def _rollback_hooks_missing(env: Environment, mode: str) -> list[str]:
    """The hooks ``pgrunbook rollback --<mode>`` refuses to run without (procedures/rollback.py)."""
    needs = ("app_rollback",) + (("point_app",) if mode == "with-db" else ())
    return [h for h in needs if h not in env.settings.hooks]


def rollback_line(env: Environment, mode: str, backup: str | None) -> str:
    """The recovery command to print: ``pgrunbook rollback`` when the environment has its hooks, else the
    steps by hand, so a hint never points at a command that will be refused."""
    missing = _rollback_hooks_missing(env, mode)
    if mode == "with-db":
        if not missing:
            return f"pgrunbook rollback --with-db --backup {backup} --env {env.name}"
        return (
            f"pgrunbook restore {backup} --into <new database> --env {env.name}, then point the app at it by hand "
            f"(environment {env.name!r} has no {' / '.join(missing)} hook for pgrunbook rollback --with-db)"
        )
    if not missing:
        return f"pgrunbook rollback --app-only --env {env.name}"
    return f"roll the app back by hand (environment {env.name!r} has no app_rollback hook)"


def _preflight(env: Environment, opts: DeployOptions, report: DeployReport) -> list[str]:
    if opts.auto_rollback and "point_app" not in env.settings.hooks:
        raise ConfigError(
            f"preflight: --auto-rollback needs the point_app hook (it points the app at the restored pre-deploy "
            f"database), and environment {env.name!r} has none; nothing was touched",
            hint=f'add point_app = "..." under [environments.{env.name}.hooks] in pgrunbook.toml (it gets the '
            "database URL in PGRUNBOOK_DATABASE_URL), or deploy without --auto-rollback",
        )
    problems = [c for c in run_doctor(env) if c.status == "failed"]
    if problems:
        c = problems[0]
        raise PgRunbookError(f"preflight: {c.name}: {c.detail}", hint=c.hint or "pgrunbook doctor shows every check")
    if opts.auto_rollback and "point_app" in env.settings.hooks:
        check_app_url(env)  # the automatic rollback would point the app: never at an admin's URL
        _check_can_create_databases(env)
    window = env.settings.quiet_window
    if window and not opts.outside_window:
        now = opts.now or datetime.now(UTC)
        quiet = parse_window(window)
        if not quiet.contains(now):
            opens = quiet.next_opening(now)
            raise PgRunbookError(
                f"preflight: outside the quiet window ({window}); it next opens {opens:%a %Y-%m-%d %H:%M} "
                f"{opens.tzname()}, in {_span(opens - now)}; nothing was touched",
                hint="deploy then, or pass --outside-window",
            )
    status = migration_status(env)
    if status.running:
        by = status.running_by or {}
        raise MigrationFailed(
            f"preflight: migration {status.running[0]} is being applied right now by pid {by.get('pid')} "
            f"({by.get('application_name') or 'no application_name'}) since {by.get('since')}",
            hint="wait for it to finish and check pgrunbook status; nothing was touched",
        )
    if status.failed:
        raise MigrationFailed(
            f"preflight: unresolved failed migration {status.failed[0]}",
            hint=resolve_hint(status.failed[0], outcome_unknown=status.failed[0] in status.outcome_unknown),
        )
    if not status.pending:
        return []
    pending = [m for m in read_migrations(env.config.migrations_dir) if m.name in status.pending]
    findings = lint_files(
        [m.script_path for m in pending],
        engine=env.config.migrate.engine,
        root=env.config.migrations_dir,
        split=config_splits(env.config),
    )
    for f in findings:
        if f.severity == "warning" or f.rule in opts.allow_lint:
            report.warnings.append(f"{f.file}:{f.line}: [{f.rule}] {f.what}")
    blocking = [f for f in findings if f.severity == "error" and f.rule not in opts.allow_lint]
    if blocking:
        f = blocking[0]
        raise PgRunbookError(
            f"preflight: lint error in {f.file}:{f.line}: [{f.rule}] {f.what} ({len(blocking)} error(s) in all)",
            hint=f"{f.instead}; or accept it with --allow-lint {f.rule}",
        )
    if not opts.skip_staging_check:
        _staging_check(env, status.pending)
    return status.pending


def _staging_check(env: Environment, pending: list[str]) -> None:
    """Golden rule 3: production gets only what staging already runs, byte for byte."""
    if env.name == "staging" or "staging" not in env.config.environments:
        return
    staging = Environment.resolve(env.config, "staging")
    local = {m.name: m for m in read_migrations(env.config.migrations_dir)}
    target = staging.target(direct=True)
    with connect(target, purpose="deploy staging-check") as conn:
        history = History(conn, target.schema)
        rows = [r for r in history.rows() if r.applied] if history.exists() else []
    applied = {r.migration_name: r.checksum for r in rows}
    for name in pending:
        if name not in applied:
            raise PgRunbookError(
                f"preflight: migration {name} has not been applied to staging",
                hint="deploy it to staging first (golden rule 3), or pass --skip-staging-check",
            )
        if applied[name] != local[name].checksum:
            raise PgRunbookError(
                f"preflight: migration {name} differs from the one applied to staging (checksum)",
                hint="staging and production must run the same file; or --skip-staging-check",
            )


def _on_failure(
    env: Environment, run: Run, report: DeployReport, opts: DeployOptions, state: _State, exc: PgRunbookError
) -> None:
    """The decision tree: schema touched (migration failed, or applied and unhealthy) -> restore the
    pre-deploy backup into a new database, point the app, app_rollback; nothing applied -> app only."""
    if not state.migrate_started:
        return  # nothing changed: maintenance off is all that is needed
    schema_touched = isinstance(exc, MigrationFailed) or bool(report.applied)
    decision = decide(migration_failed_or_data_wrong=schema_touched, app_only_regression=not schema_touched)
    backup = state.backup_id
    report.rollback = [rollback_line(env, decision.mode or "app-only", backup)]
    if not opts.auto_rollback:
        return
    restored_name: str | None = None
    try:
        if decision.mode == "with-db" and backup:
            live = env.target(direct=False).dbname
            name = _rollback_name(env, live, run.id)
            restored = method_for(env).restore_into(env, backup, name, run=run, progress=opts.progress)
            restored_name = name
            with run.step("point app") as info:
                carried = carry_database_settings(env, live, name)
                pointed = point_app(env, restored, run.id)
                info["detail"] = f"app pointed at {pointed} (with {live}'s {carried}); {live} kept for forensics"
            report.database, report.replaced_database = name, live
            report.next_step = runbook_url_note(env, name, live)
            restored_name = None  # pointed: what is left is the app's own rollback
        if "app_rollback" in env.settings.hooks:
            with run.step("app rollback"):
                env_hook(env, "app_rollback", run.id)
        report.outcome = "rolled_back"
        report.rollback = []
    except PgRunbookError as rb_exc:
        why = f": {'; '.join(rb_exc.details)}" if rb_exc.details else ""  # pre-flight findings: the reason itself
        report.error = f"{report.error}; the automatic rollback failed too: {rb_exc.message}{why}"
        if restored_name is not None:  # restored and verified: only pointing the app is left
            report.database = restored_name
            report.error += f"; {restored_name} holds the pre-deploy backup {backup}, restored and verified"
            report.rollback = [
                f"point the app at {restored_name} by hand (or fix the point_app hook and run it), "
                "then pgrunbook health"
            ]


def _span(delta: timedelta) -> str:
    """``2d 4h``, ``3h 20m``, ``12m``: how long until a window opens, to the minute."""
    minutes = max(int(delta.total_seconds() // 60), 1)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {mins}m" if hours else f"{mins}m"


def _check_can_create_databases(env: Environment) -> None:
    """The automatic rollback restores the pre-deploy backup into a new database. A role that may not
    create one would find out only after the migration failed, leaving the app on a half-migrated
    database (a trial's finding), so --auto-rollback is refused before anything is touched."""
    with connect(env.target(direct=True), purpose="preflight") as conn:
        row = conn.execute(
            "SELECT current_user, rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    if row is not None and not row[1]:
        raise PgRunbookError(
            f"preflight: --auto-rollback restores the pre-deploy backup into a new database, and role {row[0]} "
            "may not create databases; nothing was touched",
            hint=f'ALTER ROLE "{row[0]}" CREATEDB (as an admin), run the runbook as a role that may create '
            "databases, or deploy without --auto-rollback",
        )


def _rollback_name(env: Environment, live: str, run_id: str) -> str:
    """``<live>_rollback_<the run's start>`` (its id begins ``20261201T013102Z``): the same name when
    ``--resume`` continues a rollback that was killed, so the restore replaces (and reports) that run's
    unfinished database instead of leaving it behind. A database of that name that is not such a
    leftover (a finished restore) is left alone: the rollback then takes the time of now."""
    digits = re.sub(r"\D", "", run_id.split("-", 1)[0])
    name = derived_dbname(live, f"_rollback_{digits if len(digits) == 14 else f'{datetime.now(UTC):%Y%m%d%H%M%S}'}")
    target = env.target(direct=True)
    with connect(target.with_dbname("postgres" if live != "postgres" else "template1"), purpose="rollback") as conn:
        row = conn.execute(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    if row is None or str(row[0]).startswith(UNFINISHED):
        return name
    return derived_dbname(live, f"_rollback_{datetime.now(UTC):%Y%m%d%H%M%S}")


def _roll_back_interrupted(
    env: Environment, run: Run, report: DeployReport, opts: DeployOptions, state: _State
) -> DeployReport:
    forced = DeployOptions(**{**opts.__dict__, "auto_rollback": True})
    state.migrate_started = True
    report.applied = ["(interrupted)"]  # the schema may have been touched: restore the backup
    try:
        if state.backup_id is None:
            report.rollback = []
            report.outcome = "rolled_back"
        else:
            _on_failure(env, run, report, forced, state, MigrationFailed("interrupted deploy rolled back"))
    finally:
        maintenance_off(env, run)
        report.steps = [dict(s) for s in run.steps]
        run.finish(report.outcome, "; ".join(filter(None, [report.error, report.next_step])))
    return report

"""``pgrunbook deploy``: the runbook's production migration procedure, every step journaled.

preflight -> maintenance on -> pre-deploy backup (verified) -> migrate -> verify (health) ->
maintenance off. On failure the decision tree applies: automatically with --auto-rollback, otherwise
as the exact commands to run. maintenance_off runs at the end whatever happened, unless the operator
asks to stay in maintenance. An interrupted run is visible in ``pgrunbook runs`` and resumable.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from pgrunbook.app_url import app_target
from pgrunbook.backup.identity import restored_from
from pgrunbook.backup.method import UNFINISHED, RestoreReport, method_for
from pgrunbook.doctor import run_doctor
from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError, LocalStateError, PgRunbookError
from pgrunbook.health import check_health
from pgrunbook.journal import Journal, Run, RunRecord
from pgrunbook.postgres.catalog import count_tables, try_session_lock
from pgrunbook.postgres.connect import connect, connect_server
from pgrunbook.postgres.database_swap import drop_statement
from pgrunbook.postgres.names import derived_dbname
from pgrunbook.prisma.engine import MigrationFailed, MigrationRefused, migrate_deploy, migration_status
from pgrunbook.prisma.history import History
from pgrunbook.prisma.lint import lint_files
from pgrunbook.prisma.migrations_dir import read_migrations
from pgrunbook.prisma.splitter import config_splits
from pgrunbook.prisma.status import elsewhere_warning, resolve_hint
from pgrunbook.procedures.hooks import env_hook
from pgrunbook.procedures.point_app import check_app_url, point_app, runbook_url_note
from pgrunbook.procedures.rollback import decide
from pgrunbook.procedures.steps import (
    carry_database_settings,
    fresh_dbname,
    maintenance_off,
    maintenance_off_command,
    maintenance_on,
    verified_backup,
)
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
        self.maintenance_since = ""  # "00:24 UTC": when maintenance_on started, for the recovery note
        self.note: _Note | None = None


@dataclass
class _Note:
    """The deploy's recovery note, written before each change as the in-place restore's is: a run killed
    anywhere (SIGKILL included) says whether the app is in maintenance and how to end it, what was
    migrated, what it left on the server with the statement that drops it, and how to continue.
    ``body`` is the deploy's own part; a note the procedure wrote directly (``run.set_recovery``) is
    kept as the body, with the maintenance state put before it."""

    env: Environment
    run: Run
    maintenance: str = "off"  # off | turning on | on | kept on | turning off
    since: str = ""
    body: str = ""
    written: str = ""

    def set(self, **changes: str) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        self.write()

    def write(self) -> None:
        if self.run.recovery != self.written:  # written directly since (a settled rollback): that is the body
            self.body = self.run.recovery
        text = " ".join(p for p in (self._maintenance(), self.body) if p)
        with contextlib.suppress(LocalStateError):  # best effort: every step records itself, or fails, anyway
            self.run.set_recovery(text)
        self.written = text

    def _maintenance(self) -> str:
        hooks = self.env.settings.hooks
        if self.maintenance == "off" or "maintenance_on" not in hooks:
            return ""
        off = hooks.get("maintenance_off")
        end = (
            f"end it with the maintenance_off hook ({off}) once the app is safe"
            if off
            else f"end it by hand once the app is safe (environment {self.env.name!r} has no maintenance_off hook)"
        )
        since = f" since {self.since}" if self.since else ""
        return {
            "turning on": f"Maintenance: the maintenance_on hook was started{since.replace('since', 'at')}, so the "
            f"app may be in maintenance; {end}.",
            "on": f"Maintenance is on{since}; {end}.",
            "kept on": f"Maintenance is on{since}, kept on after the failure as asked; {end}.",
            "turning off": f"Maintenance: the maintenance_off hook was running, so the app may still be in "
            f"maintenance (on{since}); {end}.",
        }[self.maintenance]


def _hhmm(iso: str | None = None) -> str:
    """``00:24 UTC``: now, or a journal timestamp's time of day."""
    when = datetime.fromisoformat(iso.replace("Z", "+00:00")) if iso else datetime.now(UTC)
    return f"{when.astimezone(UTC):%H:%M} UTC"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "the migration failed"


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
    # the run's own intent: a deploy started with --auto-rollback and killed in its rollback continues
    # the rollback (break11 #12), never ends maintenance on the database its migration failed on
    opts.auto_rollback = opts.auto_rollback or bool(record.args.get("auto_rollback"))
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
            with contextlib.suppress(ValueError):
                state.maintenance_since = _hhmm(s.started_at)
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
    note = state.note = _Note(env, run, "on" if in_maintenance else "off", state.maintenance_since)
    resume_cmd = f"to continue: pgrunbook deploy --resume {run.id}"
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
            note.set(maintenance="turning on", since=_hhmm(), body=f"Nothing migrated yet; {resume_cmd}.")
            maintenance_on(env, run)
            note.set(maintenance="on")
        if "pre-deploy backup" not in done:
            note.set(
                body="Nothing migrated yet: the pre-deploy backup was being taken (an unfinished one is never listed "
                f"or used); {resume_cmd} (it takes the backup again), or end maintenance and deploy later."
            )
            m = verified_backup(env, run, "pre-deploy backup", label="pre-deploy", progress=opts.progress)
            state.backup_id = report.backup_id = m.id
            note.set(body=f"Nothing migrated yet; pre-deploy backup {state.backup_id}, verified; {resume_cmd}.")
        report.backup_id = state.backup_id
        if "migrate" not in done and state.migrate_error is not None:
            # killed during the automatic rollback: the migration failed already (running it again only
            # meets its own failed history row, P3009); the rollback is what was left to do
            raise MigrationFailed(state.migrate_error)
        if "migrate" not in done:
            with run.step("migrate") as info:
                state.migrate_started = True
                note.set(
                    body=f"The migration was running: the schema may be partly changed (pgrunbook status --env "
                    f"{env.name} shows each migration); pre-deploy backup {state.backup_id}. If the schema is "
                    f"wrong: {rollback_line(env, 'with-db', state.backup_id)}. {resume_cmd.capitalize()} (it stops "
                    f"with the decision tree's command if a migration did not finish), or pgrunbook deploy --resume "
                    f"{run.id} --rollback to restore the pre-deploy backup into a new database."
                )
                result_m = migrate_deploy(env)  # backed up just before: no protected-environment rule
                report.applied = [a.name for a in result_m.applied]
                note.set(
                    body=f"Migrated: applied {', '.join(report.applied) or 'nothing'}; pre-deploy backup "
                    f"{state.backup_id}. If the schema is wrong: {rollback_line(env, 'with-db', state.backup_id)}. "
                    f"{resume_cmd.capitalize()} (it checks health)."
                )
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
            _failed_note(env, run, report, state, exc)
            _on_failure(env, run, report, opts, state, exc)
    finally:
        still_on = False
        if in_maintenance and "maintenance off" not in done:
            kept = failure is not None and opts.keep_maintenance_on_failure
            note.set(maintenance="kept on" if kept else "turning off")
            if failure is None or not opts.keep_maintenance_on_failure:
                try:
                    maintenance_off(env, run)  # runs its hook even when the journal cannot record it
                except PgRunbookError as exc:
                    still_on = True
                    done_before = "the deploy itself went through, but " if failure is None else ""
                    failure = failure or exc
                    report.outcome = "failed"
                    line = (
                        f"{done_before}the application is still in maintenance: maintenance_off failed "
                        f"({exc.message}); {maintenance_off_command(env)}"
                    )
                    report.error = f"{report.error}; {line}" if report.error else line
            else:
                maintenance_off(
                    env, run, keep=True, why_kept="kept on after the failure, as asked (--keep-maintenance-on-failure)"
                )
        if state.maintenance_started is not None and not resumed and not still_on:
            report.maintenance_window_s = round(time.monotonic() - state.maintenance_started, 3)
        report.steps = [dict(s) for s in run.steps]
        if any(s["name"] == "maintenance off" and s["status"] == "succeeded" for s in run.steps):
            note.set(maintenance="off")
        if report.outcome != "running":
            try:
                run.finish(report.outcome, "; ".join(filter(None, [report.error, report.next_step])))
            except LocalStateError as exc:  # the outcome is told on stdout/stderr; the journal keeps "running"
                failure = failure or exc
                if report.error is None:
                    report.outcome, report.error = "failed", exc.message
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
    target = env.target()
    elsewhere = elsewhere_warning(target.schema, status.history_elsewhere, target.variable)
    if elsewhere is not None:
        report.warnings.append(elsewhere)
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
    if not state.migrate_started or isinstance(exc, MigrationRefused):
        return  # nothing changed: maintenance off is all that is needed
    schema_touched = isinstance(exc, MigrationFailed) or bool(report.applied)
    decision = decide(migration_failed_or_data_wrong=schema_touched, app_only_regression=not schema_touched)
    backup = state.backup_id
    report.rollback = [rollback_line(env, decision.mode or "app-only", backup)]
    if not opts.auto_rollback:
        return
    restored_name: str | None = None
    pointed: str | None = None
    try:
        if decision.mode == "with-db" and backup:
            live = env.target(direct=False).dbname
            name, finished, abandoned = _rollback_name(env, live, run.id, backup)
            if abandoned:  # breaker13 N6: restoring anew must say why, and which copy it leaves as it is
                with run.step("copy not reused") as info:
                    info["detail"] = abandoned
                report.warnings.append(abandoned)
            if finished:  # --resume after the restore was verified: reused (the app may even write to it)
                restored = RestoreReport(backup, name, verified=True, method="restored before the interruption")
                with run.step("reuse restore") as info:
                    info["detail"] = (
                        f"{name} holds pre-deploy backup {backup}, restored and verified before the run was "
                        "interrupted, every table of the backup still there with at least its rows: not restored "
                        "again"
                    )
            else:
                _rollback_note(state, run, report.error, live, name, backup, restored=False)
                restored = method_for(env).restore_into(env, backup, name, run=run, progress=opts.progress)
            restored_name = name
            _rollback_note(state, run, report.error, live, name, backup, restored=True)
            with run.step("point app") as info:
                carried = carry_database_settings(env, live, name)
                pointed_at = point_app(env, restored, run.id)
                info["detail"] = f"app pointed at {pointed_at} (with {live}'s {carried}); {live} kept for forensics"
            report.database, report.replaced_database = name, live
            _pointed_note(env, state, live, name, backup)
            report.next_step = runbook_url_note(env, name, live)
            restored_name, pointed = None, name  # pointed: what is left is the app's own rollback
        if "app_rollback" in env.settings.hooks:
            with run.step("app rollback"):
                env_hook(env, "app_rollback", run.id)
        with run.step("health") as info:  # as rollback --with-db does: "rolled_back" means the app is fine
            target = app_target(env, pointed) if pointed else None  # as the app connects
            health = check_health(env, target=target, check_http=bool(env.settings.health_url))
            info["detail"] = health.summary
            if not health.ok:
                raise _HealthFailed(f"health check failed after the automatic rollback: {health.summary}")
        report.outcome = "rolled_back"
        report.rollback = []
        _settled_recovery(run, report, backup, pointed)
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
        elif isinstance(rb_exc, _HealthFailed):  # rolled back, but the app is not healthy there
            where = (
                f"the app is on {pointed} (pre-deploy backup {backup}, restored and verified)"
                if pointed
                else ("the app was rolled back")
            )
            report.rollback = [
                f"{where} but not healthy: pgrunbook health --env {env.name} shows why; fix the app, its "
                "point_app or app_rollback hook, and check pgrunbook health again"
            ]
            _best_effort_recovery(run, f"{report.rollback[0]}")


def _settled_recovery(run: Run, report: DeployReport, backup: str | None, pointed: str | None) -> None:
    """A rolled-back run's recovery note says what is true (trial11 F3): never the command that would
    restore the pre-deploy backup a second time."""
    if pointed:
        text = (
            f"none needed: rolled back to {pointed} (pre-deploy backup {backup}, restored and verified, the app "
            f"pointed at it and healthy); the previous database {report.replaced_database} is kept for forensics, "
            "with the failed migration's row"
        )
        if report.next_step:
            text += f"; next: {report.next_step}"
    else:
        text = "none needed: the app was rolled back (app_rollback) and is healthy; the schema was not changed"
    _best_effort_recovery(run, text)


def _best_effort_recovery(run: Run, text: str) -> None:
    with contextlib.suppress(LocalStateError):  # the run's outcome and error say it all the same
        run.set_recovery(text)


def _failed_note(env: Environment, run: Run, report: DeployReport, state: _State, exc: PgRunbookError) -> None:
    """The note once a step failed, before the decision tree runs (which rewrites it while it rolls back)."""
    note = state.note
    if note is None:
        return
    if not state.migrate_started:
        note.set(body=f"Nothing migrated: the deploy failed before migrating ({_first_line(report.error)}); deploy "
                 "again once that is fixed.")  # fmt: skip
        return
    what = (
        f"The migration failed ({_first_line(report.error)}): the schema may be partly changed"
        if isinstance(exc, MigrationFailed)
        else f"Migrated ({', '.join(report.applied) or 'nothing applied'}), then: {_first_line(report.error)}"
    )
    note.set(
        body=f"{what}; pre-deploy backup {state.backup_id}. If the schema is wrong: "
        f"{rollback_line(env, 'with-db', state.backup_id)}."
    )


def _rollback_note(
    state: _State, run: Run, why: str | None, live: str, name: str, backup: str, *, restored: bool
) -> None:
    """Before the automatic rollback's restore, and before pointing the app: what a kill there leaves."""
    if state.note is None:
        return
    failed = f"The deploy failed ({_first_line(why)})"
    if not restored:
        state.note.set(
            body=f"{failed}; the automatic rollback was restoring pre-deploy backup {backup} into {name}: the app "
            f"is still on {live}, the database the migration failed on. Leftover: {name} may hold a partial "
            f"restore (not in use): {drop_statement(name)} (deploy --resume replaces it by itself). To finish the "
            f"rollback: pgrunbook deploy --resume {run.id}."
        )
        return
    state.note.set(
        body=f"{failed}; {name} holds pre-deploy backup {backup}, restored and verified; the app was being pointed "
        f"at it (point_app), so it may be on {name} or still on {live}, the database the migration failed on. To "
        f"finish the rollback: pgrunbook deploy --resume {run.id} (it points the app at {name} again, without "
        "restoring it again)."
    )


def _pointed_note(env: Environment, state: _State, live: str, name: str, backup: str) -> None:
    """The app points at the rollback database: what is left to do by hand if the run dies now."""
    if state.note is None:
        return
    hook = env.settings.hooks.get("app_rollback")
    state.note.set(
        body=f"The app was pointed at {name} (pre-deploy backup {backup}, restored and verified); {live} is kept "
        "for forensics with the failed migration. Left: "
        + (f"the app's own rollback (the app_rollback hook: {hook}), then " if hook else "")
        + f"pgrunbook health --env {env.name}. Next: {runbook_url_note(env, name, live)}"
    )


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


def _rollback_name(env: Environment, live: str, run_id: str, backup: str) -> tuple[str, bool, str]:
    """``<live>_rollback_<the run's start>`` (its id begins ``20261201T013102Z``), whether it already
    holds ``backup``, verified, and why a verified copy there is not reused ("" when none is left aside).
    The same name when ``--resume`` continues a rollback that was killed, so the restore replaces (and
    reports) that run's unfinished database instead of leaving it behind, and a restore that had been
    verified is used as it is (True): restoring again would cost the downtime twice and, once point_app
    had run, lose what the app wrote there. Another database of that name, or a verified copy changed
    since (_still_as_restored), is left alone: the rollback then takes the time of now."""
    digits = re.sub(r"\D", "", run_id.split("-", 1)[0])
    name = derived_dbname(live, f"_rollback_{digits if len(digits) == 14 else f'{datetime.now(UTC):%Y%m%d%H%M%S}'}")
    with connect_server(env.target(direct=True), purpose="rollback") as conn:
        row = conn.execute(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    if row is None or str(row[0]).startswith(UNFINISHED):
        return name, False, ""
    if restored_from(str(row[0])) != backup:
        return fresh_dbname(env, live, "_rollback_"), False, ""
    why = _still_as_restored(env, name, backup)
    if why is None:
        return name, True, ""
    fresh = fresh_dbname(env, live, "_rollback_")
    return (
        fresh,
        False,
        (
            f"{name}, restored from {backup} and verified before the run was interrupted, is not reused: {why}; it "
            f"is kept as it is (the app may have written to it), and the backup is restored anew into {fresh}"
        ),
    )


def _still_as_restored(env: Environment, name: str, backup: str) -> str | None:
    """Why database ``name``, marked as holding ``backup`` restored and verified, cannot be reused as
    it is, or None: every table of the backup must still be there with at least its rows (the app,
    pointed at it before the run was killed, may have added rows; a table dropped or emptied since is
    not the verified copy, breaker13 F8). The copy is never dropped; the rollback then restores anew."""
    manifest = env.repository.get(backup)
    tables = [(t.schema_, t.name) for t in manifest.tables]
    try:
        with connect(env.target(direct=True).with_dbname(name), purpose="rollback") as conn:
            counts = count_tables(conn, tables)
    except (PgRunbookError, psycopg.Error) as exc:
        return str(getattr(exc, "message", exc)).splitlines()[0]
    fewer = [t.qualified for t in manifest.tables if counts.get((t.schema_, t.name), 0) < t.rows]
    return f"fewer rows than the backup in {', '.join(fewer[:3])}" if fewer else None


def _roll_back_interrupted(
    env: Environment, run: Run, report: DeployReport, opts: DeployOptions, state: _State
) -> DeployReport:
    forced = DeployOptions(**{**opts.__dict__, "auto_rollback": True})
    state.migrate_started = True
    note = state.note = _Note(
        env, run, "on" if state.maintenance_started is not None else "off", state.maintenance_since
    )
    report.applied = ["(interrupted)"]  # the schema may have been touched: restore the backup
    try:
        if state.backup_id is None:
            report.rollback = []
            report.outcome = "rolled_back"
        else:
            _on_failure(env, run, report, forced, state, MigrationFailed("interrupted deploy rolled back"))
    finally:
        note.set(maintenance="turning off")
        maintenance_off(env, run)
        note.set(maintenance="off")
        report.steps = [dict(s) for s in run.steps]
        run.finish(report.outcome, "; ".join(filter(None, [report.error, report.next_step])))
    return report

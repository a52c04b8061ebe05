"""``pgrunbook rollback``: the runbook's decision tree, and its two branches executed.

"If migration fails or data looks wrong: restore backup + rollback app. If app-only regression (no
schema changes): rollback app only." The database that is replaced is kept, never dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pgrunbook.app_url import app_target
from pgrunbook.backup.method import method_for
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError, MissingDatabase, PgRunbookError
from pgrunbook.health import check_health
from pgrunbook.journal import Journal, Run
from pgrunbook.postgres.connect import connect
from pgrunbook.procedures.hooks import env_hook
from pgrunbook.procedures.point_app import check_app_url, point_app, runbook_url_note
from pgrunbook.procedures.steps import (
    carry_database_settings,
    fresh_dbname,
    maintenance_off,
    maintenance_off_command,
    maintenance_on,
)
from pgrunbook.progress import ProgressFn, no_progress

Mode = Literal["app-only", "with-db"]


@dataclass(frozen=True)
class Decision:
    mode: Mode | None
    reason: str


def decide(*, migration_failed_or_data_wrong: bool | None, app_only_regression: bool | None) -> Decision:
    """The runbook's two questions, in its order; None means "not answered"."""
    if migration_failed_or_data_wrong:
        return Decision(
            "with-db", "the migration failed or the data looks wrong: restore the backup and roll the app back"
        )
    if app_only_regression:
        return Decision("app-only", "an app-only regression with no schema change: roll the app back only")
    return Decision(None, "neither case of the runbook applies: nothing to roll back automatically")


def commands(env_name: str) -> list[str]:
    return [
        f"pgrunbook rollback --with-db --env {env_name}   # migration failed or data looks wrong",
        f"pgrunbook rollback --app-only --env {env_name}  # app-only regression, no schema change",
    ]


@dataclass
class RollbackReport:
    run_id: str
    mode: Mode
    outcome: str = "running"
    steps: list[dict[str, object]] = field(default_factory=list)
    backup_id: str | None = None
    database: str | None = None
    replaced_database: str | None = None
    #: after --with-db: set pgrunbook's own URL variable(s) to the new database
    next_step: str | None = None
    maintenance_window_s: float | None = None
    #: what the operator must know: the writes the restored backup does not have
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "outcome": self.outcome,
            "steps": self.steps,
            "backup_id": self.backup_id,
            "database": self.database,
            "replaced_database": self.replaced_database,
            "maintenance_window_s": self.maintenance_window_s,
            "next_step": self.next_step,
            "warnings": self.warnings,
        }


def last_known_good(env: Environment) -> str:
    """The newest verified pre-deploy backup: the state right before the last deploy touched anything."""
    for m in env.repository.list_backups():
        if m.label == "pre-deploy" and m.verified:
            return m.id
    raise PgRunbookError(
        f"no verified pre-deploy backup of environment {env.name!r}",
        hint="name one with --backup ID (pgrunbook backup list)",
    )


def rollback(
    env: Environment,
    journal: Journal,
    mode: Mode,
    *,
    backup_id: str | None = None,
    progress: ProgressFn = no_progress,
    options: RestoreOptions | None = None,
) -> RollbackReport:
    for hook in ("app_rollback",) + (("point_app",) if mode == "with-db" else ()):
        if hook not in env.settings.hooks:
            raise ConfigError(
                f"rollback {mode} needs the {hook} hook, and environment {env.name!r} has none",
                hint=f"add {hook} under [environments.{env.name}.hooks] in pgrunbook.toml",
            )
    if mode == "with-db":
        check_app_url(env)  # never the admin's URL into the app's configuration; before anything runs
    else:
        _refuse_lost_database(env)
    run = journal.start("rollback", env.name, {"mode": mode, "backup": backup_id})
    report = RollbackReport(run.id, mode)
    started: float | None = None
    failure: BaseException | None = None
    try:
        if mode == "with-db":
            # the app stops writing to the database being replaced before the restore starts (trial11 F4):
            # what it wrote during the restore would otherwise stay behind, silently, in the old one
            live = _choose_backup(env, run, report, backup_id)  # a look-up: before maintenance
            started = time.monotonic()
            maintenance_on(env, run)
            _restore_and_point(env, run, report, live, progress, options)
        with run.step("app rollback"):
            env_hook(env, "app_rollback", run.id)
        with run.step("health") as info:
            target = app_target(env, report.database) if report.database else None  # as the app connects
            result = check_health(env, target=target)
            info["detail"] = result.summary
            if not result.ok:
                raise _unhealthy(env, report, result.summary)
        report.outcome = "rolled_back"
        if report.database and report.replaced_database:
            report.next_step = runbook_url_note(env, report.database, report.replaced_database)
    except BaseException as exc:
        failure = exc
        report.outcome = "failed"
    finally:
        if started is not None:
            try:
                maintenance_off(env, run)  # also after a failure, as deploy does
                report.maintenance_window_s = round(time.monotonic() - started, 3)
            except PgRunbookError as off_exc:
                still = (
                    f"the application is still in maintenance: maintenance_off failed ({off_exc.message}); "
                    f"{maintenance_off_command(env)}"
                )
                report.outcome = "failed"
                if isinstance(failure, PgRunbookError):
                    failure.message += f"; {still}"
                elif failure is None:
                    failure = PgRunbookError(f"rolled back to {report.database}, but {still}", hint=off_exc.hint)
        report.steps = [dict(s) for s in run.steps]
    if failure is None:
        run.finish("rolled_back", report.next_step or "")
        return report
    run.finish("failed", str(getattr(failure, "message", failure)))
    if isinstance(failure, PgRunbookError):
        failure.report = report  # --json: the failed run's report is the document, as deploy's is
    raise failure


def _unhealthy(env: Environment, report: RollbackReport, summary: str) -> PgRunbookError:
    """The error of a rollback whose last health check failed. Once the app was pointed at the restored
    database it says so, with what stays behind and the URL pgrunbook itself must now use: pgrunbook's
    own ``health`` still checks the database the app left (newuser14 W2: none of it was said)."""
    if not (report.database and report.replaced_database):
        return PgRunbookError(
            f"health check failed after the rollback: {summary}",
            hint="pgrunbook health shows the details; pgrunbook runs shows every step",
        )
    moved = runbook_url_note(env, report.database, report.replaced_database)
    report.next_step = moved
    behind = "; ".join(report.warnings)
    return PgRunbookError(
        f"health check failed after the rollback: {summary}; the app is on {report.database} (backup "
        f"{report.backup_id}, restored and verified), {report.replaced_database} is kept as it was",
        hint=f"fix the app or its app_rollback hook; {moved}, then pgrunbook health --env {env.name} checks the "
        f"app's database" + (f"; {behind}" if behind else ""),
    )


def _refuse_lost_database(env: Environment) -> None:
    """An app-only rollback cannot make the app healthy when its database is gone: raises the server's
    MissingDatabase (the CLI adds the recovery command) before the app_rollback hook changes the
    release. Any other connection failure is left to the health check that follows the hook."""
    try:
        with connect(env.target(direct=False), purpose="rollback", connect_timeout=5):
            pass
    except MissingDatabase:
        raise
    except PgRunbookError:
        return


def _backup_age(env: Environment, backup_id: str) -> str:
    """``2026-12-02 00:11 UTC, 3h 2m ago`` for a backup, or "" when its manifest gives no time."""
    try:
        manifest = env.repository.read_manifest(backup_id)
    except PgRunbookError:
        return ""
    created = manifest.started_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    minutes = max(int((datetime.now(UTC) - created).total_seconds() // 60), 0)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    ago = f"{days}d {hours}h" if days else f"{hours}h {mins}m" if hours else f"{mins}m"
    return f"{created:%Y-%m-%d %H:%M} UTC, {ago} ago"


def _choose_backup(env: Environment, run: Run, report: RollbackReport, backup_id: str | None) -> str:
    """The step "choose backup" (the newest verified pre-deploy one unless named), with its age and the
    warning that what was written since stays behind (trial11 F4). Returns the app's database name."""
    with run.step("choose backup") as info:
        report.backup_id = backup_id or last_known_good(env)
        live = env.target(direct=False).dbname
        age = _backup_age(env, report.backup_id)
        info["detail"] = f"{report.backup_id}{f' (taken {age})' if age else ''}"
    report.warnings.append(
        f"what the app wrote to {live} after backup {report.backup_id} was taken"
        f"{f' ({age})' if age else ''} and before maintenance began is not in the restored database; "
        f"it stays in {live}, which is kept"
    )
    return live


def _restore_and_point(
    env: Environment,
    run: Run,
    report: RollbackReport,
    live: str,
    progress: ProgressFn,
    options: RestoreOptions | None = None,
) -> None:
    assert report.backup_id is not None  # chosen by _choose_backup
    name = fresh_dbname(env, live, "_rollback_")
    restored = method_for(env).restore_into(env, report.backup_id, name, run=run, progress=progress, options=options)
    report.database = restored.database
    run.set_recovery(f"the app's previous database {live} is kept as it was; {name} holds backup {report.backup_id}")
    with run.step("point app") as info:
        carried = carry_database_settings(env, live, name)
        pointed = point_app(env, restored, run.id)
        info["detail"] = f"app pointed at {pointed} (with {live}'s {carried}); {live} kept for forensics"
    report.replaced_database = live  # set once the app points here: the output says "app now on" only then

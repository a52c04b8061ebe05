"""``pgrunbook rollback``: the runbook's decision tree, and its two branches executed.

"If migration fails or data looks wrong: restore backup + rollback app. If app-only regression (no
schema changes): rollback app only." The database that is replaced is kept, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pgrunbook.app_url import app_target
from pgrunbook.backup.method import method_for
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError, PgRunbookError
from pgrunbook.health import check_health
from pgrunbook.journal import Journal, Run
from pgrunbook.postgres.names import derived_dbname
from pgrunbook.procedures.hooks import env_hook
from pgrunbook.procedures.point_app import check_app_url, point_app, runbook_url_note
from pgrunbook.procedures.steps import carry_database_settings
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

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "outcome": self.outcome,
            "steps": self.steps,
            "backup_id": self.backup_id,
            "database": self.database,
            "replaced_database": self.replaced_database,
            "maintenance_window_s": None,
            "next_step": self.next_step,
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
    run = journal.start("rollback", env.name, {"mode": mode, "backup": backup_id})
    report = RollbackReport(run.id, mode)
    try:
        if mode == "with-db":
            _restore_and_point(env, run, report, backup_id, progress, options)
        with run.step("app rollback"):
            env_hook(env, "app_rollback", run.id)
        with run.step("health") as info:
            target = app_target(env, report.database) if report.database else None  # as the app connects
            result = check_health(env, target=target)
            info["detail"] = result.summary
            if not result.ok:
                raise PgRunbookError(
                    f"health check failed after the rollback: {result.summary}",
                    hint="pgrunbook health shows the details; pgrunbook runs shows every step",
                )
        report.outcome = "rolled_back"
        if report.database and report.replaced_database:
            report.next_step = runbook_url_note(env, report.database, report.replaced_database)
        run.finish("rolled_back", report.next_step or "")
        return report
    except BaseException as exc:
        report.outcome = "failed"
        run.finish("failed", str(getattr(exc, "message", exc)))
        if isinstance(exc, PgRunbookError):
            exc.report = report  # --json: the failed run's report is the document, as deploy's is
        raise
    finally:
        report.steps = [dict(s) for s in run.steps]


def _restore_and_point(
    env: Environment,
    run: Run,
    report: RollbackReport,
    backup_id: str | None,
    progress: ProgressFn,
    options: RestoreOptions | None = None,
) -> None:
    with run.step("choose backup") as info:
        report.backup_id = backup_id or last_known_good(env)
        info["detail"] = report.backup_id
    live = env.target(direct=False).dbname
    name = derived_dbname(live, f"_rollback_{datetime.now(UTC):%Y%m%d%H%M%S}")
    restored = method_for(env).restore_into(env, report.backup_id, name, run=run, progress=progress, options=options)
    report.database, report.replaced_database = restored.database, live
    run.set_recovery(f"the app's previous database {live} is kept untouched; {name} holds backup {report.backup_id}")
    with run.step("point app") as info:
        carried = carry_database_settings(env, live, name)
        pointed = point_app(env, restored, run.id)
        info["detail"] = f"app pointed at {pointed} (with {live}'s {carried}); {live} kept for forensics"

"""Pointing the app at a restored database: the point_app hook, then the health check against it.

Used by ``restore --into … --point-app``, the rollback, and the deploy's automatic rollback."""

from __future__ import annotations

from pgrunbook.backup.method import RestoreReport, method_for
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import ConfigError, PgRunbookError
from pgrunbook.health import check_health
from pgrunbook.journal import Run
from pgrunbook.procedures.hooks import env_hook


def point_app(env: Environment, report: RestoreReport, run_id: str) -> None:
    """Run the point_app hook with the restored database's URL (``PGRUNBOOK_DATABASE_URL``); refused
    (ConfigError) when no hook is configured."""
    if "point_app" not in env.settings.hooks:
        raise ConfigError(
            f"environment {env.name!r} has no point_app hook",
            hint='add [environments.<name>.hooks] point_app = "..." to pgrunbook.toml',
        )
    assert report.database_url is not None
    env_hook(env, "point_app", run_id, extra_env={"PGRUNBOOK_DATABASE_URL": report.database_url})


def restore_into_and_point(
    env: Environment,
    backup_id: str,
    dbname: str,
    *,
    run: Run,
    progress: ProgressFn = no_progress,
    point: bool = False,
    options: RestoreOptions | None = None,
) -> RestoreReport:
    """``restore --into``: the backup restored into ``dbname`` and verified; with ``point``, then the
    steps "point app" and "health" (against the new database). Raises PgRunbookError when the health
    check fails after pointing."""
    report = method_for(env).restore_into(env, backup_id, dbname, progress=progress, run=run, options=options)
    if point:
        with run.step("point app"):
            point_app(env, report, run.id)
        with run.step("health") as info:
            result = check_health(env, target=env.target(direct=False).with_dbname(dbname))
            info["detail"] = result.summary
            if not result.ok:
                raise PgRunbookError(f"health check failed after pointing the app: {result.summary}")
    return report

"""Pointing the app at a restored database: the point_app hook, then the health check against it.

Used by ``restore --into … --point-app``, the rollback, and the deploy's automatic rollback. Which URL
the hook gets, and the checks on it (not an admin's; it logs in), are in app_url.py: doctor warns with
the same words.
"""

from __future__ import annotations

from pgrunbook.app_url import admin_reason, admin_url_error, app_target, try_app_login
from pgrunbook.backup.method import RestoreReport, method_for
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError, PgRunbookError, Stopped
from pgrunbook.health import check_health
from pgrunbook.journal import Run
from pgrunbook.postgres.connect import connect
from pgrunbook.procedures.hooks import env_hook
from pgrunbook.progress import ProgressFn, no_progress

__all__ = ["check_app_url", "point_app", "restore_into_and_point", "runbook_url_note"]


def check_app_url(env: Environment) -> None:
    """Refuse (ConfigError, before anything is restored) to hand point_app an admin's URL, or one that
    cannot log in (app_url.py has the rules). With ``app_url_env`` set, only its login is tried."""
    if "point_app" not in env.settings.hooks:
        raise ConfigError(
            f"environment {env.name!r} has no point_app hook",
            hint='add [environments.<name>.hooks] point_app = "..." to pgrunbook.toml',
        )
    app = app_target(env)
    if env.settings.app_url_env is None:
        with connect(env.target(direct=True), purpose="point_app check") as conn:
            why = admin_reason(conn, app)
        if why:
            raise admin_url_error(env, app, why, "; nothing was changed")
    # as the app, to its current database: the new one may not be reachable through the app's pooler
    # before point_app has run (a pgbouncer [databases] entry is often what the hook adds)
    try_app_login(env, app, "; nothing was changed")


def point_app(env: Environment, report: RestoreReport, run_id: str) -> str:
    """Run the point_app hook with the application's own URL for the restored database
    (``PGRUNBOOK_DATABASE_URL``; also ``PGRUNBOOK_DATABASE_NAME`` and ``PGRUNBOOK_PREVIOUS_DATABASE_NAME``);
    returns that URL as it may be shown. ConfigError when no hook is configured."""
    if "point_app" not in env.settings.hooks:
        raise ConfigError(
            f"environment {env.name!r} has no point_app hook",
            hint='add [environments.<name>.hooks] point_app = "..." to pgrunbook.toml',
        )
    app = app_target(env)
    new = app.with_dbname(report.database)
    env_hook(
        env,
        "point_app",
        run_id,
        extra_env={
            "PGRUNBOOK_DATABASE_URL": new.full_url(),
            "PGRUNBOOK_DATABASE_NAME": report.database,
            "PGRUNBOOK_PREVIOUS_DATABASE_NAME": app.dbname,
        },
        secrets=app.secrets(),
    )
    return new.display


def _stopped_pointing(env: Environment, dbname: str, pointed: bool) -> tuple[str, str]:
    """What a stop while pointing the app leaves: the restored database is verified and kept either way;
    the app points at it (the hook had finished) or at either database (the hook was stopped mid-run)."""
    previous = app_target(env).dbname
    if pointed:
        return (
            f"{dbname} was restored, verified and kept, and point_app had pointed the app at it; the health "
            "check after it did not finish",
            f"see that the app works on {dbname} (its health URL); the previous database {previous} is "
            "untouched, point_app can point the app back at it",
        )
    return (
        f"{dbname} was restored, verified and kept; point_app was stopped while it ran, so the app may point "
        f"at {dbname} or still at {previous} (untouched)",
        f"check where the app points; to finish, run your point_app hook again with PGRUNBOOK_DATABASE_URL "
        f"naming {dbname}, or drop {dbname} and run the same restore again",
    )


def runbook_url_note(env: Environment, database: str, replaced: str) -> str:
    """After the app was pointed at ``database``: pgrunbook's own variables still name ``replaced``, so its
    scheduled backups, check, serve and the next deploy would keep working on the abandoned database.
    The line names each variable and its new value with the password masked (``***``)."""
    pairs: dict[str, str] = {}
    for direct in (False, True):
        try:
            target = env.target(direct=direct)
        except PgRunbookError:  # a variable that cannot be read here: the other one is still named
            continue
        if target.dbname == replaced:
            pairs.setdefault(target.variable, target.with_dbname(database).masked_url())
    if not pairs:
        return f"point pgrunbook's own database URL at {database} too: it still names {replaced}"
    sets = " and ".join(f"{var}={url}" for var, url in pairs.items())
    return (
        f"set {sets} for pgrunbook too (the password stays as it was): its backups, checks, serve and the next "
        f"deploy still target {replaced}"
    )


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
    if point:
        check_app_url(env)
    report = method_for(env).restore_into(env, backup_id, dbname, progress=progress, run=run, options=options)
    if point:
        pointed = False
        try:
            with run.step("point app") as info:
                shown = point_app(env, report, run.id)
                pointed = True
                info["detail"] = f"app pointed at {shown}"
            with run.step("health") as info:
                result = check_health(env, target=app_target(env, dbname))  # as the app connects
                info["detail"] = result.summary
                if not result.ok:
                    raise PgRunbookError(f"health check failed after pointing the app: {result.summary}")
        except Stopped as exc:
            exc.note(*_stopped_pointing(env, dbname, pointed))
            raise
        live = env.target(direct=False).dbname
        if live != dbname:
            report.next_step = runbook_url_note(env, dbname, live)
    return report

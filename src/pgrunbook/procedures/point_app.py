"""Pointing the app at a restored database: the point_app hook, then the health check against it.

Used by ``restore --into … --point-app``, the rollback, and the deploy's automatic rollback.

What the hook gets (``PGRUNBOOK_DATABASE_URL``) is the application's own URL with only the database
name changed: the URL in ``app_url_env`` when the environment names one, else the one in
``database_url_env`` (the pooled URL the app reads, not ``direct_url_env``). The runbook is often run
by an admin whose URL is in ``database_url_env``; handing that URL to point_app would put the admin's
role and password into the app's configuration. So without ``app_url_env``, pointing is refused before
anything is restored when that URL's role is a superuser, has CREATEROLE, or is a member of the role
owning the app's tables without owning any of them itself (an operator acting for the app).
"""

from __future__ import annotations

import os

from pgrunbook.backup.method import RestoreReport, method_for
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import ConfigError, PgRunbookError
from pgrunbook.health import check_health
from pgrunbook.journal import Run
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.ownership import is_member, schema_ownership
from pgrunbook.postgres.url import DatabaseTarget, parse_database_url
from pgrunbook.procedures.hooks import env_hook


def app_target(env: Environment, dbname: str | None = None) -> DatabaseTarget:
    """The application's own URL (``app_url_env``, else ``database_url_env``), for ``dbname`` when
    given. Raises ConfigError when ``app_url_env`` names an unset variable or holds no postgresql:// URL."""
    var = env.settings.app_url_env
    if var is None:
        target = env.target(direct=False)
    else:
        url = os.environ.get(var)
        if not url:
            raise ConfigError(
                f"{var} is not set (environment {env.name!r} names it as app_url_env, the application's own URL)",
                hint=f"export {var} with the URL the application uses (its own role and password)",
            )
        target = parse_database_url(url, source=var)
    return target.with_dbname(dbname) if dbname else target


def check_app_url(env: Environment) -> None:
    """Refuse (ConfigError, before anything is restored) to hand point_app an admin's URL: see the
    module's docstring for the rule. With ``app_url_env`` set only that variable is checked."""
    if "point_app" not in env.settings.hooks:
        raise ConfigError(
            f"environment {env.name!r} has no point_app hook",
            hint='add [environments.<name>.hooks] point_app = "..." to pgrunbook.toml',
        )
    app = app_target(env)
    if env.settings.app_url_env is not None:
        return
    why = _admin_reason(env, app)
    if why:
        user = app.params.get("user") or "the connecting role"
        raise ConfigError(
            f"point_app would give the application the URL in {app.variable}, whose role {user} is {why}: "
            "the app would run as it, with its password in the app's configuration; nothing was changed",
            hint=f'name the application\'s own URL: app_url_env = "APP_DATABASE_URL" under [environments.{env.name}] '
            f"(pgrunbook changes only its database name); if {user} really is the app's role, "
            f'set app_url_env = "{app.variable}"',
        )


def _admin_reason(env: Environment, app: DatabaseTarget) -> str:
    """Why the role in ``app`` looks like an admin's rather than the application's, or ""."""
    with connect(env.target(direct=True), purpose="point_app check") as conn:
        me = app.params.get("user") or str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
        row = conn.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", (me,)).fetchone()
        if row is None:
            return ""
        if row[0]:
            return "a superuser"
        if row[1]:
            return "allowed to create roles (CREATEROLE)"
        owners = schema_ownership(conn, app.schema)
        owner = owners.app_role
        if owner and owner != me and me not in owners.counts() and is_member(conn, me, owner):
            return f"a member of {owner} (which owns the app's tables), not {owner} itself"
    return ""


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
        with run.step("point app") as info:
            info["detail"] = f"app pointed at {point_app(env, report, run.id)}"
        with run.step("health") as info:
            result = check_health(env, target=app_target(env, dbname))  # as the app connects
            info["detail"] = result.summary
            if not result.ok:
                raise PgRunbookError(f"health check failed after pointing the app: {result.summary}")
        live = env.target(direct=False).dbname
        if live != dbname:
            report.next_step = runbook_url_note(env, dbname, live)
    return report

"""The application's own database URL, as the point_app hook gets it, and the two checks on it.

What point_app gets (``PGRUNBOOK_DATABASE_URL``) is the application's own URL with only the database
name changed: the URL in ``app_url_env`` when the environment names one, else the one in
``database_url_env`` (the pooled URL the app reads, not ``direct_url_env``). The runbook is often run
by an admin whose URL is in ``database_url_env``; handing that URL to point_app would put the admin's
role and password into the app's configuration. So without ``app_url_env``, that URL's role must not
look like an admin's: a superuser, a role with CREATEROLE, or a member of the role owning the app's
tables without owning any of them itself (an operator acting for the app).

And the URL must log in: a wrong password in it would be found only by the app, after pointing it
and turning maintenance off. Used by procedures/point_app.py (before a restore, rollback or the
deploy's automatic rollback touches anything) and by ``doctor`` (a warning long before 2 a.m.).
"""

from __future__ import annotations

import os

import psycopg

from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError, MissingDatabase, PgRunbookError
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.names import quote_ident
from pgrunbook.postgres.ownership import is_member, schema_ownership
from pgrunbook.postgres.url import DatabaseTarget, parse_database_url


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


def admin_reason(conn: psycopg.Connection, app: DatabaseTarget) -> str:
    """Why the role in ``app`` looks like an admin's rather than the application's, or "" (``conn``:
    any connection to the app's database, read from pg_roles and the app schema's owners)."""
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


def admin_url_error(env: Environment, app: DatabaseTarget, why: str, tail: str = "") -> ConfigError:
    """The refusal (deploy/rollback/restore pre-flight; ``tail``: "; nothing was changed") and the
    doctor warning share these words."""
    user = app.params.get("user") or "the connecting role"
    return ConfigError(
        f"point_app would give the application the URL in {app.variable}, whose role {user} is {why}: "
        f"the app would run as it, with its password in the app's configuration{tail}",
        hint=f'name the application\'s own URL: app_url_env = "APP_DATABASE_URL" under [environments.{env.name}] '
        f"(pgrunbook changes only its database name); if {user} really is the app's role, "
        f'set app_url_env = "{app.variable}"',
    )


def try_app_login(env: Environment, app: DatabaseTarget, tail: str = "") -> None:
    """Log in as the application would, with ``app`` (its URL, for the database it will be pointed at
    or its current one), and run nothing but ``SELECT 1`` in a read-only transaction. Raises ConfigError
    naming the variable and the cause (a wrong password, a role that may not log in, a database it may
    not connect to): the app would fail the same way once pointed and let out of maintenance. ``tail``
    ends the message (what was, or was not, changed)."""
    try:
        timeout = env.config.postgres.connect_timeout
        with connect(app, autocommit=False, purpose="app login check", connect_timeout=timeout) as conn:
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SELECT 1")
            conn.rollback()
    except MissingDatabase:
        # PostgreSQL authenticates before it looks the database up (InitPostgres: PerformAuthentication,
        # then the database's row): the URL's role and password are right; its database is the one lost
        return
    except (PgRunbookError, psycopg.Error) as exc:
        cause = exc.message if isinstance(exc, PgRunbookError) else str(exc).strip()
        user = app.params.get("user") or "its role"
        hint = (
            f"fix {app.variable} (the URL the app itself uses: role, password, host) and run again; "
            "pointing the app at a database it cannot log in to would take it down once maintenance is off"
        )
        if lacks_connect(cause):  # the URL is right; the role may not connect to that database
            role = quote_ident(app.params["user"]) if app.params.get("user") else "<role>"
            hint = (
                f"the role may not connect to {app.dbname} (no CONNECT privilege; REVOKE … FROM PUBLIC takes "
                f"it away): as an admin, GRANT CONNECT ON DATABASE {quote_ident(app.dbname)} TO {role}; "
                "then run again"
            )
        raise ConfigError(
            f"the application's URL in {app.variable} cannot log in (as {user} to {app.dbname}): {cause}{tail}",
            hint=hint,
        ) from None


def lacks_connect(cause: str) -> bool:
    """Whether a failed login's message is PostgreSQL's missing CONNECT privilege ("permission denied
    for database …", DETAIL "User does not have CONNECT privilege.")."""
    return "permission denied for database" in cause or "CONNECT privilege" in cause

"""The runbook run by an admin, the app on its own role (issue #20, the trial's findings):

- point_app gets the application's own URL with only the database name changed, never the admin's
  (refused before anything is restored when pgrunbook cannot know the app's URL);
- `migrate deploy` run by an admin leaves the new objects with the role that owns the schema's other
  objects (SET ROLE), so the app's next migration can ALTER them; `doctor` reports mixed ownership
  with statements that fix it.

Real cluster, real roles (created here, dropped after each test), the CLI in a child process.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from pgrunbook.config import load_config
from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError
from pgrunbook.postgres.database_swap import read_database
from pgrunbook.postgres.ownership import schema_ownership
from pgrunbook.postgres.url import parse_database_url, url_with_dbname
from pgrunbook.procedures.point_app import check_app_url
from tests.conftest import SERVER, assert_clean_error
from tests.integration.test_migrate import make_migrations
from tests.integration.test_owners import APP_PASSWORD, Shop, admin, app_can_write, drop_roles_and_databases
from tests.integration.test_owners import shop as shop

pytestmark = pytest.mark.integration

HOOKS = (
    "[environments.production.hooks]\n"
    'point_app = \'printf %s "$PGRUNBOOK_DATABASE_URL" > app.url; '
    'printf "%s %s" "$PGRUNBOOK_DATABASE_NAME" "$PGRUNBOOK_PREVIOUS_DATABASE_NAME" > app.names\'\n'
    "app_rollback = 'true'\n"
)


def _config(app_url_env: str | None = None) -> str:
    return (
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        + (f'app_url_env = "{app_url_env}"\n' if app_url_env else "")
        + 'read_query = "SELECT count(*) FROM \\"Customer\\""\nhealth_deadline_s = 5\n'
        + HOOKS
    )


def _databases(shop: Shop) -> set[str]:
    with psycopg.connect(shop.admin_url("postgres")) as conn:
        return {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


# --- 1. point_app gets the app's own URL ------------------------------------------------------------


def test_point_app_is_refused_an_admins_url_before_anything_is_restored(shop: Shop) -> None:
    shop.project.write_config(_config())
    backup = json.loads(shop.project.cli("--json", "backup", "create", "--label", "pre-deploy").stdout)["id"]
    assert shop.project.cli("backup", "verify", backup).returncode == 0
    before = _databases(shop)
    copy = f"{shop.dbname}_copy"
    for args in (("restore", backup, "--into", copy, "--point-app"), ("rollback", "--with-db")):
        r = shop.project.cli(*args)
        assert r.returncode == 3, (args, r.stderr)
        first = r.stderr.splitlines()[0]
        assert first.startswith("error: point_app would give the application the URL in DATABASE_URL")
        assert "superuser" in first and "nothing was changed" in first
        assert "hint:" in r.stderr and "app_url_env" in r.stderr and "Traceback" not in r.stderr
        assert shop.cluster.password not in r.stderr + r.stdout
        assert _databases(shop) == before  # nothing created
        assert not (shop.project.root / "app.url").exists()  # the hook never ran


def _app_url_with_prisma_parameters(shop: Shop) -> str:
    return shop.app_url(shop.dbname) + "?schema=public&connection_limit=3&sslmode=disable"


def test_point_app_onto_a_copy_without_the_checkouts_migrations_says_so(shop: Shop) -> None:
    """trial11 F21, --point-app: the app is pointed at a copy lacking a migration of the checkout; the
    restore says so, and that migrate deploy needs pgrunbook's URL moved to the copy first."""
    shop.project.environ["APP_DATABASE_URL"] = shop.app_url(shop.dbname)
    shop.project.write_config(_config("APP_DATABASE_URL"))
    backup = json.loads(shop.project.cli("--json", "backup", "create").stdout)["id"]
    make_migrations(shop.project, {"20260101000000_discount": 'ALTER TABLE "Customer" ADD COLUMN discount int;'})
    copy = f"{shop.dbname}_copy"
    r = shop.project.cli("--json", "restore", backup, "--into", copy, "--point-app")
    assert r.returncode == 0, r.stderr
    [warning] = json.loads(r.stdout)["warnings"]
    assert warning.startswith(f"{copy} has not applied 1 migration(s) of this checkout (20260101000000_discount)")
    assert warning.endswith(f"(pgrunbook migrate deploy --env production, once pgrunbook's URL names {copy})")


def test_point_app_gets_the_apps_own_url_with_only_the_database_changed(shop: Shop) -> None:
    app_url = _app_url_with_prisma_parameters(shop)
    shop.project.environ["APP_DATABASE_URL"] = app_url
    shop.project.write_config(_config("APP_DATABASE_URL"))
    r = shop.project.cli("--json", "backup", "create", "--label", "pre-deploy")
    backup = json.loads(r.stdout)["id"]
    assert shop.project.cli("backup", "verify", backup).returncode == 0

    copy = f"{shop.dbname}_copy"
    r = shop.project.cli("--json", "restore", backup, "--into", copy, "--point-app")
    assert r.returncode == 0, r.stderr
    written = (shop.project.root / "app.url").read_text()
    assert written == url_with_dbname(app_url, copy)  # user, password, host, Prisma's parameters kept
    assert shop.cluster.password not in written and "postgres:" not in written
    assert (shop.project.root / "app.names").read_text() == f"{copy} {shop.dbname}"
    kwargs = parse_database_url(written).connect_kwargs()
    with psycopg.connect(**kwargs, autocommit=True) as conn:  # type: ignore[arg-type]
        assert conn.execute("SELECT current_user").fetchone() == (shop.app,)
    app_can_write(shop, copy)

    r = shop.project.cli("--json", "rollback", "--with-db", "--backup", backup)
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)["database"]
    assert (shop.project.root / "app.url").read_text() == url_with_dbname(app_url, new)
    point = next(s for s in json.loads(r.stdout)["steps"] if s["name"] == "point app")
    assert APP_PASSWORD not in point["detail"] and f"{shop.app}:" in point["detail"]  # shown without password


@pytest.mark.parametrize(
    "kind, refused",
    [
        ("superuser", "a superuser"),
        ("createrole", "allowed to create roles"),
        ("member of the app's role", "a member of"),
        ("the app's own role", None),
        ("a role with grants only", None),
    ],
)
def test_which_urls_are_taken_for_the_apps(
    shop: Shop, monkeypatch: pytest.MonkeyPatch, kind: str, refused: str | None
) -> None:
    """The rule, over the kinds of role a DATABASE_URL can hold: an admin's is refused, the app's own
    (or a least-privilege role's) is taken; with app_url_env the same admin URL is fine."""
    roles = {
        "createrole": f"CREATE ROLE ops_{shop.tag} LOGIN CREATEROLE PASSWORD 'pw-ops'",
        "member of the app's role": f"CREATE ROLE ops_{shop.tag} LOGIN PASSWORD 'pw-ops' IN ROLE {shop.app}",
        "a role with grants only": f"CREATE ROLE ops_{shop.tag} LOGIN PASSWORD 'pw-ops'",
    }
    try:
        if kind in roles:
            admin(shop.cluster, roles[kind], f"GRANT CONNECT ON DATABASE {shop.dbname} TO ops_{shop.tag}")
            url = f"postgresql://ops_{shop.tag}:pw-ops@127.0.0.1:{shop.cluster.port}/{shop.dbname}"
        elif kind == "the app's own role":
            url = shop.app_url(shop.dbname)
        else:
            url = shop.admin_url(shop.dbname)
        shop.project.write_config(_config())
        monkeypatch.setenv("DATABASE_URL", url)
        env = Environment.resolve(
            load_config(cwd=shop.project.root, environ={**shop.project.environ, "DATABASE_URL": url})
        )
        if refused:
            with pytest.raises(ConfigError, match=refused):
                check_app_url(env)
            monkeypatch.setenv("APP_DATABASE_URL", shop.app_url(shop.dbname))
            shop.project.write_config(_config("APP_DATABASE_URL"))
            check_app_url(Environment.resolve(load_config(cwd=shop.project.root)))
        else:
            check_app_url(env)
    finally:
        if kind in roles:
            admin(shop.cluster, f"REVOKE CONNECT ON DATABASE {shop.dbname} FROM ops_{shop.tag}")
        drop_roles_and_databases(shop.cluster, "no-database", [f"ops_{shop.tag}"])


def test_an_app_url_that_cannot_log_in_stops_before_anything_changes(shop: Shop) -> None:
    """trial7b N6: APP_DATABASE_URL with a wrong password was found only by the app, after the rollback
    pointed it and turned maintenance off. Now every way of pointing the app tries the URL first (as
    the app, read-only) and stops with one error naming the variable; nothing restored, no hook run."""
    log = shop.project.root / "hooks.log"
    wrong = shop.app_url(shop.dbname).replace(quote(APP_PASSWORD), "not-the-password")
    shop.project.environ["APP_DATABASE_URL"] = wrong
    shop.project.write_config(
        _config("APP_DATABASE_URL") + f"maintenance_on = 'echo on >> {log}'\nmaintenance_off = 'echo off >> {log}'\n"
    )
    backup = json.loads(shop.project.cli("--json", "backup", "create", "--label", "pre-deploy").stdout)["id"]
    assert shop.project.cli("backup", "verify", backup).returncode == 0
    make_migrations(shop.project, {"01_next": 'ALTER TABLE "Customer" ADD COLUMN vip boolean;'})
    before = _databases(shop)
    copy = f"{shop.dbname}_copy"
    for code, args in (
        (3, ("restore", backup, "--into", copy, "--point-app")),
        (3, ("rollback", "--with-db")),
        (2, ("deploy", "--auto-rollback", "--outside-window")),
    ):
        r = shop.project.cli(*args)
        assert_clean_error(r, code, "the application's URL in APP_DATABASE_URL cannot log in", "nothing was changed")
        assert f"as {shop.app} to {shop.dbname}" in r.stderr and "authentication failed" in r.stderr, r.stderr
        assert "not-the-password" not in r.stderr + r.stdout and APP_PASSWORD not in r.stderr + r.stdout
        assert "hint: fix APP_DATABASE_URL" in r.stderr, r.stderr
        assert _databases(shop) == before, args  # nothing created
        assert not (shop.project.root / "app.url").exists() and not log.exists(), args  # no hook ran
    with psycopg.connect(shop.admin_url(shop.dbname)) as conn:  # the migration was not applied either
        assert conn.execute("SELECT to_regclass('_prisma_migrations')").fetchone() == (None,)

    shop.project.environ["APP_DATABASE_URL"] = shop.app_url(shop.dbname)  # the right URL: it goes through
    r = shop.project.cli("--json", "restore", backup, "--into", copy, "--point-app")
    assert r.returncode == 0, r.stderr


def test_an_app_role_without_connect_is_told_the_grant(shop: Shop) -> None:
    """The app's URL is right but its role lost CONNECT on the database (REVOKE … FROM PUBLIC): the
    hint names the GRANT that fixes it, not "fix APP_DATABASE_URL" (doctor and the point_app pre-flight)."""
    shop.project.environ["APP_DATABASE_URL"] = shop.app_url(shop.dbname)
    shop.project.write_config(_config("APP_DATABASE_URL"))
    admin(shop.cluster, f'REVOKE CONNECT ON DATABASE "{shop.dbname}" FROM PUBLIC, "{shop.app}"')
    grant = f'GRANT CONNECT ON DATABASE "{shop.dbname}" TO "{shop.app}"'
    try:
        line = _app_url_line(shop)
        assert line is not None and line["status"] == "warning" and "cannot log in" in line["detail"], line
        assert grant in line["hint"] and "fix APP_DATABASE_URL" not in line["hint"], line
        backup = json.loads(shop.project.cli("--json", "backup", "create").stdout)["id"]
        r = shop.project.cli("restore", backup, "--into", f"{shop.dbname}_copy", "--point-app")
        assert_clean_error(r, 3, "the application's URL in APP_DATABASE_URL cannot log in", "nothing was changed")
        assert f"hint: the role may not connect to {shop.dbname}" in r.stderr and grant in r.stderr, r.stderr
    finally:
        admin(shop.cluster, f'GRANT CONNECT ON DATABASE "{shop.dbname}" TO PUBLIC')


def _app_url_line(shop: Shop) -> dict[str, str] | None:
    r = shop.project.cli("--json", "doctor")
    assert r.returncode in (0, 1, 2) and "Traceback" not in r.stderr, r.stderr
    return next((c for c in json.loads(r.stdout)["checks"] if c["name"] == "app url"), None)


def test_doctor_warns_before_a_rollback_would_refuse_the_app_url(shop: Shop) -> None:
    """trial7b N6: a point_app hook, no app_url_env and a superuser's DATABASE_URL were found only by a
    rollback's pre-flight. doctor says so with the same words and hint; a wrong app password too."""
    shop.project.write_config(_config())
    line = _app_url_line(shop)
    assert line is not None and line["status"] == "warning", line
    assert "the URL in DATABASE_URL, whose role" in line["detail"] and "is a superuser" in line["detail"], line
    assert 'app_url_env = "APP_DATABASE_URL"' in line["hint"], line
    refused = shop.project.cli("rollback", "--with-db").stderr  # the pre-flight's words, the same hint
    assert line["detail"] in refused and line["hint"] in refused, (line, refused)

    shop.project.environ["APP_DATABASE_URL"] = shop.app_url(shop.dbname)
    shop.project.write_config(_config("APP_DATABASE_URL"))
    line = _app_url_line(shop)
    assert line is not None and line["status"] == "ok" and shop.app in line["detail"], line

    shop.project.environ["APP_DATABASE_URL"] = shop.app_url(shop.dbname).replace(quote(APP_PASSWORD), "wrong")
    line = _app_url_line(shop)
    assert line is not None and line["status"] == "warning" and "cannot log in" in line["detail"], line
    assert "wrong" not in line["detail"] + line["hint"]  # the password itself is never shown

    shop.project.write_config('[backup]\nstorage = "backups"\n[environments.production]\n')
    assert _app_url_line(shop) is None  # no point_app hook: nothing to say


# --- 2. migrations run as the role that owns the schema ---------------------------------------------


@dataclass
class Migrating:
    shop: Shop
    dbname: str

    def cli(self, as_admin: bool, *args: str) -> tuple[int, str, str]:
        url = self.shop.admin_url(self.dbname) if as_admin else self.shop.app_url(self.dbname)
        r = self.shop.project.cli(*args, extra_env={"DATABASE_URL": url})
        return r.returncode, r.stdout, r.stderr

    def ownership(self) -> dict[str, str]:
        with psycopg.connect(self.shop.admin_url(self.dbname)) as conn:
            return {o.name: o.owner for o in schema_ownership(conn, "public").objects}


@pytest.fixture
def migrating(shop: Shop) -> Iterator[Migrating]:
    """An empty database owned by the app; its first migration applied by the app itself."""
    dbname = f"mig_{shop.tag}"
    admin(shop.cluster, f"CREATE DATABASE {dbname} OWNER {shop.app}")
    shop.project.write_config('[backup]\nstorage = "backups"\n')
    make_migrations(shop.project, {"01_init": 'CREATE TABLE "User" (id serial PRIMARY KEY, email text);'})
    m = Migrating(shop, dbname)
    rc, _, err = m.cli(False, "migrate", "deploy")
    assert rc == 0, err
    yield m


ADMIN_MIGRATION = """
CREATE TYPE "Status" AS ENUM ('open', 'paid');
CREATE TABLE "Invoice" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "userId" int REFERENCES "User",
                        status "Status" NOT NULL DEFAULT 'open');
CREATE SEQUENCE invoice_number;
CREATE FUNCTION invoice_total(i bigint) RETURNS numeric LANGUAGE sql AS $$ SELECT 0::numeric $$;
CREATE VIEW open_invoices AS SELECT * FROM "Invoice" WHERE status = 'open';
"""
APP_MIGRATION = """
ALTER TABLE "Invoice" ADD COLUMN total numeric;
ALTER TYPE "Status" ADD VALUE 'void';
ALTER SEQUENCE invoice_number RESTART WITH 1000;
CREATE OR REPLACE FUNCTION invoice_total(i bigint) RETURNS numeric LANGUAGE sql AS $$ SELECT 1::numeric $$;
CREATE OR REPLACE VIEW open_invoices AS SELECT * FROM "Invoice" WHERE status = 'open';
"""


def test_an_admins_migration_leaves_everything_with_the_apps_role(migrating: Migrating) -> None:
    shop = migrating.shop
    make_migrations(shop.project, {"02_invoices": ADMIN_MIGRATION})
    rc, out, err = migrating.cli(True, "--json", "migrate", "deploy")
    assert rc == 0, err
    report = json.loads(out)
    assert report["run_as"] == shop.app and report["connected_as"] == "postgres"
    assert f"migrations run as {shop.app} (SET ROLE from postgres)" in report["role_note"]
    assert set(migrating.ownership().values()) == {shop.app}, migrating.ownership()
    # the text output says it in one line
    make_migrations(shop.project, {"03_more": "CREATE TABLE more (id int);"})
    rc, out, err = migrating.cli(True, "migrate", "deploy")
    said = "".join((err + out).split())  # wrapped to the terminal's width: compared without whitespace
    assert rc == 0 and f"migrationsrunas{shop.app}(SETROLEfrompostgres)" in said, err
    # the app's own next migration can ALTER what the admin's created
    make_migrations(shop.project, {"04_app": APP_MIGRATION})
    rc, _, err = migrating.cli(False, "migrate", "deploy")
    assert rc == 0, err
    rc, out, _ = migrating.cli(False, "--json", "status")
    assert rc == 0 and json.loads(out)["pending"] == [] and json.loads(out)["failed"] == []
    rc, out, _ = migrating.cli(True, "--json", "doctor")
    check = next(c for c in json.loads(out)["checks"] if c["name"] == "ownership")
    assert check["status"] == "ok" and shop.app in check["detail"]


def test_without_set_role_doctor_reports_mixed_ownership_and_its_fix_works(migrating: Migrating) -> None:
    """[migrate] role = "none" is the old behaviour: the admin owns what it created, the app's next
    migration fails; doctor names each object and the statements that fix it."""
    shop = migrating.shop
    shop.project.write_config('[backup]\nstorage = "backups"\n[migrate]\nrole = "none"\n')
    make_migrations(shop.project, {"02_invoices": ADMIN_MIGRATION})
    rc, out, err = migrating.cli(True, "--json", "migrate", "deploy")
    assert rc == 0, err
    assert json.loads(out)["run_as"] == "postgres"
    assert migrating.ownership()['public."Invoice"'] == "postgres"

    rc, out, _ = migrating.cli(True, "--json", "doctor")
    check = next(c for c in json.loads(out)["checks"] if c["name"] == "ownership")
    assert check["status"] == "warning", check
    assert f"belong to postgres, not to {shop.app}" in check["detail"]
    for thing in ('table public."Invoice"', 'type public."Status"', "function public.invoice_total(i bigint)"):
        assert thing in check["detail"], check["detail"]
    fixes = [s.strip() + ";" for s in check["hint"].split(": ", 1)[1].split(";") if "ALTER" in s]
    assert fixes and all(f.startswith("ALTER ") for f in fixes)

    make_migrations(shop.project, {"03_app": APP_MIGRATION})
    rc, _, err = migrating.cli(False, "migrate", "deploy")
    assert rc == 2 and "must be owner" in err  # the fault the trial found
    rc, _, err = migrating.cli(True, "migrate", "resolve", "--rolled-back", "03_app")
    assert rc == 0, err

    with psycopg.connect(shop.admin_url(migrating.dbname), autocommit=True) as conn:
        for stmt in fixes:  # the hint, as written
            conn.execute(stmt.encode())
    assert set(migrating.ownership().values()) == {shop.app}
    rc, out, _ = migrating.cli(True, "--json", "doctor")
    assert next(c for c in json.loads(out)["checks"] if c["name"] == "ownership")["status"] == "ok"
    rc, _, err = migrating.cli(False, "migrate", "deploy")
    assert rc == 0, err


def test_a_named_role_the_connecting_role_cannot_become_is_refused_before_anything(migrating: Migrating) -> None:
    shop = migrating.shop
    admin(shop.cluster, f"CREATE ROLE other_{shop.tag}")
    try:
        shop.project.write_config(f'[backup]\nstorage = "backups"\n[migrate]\nrole = "other_{shop.tag}"\n')
        make_migrations(shop.project, {"02_x": "CREATE TABLE x (id int);"})
        rc, _, err = migrating.cli(False, "migrate", "deploy")
        assert rc == 3 and "may not SET ROLE to it" in err and "nothing was applied" in err, err
        rc, out, _ = migrating.cli(False, "--json", "status")
        assert json.loads(out)["pending"] == ["02_x"]
        # a role it can become: taken, and the table is that role's
        admin(shop.cluster, f"GRANT other_{shop.tag} TO {shop.app}")
        with psycopg.connect(shop.admin_url(migrating.dbname), autocommit=True) as conn:
            conn.execute(f"GRANT ALL ON SCHEMA public TO other_{shop.tag}".encode())
        rc, out, err = migrating.cli(False, "--json", "migrate", "deploy")
        assert rc == 0, err
        assert json.loads(out)["run_as"] == f"other_{shop.tag}"
        assert migrating.ownership()["public.x"] == f"other_{shop.tag}"
    finally:
        with psycopg.connect(shop.admin_url(migrating.dbname), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY other_{shop.tag} CASCADE".encode())
        drop_roles_and_databases(shop.cluster, "no-database", [f"other_{shop.tag}"])


def test_a_connecting_role_outside_the_apps_role_is_told_what_will_happen(migrating: Migrating) -> None:
    """Connected as a role that is not a member of the app's role: no SET ROLE possible; the scripts
    run as that role and a warning says the new objects will be its own."""
    shop = migrating.shop
    ops = f"ops_{shop.tag}"
    admin(shop.cluster, f"CREATE ROLE {ops} LOGIN PASSWORD 'pw-ops'")
    try:
        with psycopg.connect(shop.admin_url(migrating.dbname), autocommit=True) as conn:
            conn.execute(
                f"GRANT ALL ON SCHEMA public TO {ops}; GRANT ALL ON ALL TABLES IN SCHEMA public TO {ops}".encode()
            )
        make_migrations(shop.project, {"02_x": "CREATE TABLE x (id int);"})
        url = f"postgresql://{ops}:pw-ops@127.0.0.1:{shop.cluster.port}/{migrating.dbname}"
        r = shop.project.cli("--json", "migrate", "deploy", extra_env={"DATABASE_URL": url})
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["run_as"] == ops and any(f"not a member of {shop.app}" in w for w in out["warnings"])
    finally:
        with psycopg.connect(shop.admin_url(migrating.dbname), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {ops} CASCADE".encode())
        drop_roles_and_databases(shop.cluster, "no-database", [ops])


def test_deploy_with_auto_rollback_refuses_an_admins_url_at_preflight(migrating: Migrating) -> None:
    """The automatic rollback would point the app: the same rule, checked before maintenance starts."""
    shop = migrating.shop
    log = shop.project.root / "hooks.log"
    shop.project.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        f"[environments.production.hooks]\nmaintenance_on = 'echo on >> {log}'\n"
        f"maintenance_off = 'echo off >> {log}'\npoint_app = 'true'\napp_rollback = 'true'\n"
    )
    make_migrations(shop.project, {"02_x": "CREATE TABLE x (id int);"})
    rc, _, err = migrating.cli(True, "deploy", "--env", "production", "--auto-rollback")
    assert rc == 2 and err.startswith("error: deploy failed: point_app would give"), err
    assert "point_app would give the application the URL in DATABASE_URL" in err and "superuser" in err
    assert not log.exists()  # maintenance never started
    assert not (shop.project.storage / "production").exists() or not any(
        p.name[0].isdigit() for p in (shop.project.storage / "production").iterdir()
    )
    rc, out, _ = migrating.cli(True, "--json", "status")
    assert json.loads(out)["pending"] == ["02_x"]


def test_auto_rollback_by_a_role_that_may_not_create_databases_is_refused_before_anything(shop: Shop) -> None:
    """A re-trial's finding: the app's own LOGIN role ran `deploy --auto-rollback`; the migration ran,
    failed half-applied, and only then did the rollback find it may not create the rollback database."""
    shop.project.environ["DATABASE_URL"] = shop.app_url(shop.dbname)
    shop.project.write_config(_config())
    make_migrations(shop.project, {"02_bad": 'ALTER TABLE "Customer" ADD COLUMN x int;\nSELECT 1/0;'})
    before = _databases(shop)
    r = shop.project.cli("deploy", "--auto-rollback")
    assert r.returncode == 2, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: deploy failed: preflight: --auto-rollback restores the pre-deploy backup")
    assert f"role {shop.app} may not create databases; nothing was touched" in first
    assert f'ALTER ROLE "{shop.app}" CREATEDB' in r.stderr and "Traceback" not in r.stderr
    assert APP_PASSWORD not in r.stderr + r.stdout
    assert _databases(shop) == before
    with psycopg.connect(shop.admin_url(shop.dbname)) as conn:  # the migration never ran
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'Customer' AND column_name = 'x'"
        ).fetchone() == (0,)
    assert not (shop.project.root / "backups").exists() or not any(
        (shop.project.root / "backups").rglob("manifest.json")
    )


# --- a table the runbook's admin may not read ----------------------------------------------------------


def test_a_backup_that_cannot_read_a_table_names_it_and_the_grant_before_dumping(shop: Shop) -> None:
    """Found by trial 11 (F20): a table created by a superuser without a grant, in an app run by a
    non-superuser admin (a member of the app's role): the backup, and so every deploy's pre-deploy
    backup, failed as `could not import the requested snapshot` with a restore-side hint. Now the backup
    names the table, its owner and the GRANT that fixes it, before pg_dump starts; nothing is written."""
    ops = f"ops_{shop.tag}"
    admin(
        shop.cluster,
        f"CREATE ROLE {ops} LOGIN PASSWORD '{APP_PASSWORD}'",
        f"GRANT {shop.app} TO {ops}",
    )
    with psycopg.connect(shop.admin_url(shop.dbname), autocommit=True) as conn:
        conn.execute('CREATE TABLE public."Secret Audit" (id int)')
        conn.execute('INSERT INTO public."Secret Audit" VALUES (1)')
    url = f"postgresql://{ops}:{quote(APP_PASSWORD)}@127.0.0.1:{shop.cluster.port}/{shop.dbname}"
    try:
        r = shop.project.cli("backup", "create", extra_env={"DATABASE_URL": url})
        assert_clean_error(r, 2, f"the backup's role {ops} cannot read 1 table(s)", '"public"."Secret Audit"')
        assert f'GRANT SELECT ON "public"."Secret Audit" TO "{ops}"' in r.stderr, r.stderr
        assert "snapshot" not in r.stderr
        assert json.loads(shop.project.cli("--json", "backup", "list").stdout) == []
        with psycopg.connect(shop.admin_url(shop.dbname), autocommit=True) as conn:  # the hint, followed
            conn.execute(f'GRANT SELECT ON public."Secret Audit" TO {ops}'.encode())
        ok = shop.project.cli("--json", "backup", "create", extra_env={"DATABASE_URL": url})
        assert ok.returncode == 0, ok.stderr
        manifest = shop.project.storage / "default" / json.loads(ok.stdout)["id"] / "manifest.json"
        assert {"schema": "public", "name": "Secret Audit", "rows": 1} in json.loads(manifest.read_text())["tables"]
    finally:
        with psycopg.connect(shop.admin_url(shop.dbname), autocommit=True) as conn:
            conn.execute('DROP TABLE public."Secret Audit"')
            conn.execute(f"DROP OWNED BY {ops}".encode())
        admin(shop.cluster, f"DROP ROLE {ops}")


# --- 4. in place, by an admin the server refuses another role's per-database setting ----------------


@pytest.mark.parametrize("createrole", [False, True], ids=["no-createrole", "createrole-16+"])
def test_in_place_restore_carries_what_it_may_and_names_the_rest_found_before_maintenance(
    shop: Shop, createrole: bool
) -> None:
    """trial11 F9: the admin `ops` is a member of the app's role (GRANT app TO ops, no ADMIN OPTION) and
    the database has ``ALTER ROLE … IN DATABASE … SET`` settings. PostgreSQL refuses ops those statements
    (16+: CREATEROLE without ADMIN OPTION on the role; every major: without CREATEROLE). The swap used to
    fail with "internal error: InsufficientPrivilege" after maintenance, the pre-restore backup and the
    whole restore, leaving a staging copy per retry. Now: a pre-flight step names them before maintenance,
    the swap carries everything else, and the exact statements to run as a superuser are printed."""
    if createrole and SERVER["major"] < 16:
        pytest.skip(
            f"PostgreSQL {SERVER['major']}: a CREATEROLE role may alter any non-superuser role, nothing is refused "
            "(the no-createrole case is the same refusal here; scripts/test-majors runs this on 16+)"
        )
    ops = f"ops_{shop.tag}"
    admin(
        shop.cluster,
        f"CREATE ROLE {ops} LOGIN CREATEDB{' CREATEROLE' if createrole else ''} PASSWORD 'pw-ops'",
        f"GRANT {shop.app} TO {ops}",
    )
    try:
        ops_url = f"postgresql://{ops}:pw-ops@127.0.0.1:{shop.cluster.port}/{shop.dbname}"
        shop.project.environ["DATABASE_URL"] = ops_url
        log = shop.project.root / "hooks.log"
        shop.project.write_config(
            '[backup]\nstorage = "backups"\n[environments.default.hooks]\n'
            f"maintenance_on = 'echo on >> {log}'\nmaintenance_off = 'echo off >> {log}'\n"
        )
        made = shop.project.cli("--json", "backup", "create")
        assert made.returncode == 0, made.stderr
        backup = json.loads(made.stdout)["id"]
        with psycopg.connect(shop.admin_url(shop.dbname), autocommit=True) as conn:
            conn.execute("""INSERT INTO "Customer" (email) VALUES ('after-backup@example.com')""")
        with psycopg.connect(shop.admin_url("postgres")) as conn:
            before = read_database(conn, shop.dbname)
        assert before is not None

        r = shop.project.cli("--json", "restore", backup, "--in-place", "--confirm", shop.dbname)
        assert r.returncode == 0, r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
        out = json.loads(r.stdout)
        app_stmt = f'ALTER ROLE "{shop.app}" IN DATABASE "{shop.dbname}" SET "search_path" TO \'$user\', \'public\''
        reader_stmt = f'ALTER ROLE "{shop.reader}" IN DATABASE "{shop.dbname}" SET "work_mem" TO \'8MB\''
        carried = out["carried_over"]
        assert "NOT carried over, run as a superuser: " in carried, carried
        named = [item.rsplit(" (", 1)[0] for item in carried.split("run as a superuser: ", 1)[1].split("; ")]
        assert sorted(named) == sorted([app_stmt, reader_stmt]), named
        # found before maintenance: the pre-flight step precedes "maintenance on" and names both
        runs = json.loads(shop.project.cli("--json", "runs", "--limit", "1").stdout)
        steps = [s["name"] for s in runs[0]["steps"]]
        assert steps.index("check swap") < steps.index("maintenance on"), steps
        check = runs[0]["steps"][steps.index("check swap")]["detail"]
        assert "will NOT carry 2" in check and app_stmt in check and reader_stmt in check, check
        assert log.read_text().split() == ["on", "off"]
        # everything else was carried; the app has its database back, without the row written after the backup
        with psycopg.connect(shop.admin_url("postgres"), autocommit=True) as conn:
            after = read_database(conn, shop.dbname)
            assert after is not None
            assert (after.owner, after.connection_limit, after.grants, after.comment) == (
                before.owner,
                before.connection_limit,
                before.grants,
                before.comment,
            )
            assert (None, "statement_timeout=5min") in after.settings
            assert not [s for s in after.settings if s[0] is not None]  # the refused ones, and only them
            leftovers = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{shop.dbname}_restore_%",)
            ).fetchall()
            assert leftovers == []
            for stmt in named:  # the statements printed are exactly what a superuser runs
                conn.execute(stmt.encode())
            final = read_database(conn, shop.dbname)
        assert final is not None and sorted(final.settings, key=str) == sorted(before.settings, key=str)
        app_can_write(shop, shop.dbname)
    finally:
        with psycopg.connect(shop.admin_url("postgres"), autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{shop.dbname}_%",)
            ).fetchall():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(ops)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ops)))


def test_a_swap_stopped_after_the_restore_calls_the_staging_copy_complete_not_partial(shop: Shop) -> None:
    """trial11 F9: when the swap does not happen (here: a superuser's session on the live database that
    the admin may not end, opened after the pre-flight by the maintenance_on hook), the staging database
    holds the whole verified restore; the recovery note used to say it "may hold a partial restore"."""
    ops = f"ops_{shop.tag}"
    admin(shop.cluster, f"CREATE ROLE {ops} LOGIN CREATEDB PASSWORD 'pw-ops'", f"GRANT {shop.app} TO {ops}")
    holder = shop.project.root / "hold.py"
    holder.write_text(
        "import sys, time, psycopg\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        "    c.execute('SELECT 1')\n"
        '    print("connected", flush=True)\n'
        "    print('connected', flush=True)\n"
        "    time.sleep(120)\n"
    )
    try:
        shop.project.environ["DATABASE_URL"] = f"postgresql://{ops}:pw-ops@127.0.0.1:{shop.cluster.port}/{shop.dbname}"
        made = shop.project.cli("--json", "backup", "create")
        assert made.returncode == 0, made.stderr
        backup = json.loads(made.stdout)["id"]
        superuser = shop.admin_url(shop.dbname)
        shop.project.write_config(
            '[backup]\nstorage = "backups"\n[environments.default.hooks]\n'
            f"maintenance_on = '{sys.executable} {holder} \"{superuser}\" > {holder}.log 2>&1 & sleep 1'\n"
            "maintenance_off = 'true'\n"
        )
        r = shop.project.cli("restore", backup, "--in-place", "--confirm", shop.dbname, timeout=180)
        assert r.returncode != 0 and "internal error" not in r.stderr, (
            r.stderr,
            Path(f"{holder}.log").read_text(),
        )
        assert "nothing was swapped" in r.stderr, r.stderr
        recovery = next(ln for ln in r.stderr.splitlines() if ln.startswith("recovery: "))
        assert "may hold a partial restore" not in recovery, recovery
        assert f"holds the complete, verified restore of backup {backup}" in recovery, recovery
        assert f"live: {shop.dbname} is untouched" in recovery and "maintenance: off." in recovery, recovery
    finally:
        with psycopg.connect(shop.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname LIKE %s AND pid <> pg_backend_pid()",
                (f"{shop.dbname}%",),
            )
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{shop.dbname}_%",)
            ).fetchall():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(ops)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ops)))

"""The app gets its database back: owners, privileges and database-level settings survive every
restore path, against a real cluster with real roles (created here, dropped after each test).

The app's own role owns its database and tables; pgrunbook runs as an admin (the cluster's superuser),
as the on-call engineer would. After each restore path, ``pg_dump --schema-only`` of the result equals
the source's and the app role can write.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.database_swap import read_database
from pgrunbook.postgres.tools import find_client_tools
from tests.conftest import TOOLS_BIN, Project, assert_clean_error

pytestmark = pytest.mark.integration

APP_PASSWORD = "app-pw-Kq7"

APP_SCHEMA = """
CREATE TABLE "Customer" (id serial PRIMARY KEY, email text NOT NULL, note text);
CREATE TABLE "Order" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                      customer int REFERENCES "Customer", total numeric NOT NULL);
CREATE VIEW customer_emails AS SELECT email FROM "Customer";
CREATE FUNCTION norm(t text) RETURNS text LANGUAGE sql IMMUTABLE SET search_path = public
    AS $$ SELECT lower(t) $$;
CREATE INDEX customer_norm ON "Customer" (norm(email));
GRANT SELECT ON "Customer", customer_emails TO {reader};
GRANT SELECT (total) ON "Order" TO {reader};
REVOKE EXECUTE ON FUNCTION norm(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION norm(text) TO {reader};
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {reader};
ALTER TABLE "Order" ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_sees_paid ON "Order" FOR SELECT TO {reader} USING (total > 0);
INSERT INTO "Customer" (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 200) g;
INSERT INTO "Order" (customer, total) SELECT 1 + g % 200, g FROM generate_series(1, 500) g;
"""


@dataclass
class Shop:
    cluster: LocalCluster
    project: Project
    tag: str
    app: str
    reader: str
    dbname: str

    def admin_url(self, dbname: str) -> str:
        return self.cluster.url(dbname)

    def app_url(self, dbname: str) -> str:
        return f"postgresql://{self.app}:{quote(APP_PASSWORD)}@127.0.0.1:{self.cluster.port}/{dbname}"


def admin(cluster: LocalCluster, *statements: str) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt.encode())


def drop_roles_and_databases(cluster: LocalCluster, tag: str, roles: list[str]) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"%{tag}%",)).fetchall():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def shop(cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    """A database owned by the app's role, with grants, default privileges, a policy, a column grant
    and database-level settings; DATABASE_URL is the superuser's (the on-call engineer's) URL."""
    tag = secrets.token_hex(3)
    app, reader, dbname = f"app_{tag}", f"reader_{tag}", f"shop_{tag}"
    admin(
        cluster,
        f"CREATE ROLE {app} LOGIN PASSWORD '{APP_PASSWORD}'",
        f"CREATE ROLE {reader}",
        f"CREATE DATABASE {dbname} OWNER {app}",
        f"ALTER DATABASE {dbname} SET statement_timeout = '5min'",
        f'ALTER ROLE {app} IN DATABASE {dbname} SET search_path = "$user", public',
        f"ALTER ROLE {reader} IN DATABASE {dbname} SET work_mem = '8MB'",
        f"ALTER DATABASE {dbname} CONNECTION LIMIT 50",
        f"REVOKE CONNECT, TEMPORARY ON DATABASE {dbname} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {dbname} TO {reader}",
        f"COMMENT ON DATABASE {dbname} IS 'the shop'",
    )
    shop = Shop(cluster, None, tag, app, reader, dbname)  # type: ignore[arg-type]
    with psycopg.connect(shop.app_url(dbname), autocommit=True) as conn:
        conn.execute(APP_SCHEMA.format(reader=reader).encode())
    url = shop.admin_url(dbname)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PGRUNBOOK_", "PG"))}
    environ["DATABASE_URL"] = url
    if TOOLS_BIN:  # the tools under test (scripts/test-majors), given as a user gives them
        environ["PGRUNBOOK_POSTGRES__BIN_DIR"] = TOOLS_BIN
    (tmp_path / "pgrunbook.toml").write_text('[backup]\nstorage = "backups"\n')
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    shop.project = Project(tmp_path, url, environ)
    yield shop
    drop_roles_and_databases(cluster, tag, [app, reader])


def schema_dump(url: str) -> str:
    """pg_dump --schema-only, owners and privileges included; the per-run \\restrict key removed."""
    tools = find_client_tools(15, "15")
    out = subprocess.run(
        [str(tools.pg_dump), "--schema-only", f"--dbname={url}"], capture_output=True, text=True, check=True
    ).stdout
    return re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.MULTILINE)


def app_can_write(shop: Shop, dbname: str) -> None:
    with psycopg.connect(shop.app_url(dbname), autocommit=True) as conn:
        conn.execute("""INSERT INTO "Customer" (email) VALUES ('new@example.com')""")
        conn.execute("""INSERT INTO "Order" (customer, total) VALUES (1, 9.5)""")
        n = conn.execute("""SELECT count(*) FROM "Customer" """).fetchone()
    assert n is not None and n[0] == 201


def database_level(shop: Shop, dbname: str) -> tuple[object, ...]:
    with psycopg.connect(shop.admin_url("postgres")) as conn:
        state = read_database(conn, dbname)
    assert state is not None
    return (state.owner, state.connection_limit, state.grants, sorted(state.settings, key=str), state.comment)


def test_in_place_restore_gives_the_app_its_database_back(shop: Shop) -> None:
    before = schema_dump(shop.admin_url(shop.dbname))
    level = database_level(shop, shop.dbname)
    r = shop.project.cli("--json", "backup", "create")
    assert r.returncode == 0, r.stderr
    backup = json.loads(r.stdout)["id"]
    with psycopg.connect(shop.app_url(shop.dbname), autocommit=True) as conn:  # the deploy that went wrong
        conn.execute('DROP TABLE "Order"')
    r = shop.project.cli("--json", "restore", backup, "--in-place", "--confirm", shop.dbname)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    check = next(c for c in out["checks"] if c["name"] == "owners and privileges")
    assert check["ok"] and "equal to the backup's" in check["detail"], check
    assert schema_dump(shop.admin_url(shop.dbname)) == before
    assert database_level(shop, shop.dbname) == level  # owner, grants, settings, limit, comment carried
    assert "2 database privilege(s)" in out["carried_over"] or "database privilege" in out["carried_over"]
    app_can_write(shop, shop.dbname)


def _point_app_config(shop: Shop, hooks: str = "") -> Path:
    """An environment whose point_app hook writes the app's new URL into a file (returned); the app's
    own URL, which point_app gets, in APP_DATABASE_URL (``hooks``: more hook lines)."""
    url_file = shop.project.root / "app.url"
    shop.project.environ["APP_DATABASE_URL"] = shop.app_url(shop.dbname)
    shop.project.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        'app_url_env = "APP_DATABASE_URL"\n'
        'read_query = "SELECT count(*) FROM \\"Customer\\""\nhealth_deadline_s = 5\n'
        "[environments.production.hooks]\n"
        f"point_app = 'printf %s \"$PGRUNBOOK_DATABASE_URL\" > {url_file}'\n" + hooks
    )
    return url_file


def test_restore_into_with_point_app_gives_the_app_a_usable_copy(shop: Shop) -> None:
    url_file = _point_app_config(shop)
    before = schema_dump(shop.admin_url(shop.dbname))
    backup = json.loads(shop.project.cli("--json", "backup", "create").stdout)["id"]
    copy = f"{shop.dbname}_copy"
    r = shop.project.cli("--json", "restore", backup, "--into", copy, "--point-app")
    assert r.returncode == 0, r.stderr
    assert url_file.read_text().rsplit("/", 1)[1] == copy
    # trial7 finding 9: pgrunbook's own URL must follow the app: the line names it, password masked
    assert f"/{copy} for pgrunbook too" in json.loads(r.stdout)["next_step"]
    assert "set DATABASE_URL=postgresql://" in json.loads(r.stdout)["next_step"] and ":***@" in r.stdout
    assert schema_dump(shop.admin_url(copy)) == before
    with psycopg.connect(shop.admin_url("postgres")) as conn:
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (copy,)).fetchone()
    assert owner == (shop.app,)  # the database itself belongs to the app, as the source did
    app_can_write(shop, copy)


def test_point_app_while_the_database_is_lost_does_not_blame_the_apps_url(shop: Shop) -> None:
    """breaker13 N9: the environment's database dropped, `restore latest --into COPY --point-app` with
    app_url_env refused with "the application's URL … cannot log in … fix APP_DATABASE_URL": the URL was
    right, its database was the one lost. PostgreSQL authenticates before it looks the database up, so
    a "does not exist" answer proves the login; a wrong password is still refused, before anything."""
    url_file = _point_app_config(shop)
    before = schema_dump(shop.admin_url(shop.dbname))
    assert shop.project.cli("backup", "create").returncode == 0
    admin(shop.cluster, f'DROP DATABASE "{shop.dbname}" WITH (FORCE)')
    copy = f"{shop.dbname}_again"
    wrong = shop.app_url(shop.dbname).replace(quote(APP_PASSWORD), "not-the-password")
    refused = shop.project.cli(
        "restore", "latest", "--into", copy, "--point-app", extra_env={"APP_DATABASE_URL": wrong}
    )
    assert_clean_error(refused, 3, "the application's URL in APP_DATABASE_URL cannot log in")
    assert "authentication failed" in refused.stderr and not url_file.exists()
    r = shop.project.cli("--json", "restore", "latest", "--into", copy, "--point-app")
    assert r.returncode == 0, r.stderr
    assert url_file.read_text().rsplit("/", 1)[1] == copy
    assert schema_dump(shop.admin_url(copy)) == before
    app_can_write(shop, copy)


def test_rollback_with_db_gives_the_app_a_usable_database(shop: Shop) -> None:
    _point_app_config(shop, "app_rollback = 'true'\n")
    before = schema_dump(shop.admin_url(shop.dbname))
    r = shop.project.cli("--json", "backup", "create", "--label", "pre-deploy")
    backup = json.loads(r.stdout)["id"]
    assert shop.project.cli("backup", "verify", backup).returncode == 0
    r = shop.project.cli("--json", "rollback", "--with-db")
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)["database"]
    assert schema_dump(shop.admin_url(new)) == before
    app_can_write(shop, new)


def test_owner_maps_everything_to_one_role(shop: Shop) -> None:
    """--owner: a restore onto a server where the app's role is another one (a managed service)."""
    other = f"svc_{shop.tag}"
    admin(shop.cluster, f"CREATE ROLE {other} LOGIN PASSWORD '{APP_PASSWORD}'")
    try:
        backup = json.loads(shop.project.cli("--json", "backup", "create").stdout)["id"]
        copy = f"{shop.dbname}_mapped"
        r = shop.project.cli("--json", "restore", backup, "--into", copy, "--owner", other)
        assert r.returncode == 0, r.stderr
        check = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "owners and privileges")
        assert check["ok"] and f"owners {other}" in check["detail"], check
        with psycopg.connect(shop.admin_url(copy)) as conn:
            owners = {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
                ).fetchall()
            }
            db_owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            grants = conn.execute(
                "SELECT has_table_privilege(%s, 'public.\"Customer\"', 'SELECT')", (shop.reader,)
            ).fetchone()
        assert owners == {other} and db_owner == (other,) and grants == (True,)
    finally:
        drop_roles_and_databases(shop.cluster, f"{shop.tag}_mapped", [])
        admin(shop.cluster, f"DROP ROLE {other}")

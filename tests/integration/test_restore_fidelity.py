"""Restored copies read and behave as the application's database (trial 7): the read query under the
URL's ?schema=, database names of any length and spelling, the database's own settings carried over."""

from __future__ import annotations

import json
from urllib.parse import quote

import psycopg
import pytest

from tests.conftest import Project

pytestmark = pytest.mark.integration

SCHEMA = "Shop Prod"


@pytest.fixture
def schema_project(project: Project) -> Project:
    """Tables in a ?schema= schema, an unqualified read query, hooks that succeed."""
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute(
            f'CREATE SCHEMA "{SCHEMA}"; CREATE TABLE "{SCHEMA}"."Customer" (id int PRIMARY KEY, name text);'
            f'INSERT INTO "{SCHEMA}"."Customer" SELECT g, md5(g::text) FROM generate_series(1, 50) g'
        )
    project.environ["DATABASE_URL"] = f"{project.url}?schema={quote(SCHEMA, safe='')}"
    project.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        'app_url_env = "DATABASE_URL"\n'
        "read_query = 'SELECT count(*) FROM \"Customer\"'\n"
        "[environments.production.hooks]\npoint_app = 'true'\napp_rollback = 'true'\n"
    )
    return project


def _drop(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))


def test_the_read_query_runs_in_the_urls_schema_wherever_a_copy_is_verified(schema_project: Project) -> None:
    p = schema_project
    assert p.cli("health").returncode == 0
    made = p.cli("--json", "backup", "create", "--label", "pre-deploy")
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]
    drill = p.cli("backup", "verify", backup_id, "--drill")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    copy = f"{p.url.rsplit('/', 1)[1]}_copy"
    into = p.cli("restore", backup_id, "--into", copy)
    try:
        assert into.returncode == 0, into.stderr
    finally:
        _drop(p.url, copy)
    rollback = p.cli("--json", "rollback", "--with-db", "--backup", backup_id)
    assert rollback.returncode == 0, rollback.stderr
    out = json.loads(rollback.stdout)
    assert out["outcome"] == "rolled_back"
    verify = next(s for s in out["steps"] if s["name"] == "verify restore")
    assert verify["status"] == "succeeded"
    _drop(p.url, out["database"])


def test_a_read_query_that_fails_on_the_copy_gets_its_own_hint(schema_project: Project) -> None:
    p = schema_project
    backup_id = json.loads(p.cli("--json", "backup", "create").stdout)["id"]
    p.write_config((p.root / "pgrunbook.toml").read_text().replace('FROM "Customer"', "FROM public.nowhere"))
    into = p.cli("restore", backup_id, "--into", "copy_x")
    _drop(p.url, "copy_x")
    assert into.returncode != 0
    assert "read query" in into.stderr and "target's setup?" not in into.stderr
    assert "hint: the query, not the backup: fix [environments] read_query" in into.stderr


# --- database names of any length and spelling ---------------------------------------------------------

NAMES = [
    "orders_service_production_eu_west_1_primary_{}",  # 52 characters: +_rollback_<14 digits> > 63 bytes
    'Shop-Prod é "{}"',  # a space, a quote and a non-ASCII letter: legal in PostgreSQL, quoted everywhere
]


@pytest.mark.parametrize("pattern", NAMES, ids=["long", "spelling"])
def test_rollback_and_in_place_restore_of_any_database_name(project: Project, pattern: str) -> None:
    import secrets

    name = pattern.format(secrets.token_hex(2))
    server = project.url.rsplit("/", 1)[0]
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = f"{server}/{quote(name, safe='')}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE item (id int PRIMARY KEY); INSERT INTO item SELECT generate_series(1, 20)")
        project.environ["DATABASE_URL"] = url
        project.write_config(
            '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
            'app_url_env = "DATABASE_URL"\n'
            "[environments.production.hooks]\npoint_app = 'true'\napp_rollback = 'true'\n"
        )
        made = project.cli("--json", "backup", "create", "--label", "pre-deploy")
        assert made.returncode == 0, made.stderr
        backup_id = json.loads(made.stdout)["id"]
        rollback = project.cli("--json", "rollback", "--with-db", "--backup", backup_id)
        assert rollback.returncode == 0, rollback.stderr
        rolled = json.loads(rollback.stdout)["database"]
        assert len(rolled.encode()) <= 63 and "_rollback_" in rolled
        in_place = project.cli("--json", "restore", backup_id, "--in-place", "--confirm", name)
        assert in_place.returncode == 0, in_place.stderr
        report = json.loads(in_place.stdout)
        assert report["database"] == name and len(report["replaced_database"].encode()) <= 63
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM item").fetchone() == (20,)
    finally:
        with psycopg.connect(project.url, autocommit=True) as conn:
            prefix = name[:12]
            for (left,) in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)):
                conn.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(left)))


# --- the database's own settings -----------------------------------------------------------------------


def _settings(conn: psycopg.Connection, dbname: str) -> set[tuple[str | None, str]]:
    rows = conn.execute(
        "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, unnest(s.setconfig) "
        "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s",
        (dbname,),
    ).fetchall()
    return set(rows)


def test_the_rollback_database_gets_the_databases_own_settings(schema_project: Project) -> None:
    """ALTER DATABASE … SET and ALTER ROLE … IN DATABASE … SET live on the database, not in the archive:
    the rollback database the app is pointed at gets them, as the in-place swap does (trial 7 #8)."""
    import secrets

    p = schema_project
    live = p.url.rsplit("/", 1)[1]
    role = f"app_{secrets.token_hex(3)}"
    with psycopg.connect(p.url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role}")
        conn.execute(f"ALTER DATABASE {live} SET work_mem = '8MB'")
        conn.execute(f"ALTER DATABASE {live} SET search_path = \"$user\", 'Shop Prod', public")
        conn.execute(f"ALTER ROLE {role} IN DATABASE {live} SET statement_timeout = '5s'")
        conn.execute(f"GRANT CONNECT ON DATABASE {live} TO {role}")
        before = _settings(conn, live)
    try:
        made = p.cli("--json", "backup", "create")
        backup_id = json.loads(made.stdout)["id"]
        rollback = p.cli("--json", "rollback", "--with-db", "--backup", backup_id)
        assert rollback.returncode == 0, rollback.stderr
        out = json.loads(rollback.stdout)
        point = next(s for s in out["steps"] if s["name"] == "point app")
        assert "3 setting(s)" in point["detail"], point
        with psycopg.connect(p.url, autocommit=True) as conn:
            assert _settings(conn, out["database"]) == before and len(before) == 3
            granted = conn.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", (role, out["database"]))
            assert granted.fetchone() == (True,)
            comment = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (out["database"],)
            ).fetchone()
            assert comment is not None and str(comment[0]).startswith("pgrunbook: restored from backup")
        _drop(p.url, out["database"])
        in_place = p.cli("--json", "restore", backup_id, "--in-place", "--confirm", live)
        assert in_place.returncode == 0, in_place.stderr
        with psycopg.connect(p.url, autocommit=True) as conn:
            assert _settings(conn, live) == before
        _drop(p.url, json.loads(in_place.stdout)["replaced_database"])
    finally:
        with psycopg.connect(p.url, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON DATABASE {live} FROM {role}")
            conn.execute(f"DROP ROLE {role}")

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
    assert "hint: the read query failed on the restored copy" in into.stderr

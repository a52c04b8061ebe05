"""drift between two environments: aligned -> 0; each out-of-band change -> 1, named."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.conftest import Project, seed
from tests.integration.test_migrate import make_migrations

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(project: Project, cluster) -> tuple[Project, str]:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS drift_staging")
        conn.execute("CREATE DATABASE drift_staging")
    staging = cluster.url("drift_staging")
    project.environ["STAGING_URL"] = staging
    project.write_config(
        '[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        '[environments.staging]\ndatabase_url_env = "STAGING_URL"\n'
    )
    make_migrations(
        project,
        {
            "01_init": "CREATE TYPE mood2 AS ENUM ('a', 'b');\n"
            "CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL, m mood2);"
        },
    )
    for env in ("production", "staging"):
        assert project.cli("migrate", "deploy", "--env", env).returncode == 0
    for url in (project.url, staging):
        seed(url, accounts=5, invoices=5)
    return project, staging


def drift(project: Project) -> tuple[int, dict]:
    r = project.cli("--json", "drift", "staging", "production")
    return r.returncode, json.loads(r.stdout)


def test_aligned(pair: tuple[Project, str]) -> None:
    project, _ = pair
    code, data = drift(project)
    assert code == 0 and data["aligned"] is True and data["history"] == [] and data["schema"] == []
    text = project.cli("drift", "staging", "production")
    assert "are aligned" in text.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("ALTER TABLE item ADD COLUMN extra int", "column public.item.extra: only in production"),
        ("CREATE INDEX item_name_idx ON item (name)", "index public.item_name_idx: only in production"),
        ("ALTER TYPE mood2 ADD VALUE 'c'", "enum public.mood2: staging has 'a, b', production has 'a, b, c'"),
        (
            "ALTER TABLE item ADD CONSTRAINT name_len CHECK (length(name) < 100)",
            "constraint public.item.name_len: only in production",
        ),
        (
            "ALTER TABLE item ALTER COLUMN name DROP NOT NULL",
            "column public.item.name: staging has 'text NOT NULL', production has 'text NULL'",
        ),
    ],
)
def test_out_of_band_schema_changes_are_named(pair: tuple[Project, str], change: str, expected: str) -> None:
    project, _ = pair
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute(change)  # type: ignore[arg-type]
    code, data = drift(project)
    assert code == 1
    assert any(line.startswith(expected) for line in data["schema"]), data["schema"]
    assert data["history"] == []


def test_history_differences_are_named(pair: tuple[Project, str]) -> None:
    project, staging = pair
    make_migrations(project, {"02_more": "CREATE TABLE more (id int);"})
    assert project.cli("migrate", "deploy", "--env", "production").returncode == 0
    with psycopg.connect(staging, autocommit=True) as conn:
        conn.execute("UPDATE _prisma_migrations SET checksum = repeat('0', 64) WHERE migration_name = '01_init'")
    code, data = drift(project)
    assert code == 1
    assert any(h.startswith("migration 02_more: only in production") for h in data["history"])
    assert any(h.startswith("migration 01_init: staging has '0000") for h in data["history"])
    assert "table public.more: only in production (r)" in data["schema"]

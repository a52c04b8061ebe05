"""Prisma's own CLI (pinned in ../shared/prisma-oracle) as the judge of pgrunbook's history table.

It runs `prisma migrate status` and `prisma migrate resolve` here through its WebAssembly engine; its
`migrate deploy` cannot (see the oracle's README), so deploy's rows are pinned in test_migrate.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Project
from tests.integration.test_migrate import make_migrations, rows

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ORACLE_SRC = REPO.parent / "shared" / "prisma-oracle"
ORACLE = REPO / ".cache" / "prisma-oracle"


def _unavailable(reason: str) -> None:
    if os.environ.get("PGRUNBOOK_REQUIRE_ORACLE") == "1":
        pytest.fail(f"Prisma oracle required but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def oracle() -> Path:
    if not ORACLE_SRC.is_dir():
        _unavailable(f"{ORACLE_SRC} not found")
    prisma = ORACLE / "node_modules" / ".bin" / "prisma"
    if not prisma.exists():
        if not shutil.which("npm"):
            _unavailable("npm is not installed")
        ORACLE.mkdir(parents=True, exist_ok=True)
        for f in ORACLE_SRC.iterdir():
            if f.is_file():
                shutil.copy(f, ORACLE / f.name)
        r = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=ORACLE, capture_output=True, text=True, timeout=600
        )
        if r.returncode != 0:
            _unavailable(f"npm install failed: {r.stderr[-500:]}")
    noop = ORACLE / "no-engine"
    noop.write_text("#!/bin/sh\nexit 0\n")
    noop.chmod(0o755)
    return ORACLE


@pytest.fixture
def prisma(oracle: Path, project: Project) -> Iterator:
    schema_dir = project.root / "prisma"
    schema_dir.mkdir(exist_ok=True)
    shutil.copy(ORACLE_SRC / "schema.prisma", schema_dir / "schema.prisma")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **project.environ,
            "PRISMA_SCHEMA": str(schema_dir / "schema.prisma"),
            "PRISMA_SCHEMA_ENGINE_BINARY": str(oracle / "no-engine"),
            "PRISMA_QUERY_ENGINE_LIBRARY": str(oracle / "no-engine"),
            "CHECKPOINT_DISABLE": "1",
            "PRISMA_HIDE_UPDATE_MESSAGE": "1",
        }
        return subprocess.run(
            [str(oracle / "node_modules" / ".bin" / "prisma"), "migrate", *args],
            cwd=oracle,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    yield run


def test_prisma_agrees_after_pgrunbook_deploy_and_sees_its_failures(project: Project, prisma) -> None:
    umami = REPO.parent / "shared" / "fixtures" / "prisma" / "umami" / "migrations"
    shutil.copytree(umami, project.root / "prisma" / "migrations")
    assert project.cli("migrate", "deploy").returncode == 0
    ok = prisma("status")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Database schema is up to date!" in ok.stdout
    assert "19 migrations found" in ok.stdout

    make_migrations(project, {"20_broken": "ALTER TABLE website ADD COLUMN x int;\nSELECT 1/0;\n"})
    assert project.cli("migrate", "deploy").returncode == 2
    failed = prisma("status")
    assert failed.returncode == 1
    assert "20_broken" in failed.stdout + failed.stderr
    assert "failed" in (failed.stdout + failed.stderr).lower()


def test_rows_written_by_prisma_resolve_are_read_right(project: Project, prisma) -> None:
    folder = make_migrations(
        project,
        {
            "01_init": "CREATE TABLE item (id int PRIMARY KEY);",
            "02_broken": "ALTER TABLE item ADD COLUMN price int;\nSELECT 1/0;\n",
            "03_more": "CREATE TABLE other (id int);",
        },
    )
    with __import__("psycopg").connect(project.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE item (id int PRIMARY KEY)")
    # baseline with Prisma itself: its row is read by pgrunbook as applied
    r = prisma("resolve", "--applied", "01_init")
    assert r.returncode == 0, r.stdout + r.stderr
    status = json.loads(project.cli("--json", "status").stdout)
    assert status["applied"] == ["01_init"] and status["pending"] == ["02_broken", "03_more"]
    prisma_row = rows(project.url)[0]
    assert prisma_row["logs"] == "" and prisma_row["started_at"] == prisma_row["finished_at"]

    assert project.cli("migrate", "deploy").returncode == 2  # 02 fails under pgrunbook
    r = prisma("resolve", "--rolled-back", "02_broken")
    assert r.returncode == 0, r.stdout + r.stderr
    status = json.loads(project.cli("--json", "status").stdout)
    assert status["failed"] == [] and status["pending"] == ["02_broken", "03_more"]
    (folder / "02_broken" / "migration.sql").write_text("ALTER TABLE item ADD COLUMN price int;\n")
    deploy = project.cli("--json", "migrate", "deploy")
    assert deploy.returncode == 0, deploy.stderr
    assert [a["name"] for a in json.loads(deploy.stdout)["applied"]] == ["02_broken", "03_more"]
    final = prisma("status")
    assert final.returncode == 0 and "Database schema is up to date!" in final.stdout

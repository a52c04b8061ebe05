"""Prisma 7's own schema engine as the judge of pgrunbook's Prisma 7 semantics.

Prisma 7's CLI cannot run migrate here: from 7.0 it drives migrations only through a native schema-engine
binary it downloads from binaries.prisma.sh (checked with prisma 7.10.1: "request to
https://binaries.prisma.sh/all_commits/.../schema-engine.gz.sha256 failed"), and the `engine: "js"` /
`adapter` configuration that let Prisma 6.19 use its WebAssembly engine is gone from Prisma 7's config.
So tests/prisma7_oracle/oracle.mjs loads the WebAssembly build of the same engine that Prisma 7.10.0 pins
(@prisma/schema-engine-wasm 7.10.0-4.0edf323, from npm) with the pg driver adapter, and sends it the
commands the CLI sends: diagnoseMigrationHistory (`migrate status`), applyMigrations (`migrate deploy`),
markMigrationApplied / markMigrationRolledBack (`migrate resolve`).

What it can judge: how Prisma 7 reads pgrunbook's rows and schemas (status, failed, edited, ?schema=),
and what its own deploy writes for pgrunbook to read. What it cannot: the statement splitting itself —
prisma-engines #5767 put split_script_into_statements in the native connector only; the WebAssembly
connector hands the whole script to the adapter (seen below: one piece per migration), so splitting is
pinned from the source in test_prisma7.py instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import LocalCluster
from tests.integration.test_prisma7 import BROKEN, CONCURRENT, P7, _history, _tables

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ORACLE_SRC = REPO / "tests" / "prisma7_oracle"
ORACLE = REPO / ".cache" / "prisma7-oracle"

Oracle = Callable[..., dict[str, Any]]


def _unavailable(reason: str) -> None:
    if os.environ.get("PGRUNBOOK_REQUIRE_ORACLE") == "1":
        pytest.fail(f"Prisma 7 oracle required but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def oracle_dir() -> Path:
    """npm install of the pinned packages (npm registry only), once per checkout."""
    marker = ORACLE / "node_modules" / "@prisma" / "schema-engine-wasm" / "package.json"
    pinned = ORACLE_SRC / "package.json"
    if not marker.exists() or (ORACLE / "package.json").read_text() != pinned.read_text():
        if not shutil.which("npm") or not shutil.which("node"):
            _unavailable("node/npm are not installed")
        ORACLE.mkdir(parents=True, exist_ok=True)
        shutil.copy(pinned, ORACLE / "package.json")
        r = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=ORACLE, capture_output=True, text=True, timeout=600
        )
        if r.returncode != 0:
            _unavailable(f"npm install failed: {r.stderr[-500:]}")
    shutil.copy(ORACLE_SRC / "oracle.mjs", ORACLE / "oracle.mjs")
    return ORACLE


@pytest.fixture
def prisma7(oracle_dir: Path, p7: P7) -> Iterator[Oracle]:
    def run(command: str, *args: str, url: str | None = None) -> dict[str, Any]:
        r = subprocess.run(
            ["node", "oracle.mjs", command, *args, str(p7.root / "db" / "migrations")],
            cwd=oracle_dir,
            env={**p7.environ, "DATABASE_URL": url or p7.environ["APP_DB_URL"]},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    yield run


def _up_to_date(status: dict[str, Any]) -> bool:
    result = status["result"]
    return (
        status["ok"]
        and result["hasMigrationsTable"]
        and result["failedMigrationNames"] == []
        and result["editedMigrationNames"] == []
        and result["history"] is None
    )


def test_prisma7_agrees_after_pgrunbook_deploys_into_billing_prod(p7: P7, prisma7: Oracle) -> None:
    p7.use_schema("Billing-Prod")
    p7.migration("20260102000000_price", CONCURRENT)
    assert p7.cli("migrate", "deploy").returncode == 0
    assert _tables(p7.base_url, "public") == []
    assert _up_to_date(prisma7("status"))


def test_prisma7_deploys_into_a_fresh_schema_and_pgrunbook_reads_it(p7: P7, prisma7: Oracle) -> None:
    """Prisma 7 creates the missing schema and puts everything in it; pgrunbook finds the same."""
    p7.use_schema("Billing Prod")
    deployed = prisma7("deploy")
    assert deployed["ok"], deployed
    assert deployed["result"]["appliedMigrationNames"] == ["20260101000000_init"]
    assert _tables(p7.base_url, "Billing Prod") == ["_prisma_migrations", "item"]
    assert _tables(p7.base_url, "public") == []
    status = p7.cli("--json", "status")
    assert status.returncode == 0 and json.loads(status.stdout)["applied"] == ["20260101000000_init"]
    ours = _history(p7.base_url, "Billing Prod")[0]
    assert ours["applied_steps_count"] == 1 and ours["logs"] is None and ours["finished_at"] is not None


def test_prisma7_agrees_after_a_split_deploy_with_concurrent_indexes(p7: P7, prisma7: Oracle) -> None:
    assert p7.cli("migrate", "deploy").returncode == 0
    p7.migration("20260102000000_price", CONCURRENT)
    assert p7.cli("migrate", "deploy").returncode == 0  # Prisma 7.4+ semantics: statement by statement
    assert _up_to_date(prisma7("status"))
    with psycopg.connect(p7.base_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone() == (0,)


def test_prisma7_sees_the_failure_pgrunbook_recorded_mid_script_and_resolves_it(p7: P7, prisma7: Oracle) -> None:
    p7.migration("20260102000000_broken", BROKEN)
    assert p7.cli("migrate", "deploy").returncode == 2
    status = prisma7("status")
    assert status["result"]["failedMigrationNames"] == ["20260102000000_broken"]

    # Prisma's own resolve writes the row pgrunbook then reads
    rolled = prisma7("resolve-rolled-back", "20260102000000_broken")
    assert rolled["ok"], rolled
    ours = json.loads(p7.cli("--json", "status").stdout)
    assert ours["failed"] == [] and ours["pending"] == ["20260102000000_broken"]


def test_prisma7_engine_sends_a_whole_script_through_the_adapter(p7: P7, prisma7: Oracle) -> None:
    """Why splitting cannot be judged here: the WebAssembly connector does not split (see module doc)."""
    p7.migration("20260102000000_two", 'CREATE TABLE "a" ("id" INTEGER);\nCREATE TABLE "b" ("id" INTEGER);\n')
    deployed = prisma7("deploy")
    assert deployed["ok"], deployed
    scripts = [p for p in deployed["pieces"] if "CREATE TABLE" in p]
    assert len(scripts) == 2 and scripts[1].count("CREATE TABLE") == 2


# --- twin databases: the same migrations deployed by pgrunbook and by Prisma's engine, compared ---------


@pytest.fixture
def twin(cluster: LocalCluster) -> Iterator[str]:
    """A second empty database, for Prisma's engine to deploy what pgrunbook deploys in the first."""
    name = f"twin_{os.urandom(4).hex()}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield cluster.url(name)
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _objects(url: str) -> dict[str, Any]:
    """What a deploy left, outside the history table: columns, indexes (and whether valid), row counts."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_name <> '_prisma_migrations' "
            "ORDER BY 1, 2, 3"
        ).fetchall()
        indexes = conn.execute(
            "SELECT n.nspname, c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'pg_toast') "
            "AND c.relname <> '_prisma_migrations_pkey' ORDER BY 1, 2"
        ).fetchall()
        counts = {
            f"{s}.{t}": conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(s, t))).fetchone()
            for s, t in {(c[0], c[1]) for c in columns}
        }
    return {"columns": columns, "indexes": indexes, "rows": counts}


def _row_shapes(url: str, schema: str) -> list[tuple[Any, ...]]:
    """The history rows as both tools must leave them (ids and times differ by nature)."""
    return [
        (
            r["migration_name"],
            r["checksum"],
            r["finished_at"] is not None,
            r["rolled_back_at"] is not None,
            r["applied_steps_count"],
            r["logs"] is None,
        )
        for r in _history(url, schema)
    ]


# the WebAssembly engine sends each file as one string: pgrunbook is judged under the same semantics
WHOLE_FILE = "7.3.0"


@pytest.mark.parametrize(
    ("schema", "script", "deploys"),
    [
        (
            "Billing-Prod",
            'ALTER TABLE "item" ADD COLUMN "price" INTEGER;\nCREATE INDEX "p" ON "item"("price");\n',
            True,
        ),
        ("public", 'CREATE INDEX CONCURRENTLY "item_id_idx" ON "item"("id");\n', True),
        ("public", BROKEN, False),
        ("Billing-Prod", BROKEN, False),
    ],
    ids=["schema-billing-prod", "concurrently-alone", "failing-in-the-middle", "failing-in-billing-prod"],
)
def test_twin_databases_deployed_by_pgrunbook_and_by_prismas_engine_are_the_same(
    p7: P7, prisma7: Oracle, twin: str, schema: str, script: str, deploys: bool
) -> None:
    p7.prisma_version(WHOLE_FILE)
    ours = p7.use_schema(schema)
    theirs = ours.replace(p7.base_url, twin, 1)
    p7.migration("20260102000000_next", script)

    result = p7.cli("migrate", "deploy")
    deployed = prisma7("deploy", url=theirs)
    assert (result.returncode == 0) is deploys and deployed["ok"] is deploys, (result.stderr, deployed)

    assert _objects(p7.base_url) == _objects(twin)
    assert _row_shapes(p7.base_url, schema) == _row_shapes(twin, schema)
    # and each tool reads the other's history the same way
    assert json.loads(p7.cli("--json", "status").stdout)["failed"] == ([] if deploys else ["20260102000000_next"])
    assert prisma7("status", url=ours)["result"]["failedMigrationNames"] == ([] if deploys else ["20260102000000_next"])

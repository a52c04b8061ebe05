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
pinned from the source in test_prisma7.py instead. Nor can it judge the logs text: its errors come through
the JavaScript driver adapter ("external connector error …"), not through the native connector's
formatting (pinned in tests/unit/test_prisma_logs.py from the source and from rows Prisma wrote).

Twin databases: the same migrations deployed by pgrunbook in one database and by Prisma's engine in another
must leave the same tables, columns, indexes (and their validity), row counts and history rows. With the
WebAssembly engine this holds for whole-file semantics; with Prisma 7's own CLI and a native engine
supplied by the developer (PGRUNBOOK_PRISMA7_SCHEMA_ENGINE, see the end of this file), for the split cases
and the logs text too.
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


# --- Prisma 7's own CLI with a native schema engine, when one is supplied ------------------------------
#
# Prisma 7's CLI migrates only through the native schema-engine binary it downloads from Prisma's own
# server; no registry this machine or CI reaches carries it (docs/migrations.md, "The oracle"). Where a
# developer has one (schema-engine of Prisma >= 7.4 for this platform), point PGRUNBOOK_PRISMA7_SCHEMA_ENGINE
# at it (and PGRUNBOOK_PRISMA7_CLI_VERSION at the matching CLI, 7.10.1 by default): these tests then run
# `prisma migrate deploy` itself on a twin database for the split cases and compare everything, logs
# included. Without it they skip, even in CI: there is nothing to install them from.

NATIVE_ENGINE = os.environ.get("PGRUNBOOK_PRISMA7_SCHEMA_ENGINE", "")
NATIVE_VERSION = os.environ.get("PGRUNBOOK_PRISMA7_CLI_VERSION", "7.10.1")
CLI = REPO / ".cache" / f"prisma7-cli-{NATIVE_VERSION}"


@pytest.fixture(scope="session")
def prisma7_cli() -> Path:
    if not NATIVE_ENGINE:
        pytest.skip("no native Prisma 7 schema engine supplied (PGRUNBOOK_PRISMA7_SCHEMA_ENGINE)")
    if not (CLI / "node_modules" / ".bin" / "prisma").exists():
        CLI.mkdir(parents=True, exist_ok=True)
        (CLI / "package.json").write_text(json.dumps({"name": "prisma7-cli", "private": True}))
        r = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"prisma@{NATIVE_VERSION}", "dotenv@17"],
            cwd=CLI,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stderr[-2000:]
    return CLI


def _prisma_deploy(cli: Path, p7: P7, url: str) -> subprocess.CompletedProcess[str]:
    """`prisma migrate deploy` in a copy of the project, against ``url``, with the supplied engine."""
    root = p7.root.parent / f"{p7.root.name}-prisma"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(p7.root, root)
    (root / "node_modules").symlink_to(cli / "node_modules")  # prisma/config and dotenv for the config file
    env = {
        **p7.environ,
        "APP_DB_URL": url,
        "PRISMA_SCHEMA_ENGINE_BINARY": NATIVE_ENGINE,
        "PRISMA_HIDE_UPDATE_MESSAGE": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    return subprocess.run(
        [str(cli / "node_modules" / ".bin" / "prisma"), "migrate", "deploy"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


DROP_MIXED = 'DROP INDEX CONCURRENTLY "item_pkey_x";\nCREATE INDEX CONCURRENTLY "c" ON "item"("id");\n'


@pytest.mark.parametrize(
    ("schema", "script", "deploys"),
    [
        ("public", CONCURRENT, True),
        ("public", BROKEN, False),
        ("public", DROP_MIXED, False),
        ("Billing-Prod", CONCURRENT, True),
        ("Billing-Prod", BROKEN, False),
    ],
    ids=["concurrent-indexes", "failing-in-the-middle", "drop-concurrently-mixed", "billing-prod", "billing-broken"],
)
def test_prisma7_cli_and_pgrunbook_leave_the_same_database(
    p7: P7, prisma7_cli: Path, twin: str, schema: str, script: str, deploys: bool
) -> None:
    p7.prisma_version(NATIVE_VERSION)
    ours = p7.use_schema(schema)
    theirs = ours.replace(p7.base_url, twin, 1)
    p7.migration("20260102000000_next", script)

    result = p7.cli("migrate", "deploy")
    prisma = _prisma_deploy(prisma7_cli, p7, theirs)
    assert (result.returncode == 0) is deploys and (prisma.returncode == 0) is deploys, (result.stderr, prisma)

    assert _objects(p7.base_url) == _objects(twin)
    assert _row_shapes(p7.base_url, schema) == _row_shapes(twin, schema)
    if not deploys:  # Prisma's logs are pgrunbook's, then a newline and its engine's span trace
        our_logs = _history(p7.base_url, schema)[-1]["logs"]
        their_logs = _history(twin, schema)[-1]["logs"]
        assert their_logs[: len(our_logs)] == our_logs
        assert their_logs[len(our_logs) :].startswith("\n   0: ")

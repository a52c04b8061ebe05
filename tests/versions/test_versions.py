"""The version suite (pytest -m versions): pgrunbook's operations on the server major and with the client
tools under test (PGRUNBOOK_TEST_SERVER_BIN, PGRUNBOOK_TEST_TOOLS_BIN; scripts/test-majors runs it for
every combination of ../shared/PG-MAJORS.md). Each operation records its cell of docs/compatibility.md
(tests/compat.py): verified, or refused before anything was touched with one error line naming what to
install. Nothing is mocked: real servers of each major, the real tools."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgrunbook import sampleapp
from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.tools import installed_tools, min_restore_major, needs_timeout_tolerance
from tests import compat
from tests.conftest import PASSWORD, SERVER, Project, assert_clean_error, fingerprint, suite_tools
from tests.integration.test_migrate import make_migrations

pytestmark = [pytest.mark.integration, pytest.mark.versions]

# beyond conftest.SEED (enum, schemas, FKs, jsonb, bytea, quoted names): a GIN index, a view, a sequence
MORE = """
CREATE INDEX account_profile_gin ON account USING gin (profile);
CREATE VIEW billing.big_invoice AS SELECT id, amount FROM billing.invoice WHERE amount > 100;
CREATE SEQUENCE billing.ticket_seq START 1000;
SELECT nextval('billing.ticket_seq');
"""

MIGRATIONS = {
    "01_init": 'CREATE EXTENSION IF NOT EXISTS "pgcrypto";\n'
    "CREATE TYPE tier AS ENUM ('free', 'pro');\n"
    "CREATE TABLE member (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text NOT NULL UNIQUE,\n"
    "  tier tier NOT NULL DEFAULT 'free', meta jsonb, created_at timestamptz NOT NULL DEFAULT now());\n"
    "CREATE INDEX member_meta ON member USING gin (meta);",
    "02_team": "CREATE TABLE team (id serial PRIMARY KEY, name text NOT NULL);\n"
    "ALTER TABLE member ADD COLUMN team_id int REFERENCES team(id) ON DELETE SET NULL;\n"
    "CREATE VIEW pro_member AS SELECT id, email FROM member WHERE tier = 'pro';",
}


def _majors() -> tuple[int, int]:
    return SERVER["major"], suite_tools().major


def _cell(operation: str, result: str, detail: str = "") -> None:
    server, tools = _majors()
    compat.record(server, tools, operation, result, detail)


def _first_line(r: subprocess.CompletedProcess[str]) -> str:
    return next((ln for ln in r.stderr.splitlines() if ln.startswith("error: ")), "")


def _refusal(r: subprocess.CompletedProcess[str]) -> str:
    """The error line and its hint, as recorded in the matrix."""
    hint = next((ln for ln in r.stderr.splitlines() if ln.startswith("hint: ")), "")
    return f"{_first_line(r)} / {hint}" if hint else _first_line(r)


@pytest.fixture
def rich(seeded: Project) -> Project:
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute(MORE)
    return seeded


def _refused_backup(project: Project) -> None:
    """Tools older than the server: refused before anything is touched, saying what to install."""
    server, _tools = _majors()
    r = project.cli("backup", "create")
    assert_clean_error(
        r, 2, f"pg_dump {suite_tools().version}", f"older than the server (PostgreSQL {SERVER['version']})"
    )
    assert f"a backup needs pg_dump {server} or newer" in r.stderr
    assert f"postgresql-client-{server}" in r.stderr and "apt.postgresql.org.sh" in r.stderr
    assert not list(project.storage.rglob("manifest.json")), "a refused backup left something behind"
    _cell("backup", "refused", _refusal(r))


def test_backup_drill_restore_in_place(rich: Project) -> None:
    server, tools = _majors()
    if tools < server:
        _refused_backup(rich)
        return
    before = fingerprint(rich.url)
    r = rich.cli("--json", "backup", "create")
    assert r.returncode == 0, r.stderr
    bid = json.loads(r.stdout)["id"]
    manifest = json.loads(next(rich.storage.rglob("manifest.json")).read_text())
    assert manifest["pg_dump_version"] == str(suite_tools().version)
    _, _, comment = manifest["restore_command"].partition("  # ")
    assert comment.startswith(f"needs pg_restore {min_restore_major(tools)} or newer"), comment
    if needs_timeout_tolerance(min_restore_major(tools), server):  # trial11 F8: the tolerated error, said
        assert 'exit 1 and one harmless error, unrecognized configuration parameter "transaction_timeout"' in comment
    _cell("backup", "ok")

    r = rich.cli("--json", "backup", "verify", bid, "--drill")
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["drill restore"]["ok"] and checks["row counts"]["ok"], checks
    _cell("drill", "ok")

    r = rich.cli("--json", "restore", bid, "--into", "copy_into")
    assert r.returncode == 0, r.stderr
    copy = rich.url.rsplit("/", 1)[0] + "/copy_into"
    assert fingerprint(copy) == before
    _cell("restore --into", "ok")

    live = rich.url.rsplit("/", 1)[1]
    r = rich.cli("--json", "restore", bid, "--in-place", "--confirm", live)
    assert r.returncode == 0, r.stderr
    assert fingerprint(rich.url) == before
    _cell("restore --in-place", "ok")

    # the manifest's by-hand command, as written, with this machine's PATH
    with psycopg.connect(rich.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE by_hand")
    target = rich.url.rsplit("/", 1)[0] + "/by_hand"
    folder = next(rich.storage.rglob("manifest.json")).parent
    env = {"PATH": os.environ.get("PATH", ""), "TARGET_DATABASE_URL": target}
    r = subprocess.run(manifest["restore_command"], shell=True, cwd=folder, env=env, capture_output=True, text=True)
    if needs_timeout_tolerance(tools, server):  # by hand, pg_restore >= 17 reports its one ignored error
        errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
        assert r.returncode == 1 and errors and all("transaction_timeout" in e for e in errors), r.stderr
    else:
        assert r.returncode == 0, r.stderr
    assert fingerprint(target) == before
    with psycopg.connect(rich.url, autocommit=True) as conn:
        for name in ("by_hand", "copy_into"):
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_restore_refuses_tools_that_cannot_read_the_archive(rich: Project) -> None:
    """A backup written by pg_dump >= 16, restored with an older pg_restore: refused before anything is
    touched, naming the archive's pg_dump, the pg_restore needed and the target server (not a false
    'pg_dump is older than the server')."""
    server, tools = _majors()
    older = [t for t in installed_tools() if t.major < min_restore_major(tools)]
    if tools < server or not older:
        pytest.skip("needs tools >= 16 that fit the server and an older pg_restore installed")
    bid = json.loads(rich.cli("--json", "backup", "create").stdout)["id"]
    old = older[0]
    r = rich.cli("restore", bid, "--into", "never", extra_env={"PGRUNBOOK_POSTGRES__BIN_DIR": str(old.folder)})
    assert_clean_error(r, 2, f"pg_restore {old.version}", "cannot read this backup")
    line = _first_line(r)
    assert (
        f"written by pg_dump {suite_tools().version}" in line
        and f"pg_restore {min_restore_major(tools)} or newer" in line
    ), line
    assert f"target server is PostgreSQL {SERVER['version']}" in line and "older than the server" not in line
    with psycopg.connect(rich.url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'never'").fetchone() == (0,)
    _cell("restore with older tools", "refused", _refusal(r))
    # a drill that cannot run here is this machine's problem: refused, never recorded against the backup
    manifest = next(rich.storage.rglob("manifest.json"))
    recorded = manifest.read_text()
    r = rich.cli("backup", "verify", bid, "--drill", extra_env={"PGRUNBOOK_POSTGRES__BIN_DIR": str(old.folder)})
    assert_clean_error(r, 2, f"pg_restore {old.version}", "cannot read this backup")
    assert "damaged" not in r.stderr and "FAILED" not in r.stdout
    assert manifest.read_text() == recorded
    listing = json.loads(rich.cli("--json", "backup", "list").stdout)
    assert [b["verified"] for b in listing if b["id"] == bid] == [False]  # never verified, not failed


def test_doctor_names_the_tools_of_each_operation(project: Project) -> None:
    server, tools = _majors()
    r = project.cli("--json", "doctor")
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    if tools < server:
        assert checks["client tools"]["status"] == "failed" and r.returncode == 2
        assert "older than the server" in checks["client tools"]["detail"]
        assert f"postgresql-client-{server}" in checks["client tools"]["hint"]
        return
    assert (
        checks["client tools"]["status"] == "ok"
        and f"pg_dump {suite_tools().version}" in checks["client tools"]["detail"]
    )
    restore = checks["restore tools"]
    assert restore["status"] == "ok" and f"(server {SERVER['version']})" in restore["detail"], restore
    assert ("transaction_timeout" in restore["detail"]) is needs_timeout_tolerance(tools, server)


@pytest.fixture
def stage(rich: Project) -> Iterator[tuple[Project, Path, Path]]:
    url_file = rich.root / "app.url"
    url_file.write_text(rich.url)
    app, health = sampleapp.start(url_file, "SELECT count(*) FROM account")
    log = rich.root / "hooks.log"
    rich.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        'app_url_env = "DATABASE_URL"\n'  # the sample app connects as the test cluster's superuser
        f'health_url = "{health}"\nhealth_deadline_s = 3\nhealth_interval_s = 0.2\n'
        'read_query = "SELECT count(*) FROM account"\n[environments.production.hooks]\n'
        f"maintenance_on = 'echo on >> {log}'\nmaintenance_off = 'echo off >> {log}'\n"
        f"point_app = 'printf %s \"$PGRUNBOOK_DATABASE_URL\" > {url_file}; echo point >> {log}'\n"
        f"app_rollback = 'echo app_rollback >> {log}'\n"
    )
    yield rich, url_file, log
    app.terminate()
    app.wait()


def test_deploy_with_a_failing_migration_rolls_back(stage: tuple[Project, Path, Path]) -> None:
    project, url_file, log = stage
    server, tools = _majors()
    # the seeded tables are the baseline (else migrate deploy stops at P3005, before any migration runs,
    # and a deploy stopped there now rolls nothing back): the failing migration then really runs
    make_migrations(project, {"00_baseline": "SELECT 1;"})
    resolved = project.cli("migrate", "resolve", "--applied", "00_baseline", "--env", "production")
    assert resolved.returncode == 0 or tools < server, resolved.stderr
    make_migrations(project, {"01_bad": "ALTER TABLE account ADD COLUMN x int;\nSELECT 1/0;"})
    before = fingerprint(project.url)
    r = project.cli("--json", "deploy", "--env", "production", "--auto-rollback")
    if tools < server:  # preflight (doctor) refuses before maintenance is switched on
        assert_clean_error(r, 2, "preflight: client tools", "older than the server")
        assert not log.exists() and fingerprint(project.url) == before
        _cell("deploy + automatic rollback", "refused", _refusal(r))
        return
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["outcome"] == "rolled_back", r.stderr
    assert fingerprint(url_file.read_text()) == before
    assert log.read_text().split() == ["on", "point", "app_rollback", "off"]
    _cell("deploy + automatic rollback", "ok")


def test_migrate_deploy_status(project: Project) -> None:
    make_migrations(project, MIGRATIONS)
    r = project.cli("--json", "status")
    assert r.returncode == 1 and len(json.loads(r.stdout)["pending"]) == 2
    r = project.cli("migrate", "deploy")
    assert r.returncode == 0, r.stderr
    r = project.cli("status")
    assert r.returncode == 0 and "Database schema is up to date!" in r.stdout
    _cell("migrate deploy/status", "ok")


@pytest.fixture(scope="module")
def cluster15() -> Iterator[LocalCluster | None]:
    """Debian's PostgreSQL 15 beside the server under test, for drift between majors."""
    if SERVER.get("major") == 15 or not Path("/usr/lib/postgresql/15/bin/initdb").exists():
        yield None
        return
    with LocalCluster(bin_dir="/usr/lib/postgresql/15/bin", password=PASSWORD, name="pgrunbook-15") as c:
        yield c


def test_drift_between_majors_has_no_false_differences(project: Project, cluster15: LocalCluster | None) -> None:
    """The same migrations on this server and on 15: aligned. PostgreSQL 18's NOT NULL constraint rows
    and extension versions that differ only with the server major are no drift (shown apart)."""
    if cluster15 is None:
        pytest.skip("the server under test is 15 itself (drift on one major: tests/integration/test_drift.py)")
    with psycopg.connect(cluster15.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS drift_other")
        conn.execute("CREATE DATABASE drift_other")
    project.environ["STAGING_URL"] = cluster15.url("drift_other")
    project.write_config(
        '[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        '[environments.staging]\ndatabase_url_env = "STAGING_URL"\n'
    )
    make_migrations(project, MIGRATIONS)
    for env in ("production", "staging"):
        r = project.cli("migrate", "deploy", "--env", env)
        assert r.returncode == 0, r.stderr
    r = project.cli("--json", "drift", "staging", "production")
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["aligned"], data
    # a real difference is still found across majors
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE team ALTER COLUMN name DROP NOT NULL")
    r = project.cli("--json", "drift", "staging", "production")
    data = json.loads(r.stdout)
    assert r.returncode == 1 and any("team.name" in d and "NOT NULL" in d for d in data["schema"]), data
    assert len(data["schema"]) == 1, data["schema"]
    _cell("drift vs 15", "ok")


def test_any_other_restore_error_fails_and_the_error_says_what_became_of_the_database(rich: Project) -> None:
    """Only pg_restore >= 17's transaction_timeout error is ever let through: a CHECK calling a function that
    relies on search_path fails on every combination (the tolerance too), the error names that cause
    (never the tolerated error), and says what became of the database: the one pgrunbook created was
    dropped; one that existed (empty) before was left, holding a partial restore."""
    server, tools = _majors()
    if tools < server:
        pytest.skip("no backup with tools older than the server")
    with psycopg.connect(rich.url, autocommit=True) as conn:
        for statement in (
            # a CHECK, not an index: PostgreSQL 17+ already refuses such an index when it is created
            "CREATE FUNCTION mk() RETURNS int LANGUAGE sql AS $$ SELECT 7 $$",
            "CREATE FUNCTION dflt() RETURNS int LANGUAGE sql AS $$ SELECT mk() $$",
            "CREATE TABLE item (id int, v int DEFAULT dflt() CHECK (v = dflt()))",
            "INSERT INTO item (id) SELECT g FROM generate_series(1, 20) g",
        ):
            conn.execute(statement.encode())
    bid = json.loads(rich.cli("--json", "backup", "create").stdout)["id"]
    with psycopg.connect(rich.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE was_empty")

    r = rich.cli("restore", bid, "--into", "fresh_one")
    assert_clean_error(r, 2, "function dflt uses", "search_path", "fresh_one was dropped again")
    assert "transaction_timeout" not in r.stderr, r.stderr
    r = rich.cli("restore", bid, "--into", "was_empty")
    assert_clean_error(r, 2, "function dflt uses", "was_empty holds a partial restore and was not put into use")
    assert "transaction_timeout" not in r.stderr, r.stderr
    with psycopg.connect(rich.url, autocommit=True) as conn:
        names = {n for (n,) in conn.execute("SELECT datname FROM pg_database").fetchall()}
        assert "fresh_one" not in names and "was_empty" in names
        conn.execute("DROP DATABASE was_empty WITH (FORCE)")

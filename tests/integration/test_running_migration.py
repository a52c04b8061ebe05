"""A migration still running on the server (its client killed, the backend alive and holding Prisma's
advisory lock 72707369): status says "running", not "failed", and resolve refuses (trial7 finding 3)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.conftest import Project, assert_clean_error
from tests.integration.test_migrate import make_migrations

pytestmark = pytest.mark.integration


# The migration's script waits on an advisory lock the test holds (its gate): it runs on the server, holding
# Prisma's lock, for as long as the test needs, and finishes the moment the test lets it go (it slept
# 20 s before, most of them idle). The gate's key is its own: neither Prisma's 72707369 nor pgrunbook's.
# The script lifts the engine's lock_timeout (10 s), which would otherwise end its wait at the gate.
GATE = 4242424242
SLOW = f"ALTER TABLE item ADD COLUMN nick text;\nSET lock_timeout = 0;\nSELECT pg_advisory_xact_lock({GATE});\n"
RUNNING = (
    f"SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_advisory_xact_lock({GATE})%' AND pid <> pg_backend_pid()"
)


def _wait_for(url: str, query: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(query).fetchone():
                return
            time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {query}")


def test_running_migration_is_running_and_cannot_be_resolved(project: Project) -> None:
    make_migrations(project, {"01_init": "CREATE TABLE item (id int);"})
    assert project.cli("migrate", "deploy").returncode == 0
    make_migrations(project, {"02_slow": SLOW})
    project.write_config('[backup]\nstorage = "backups"\n[migrate]\nlock_wait_s = 1\n')
    gate = psycopg.connect(project.url, autocommit=True)
    gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
    try:
        _while_it_runs(project)
    finally:
        gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))  # the script goes on and commits
        gate.close()
    _after_it_finished(project)


def _while_it_runs(project: Project) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "migrate", "deploy"],
        cwd=project.root,
        env=project.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(project.url, RUNNING)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the backend runs on, holding the lock; its history row is started and unfinished
    status = project.cli("--json", "status")
    data = json.loads(status.stdout)
    assert data["failed"] == [] and [r["name"] for r in data["running"]] == ["02_slow"], status.stdout
    assert status.returncode == 1  # not up to date, and nothing to resolve yet
    assert data["running"][0]["pid"] > 0 and data["running"][0]["application_name"] == "pgrunbook migrate default"
    doctor = json.loads(project.cli("--json", "doctor").stdout)
    history = [c for c in doctor["checks"] if c["name"] == "prisma history"]
    assert [c["status"] for c in history] == ["warning"] and "02_slow is being applied right now" in history[0][
        "detail"
    ]
    text = project.cli("status")
    assert "running" in text.stdout and "02_slow" in text.stdout
    assert "resolve --" not in text.stdout + text.stderr and "being applied now by pid" in text.stdout
    t0 = time.monotonic()
    r = project.cli("migrate", "resolve", "--rolled-back", "02_slow")
    assert time.monotonic() - t0 < 15
    assert_clean_error(
        r, 2, "cannot resolve 02_slow while a migration is being applied", "pid ", f"pg_advisory_xact_lock({GATE})"
    )
    assert "pg_terminate_backend(" in r.stderr and "wait" in r.stderr
    applied = project.cli("migrate", "resolve", "--applied", "02_slow")
    assert_clean_error(applied, 2, "cannot resolve 02_slow while a migration is being applied")
    check = json.loads(project.cli("--json", "check").stdout)
    assert "unresolved failed" not in json.dumps(check)
    still = json.loads(project.cli("--json", "status").stdout)  # every check above saw it running
    assert [r["name"] for r in still["running"]] == ["02_slow"], still


def _after_it_finished(project: Project) -> None:
    # once it finished (and committed: the client was gone but its output was only buffered)
    _wait_for(project.url, f"SELECT 1 WHERE NOT EXISTS ({RUNNING})", timeout=60)
    after = json.loads(project.cli("--json", "status").stdout)
    assert after["running"] == [] and after["failed"] == ["02_slow"]  # its client never recorded the end
    # a re-trial's finding: "failed" plus a --rolled-back hint led to a history the schema contradicts
    assert after["outcome_unknown"] == ["02_slow"]
    with psycopg.connect(project.url) as conn:  # the orphaned backend committed the script
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'item' AND column_name = 'nick'"
        ).fetchone() == (1,)
    text = project.cli("status")
    hint = next(line for line in text.stdout.splitlines() if line.startswith("hint:"))
    assert "02_slow has no logs" in hint and "may be applied in full, in part or not at all" in hint
    assert "resolve --applied 02_slow if all of it is there" in hint
    deploy = project.cli("migrate", "deploy")
    assert deploy.returncode != 0 and "02_slow has no logs" in deploy.stderr

"""An in-place restore SIGKILLed at each of its steps: the run's recovery note (``runs``) and ``doctor``
name every leftover — what is live, the staging database with the exact statement that drops it (never
the live one), the maintenance state and the command that ends it — and following the note leaves
nothing behind (issue #20, the trial's "killed in-place restore" finding)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg import sql

from pgrunbook.postgres.database_swap import drop_statement
from tests import evidence
from tests.conftest import Project, fingerprint, wait_for

pytestmark = pytest.mark.reliability

STEPS = [
    "maintenance on",
    "pre-restore backup",
    "restore",
    "verify restore",
    "swap databases",
    "verify live database",
    "maintenance off",
]
DROP = re.compile(r'DROP DATABASE IF EXISTS "(?:[^"]|"")+" WITH \(FORCE\);')


def _running_step(project: Project) -> tuple[str, str] | None:
    path = project.root / ".pgrunbook" / "journal.db"
    if not path.exists():
        return None
    try:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT run_id, name FROM steps WHERE status = 'running' ORDER BY seq DESC").fetchone()
    except sqlite3.OperationalError:  # created, schema not written yet
        return None
    return (str(row[0]), str(row[1])) if row else None


def _databases(url: str, live: str) -> set[str]:
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (live,)).fetchall()
    return {str(r[0]) for r in rows}


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_of_an_in_place_restore_names_every_leftover(seeded: Project, step: str) -> None:
    live = seeded.url.rsplit("/", 1)[1]
    admin_url = seeded.url.rsplit("/", 1)[0] + "/postgres"
    log = seeded.root / "maintenance.log"
    off_hook = f"sleep 2; echo off >> {log}"
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.default]\n'
        # slow verifications, so that the kill lands inside "verify live database"
        'read_query = "SELECT count(*) FROM account, pg_sleep(1.5)"\n'
        "[environments.default.hooks]\n"
        f"maintenance_on = 'echo on >> {log}; sleep 2'\n"
        f"maintenance_off = '{off_hook}'\n"
    )
    if step == "restore":  # enough data for pg_restore to take a moment
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE bulk AS SELECT g, repeat(md5(g::text), 8) AS t FROM generate_series(1, 400000) g"
            )
    r = seeded.cli("--json", "backup", "create")
    assert r.returncode == 0, r.stderr
    backup = json.loads(r.stdout)["id"]
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute("INSERT INTO account (email) VALUES ('after-the-backup@example.com')")
    before = fingerprint(seeded.url)

    holder = psycopg.connect(admin_url if step == "swap databases" else seeded.url)
    if step == "swap databases":  # holds the live database's lock: the swap's rename waits for it
        holder.execute(sql.SQL("COMMENT ON DATABASE {} IS 'held'").format(sql.Identifier(live)))
    elif step == "pre-restore backup":  # holds pg_dump on a table lock
        holder.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "restore", backup, "--in-place", "--confirm", live],
        cwd=seeded.root,
        env=seeded.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (_running_step(seeded) or ("", ""))[1] == step, 120, f"step {step}")
        if step == "restore":  # the staging database exists and pg_restore writes into it
            wait_for(lambda: len(_databases(seeded.url, live)) > 1, 60, "the staging database")
        if step == "swap databases":
            with psycopg.connect(admin_url, autocommit=True) as watch:
                waiting = (
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER DATABASE%'"
                )
                wait_for(lambda: watch.execute(waiting).fetchone(), 60, "the swap waiting for its lock")
        else:
            time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        holder.rollback()
        holder.close()

    runs = json.loads(seeded.cli("--json", "runs").stdout)
    run = runs[0]
    assert run["kind"] == "restore" and run["outcome"] == "running" and run["steps"][-1]["name"] == step
    note = run["recovery"]
    try:
        # what is live
        assert f"live: {live}" in note or f"{live} holds backup {backup}" in note, note
        # every staging database that exists is named with its exact DROP statement; never the live one
        left = _databases(seeded.url, live) - {live}
        staging = {d for d in left if "_restore_" in d}
        for name in staging:
            assert drop_statement(name) in note, (name, note)
        assert drop_statement(live) not in note
        if step in ("restore", "verify restore", "swap databases"):
            assert staging, "the kill left the staging database (what the note must name)"
        # maintenance is (or may be) on at every step: the note says so, with the command that ends it
        assert "maintenance: " in note and off_hook in note, note
        # doctor names the same staging databases
        doctor = json.loads(seeded.cli("--json", "doctor").stdout)
        leftovers = next(c for c in doctor["checks"] if c["name"] == "leftovers")
        assert (leftovers["status"] == "warning") == bool(staging), leftovers
        for name in staging:
            assert drop_statement(name) in leftovers["hint"]
        interrupted = next(c for c in doctor["checks"] if c["name"] == "interrupted runs")
        assert interrupted["status"] == "warning" and run["run_id"] in interrupted["detail"]
        assert note in interrupted["detail"] and run["interrupted"] is True
        # the text of `runs` shows the note too (wrapped to the terminal: compared without whitespace)
        assert "".join(note.split()) in "".join(seeded.cli("runs").stdout.split())

        # following the note: its DROP statements, then maintenance off; nothing is left and the live
        # database holds either the data from before or the backup
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for stmt in DROP.findall(note):
                conn.execute(stmt.encode())
        assert {d for d in _databases(seeded.url, live) if "_restore_" in d} == set()
        now = fingerprint(seeded.url)
        if step in ("verify live database", "maintenance off"):
            assert now != before  # the backup is live (it lacks the row added after it)
        else:
            assert now == before
        doctor = json.loads(seeded.cli("--json", "doctor").stdout)
        assert next(c for c in doctor["checks"] if c["name"] == "leftovers")["status"] == "ok"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for name in _databases(seeded.url, live) - {live}:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    evidence.fault(f"SIGKILL of an in-place restore during '{step}' (recovery note names every leftover)")

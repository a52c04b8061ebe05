"""pgrunbook deploy: the runbook's production procedure with real hooks, the sample app, a real journal."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from pgrunbook import sampleapp
from tests import evidence
from tests.conftest import (
    PASSWORD,
    Project,
    assert_clean_error,
    drawn_in_order,
    fingerprint,
    on_terminal,
    seed,
    wait_for,
)
from tests.integration.test_migrate import make_migrations

PASSWORD_IN_URL = quote(PASSWORD, safe="")

pytestmark = pytest.mark.integration


@dataclass
class Stage:
    project: Project
    url_file: Path
    log: Path
    health: str

    def config(
        self,
        *,
        extra_env: str = "",
        slow: bool = False,
        read_query: str = "SELECT count(*) FROM account",
        staging: bool = False,
        hooks: dict[str, str | None] | None = None,
    ) -> None:
        """``hooks``: replace a hook's command, or drop it with None."""
        pause = "sleep 1.5; " if slow else ""
        commands: dict[str, str | None] = {
            "maintenance_on": f"{pause}echo on >> {self.log}",
            "maintenance_off": f"{pause}echo off >> {self.log}",
            "point_app": f'printf %s "$PGRUNBOOK_DATABASE_URL" > {self.url_file}; echo point >> {self.log}',
            "app_rollback": f"echo app_rollback >> {self.log}",
            **(hooks or {}),
        }
        text = (
            '[backup]\nstorage = "backups"\n'
            "[environments.production]\n"
            'database_url_env = "DATABASE_URL"\napp_url_env = "DATABASE_URL"\n'  # the app runs as the superuser
            f'health_url = "{self.health}"\nhealth_deadline_s = 3\nhealth_interval_s = 0.2\n'
            f'read_query = "{read_query}"\n{extra_env}\n'
            "[environments.production.hooks]\n"
            + "".join(f"{name} = '{cmd}'\n" for name, cmd in commands.items() if cmd is not None)
        )
        if staging:
            text += '[environments.staging]\ndatabase_url_env = "STAGING_URL"\n'
        self.project.write_config(text)

    def hooks(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def deploy(self, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        r = self.project.cli("--json", "deploy", "--env", "production", *args)
        return r, (json.loads(r.stdout) if r.stdout.strip() else {})


@pytest.fixture
def stage(seeded: Project) -> Iterator[Stage]:
    url_file = seeded.root / "app.url"
    url_file.write_text(seeded.url)
    app, health = sampleapp.start(url_file, "SELECT count(*) FROM account")
    make_migrations(seeded, {"01_baseline": "CREATE TABLE IF NOT EXISTS note (id int);"})
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS note (id int)")
    s = Stage(seeded, url_file, seeded.root / "hooks.log", health)
    s.config()
    assert seeded.cli("migrate", "resolve", "--applied", "01_baseline", "--env", "production").returncode == 0
    yield s
    app.terminate()
    app.wait()


def test_good_deploy_follows_the_runbook(stage: Stage) -> None:
    make_migrations(stage.project, {"02_add_col": "ALTER TABLE note ADD COLUMN body text;"})
    before = fingerprint(stage.project.url)
    r, out = stage.deploy()
    assert r.returncode == 0, r.stderr
    assert out["outcome"] == "succeeded" and out["applied"] == ["02_add_col"]
    assert [s["name"] for s in out["steps"]] == [
        "preflight",
        "maintenance on",
        "pre-deploy backup",
        "migrate",
        "verify",
        "maintenance off",
    ]
    assert all(s["status"] == "succeeded" and s["started_at"] and s["duration_s"] is not None for s in out["steps"])
    assert stage.hooks() == ["on", "off"]
    window = out["maintenance_window_s"]
    steps = {s["name"]: s["duration_s"] for s in out["steps"]}
    assert window >= sum(steps[n] for n in ("maintenance on", "pre-deploy backup", "migrate", "verify")) * 0.9
    # the pre-deploy backup was verified before the migration and holds the state before it
    backups = json.loads(stage.project.cli("--json", "backup", "list", "--env", "production").stdout)
    pre = next(b for b in backups if b["id"] == out["backup_id"])
    assert pre["label"] == "pre-deploy" and pre["verified"] is True
    assert pre["migration_head"] == {"name": "01_baseline", "count": 1}
    assert stage.project.cli("restore", pre["id"], "--into", "check_pre", "--env", "production").returncode == 0
    assert fingerprint(stage.project.url.rsplit("/", 1)[0] + "/check_pre") == before
    runs = json.loads(stage.project.cli("--json", "runs").stdout)
    dep = next(r for r in runs if r["run_id"] == out["run_id"])
    assert dep["kind"] == "deploy" and dep["outcome"] == "succeeded" and len(dep["steps"]) == 6


def test_nothing_pending_exits_at_once_without_maintenance(stage: Stage) -> None:
    r, out = stage.deploy()
    assert r.returncode == 0 and out["outcome"] == "succeeded"
    assert [s["name"] for s in out["steps"]] == ["preflight"] and stage.hooks() == []


@pytest.mark.parametrize("auto", [True, False])
def test_failing_migration_is_rolled_back_to_the_pre_deploy_state(stage: Stage, auto: bool) -> None:
    make_migrations(stage.project, {"02_bad": "ALTER TABLE note ADD COLUMN x int;\nSELECT 1/0;"})
    before = fingerprint(stage.project.url)
    r, out = stage.deploy(*(["--auto-rollback"] if auto else []))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: deploy")
    if auto:
        assert out["outcome"] == "rolled_back"
        new_url = stage.url_file.read_text()
        assert new_url.rsplit("/", 1)[1] == out["database"]
        assert fingerprint(new_url) == before
        assert stage.hooks() == ["on", "point", "app_rollback", "off"]
        evidence.fault("failing migration during deploy, rolled back")
        assert out["replaced_database"] == stage.project.url.rsplit("/", 1)[1]
        # trial7 finding 9: pgrunbook's own DATABASE_URL must follow; said with the password masked
        server = stage.project.url.rsplit("/", 1)[0].replace(PASSWORD_IN_URL, "***")
        assert f"set DATABASE_URL={server}/{out['database']} for pgrunbook too" in out["next_step"]
        assert f"set DATABASE_URL={server}/{out['database']}" in r.stderr  # the hint
        assert "has none to resolve" in r.stderr and "resolve --rolled-back" not in r.stderr
        runs = json.loads(stage.project.cli("--json", "runs").stdout)
        assert f"set DATABASE_URL={server}/{out['database']}" in runs[0]["detail"]
        text = stage.project.cli("runs").stdout
        for secret in (PASSWORD, PASSWORD_IN_URL):
            assert secret not in r.stdout + r.stderr + json.dumps(runs) + text
    else:
        assert out["outcome"] == "failed"
        cmd = f"pgrunbook rollback --with-db --backup {out['backup_id']} --env production"
        assert out["rollback_commands"] == [cmd] and cmd in r.stderr
        assert stage.hooks() == ["on", "off"]


def test_a_deploy_on_a_terminal_shows_each_step_live_with_the_backup_and_restore_bars(stage: Stage) -> None:
    """The maintenance window on a terminal: each step as it starts and ends (the failed migration, the
    automatic rollback's restore), with the pre-deploy backup's bar and the restore's rows between."""
    make_migrations(stage.project, {"02_bad": "ALTER TABLE note ADD COLUMN x int;\nSELECT 1/0;"})
    rc, text = on_terminal(stage.project, "deploy", "--env", "production", "--auto-rollback")
    assert rc == 2, text
    lines, _ = drawn_in_order(
        text,
        "…  maintenance on",
        "ok  maintenance on",
        "…  pre-deploy backup",
        "ok  pre-deploy backup",
        "…  migrate",
        "FAIL  migrate",
        "…  restore",
        "ok  restore",
        "ok  app rollback",
        "ok  maintenance off",
    )
    assert any(ln.startswith("dump") or ": dump" in ln for ln in lines), "no bar for the pre-deploy backup"
    assert any(" rows" in ln for ln in lines), "no bar of rows during the rollback's restore"
    assert sum(ln.startswith("FAIL  migrate") for ln in lines) == 1  # not printed again at the end
    assert stage.hooks() == ["on", "point", "app_rollback", "off"]


def test_migration_that_breaks_health_is_rolled_back_and_the_broken_database_kept(stage: Stage) -> None:
    make_migrations(stage.project, {"02_breaks_app": 'ALTER TABLE account RENAME TO "Account";'})
    before = fingerprint(stage.project.url)
    r, out = stage.deploy("--auto-rollback", "--allow-lint", "renaming-table")
    assert r.returncode == 2, r.stderr
    assert out["outcome"] == "rolled_back" and out["applied"] == ["02_breaks_app"]
    assert "health check failed" in out["error"]
    assert fingerprint(stage.url_file.read_text()) == before
    assert "app_rollback" in stage.hooks() and stage.hooks()[-1] == "off"
    evidence.fault("migration that breaks the app's health")
    with psycopg.connect(stage.project.url) as conn:  # the broken database, kept for forensics
        assert conn.execute("SELECT to_regclass('\"Account\"') IS NOT NULL").fetchone() == (True,)


def test_auto_rollback_without_point_app_is_refused_before_anything(stage: Stage) -> None:
    """trial7 finding 4: refused in preflight, naming the hook, before maintenance or the migration."""
    make_migrations(stage.project, {"02_bad": "ALTER TABLE note ADD COLUMN x int;\nSELECT 1/0;"})
    before = fingerprint(stage.project.url)
    stage.config(hooks={"point_app": None, "app_rollback": None})
    r, _ = stage.deploy("--auto-rollback")
    assert_clean_error(r, 2, "--auto-rollback needs the point_app hook", "'production' has none")
    assert "point_app =" in r.stderr and "[environments.production.hooks]" in r.stderr
    assert stage.hooks() == [] and fingerprint(stage.project.url) == before
    # without --auto-rollback the recovery line does not point at `pgrunbook rollback`, which would refuse
    r, out = stage.deploy()
    assert r.returncode == 2 and out["outcome"] == "failed"
    assert out["rollback_commands"] == [
        f"pgrunbook restore {out['backup_id']} --into <new database> --env production, then point the app at it "
        "by hand (environment 'production' has no app_rollback / point_app hook for pgrunbook rollback --with-db)"
    ]
    assert "pgrunbook rollback" not in r.stderr.replace("for pgrunbook rollback --with-db", "")


def test_auto_rollback_whose_point_app_fails_names_the_restored_database(stage: Stage) -> None:
    make_migrations(stage.project, {"02_bad": "ALTER TABLE note ADD COLUMN x int;\nSELECT 1/0;"})
    before = fingerprint(stage.project.url)
    stage.config(hooks={"point_app": "exit 3"})
    r, out = stage.deploy("--auto-rollback")
    assert r.returncode == 2 and out["outcome"] == "failed"
    restored = out["database"]
    assert restored and restored.startswith("t_") and "_rollback_" in restored
    assert f"{restored} holds the pre-deploy backup {out['backup_id']}, restored and verified" in r.stderr
    assert out["rollback_commands"] == [
        f"point the app at {restored} by hand (or fix the point_app hook and run it), then pgrunbook health"
    ]
    assert fingerprint(stage.project.url.rsplit("/", 1)[0] + "/" + restored) == before


def test_preflight_refusals(stage: Stage, cluster) -> None:
    make_migrations(stage.project, {"02_drop": "ALTER TABLE account DROP COLUMN profile;"})
    r, _ = stage.deploy()
    assert_clean_error(r, 2, "lint error", "ban-drop-column")
    assert "--allow-lint ban-drop-column" in r.stderr and stage.hooks() == []
    now = time.gmtime()
    far = (now.tm_hour + 12) % 24
    stage.config(extra_env=f'quiet_window = "Mon-Sun {far:02d}:00-{(far + 1) % 24:02d}:00 UTC"')
    r, _ = stage.deploy("--allow-lint", "ban-drop-column")
    assert_clean_error(r, 2, "outside the quiet window", "it next opens", f" {far:02d}:00 UTC, in ")
    # golden rule 3: staging must have it first
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS staging_db")
        conn.execute("CREATE DATABASE staging_db")
    staging_url = cluster.url("staging_db")
    seed(staging_url)
    stage.project.environ["STAGING_URL"] = staging_url
    stage.config(staging=True)
    r, _ = stage.deploy("--allow-lint", "ban-drop-column")
    assert_clean_error(r, 2, "02_drop has not been applied to staging")
    r, out = stage.deploy("--allow-lint", "ban-drop-column", "--skip-staging-check")
    assert r.returncode == 0, r.stderr
    assert any("ban-drop-column" in w for w in out["warnings"])


def test_two_concurrent_deploys_exactly_one_runs(stage: Stage) -> None:
    make_migrations(stage.project, {"02": "ALTER TABLE note ADD COLUMN y int;"})
    stage.config(slow=True)
    first = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "deploy", "--env", "production"],
        cwd=stage.project.root,
        env=stage.project.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_step(stage, "maintenance on")
    r, _ = stage.deploy()
    assert_clean_error(r, 2, "another deploy of environment 'production' is running: pid", "since")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert stage.hooks() == ["on", "off"]


def _journal(stage: Stage) -> sqlite3.Connection:
    return sqlite3.connect(stage.project.root / ".pgrunbook" / "journal.db")


def _wait_step(stage: Stage, name: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (stage.project.root / ".pgrunbook" / "journal.db").exists():
            try:
                with _journal(stage) as db:
                    row = db.execute(
                        "SELECT run_id FROM steps WHERE name = ? AND status = 'running'", (name,)
                    ).fetchone()
            except sqlite3.OperationalError:  # created, schema not written yet
                row = None
            if row:
                return str(row[0])
        time.sleep(0.02)
    raise AssertionError(f"step {name} never ran")


@pytest.mark.parametrize("step", ["maintenance on", "pre-deploy backup", "migrate", "verify", "maintenance off"])
def test_sigkill_at_each_step_then_resume(stage: Stage, step: str) -> None:
    make_migrations(stage.project, {"02_slow": "ALTER TABLE note ADD COLUMN z int;\nSELECT pg_sleep(1.5);"})
    before = fingerprint(stage.project.url)
    stage.config(slow=True, read_query="SELECT count(*) FROM account, pg_sleep(0.7)")
    blocker = None
    if step == "pre-deploy backup":  # hold pg_dump on a lock so the kill lands inside the step
        blocker = psycopg.connect(stage.project.url, autocommit=True)
        blocker.execute("BEGIN; LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "deploy", "--env", "production"],
        cwd=stage.project.root,
        env=stage.project.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = _wait_step(stage, step)
        if blocker is not None:
            time.sleep(0.3)
        if step == "migrate":  # kill while the script runs: its history row is started, not finished
            with psycopg.connect(stage.project.url, autocommit=True) as conn:
                started = "SELECT 1 FROM _prisma_migrations WHERE migration_name = '02_slow'"
                wait_for(lambda: conn.execute(started).fetchone(), what="02_slow's history row")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
    runs = json.loads(stage.project.cli("--json", "runs").stdout)
    assert runs[0]["run_id"] == run_id and runs[0]["outcome"] == "running"
    assert runs[0]["steps"][-1]["name"] == step and runs[0]["steps"][-1]["status"] == "running"
    text = stage.project.cli("runs")
    assert run_id in text.stdout and "running" in text.stdout

    stage.config(read_query="SELECT count(*) FROM account")
    r = stage.project.cli("--json", "deploy", "--env", "production", "--resume", run_id)
    if step == "migrate":
        # killed mid-script: its history row never finished, as under Prisma. Resume stops with the
        # decision tree's command; --rollback restores the pre-deploy backup.
        assert r.returncode == 2
        out = json.loads(r.stdout)
        assert out["rollback_commands"][0].startswith("pgrunbook rollback --with-db --backup")
        r = stage.project.cli("--json", "deploy", "--env", "production", "--resume", run_id, "--rollback")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["outcome"] == "rolled_back"
        assert fingerprint(stage.url_file.read_text()) == before
    else:
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["outcome"] == "succeeded"
        status = json.loads(stage.project.cli("--json", "status", "--env", "production").stdout)
        assert status["pending"] == [] and status["failed"] == []
        backups = json.loads(stage.project.cli("--json", "backup", "list", "--env", "production").stdout)
        assert any(b["label"] == "pre-deploy" and b["verified"] for b in backups)
    assert stage.hooks()[-1] == "off"  # maintenance ends off
    final = json.loads(stage.project.cli("--json", "runs").stdout)[0]
    assert final["run_id"] == run_id and final["outcome"] in ("succeeded", "rolled_back")
    evidence.fault(f"SIGKILL of deploy during '{step}'")


@pytest.mark.reliability
def test_postgresql_restarted_mid_migration(stage: Stage, cluster) -> None:
    """The server crashes while a migration script runs: deploy stops with one clear error and the
    decision tree's command; that command brings back the pre-deploy data exactly."""
    make_migrations(stage.project, {"02_slow": "ALTER TABLE note ADD COLUMN z int;\nSELECT pg_sleep(3);"})
    before = fingerprint(stage.project.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "--json", "deploy", "--env", "production"],
        cwd=stage.project.root,
        env=stage.project.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        running = "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()"
        wait_for(lambda: conn.execute(running).fetchone(), 60, "the migration script running")
    cluster.restart()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in out + err and "Pw-s3cr3t" not in out + err
    assert out.strip(), err
    report = json.loads(out)
    assert report["outcome"] == "failed"
    failed = [s for s in report["steps"] if s["status"] == "failed"]
    assert failed and failed[0]["name"] == "migrate", report["steps"]
    command = report["rollback_commands"][0]
    assert command.startswith("pgrunbook rollback --with-db --backup")
    r = stage.project.cli("--json", *command.split()[1:], "--env", "production")
    assert r.returncode == 0, r.stderr
    assert fingerprint(stage.url_file.read_text()) == before
    evidence.fault("PostgreSQL restarted (immediate stop) mid-migration during deploy")


def test_sigkill_during_the_automatic_rollback_then_resume(stage: Stage) -> None:
    """Killed while the automatic rollback restores: --resume continues with the rollback (the migration
    is not run again into Prisma's P3009), reports the migration's own failure, and replaces the killed
    restore's unfinished database instead of leaving it behind (trial 7 #21)."""
    make_migrations(stage.project, {"02_bad": "ALTER TABLE note ADD COLUMN w int;\nSELECT 1/0;"})
    before = fingerprint(stage.project.url)
    live = stage.project.url.rsplit("/", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "deploy", "--env", "production", "--auto-rollback"],
        cwd=stage.project.root,
        env=stage.project.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rollback_db = "SELECT datname FROM pg_database WHERE starts_with(datname, %s)"
    try:
        run_id = _wait_step(stage, "restore")
        with psycopg.connect(stage.project.url, autocommit=True) as conn:  # killed once it is created
            wait_for(lambda: conn.execute(rollback_db, (f"{live}_rollback_",)).fetchone(), what="rollback db")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        killed = [r[0] for r in conn.execute(rollback_db, (f"{live}_rollback_",)).fetchall()]
    assert len(killed) == 1
    r = stage.project.cli("--json", "deploy", "--env", "production", "--resume", run_id, "--auto-rollback")
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["outcome"] == "rolled_back", r.stderr
    assert "22012" in out["error"] and "division by zero" in out["error"] and "P3009" not in r.stderr + r.stdout
    resumed = [s["name"] for s in out["steps"]]
    assert "migrate" not in resumed and "restore" in resumed, resumed
    assert fingerprint(stage.url_file.read_text()) == before
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        rollback_dbs = [r[0] for r in conn.execute(rollback_db, (f"{live}_rollback_",)).fetchall()]
    assert rollback_dbs == killed == [out["database"]]  # the killed one replaced, not left beside it

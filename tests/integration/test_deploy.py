"""pgrunbook deploy: the runbook's production procedure with real hooks, the sample app, a real journal."""

from __future__ import annotations

import json
import os
import re
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


def test_a_deploy_without_maintenance_hooks_says_the_app_was_not_put_into_maintenance(stage: Stage) -> None:
    """newuser14 U1: with no maintenance hooks the steps read "ok maintenance on", which at 2 a.m. reads
    as "the app was stopped"; each step now says there was no hook."""
    stage.config(hooks={"maintenance_on": None, "maintenance_off": None})
    make_migrations(stage.project, {"02_add_col": "ALTER TABLE note ADD COLUMN body text;"})
    r, out = stage.deploy()
    assert r.returncode == 0, r.stderr
    steps = {s["name"]: s for s in out["steps"]}
    assert steps["maintenance on"]["detail"] == "no maintenance_on hook: the app was not put into maintenance"
    assert steps["maintenance off"]["detail"] == "no maintenance_off hook: nothing to turn off"


def test_a_deploy_refused_with_p3005_before_any_migration_ran_rolls_nothing_back(stage: Stage) -> None:
    """breaker14: `deploy --auto-rollback` on tables without a migration history stopped with P3005
    (nothing applied), then restored the pre-deploy backup into a new database and pointed the app there,
    its hint speaking of a failed migration's history row there was none of. Nothing changed: the deploy
    ends maintenance, and the app stays where it was."""
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        conn.execute("DROP TABLE _prisma_migrations")
    make_migrations(stage.project, {"02_add_col": "ALTER TABLE note ADD COLUMN body text;"})
    r, out = stage.deploy("--auto-rollback")
    assert r.returncode == 2 and "P3005" in out["error"], r.stderr
    names = [s["name"] for s in out["steps"]]
    assert "restore" not in names and "point app" not in names and names[-1] == "maintenance off", names
    assert out["database"] is None and "history row" not in r.stderr + json.dumps(out)
    live = stage.project.url.rsplit("/", 1)[1]
    with psycopg.connect(stage.project.url) as conn:
        rollbacks = conn.execute(ROLLBACK_DBS, (f"{live}_rollback_",)).fetchall()
    assert rollbacks == []


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


def test_a_failed_migrations_detail_reaches_the_deploys_error_its_json_and_runs(stage: Stage) -> None:
    """trial11 F6: PostgreSQL's DETAIL (which key is duplicated) was in the history row only, which after
    an automatic rollback sits in the abandoned database; not in the error line, --json or runs."""
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE note ADD COLUMN browser text; INSERT INTO note VALUES (1, 'firefox'), (2, 'firefox')")
    make_migrations(stage.project, {"02_bad": 'CREATE UNIQUE INDEX "note_browser_key" ON "note"("browser");'})
    r, out = stage.deploy("--auto-rollback", "--allow-lint", "require-concurrent-index-creation")
    detail = "detail: Key (browser)=(firefox) is duplicated."
    assert r.returncode == 2 and out["outcome"] == "rolled_back", r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: deploy rolled back: migration 02_bad failed") and detail in first, r.stderr
    assert detail in out["error"] and any(detail in (s.get("detail") or "") for s in out["steps"]), out
    runs = json.loads(stage.project.cli("--json", "runs").stdout)
    assert detail in json.dumps(runs[0])
    assert detail in stage.project.cli("runs").stdout


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


def test_a_quiet_window_without_days_holds_every_day(stage: Stage) -> None:
    """trial #3: `quiet_window = "HH:00-HH:00"` (no days) was refused for its shape by every command. It
    is every day: a deploy outside it is refused saying when it next opens (today or tomorrow, whatever
    the weekday), inside it the deploy runs."""
    make_migrations(stage.project, {"02_add": "ALTER TABLE note ADD COLUMN body text;"})
    now = time.gmtime()
    far = (now.tm_hour + 12) % 24
    stage.config(extra_env=f'quiet_window = "{far:02d}:00-{(far + 1) % 24:02d}:00"')
    r, _ = stage.deploy()
    assert_clean_error(r, 2, "outside the quiet window", "it next opens", f" {far:02d}:00 UTC, in ")
    assert re.search(r", in 1[12]h \d+m;", r.stderr), r.stderr  # today or tomorrow, never days away
    assert stage.hooks() == [] and "body" not in _columns(stage, "note")
    # a window around now (an hour either side, so a run across the hour stays inside it)
    stage.config(extra_env=f'quiet_window = "{(now.tm_hour + 23) % 24:02d}:00-{(now.tm_hour + 2) % 24:02d}:00 UTC"')
    r, out = stage.deploy()
    assert r.returncode == 0, r.stderr
    assert out["applied"] == ["02_add"] and "body" in _columns(stage, "note")


def _columns(stage: Stage, table: str) -> list[str]:
    with psycopg.connect(stage.project.url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
    return [r[0] for r in rows]


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


def _interrupted_line(stage: Stage) -> str:
    """doctor's interrupted-runs line (its detail carries each run's recovery note)."""
    out = json.loads(stage.project.cli("--json", "doctor", "--env", "production").stdout)
    return next(c["detail"] for c in out["checks"] if c["name"] == "interrupted runs")


def test_sigkill_during_the_pre_deploy_backup_leaves_a_note_saying_maintenance_is_on(stage: Stage) -> None:
    """trial11 F14: a deploy killed after maintenance on, in its pre-deploy backup, left no recovery note:
    nothing said the app was still in maintenance. The note now says so, with the maintenance_off hook's
    command, that nothing was migrated, and the command that continues; runs and doctor show it."""
    make_migrations(stage.project, {"02_add": "ALTER TABLE note ADD COLUMN z int;"})
    blocker = psycopg.connect(stage.project.url, autocommit=True)
    blocker.execute("BEGIN; LOCK TABLE account IN ACCESS EXCLUSIVE MODE")  # pg_dump waits: killed in the step
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "deploy", "--env", "production", "--auto-rollback"],
        cwd=stage.project.root,
        env=stage.project.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = _wait_step(stage, "pre-deploy backup")
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert stage.hooks() == ["on"]  # the app is in maintenance and nothing will end it
    run = json.loads(stage.project.cli("--json", "runs", "--limit", "1").stdout)[0]
    note = run["recovery"]
    assert run["run_id"] == run_id and run["interrupted"], run
    assert note.startswith("Maintenance is on since "), note
    assert f"end it with the maintenance_off hook (echo off >> {stage.log}) once the app is safe" in note, note
    assert "Nothing migrated yet: the pre-deploy backup was being taken" in note, note
    assert f"pgrunbook deploy --resume {run_id}" in note, note
    assert note in _interrupted_line(stage)
    assert "recovery: Maintenance is on since" in stage.project.cli("runs", "--limit", "1").stdout
    r = stage.project.cli("--json", "deploy", "--env", "production", "--resume", run_id)
    assert r.returncode == 0, r.stderr
    assert stage.hooks() == ["on", "off"]
    evidence.fault("SIGKILL of deploy in its pre-deploy backup (the note says maintenance is on)")


def test_sigkill_during_the_automatic_rollback_resume_finishes_the_rollback_before_maintenance_off(
    stage: Stage,
) -> None:
    """break11 #12: killed while the automatic rollback restored, the run's note said only "if the schema
    is wrong: …" (not that the app is in maintenance, nor the staging database left), and a plain
    `deploy --resume ID` skipped the unfinished restore and ended maintenance: the app went back into
    traffic on the database whose migration failed. Now the note names all of it, and the resume
    finishes the rollback the run was started with (--auto-rollback, from the journal) before
    maintenance off."""
    run_id, before, live, killed = _killed_during_the_rollback_restore(stage)
    assert stage.hooks() == ["on"]
    note = json.loads(stage.project.cli("--json", "runs", "--limit", "1").stdout)[0]["recovery"]
    assert note.startswith("Maintenance is on since "), note
    assert f"(echo off >> {stage.log})" in note, note
    assert "division by zero" in note and f"the app is still on {live}, the database the migration failed" in note
    assert (
        f'Leftover: {killed[0]} may hold a partial restore (not in use): DROP DATABASE IF EXISTS "{killed[0]}"' in note
    )
    assert f"To finish the rollback: pgrunbook deploy --resume {run_id}." in note, note
    assert note in _interrupted_line(stage)

    r = stage.project.cli("--json", "deploy", "--env", "production", "--resume", run_id)  # no --auto-rollback
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["outcome"] == "rolled_back", r.stderr
    resumed = [s["name"] for s in out["steps"]]
    assert "migrate" not in resumed and "restore" in resumed, resumed
    assert resumed.index("point app") < resumed.index("maintenance off"), resumed
    assert stage.hooks() == ["on", "point", "app_rollback", "off"]  # maintenance off only after the rollback
    assert fingerprint(stage.url_file.read_text()) == before
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        rollback_dbs = [r[0] for r in conn.execute(ROLLBACK_DBS, (f"{live}_rollback_",)).fetchall()]
    assert rollback_dbs == killed == [out["database"]]  # the dead leftover replaced, not left beside it
    evidence.fault("SIGKILL of deploy in its automatic rollback's restore, then a plain --resume")


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


def _killed_during_the_rollback_restore(stage: Stage) -> tuple[str, object, str, list[str]]:
    """A deploy --auto-rollback whose migration fails, SIGKILLed once the rollback's restore has created
    its database: (run id, the fingerprint before, the live database's name, the rollback databases)."""
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
    try:
        run_id = _wait_step(stage, "restore")
        with psycopg.connect(stage.project.url, autocommit=True) as conn:  # killed once it is created
            wait_for(lambda: conn.execute(ROLLBACK_DBS, (f"{live}_rollback_",)).fetchone(), what="rollback db")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        killed = [r[0] for r in conn.execute(ROLLBACK_DBS, (f"{live}_rollback_",)).fetchall()]
    assert len(killed) == 1
    return run_id, before, live, killed


def test_sigkill_during_the_automatic_rollback_then_resume(stage: Stage) -> None:
    """Killed while the automatic rollback restores: --resume continues with the rollback (the migration
    is not run again into Prisma's P3009), reports the migration's own failure, and replaces the killed
    restore's unfinished database instead of leaving it behind (trial 7 #21)."""
    run_id, before, live, killed = _killed_during_the_rollback_restore(stage)
    r = stage.project.cli("--json", "deploy", "--env", "production", "--resume", run_id, "--auto-rollback")
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["outcome"] == "rolled_back", r.stderr
    assert "22012" in out["error"] and "division by zero" in out["error"] and "P3009" not in r.stderr + r.stdout
    resumed = [s["name"] for s in out["steps"]]
    assert "migrate" not in resumed and "restore" in resumed, resumed
    assert fingerprint(stage.url_file.read_text()) == before
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        rollback_dbs = [r[0] for r in conn.execute(ROLLBACK_DBS, (f"{live}_rollback_",)).fetchall()]
    assert rollback_dbs == killed == [out["database"]]  # the killed one replaced, not left beside it


def test_auto_rollback_checks_health_on_the_restored_copy_and_says_what_is_true_after(stage: Stage) -> None:
    """trial11 F7 and F3. F7: a point_app hook that fails silently (exits 0 without pointing the app)
    left the app on the broken database, yet the run said rolled_back: no health step ran after the
    rollback. Now a health step runs before maintenance off; its failure makes the run failed, with the
    next step named. F3: a run that did roll back no longer keeps "if the schema is wrong: pgrunbook
    rollback --with-db …" as its recovery (following it would restore the backup a second time)."""
    make_migrations(stage.project, {"02_breaks_app": 'ALTER TABLE account RENAME TO "Account";'})
    stage.config(hooks={"point_app": f"echo point >> {stage.log}"})  # says nothing, points nothing
    r, out = stage.deploy("--auto-rollback", "--allow-lint", "renaming-table")
    assert r.returncode == 2, r.stderr
    assert out["outcome"] == "failed", out
    names = [s["name"] for s in out["steps"]]
    assert names[-3:] == ["app rollback", "health", "maintenance off"], names
    assert out["steps"][-2]["status"] == "failed"
    assert "the automatic rollback failed too: health check failed after the automatic rollback" in out["error"]
    restored = out["database"]
    assert out["rollback_commands"] == [
        f"the app is on {restored} (pre-deploy backup {out['backup_id']}, restored and verified) but not healthy: "
        "pgrunbook health --env production shows why; fix the app, its point_app or app_rollback hook, and "
        "check pgrunbook health again"
    ]
    assert stage.hooks() == ["on", "point", "app_rollback", "off"]
    runs = json.loads(stage.project.cli("--json", "runs", "--limit", "1").stdout)
    assert runs[0]["outcome"] == "failed" and "pgrunbook rollback --with-db" not in (runs[0]["recovery"] or "")

    # the same deploy with a point_app that points: rolled back, healthy, and the note says so
    with psycopg.connect(stage.project.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{restored}" WITH (FORCE)')
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Account" RENAME TO account')
        conn.execute("DELETE FROM _prisma_migrations WHERE migration_name = '02_breaks_app'")
    stage.log.unlink()
    stage.config()
    r, out = stage.deploy("--auto-rollback", "--allow-lint", "renaming-table")
    assert r.returncode == 2 and out["outcome"] == "rolled_back", r.stderr
    assert [s["name"] for s in out["steps"]][-3:] == ["app rollback", "health", "maintenance off"]
    assert stage.hooks() == ["on", "point", "app_rollback", "off"]
    recovery = json.loads(stage.project.cli("--json", "runs", "--limit", "1").stdout)[0]["recovery"]
    assert recovery.startswith(f"none needed: rolled back to {out['database']} (pre-deploy backup "), recovery
    assert "pgrunbook rollback" not in recovery, recovery


def _killed_while_pointing(stage: Stage) -> tuple[str, str]:
    """A deploy --auto-rollback whose migration fails, killed inside point_app after the hook pointed the
    app at the verified rollback copy: (the run's id, the copy's name)."""
    make_migrations(stage.project, {"02_bad": "ALTER TABLE note ADD COLUMN w int;\nSELECT 1/0;"})
    gate = stage.project.root / "resumed"
    stage.config(
        hooks={
            "point_app": f'printf %s "$PGRUNBOOK_DATABASE_URL" > {stage.url_file}; echo point >> {stage.log}; '
            f"while [ ! -e {gate} ]; do sleep 0.1; done"
        }
    )
    live = stage.project.url.rsplit("/", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "deploy", "--env", "production", "--auto-rollback"],
        cwd=stage.project.root,
        env=stage.project.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = _wait_step(stage, "point app")
        wait_for(lambda: "point" in stage.hooks(), what="point_app pointed the app")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gate.touch()  # the orphaned hook ends; the resumed one does not wait
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        [copy] = [r[0] for r in conn.execute(ROLLBACK_DBS, (f"{live}_rollback_",)).fetchall()]
    return run_id, copy


ROLLBACK_DBS = "SELECT datname FROM pg_database WHERE starts_with(datname, %s)"


def test_resume_after_the_rollback_restore_was_verified_points_the_app_at_it_without_restoring_again(
    stage: Stage,
) -> None:
    """Killed while pointing the app, after the automatic rollback's restore was verified: `--resume`
    restored the pre-deploy backup a second time into yet another database (the downtime twice) and
    pointed the app there, leaving what the app had already written into the first copy behind. Now
    the verified copy is used as it is ("reuse restore"), and what was written into it stays."""
    run_id, copy = _killed_while_pointing(stage)
    live = stage.project.url.rsplit("/", 1)[1]
    note = json.loads(stage.project.cli("--json", "runs", "--limit", "1").stdout)[0]["recovery"]
    assert f"pgrunbook deploy --resume {run_id} (it points the app at {copy} again, without restoring" in note
    with psycopg.connect(stage.url_file.read_text(), autocommit=True) as conn:  # the app writes into the copy
        conn.execute("INSERT INTO account (email) VALUES ('written-after-pointing')")
    r = stage.project.cli("--json", "deploy", "--env", "production", "--resume", run_id)
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["outcome"] == "rolled_back", r.stderr
    steps = {s["name"]: s for s in out["steps"]}
    assert "restore" not in steps and "create database" not in steps, list(steps)
    assert steps["reuse restore"]["detail"].startswith(f"{copy} holds pre-deploy backup {out['backup_id']}")
    assert out["database"] == copy
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        assert [r[0] for r in conn.execute(ROLLBACK_DBS, (f"{live}_rollback_",)).fetchall()] == [copy]
    with psycopg.connect(stage.url_file.read_text()) as conn:
        assert conn.execute("SELECT count(*) FROM account WHERE email = 'written-after-pointing'").fetchone() == (1,)


@pytest.mark.parametrize(
    "damage", ["DROP TABLE billing.invoice CASCADE", "DELETE FROM billing.invoice WHERE amount > 10"]
)
def test_resume_never_reuses_a_rollback_copy_that_lost_tables_or_rows_since(stage: Stage, damage: str) -> None:
    """breaker13 F8: the copy was reused on its comment alone, and a table dropped or rows deleted in it
    after the kill were pointed at as "restored and verified". Now such a copy is left as it is and the
    rollback restores the pre-deploy backup anew."""
    run_id, copy = _killed_while_pointing(stage)
    before_damage = fingerprint(stage.url_file.read_text())
    with psycopg.connect(stage.url_file.read_text(), autocommit=True) as conn:
        conn.execute(damage.encode())
    r = stage.project.cli("--json", "deploy", "--env", "production", "--resume", run_id)
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["outcome"] == "rolled_back", r.stderr
    assert "reuse restore" not in {s["name"] for s in out["steps"]} and out["database"] != copy
    # breaker13 N6: and says why, naming the copy it leaves as it is and the one it restores into
    said = next(s for s in out["steps"] if s["name"] == "copy not reused")["detail"]
    why = "fewer rows than the backup in billing.invoice" if damage.startswith("DELETE") else "does not exist"
    assert said.startswith(f"{copy}, restored from {out['backup_id']} and verified before the run was interrupted")
    assert why in said and f"restored anew into {out['database']}" in said, said
    assert said in out["warnings"]
    assert fingerprint(stage.url_file.read_text()) == before_damage  # the app is on an exact copy again
    with psycopg.connect(stage.project.url, autocommit=True) as conn:  # the damaged one is kept, not dropped
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (copy,)).fetchone() is not None

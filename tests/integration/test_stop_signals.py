"""trial7 #27: SIGTERM (systemd, Kubernetes, ``serve`` stopping a job) and SIGHUP are handled like
Ctrl-C: the client tools are stopped, the same cleanup as a failure runs (scratch database dropped,
half-written archive removed, maintenance turned off), one ``error:`` line, exit 128+signal. Real
signals to the real command line, against a real cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pgrunbook.postgres.cluster import LocalCluster
from tests import evidence
from tests.conftest import Project, wait_for
from tests.integration.test_migrate import make_migrations

pytestmark = pytest.mark.integration


def _start(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", *args],
        cwd=project.root,
        env=project.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    evidence.output_checked(err, traceback="Traceback" in err, secret=False)
    return proc.returncode, err


def _activity(cluster: LocalCluster, where: str) -> int:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {where}".encode()).fetchone()
    return int(row[0]) if row else 0


def _drill_databases(cluster: LocalCluster) -> list[str]:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pgrunbook_drill%'").fetchall()
    return [r[0] for r in rows]


def _terminated_behind_a_lock(seeded: Project, cluster: LocalCluster, *args: str) -> tuple[int, str]:
    """``pgrunbook *args`` started while another session holds a lock on its table, stopped by SIGTERM
    once its pg_dump waits on that lock (a stop that arrives mid-work, at a point the test controls)."""
    holder = psycopg.connect(seeded.url)
    holder.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
    try:
        proc = _start(seeded, *args)
        try:
            wait_for(lambda: _activity(cluster, "wait_event_type = 'Lock'"), 60, f"{args[0]} waiting on the table lock")
        except BaseException as exc:
            proc.kill()
            raise AssertionError(proc.communicate()) from exc
        return _stop(proc, signal.SIGTERM)
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stopped_drill_drops_its_scratch_database(
    seeded: Project, cluster: LocalCluster, sig: signal.Signals
) -> None:
    """The drill's read query sleeps on the scratch database; the signal arrives there."""
    assert seeded.cli("backup", "create").returncode == 0
    seeded.write_config('[backup]\nstorage = "backups"\n[environments.default]\nread_query = "SELECT pg_sleep(120)"\n')
    before = set(_drill_databases(cluster))
    proc = _start(seeded, "backup", "verify", "latest", "--drill")
    try:
        wait_for(
            lambda: _activity(cluster, "datname LIKE 'pgrunbook_drill%' AND query LIKE '%pg_sleep%'"),
            90,
            "the drill running its read query on the scratch database",
        )
    except BaseException:
        proc.kill()
        raise
    t0 = time.monotonic()
    code, err = _stop(proc, sig)
    assert code == 128 + sig, err
    assert f"error: stopped by {sig.name}; nothing half-done is listed or kept" in err, err
    assert "Traceback" not in err
    assert time.monotonic() - t0 < 30
    assert set(_drill_databases(cluster)) <= before, "the scratch database was left behind"
    assert not _activity(cluster, "query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()")


def test_a_terminated_backup_leaves_no_archive_and_no_pg_dump(seeded: Project, cluster: LocalCluster) -> None:
    """A table lock makes pg_dump wait; SIGTERM arrives while it waits."""
    code, err = _terminated_behind_a_lock(seeded, cluster, "backup", "create", "--label", "term")
    assert code == 143, err
    assert "error: stopped by SIGTERM" in err and "Traceback" not in err, err
    dbname = seeded.url.rsplit("/", 1)[1]
    wait_for(lambda: not _activity(cluster, f"datname = '{dbname}' AND pid <> pg_backend_pid()"), 15, "pg_dump gone")
    left = [p for p in Path(seeded.storage).rglob("*") if p.is_file()]
    assert not [p for p in left if ".tmp" in p.name], left
    listed = seeded.cli("backup", "list", "--json")
    assert json.loads(listed.stdout) == [], listed.stdout


def test_a_terminated_deploy_turns_maintenance_off_and_records_it(seeded: Project, cluster: LocalCluster) -> None:
    """trial7: deploy terminated during its pre-deploy backup left the app in maintenance."""
    log = seeded.root / "hooks.log"
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.default.hooks]\n'
        f"maintenance_on = 'echo on >> {log}'\nmaintenance_off = 'echo off >> {log}'\n"
    )
    make_migrations(seeded, {"01_new": "CREATE TABLE IF NOT EXISTS note (id int);"})
    code, err = _terminated_behind_a_lock(seeded, cluster, "deploy")
    assert code == 143, err
    assert "error: stopped by SIGTERM" in err, err
    assert log.read_text().split() == ["on", "off"]
    runs = json.loads(seeded.cli("runs", "--json").stdout)
    deploy = next(r for r in runs if r.get("kind") == "deploy")
    assert deploy["outcome"] == "failed" and "SIGTERM" in json.dumps(deploy), deploy


def test_the_next_drill_drops_a_killed_drills_scratch_database(seeded: Project, cluster: LocalCluster) -> None:
    """SIGKILL cannot be handled: the scratch database stays, marked as an unfinished restore by a pid.
    The next drill drops it (its pid is gone) and says so; a live drill's database is left alone."""
    assert seeded.cli("backup", "create").returncode == 0
    seeded.write_config('[backup]\nstorage = "backups"\n[environments.default]\nread_query = "SELECT pg_sleep(120)"\n')
    before = set(_drill_databases(cluster))
    proc = _start(seeded, "backup", "verify", "latest", "--drill")
    wait_for(
        lambda: _activity(cluster, "datname LIKE 'pgrunbook_drill%' AND query LIKE '%pg_sleep%'"),
        90,
        "the drill running its read query",
    )
    proc.kill()
    proc.communicate()
    left = set(_drill_databases(cluster)) - before
    assert len(left) == 1, left  # what SIGKILL leaves
    with psycopg.connect(cluster.url(), autocommit=True) as conn:  # the orphaned query ends with its client
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()"
        )
    seeded.write_config('[backup]\nstorage = "backups"\n')
    r = seeded.cli("--json", "backup", "verify", "latest", "--drill")
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    swept = checks["leftover scratch databases"]
    assert swept["ok"] and next(iter(left)) in swept["detail"] and "unfinished restore" in swept["detail"]
    assert not (set(_drill_databases(cluster)) - before)


def test_a_serve_job_over_its_timeout_is_stopped_with_sigterm_and_cleans_up(
    seeded: Project, cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve's job timeout killed the job outright (SIGKILL): a drill's scratch database stayed."""
    from pgrunbook.monitor.schedule import Job
    from pgrunbook.monitor.scheduler import subprocess_runner

    assert seeded.cli("backup", "create").returncode == 0
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[serve]\njob_timeout_s = 4\n'
        '[environments.default]\nread_query = "SELECT pg_sleep(120)"\n'
    )
    for k, v in seeded.environ.items():
        monkeypatch.setenv(k, v)
    before = set(_drill_databases(cluster))
    run = subprocess_runner(seeded.env().config, [])
    t0 = time.monotonic()
    result = run(Job("drill", "default", "@daily", ["backup", "verify", "latest", "--drill", "--env", "default"]))
    assert not result.ok and result.detail.startswith("timed out after 4 s"), result
    assert time.monotonic() - t0 < 40
    assert set(_drill_databases(cluster)) <= before, "the timed-out drill left its scratch database"

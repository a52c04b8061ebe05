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
    # where it was and what getting back takes, from the journal (not "nothing half-done is kept")
    line = _one_error(err)
    assert line.startswith("error: stopped by SIGTERM; deploy "), err
    assert line.endswith(
        "was stopped at step pre-deploy backup, before migrating: nothing was migrated; maintenance was turned off"
    ), err
    assert "hint: run the same deploy again (pgrunbook runs shows the run)" in err, err
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


def _comment(cluster: LocalCluster, dbname: str) -> str | None:
    """The database's comment (pgrunbook's marker), or None when the database does not exist."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
    return None if row is None else str(row[0])


def _one_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_restore_stopped_in_its_verification_drops_the_copy_and_says_so(
    seeded: Project, cluster: LocalCluster
) -> None:
    """trial8 #5: pg_restore has ended; the verification's read query runs on the new database when
    SIGTERM arrives. The copy is dropped, and the one error line says so, with the command to run again."""
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    seeded.write_config('[backup]\nstorage = "backups"\n[environments.default]\nread_query = "SELECT pg_sleep(120)"\n')
    proc = _start(seeded, "restore", bid, "--into", "stopped_verifying")
    wait_for(
        lambda: _activity(cluster, "datname = 'stopped_verifying' AND query LIKE '%pg_sleep(120)%'"),
        60,
        "the verification's read query on the restored database",
    )
    code, err = _stop(proc, signal.SIGTERM)
    assert code == 143, err
    line = _one_error(err)
    assert line.startswith(
        "error: stopped by SIGTERM; the restore into stopped_verifying broke off and stopped_verifying was dropped "
        "again; the backup is not at fault"
    ), err
    assert f"hint: run the same restore again: pgrunbook restore {bid} --into stopped_verifying" in err, err
    assert _comment(cluster, "stopped_verifying") is None  # dropped, as said
    seeded.write_config('[backup]\nstorage = "backups"\n')
    again = seeded.cli("restore", bid, "--into", "stopped_verifying")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("moment", ["point_app running", "health check after point_app"])
def test_a_restore_stopped_while_pointing_the_app_keeps_the_verified_copy_and_says_so(
    seeded: Project, cluster: LocalCluster, tmp_path: Path, moment: str
) -> None:
    """trial8 #5: the restore is done and verified; SIGTERM arrives while the point_app hook runs, or in
    the health check after it. The verified database is kept (not "nothing half-done is kept"), and the
    error line says where the app may point."""
    import http.server
    import threading

    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    mark, asked = tmp_path / "hook-ran", threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.set()
            time.sleep(30)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"touch {mark}; sleep 120" if moment == "point_app running" else f"touch {mark}"
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.default]\napp_url_env = "DATABASE_URL"\n'
        f'health_url = "http://127.0.0.1:{server.server_address[1]}/health"\n'
        f'[environments.default.hooks]\npoint_app = "{hook}"\n'
    )
    try:
        proc = _start(seeded, "restore", bid, "--into", "stopped_pointing", "--point-app")
        wait_for(lambda: (asked.is_set() if moment.startswith("health") else mark.exists()) or proc.poll(), 60, moment)
        code, err = _stop(proc, signal.SIGTERM)
    finally:
        server.shutdown()
    assert code == 143, err
    line = _one_error(err)
    assert line.startswith("error: stopped by SIGTERM; stopped_pointing was restored, verified and kept"), err
    assert "nothing half-done" not in line, err
    if moment == "point_app running":
        assert "point_app was stopped while it ran" in line and "still at " in line, err
    else:
        assert "point_app had pointed the app at it" in line, err
    assert "hint: " in err
    assert (_comment(cluster, "stopped_pointing") or "").startswith(f"pgrunbook: restored from backup {bid}, verified")
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute('DROP DATABASE "stopped_pointing" WITH (FORCE)')


def test_a_stop_after_the_restore_finished_says_it_is_done(seeded: Project, cluster: LocalCluster) -> None:
    """trial8 #5: SIGTERM while the finished restore writes its journal row (the row is held by a
    SQLite lock; the verified mark is already on the database): the restore is not undone, the journal
    says succeeded, and the error line says the copy is verified and kept instead of "nothing kept"."""
    import sqlite3

    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    seeded.write_config('[backup]\nstorage = "backups"\n[environments.default]\nread_query = "SELECT pg_sleep(2)"\n')
    proc = _start(seeded, "restore", bid, "--into", "stopped_after")
    # hold the verified mark (a lock on the database object) until the journal is held too
    holder = psycopg.connect(cluster.url())
    wait_for(lambda: _activity(cluster, "datname = 'stopped_after' AND query LIKE '%pg_sleep(2)%'"), 60, "verify")
    journal = sqlite3.connect(seeded.root / ".pgrunbook" / "journal.db", isolation_level=None)
    try:
        holder.execute("COMMENT ON DATABASE stopped_after IS 'held by the test'")
        waiting = "wait_event_type = 'Lock' AND query LIKE 'COMMENT ON DATABASE%'"
        wait_for(lambda: _activity(cluster, waiting), 30, "the verified mark waiting")
        journal.execute("BEGIN EXCLUSIVE")
        holder.commit()  # the verified mark goes in; then the run's last journal write waits on the lock
        wait_for(lambda: (_comment(cluster, "stopped_after") or "").startswith("pgrunbook: restored from"), 30, "mark")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
    finally:
        if journal.in_transaction:
            journal.execute("ROLLBACK")
        journal.close()
        holder.close()
    code, err = _stop(proc, signal.SIGTERM)
    assert code == 143, err
    line = _one_error(err)
    assert line.startswith("error: stopped by SIGTERM; it came after the restore had finished"), err
    assert f"stopped_after holds backup {bid}, verified, and is kept" in line, err
    assert "hint: nothing to redo" in err, err
    assert (_comment(cluster, "stopped_after") or "").startswith(f"pgrunbook: restored from backup {bid}, verified")
    run = json.loads(seeded.cli("--json", "runs", "--limit", "1").stdout)[0]
    assert run["kind"] == "restore" and run["outcome"] == "succeeded", run
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute('DROP DATABASE "stopped_after" WITH (FORCE)')


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        ppid = next((ln.split()[1] for ln in text.splitlines() if ln.startswith("PPid:")), None)
        if ppid == str(pid):
            out.append(int(status.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_no_serve_job_outlives_serve(seeded: Project, cluster: LocalCluster, how: signal.Signals) -> None:
    """Found by two trials: serve killed (SIGKILL, the OOM killer) left its running job orphaned, running on
    past its time limit; serve stopped with SIGTERM waited 10 s and then exited, leaving the job running
    unlogged. Now the job gets SIGTERM when serve dies (parent-death signal) and its cleanup runs (the
    drill drops its scratch database); a SIGTERM'd serve stops the job, logs it, and logs ``stopped`` last."""
    from tests.integration.test_serve import Served

    assert seeded.cli("backup", "create").returncode == 0
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[schedule]\ndrill = "@every 2s"\n'
        '[environments.default]\nread_query = "SELECT pg_sleep(300)"\n'
    )
    before = set(_drill_databases(cluster))
    served = Served(seeded)
    try:
        wait_for(lambda: served.events("started"), 60, "the drill to start")
        wait_for(lambda: set(_drill_databases(cluster)) - before, 60, "the drill's scratch database")
        jobs = [p for p in _children(served.proc.pid) if "verify" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(jobs) == 1, jobs
        evidence.fault(f"serve stopped by {how.name} while a drill runs")
        served.proc.send_signal(how)
        served.proc.wait(120)
        wait_for(lambda: not _alive(jobs[0]), 90, "the job to end with serve")
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
    wait_for(lambda: not set(_drill_databases(cluster)) - before, 30, "the scratch database dropped")
    if how == signal.SIGTERM:
        stopped = [e for e in served.lines if e.get("event") == "job stopped"]
        assert stopped and stopped[0]["pid"] == jobs[0] and stopped[0]["outcome"] == "stopped", served.raw
        assert served.lines[-1].get("event") == "stopped", served.raw[-3:]

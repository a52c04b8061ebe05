"""A backup killed with SIGKILL: nothing listed, nothing restorable, nothing counted; prune clears it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pgrunbook.backup.prune import prune
from pgrunbook.postgres.url import url_with_dbname
from tests import evidence
from tests.conftest import Project, fingerprint, wait_for

pytestmark = pytest.mark.reliability


def _start(project: Project) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "backup", "create"],
        cwd=project.root,
        env=project.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _temp_files(project: Project) -> list:
    return list((project.storage / "default").glob("*/.db.dump.zst.tmp-*"))


@pytest.mark.parametrize("moment", ["waiting for a table lock", "streaming data"])
def test_sigkill_mid_dump_leaves_nothing_usable(seeded: Project, moment: str) -> None:
    blocker = psycopg.connect(seeded.url, autocommit=True)
    try:
        if moment == "waiting for a table lock":
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
            proc = _start(seeded)
            wait_for(lambda: bool(_temp_files(seeded)))
        else:
            blocker.execute(
                "CREATE TABLE bulk AS SELECT g, repeat(md5(random()::text), 8) AS t FROM generate_series(1, 400000) g"
            )
            proc = _start(seeded)
            wait_for(lambda: any(p.stat().st_size > 0 for p in _temp_files(seeded)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if blocker.info.transaction_status.name != "IDLE":
            blocker.execute("ROLLBACK")
        blocker.close()

    folders = [p for p in (seeded.storage / "default").iterdir() if not p.name.startswith(".pgrunbook-")]
    assert folders, "the killed run left its folder (that is what prune must clean)"
    backup_id = folders[0].name
    assert json.loads(seeded.cli("backup", "list", "--json").stdout) == []
    verify = seeded.cli("backup", "verify", backup_id)
    assert verify.returncode == 2, verify.stderr
    assert verify.stderr.startswith(f"error: backup {backup_id} in environment 'default' was interrupted (no manifest")
    assert "hint: pgrunbook backup prune --env default removes it" in verify.stderr
    env = seeded.env()
    assert prune(env, dry_run=True).decisions == []  # not counted by retention
    leftovers = env.repository.leftovers()
    assert [lo.backup_id for lo in leftovers] == [backup_id] and not leftovers[0].active
    assert "is gone: killed or crashed" in leftovers[0].reason

    # the next backup works, and the next prune clears the leftover
    after = seeded.cli("--json", "backup", "create")
    assert after.returncode == 0, after.stderr
    new_id = json.loads(after.stdout)["id"]
    pruned = seeded.cli("--json", "backup", "prune")
    assert pruned.returncode == 0
    rows = {r["id"]: r for r in json.loads(pruned.stdout)}
    assert rows[backup_id]["action"] == "remove" and rows[backup_id]["leftover"] is True
    kept = sorted(p.name for p in (seeded.storage / "default").iterdir())
    assert [n for n in kept if not n.startswith(".pgrunbook-")] == [new_id]  # the markers stay
    assert seeded.cli("backup", "verify", new_id).returncode == 0
    evidence.fault(f"SIGKILL of backup create ({moment})")


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command names (Linux /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if int(rest[1]) == pid:
            found[int(stat.parent.name)] = name
    return found


def _sessions(conn: psycopg.Connection, dbname: str) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT pid, application_name FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchall()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_sigkill_mid_backup_takes_pg_dump_with_it(seeded: Project) -> None:
    """pgrunbook killed while pg_dump waits for a lock: the kernel kills pg_dump too (parent-death
    signal), so no orphan keeps its snapshot, its connection and its lock request."""
    dbname = seeded.url.rsplit("/", 1)[1]
    # pg_stat_activity is read once per transaction: the watcher is another connection, in autocommit
    with psycopg.connect(seeded.url, autocommit=True) as blocker, psycopg.connect(seeded.url, autocommit=True) as watch:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")  # pg_dump waits here, connected
        proc = _start(seeded)
        try:
            waiting = "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
            wait_for(lambda: watch.execute(waiting, (dbname,)).fetchone(), 60, "pg_dump waiting for the lock")
            dumps = [pid for pid, name in _children(proc.pid).items() if name == "pg_dump"]
            assert len(dumps) == 1, _children(proc.pid)
            others = {pid for pid, _ in _sessions(watch, dbname)} - {blocker.info.backend_pid}
            assert others, "the backup's sessions (pgrunbook's snapshot, pg_dump's) are there before the kill"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            t0 = time.monotonic()
            wait_for(lambda: not Path(f"/proc/{dumps[0]}").exists() or _zombie(dumps[0]), 5, "pg_dump gone")
            alive = lambda: {pid for pid, _ in _sessions(watch, dbname)} & others  # noqa: E731
            wait_for(lambda: not alive(), 5, "no session of the killed backup")
            gone_after = time.monotonic() - t0
        finally:
            blocker.execute("ROLLBACK")
    assert gone_after < 5
    evidence.fault("SIGKILL of backup create while pg_dump waits for a lock (pg_dump dies with it)")
    # trial7 #18: the killed backup's folder is named for what it is, not "no backup"
    (killed,) = [p.name for p in (seeded.storage / "default").iterdir() if p.is_dir() and p.name[:1].isdigit()]
    for argv in (("restore", killed, "--into", f"{dbname}_x"), ("backup", "verify", killed)):
        r = seeded.cli(*argv)
        assert r.returncode != 0 and r.stderr.startswith(
            f"error: backup {killed} in environment 'default' was interrupted (no manifest: its backup process"
        ), r.stderr
        assert "can never be restored" in r.stderr and "hint: pgrunbook backup prune --env default removes it" in (
            r.stderr
        ), r.stderr
    assert seeded.cli("backup", "prune").returncode == 0
    assert not (seeded.storage / "default" / killed).exists()  # prune removed it, as the hint says


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_prune_leaves_a_running_backup_alone(seeded: Project) -> None:
    with psycopg.connect(seeded.url, autocommit=True) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
        proc = _start(seeded)
        try:
            wait_for(lambda: bool(_temp_files(seeded)))
            rows = json.loads(seeded.cli("--json", "backup", "prune").stdout)
            assert len(rows) == 1 and rows[0]["action"] == "keep" and "in progress" in rows[0]["reasons"][0]
            assert _temp_files(seeded)
        finally:
            blocker.execute("ROLLBACK")
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert len(json.loads(seeded.cli("backup", "list", "--json").stdout)) == 1


def test_postgresql_restarted_mid_backup(seeded: Project, cluster) -> None:
    """The server goes down (immediate stop, as a crash) while pg_dump runs, then comes back: one clear
    error, nothing listed, and the next backup works."""
    blocker = psycopg.connect(seeded.url, autocommit=True)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")  # holds pg_dump mid-run
    proc = _start(seeded)
    try:
        wait_for(lambda: bool(_temp_files(seeded)))
        cluster.restart()
    finally:
        blocker.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert json.loads(seeded.cli("backup", "list", "--json").stdout) == []
    after = seeded.cli("--json", "backup", "create")
    assert after.returncode == 0, after.stderr
    assert seeded.cli("backup", "verify", json.loads(after.stdout)["id"], "--drill").returncode == 0
    evidence.fault("PostgreSQL restarted (immediate stop) mid-backup")


def _restore_caught_copying(seeded: Project, into: str) -> tuple[dict, str, subprocess.Popen[str]]:
    """A backup big enough for pg_restore's COPY to take a while, and a restore of it started and caught
    in the middle of that COPY. Returns the source's fingerprint, the backup id and the running restore."""
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO billing.invoice (account_id, amount, note) SELECT 1 + g % 500, g, md5(g::text) "
            "FROM generate_series(1, 600000) g"
        )
    before = fingerprint(seeded.url)
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "restore", bid, "--into", into],
        cwd=seeded.root,
        env=seeded.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    copying = "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query LIKE 'COPY%%'"
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        wait_for(lambda: conn.execute(copying, (into,)).fetchone(), 60, "pg_restore copying data")
    return before, bid, proc


def test_postgresql_restarted_mid_restore(seeded: Project, cluster) -> None:
    """The server goes down while pg_restore copies data into the new database, then comes back: one clear
    error, the half-restored database dropped once the server answers, the source untouched, and the
    next restore exact."""
    before, bid, proc = _restore_caught_copying(seeded, "half_restored")
    cluster.restart()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.startswith("error: pg_restore lost the server") and "Traceback" not in err, err
    assert "half_restored was dropped again" in err and "the backup is not at fault" in err, err
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        gone = conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'half_restored'").fetchone()
    assert gone == (0,)
    assert fingerprint(seeded.url) == before
    again = seeded.cli("--json", "restore", bid, "--into", "half_restored")
    assert again.returncode == 0, again.stderr
    restored = url_with_dbname(seeded.url, "half_restored")
    assert fingerprint(restored) == before
    evidence.fault("PostgreSQL restarted (immediate stop) mid-restore")


@pytest.mark.parametrize("temp", ["disk", "memory"])
def test_sigkill_mid_restore_then_the_same_restore_again(seeded: Project, temp: str) -> None:
    """pgrunbook killed while pg_restore copies data: pg_restore dies with it, the half-restored database
    is marked unfinished (not in use), and the same command run again replaces it, restores exactly and
    removes the orphaned decompressed archive (on disk; in memory the kernel freed it with the process)."""
    import glob
    import tempfile
    import time

    seeded.environ["PGRUNBOOK_RESTORE__TEMP"] = temp
    name = f"killed_restore_{temp}"  # the cluster is shared: one database per parameter
    before, bid, proc = _restore_caught_copying(seeded, name)
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        sessions = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
        wait_for(lambda: conn.execute(sessions).fetchone() == (0,), 10, "pg_restore to die with pgrunbook")
        comment = conn.execute(
            f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{name}'"
        ).fetchone()
    assert comment and comment[0].startswith(f"pgrunbook: unfinished restore of {bid} by pid {proc.pid}")
    time.sleep(2)  # had pg_restore survived, it would go on to the indexes (post-data) by now
    with psycopg.connect(url_with_dbname(seeded.url, name), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'invoice_account_idx'").fetchone() == (
            0,
        )
    orphans = glob.glob(f"{tempfile.gettempdir()}/pgrunbook-restore-{proc.pid}-*")
    assert bool(orphans) == (temp == "disk")  # on disk, the killed run could not clean up after itself

    again = seeded.cli("restore", bid, "--into", name)
    assert again.returncode == 0, again.stderr
    assert "left by an interrupted restore and not in use" in again.stderr + again.stdout
    assert fingerprint(url_with_dbname(seeded.url, name)) == before
    assert not any(os.path.exists(p) for p in orphans)
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        comment = conn.execute(
            f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{name}'"
        ).fetchone()
    assert comment and comment[0].startswith(f"pgrunbook: restored from backup {bid}, verified")
    # a database that is not an unfinished restore is still refused, untouched
    refused = seeded.cli("restore", bid, "--into", name)
    assert refused.returncode == 2 and "already exists and is not empty" in refused.stderr
    evidence.fault("SIGKILL of restore while pg_restore copies data")


def test_sigkill_while_the_backup_is_read_back_leaves_no_database_and_a_clean_run_again(
    seeded: Project, tmp_path: Path
) -> None:
    """pgrunbook killed while its check reads the backup back (decompressing into a temporary file on
    disk, in the background, while the tools are chosen): no database was created, the journal shows the
    run interrupted before "create database" with nothing to recover, and the same command run again
    removes the orphaned file and restores exactly."""
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO billing.invoice (account_id, amount, note) SELECT 1 + g % 500, g, md5(g::text) "
            "FROM generate_series(1, 600000) g"
        )
    before = fingerprint(seeded.url)
    seeded.environ.update(
        PGRUNBOOK_RESTORE__TEMP="disk", PGRUNBOOK_RESTORE__METHOD="parallel", PGRUNBOOK_BACKUP__ZSTD_FRAME_MB="1"
    )
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "restore", bid, "--into", "killed_in_check"],
        cwd=seeded.root,
        env={**seeded.environ, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # only pgrunbook's own file counts: Python's tempfile.gettempdir() probes TMPDIR with a short-lived
    # 8-letter file of its own (tempfile._get_default_tempdir), which a CI run once killed mid-probe
    ours = lambda: [p for p in temp.iterdir() if p.name.startswith("pgrunbook-")]  # noqa: E731
    wait_for(lambda: bool(ours()) or proc.poll() is not None, 60, "the read-back's temporary file")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    orphans = ours()
    assert orphans, "the restore ended before it could be killed in its check"
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'killed_in_check'").fetchone() is None
    run = json.loads(seeded.cli("--json", "runs", "--limit", "1").stdout)[0]
    assert run["kind"] == "restore" and run["interrupted"] and run["recovery"] == ""
    assert {s["name"] for s in run["steps"]} <= {"check backup"}
    again = seeded.cli("restore", bid, "--into", "killed_in_check", extra_env={"TMPDIR": str(temp)})
    assert again.returncode == 0, again.stderr
    # pgrunbook's own temporary files (pgrunbook-*) are gone, the orphan included
    assert ours() == [] and not orphans[0].exists()
    assert fingerprint(url_with_dbname(seeded.url, "killed_in_check")) == before
    evidence.fault("SIGKILL of restore while its check reads the backup back")


def test_backups_started_together_with_prune_running_beside_them(seeded: Project) -> None:
    """Stress: rounds of four backups started at once while prune runs, unsynchronised. Every backup
    either completes and verifies or is refused in one line naming the running one; whatever is listed
    restores; prune never removes a backup in progress and leaves no leftovers once all is done."""
    seeded.write_config('[backup]\nstorage = "backups"\nretention = { daily = 1, weekly = 0, monthly = 0 }\n')
    completed, refused = 0, 0
    for _round in range(3):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "pgrunbook", "--json", "backup", "create"],
                cwd=seeded.root,
                env=seeded.environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        pruned = seeded.cli("--json", "backup", "prune")
        assert pruned.returncode == 0, pruned.stderr
        for p in procs:
            out, err = p.communicate(timeout=120)
            if p.returncode == 0:
                completed += 1
                assert json.loads(out)["id"]
            else:
                refused += 1
                assert p.returncode == 2 and err.startswith("error: another backup of environment 'default'"), err
                assert "Traceback" not in err
    assert completed >= 3 and completed + refused == 12
    listed = json.loads(seeded.cli("--json", "backup", "list").stdout)
    assert listed
    for b in listed:
        assert seeded.cli("backup", "verify", b["id"]).returncode == 0
    assert seeded.cli("backup", "verify", listed[0]["id"], "--drill").returncode == 0
    seeded.cli("backup", "prune")
    assert not _temp_files(seeded)
    assert not list((seeded.storage / "default").glob("*/.in-progress.json"))
    evidence.fault(f"4 backups started at once x 3 rounds with prune beside them ({refused} refused)")


def test_a_leftover_in_use_is_never_dropped_by_the_next_restore(seeded: Project) -> None:
    """trial8 #1: a killed restore's database (its marker names a dead pid of this host) that somebody
    then used — a session open on it, rows written by hand — is refused by the next restore into that
    name, untouched, naming the session; never dropped WITH (FORCE) under a live session. Once nobody is
    connected, the same restore replaces it as before."""
    import socket

    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marker = (
        f"pgrunbook: unfinished restore of {bid} by pid {int(dead.stdout)} on {socket.gethostname()} "
        "since 2026-12-01T00:00:00Z"
    )
    name = "leftover_in_use"
    with psycopg.connect(seeded.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker}'")
    with psycopg.connect(url_with_dbname(seeded.url, name), autocommit=True) as user:
        user.execute("CREATE TABLE notes (id int)")
        user.execute("INSERT INTO notes SELECT generate_series(1, 500)")
        refused = seeded.cli("restore", bid, "--into", name)
        assert refused.returncode != 0
        first = refused.stderr.splitlines()[0]
        assert first.startswith("error: ") and "other sessions are connected to it" in first, refused.stderr
        assert "nothing was changed" in first and "hint: " in refused.stderr
        assert user.execute("SELECT count(*) FROM notes").fetchone() == (500,)  # still connected, rows kept
    evidence.data_loss_scenario("a killed restore's leftover in use when the same restore runs again")
    again = seeded.cli("restore", bid, "--into", name)
    assert again.returncode == 0, again.stderr
    assert "left by an interrupted restore and not in use" in again.stderr + again.stdout
    assert fingerprint(url_with_dbname(seeded.url, name)) == fingerprint(seeded.url)

"""A backup behind a table lock (trial7 finding 29): pg_dump's --lock-wait-timeout, configurable, and an
error naming the session that holds the lock; nothing kept, the lock holder untouched."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

import psycopg
import pytest

from tests.conftest import Project, assert_clean_error
from tests.integration.test_stop_signals import _start

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("table", ["account", "billing.invoice"])
def test_a_backup_behind_a_table_lock_gives_up_naming_the_holder(seeded: Project, table: str) -> None:
    seeded.write_config('[backup]\nstorage = "backups"\nlock_wait_timeout_s = 2\n')
    holder = psycopg.connect(seeded.url, application_name="long-migration")
    try:
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        r = seeded.cli("backup", "create", "--label", "locked")
        took = time.monotonic() - t0
        assert took < 30, took
        notes = [ln for ln in r.stderr.splitlines() if ln.startswith("note: ")]
        assert len(notes) == 1 and f"pid {holder.info.backend_pid} (long-migration)" in notes[0], r.stderr
        r.stderr = "\n".join(ln for ln in r.stderr.splitlines() if not ln.startswith("note: "))
        assert_clean_error(r, 2, "waited 2s for a lock on", f"pid {holder.info.backend_pid}", "long-migration")
        assert f"pg_terminate_backend({holder.info.backend_pid})" in r.stderr and "lock_wait_timeout_s" in r.stderr
        assert holder.execute("SELECT 1").fetchone() == (1,)  # the holder is untouched
    finally:
        holder.rollback()
        holder.close()
    listed = json.loads(seeded.cli("--json", "backup", "list").stdout)
    assert listed == []  # nothing of the failed backup is listed
    assert seeded.cli("backup", "create").returncode == 0  # lock gone: the backup goes through


def test_lock_wait_timeout_zero_waits_as_pg_dump_does(seeded: Project) -> None:
    seeded.write_config('[backup]\nstorage = "backups"\nlock_wait_timeout_s = 0\n')
    holder = psycopg.connect(seeded.url, application_name="short-lock")
    holder.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
    import threading

    timer = threading.Timer(3, holder.rollback)
    timer.start()
    try:
        t0 = time.monotonic()
        r = seeded.cli("backup", "create")
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t0 >= 2.5  # it waited for the lock, then dumped
    finally:
        timer.join()
        holder.close()


def _first_stderr_line(proc: subprocess.Popen[str], timeout: float) -> tuple[str, float]:
    """The first line the running command writes to stderr, and when it came (monotonic); '' if none."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    threading.Thread(target=lambda: lines.put(proc.stderr.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        return lines.get(timeout=timeout), time.monotonic()
    except queue.Empty:
        return "", time.monotonic()


@pytest.mark.parametrize("json_mode", [False, True], ids=["plain", "json"])
def test_a_backup_behind_a_lock_says_so_at_once(seeded: Project, json_mode: bool) -> None:
    """Polish #1 (trial7 #29 leftover): while pg_dump's LOCK TABLE waits, one line names the holder and
    the timeout at once, not silence until the timeout; with --json, one JSON event on stderr (stdout
    stays the one document). The backup then goes through when the lock goes."""
    seeded.write_config('[backup]\nstorage = "backups"\nlock_wait_timeout_s = 60\n')
    holder = psycopg.connect(seeded.url, application_name="long-migration")
    holder.execute("LOCK TABLE billing.invoice IN ACCESS EXCLUSIVE MODE")
    pid = holder.info.backend_pid
    proc = _start(seeded, *(["--json"] if json_mode else []), "backup", "create", "--label", "waited")
    t0 = time.monotonic()
    try:
        line, when = _first_stderr_line(proc, 20)
        assert proc.poll() is None, "the backup ended before the lock was released"
    finally:
        holder.rollback()
        holder.close()
    out, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, line + rest
    assert when - t0 < 15, when - t0  # at once (the first look is after 1s), not after the 60s timeout
    if json_mode:
        event = json.loads(line)
        assert event["event"] == "lock_wait" and event["holder_pid"] == pid, event
        assert event["holder_application"] == "long-migration" and event["table"] == "billing.invoice", event
        assert event["lock_wait_timeout_s"] == 60 and event["holder_query_start"], event
        assert json.loads(out)["label"] == "waited"  # stdout: the one document
        message = event["message"]
    else:
        assert line.startswith("note: the backup is waiting for a lock on billing.invoice"), line
        message = line
    assert f"pid {pid} (long-migration)" in message and "ACCESS EXCLUSIVE" in message, message
    assert "gives up after 60s ([backup] lock_wait_timeout_s)" in message, message
    assert f"pg_terminate_backend({pid})" in message, message
    assert "waiting for a lock" not in rest and "Traceback" not in rest, rest  # one line per holder


def test_a_backup_not_kept_waiting_says_nothing(seeded: Project) -> None:
    """No lock in the way: no notice (the watch is silent unless a session of the backup waits)."""
    r = seeded.cli("backup", "create")
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stderr and "waiting for a lock" not in r.stderr, r.stderr

"""A backup behind a table lock (trial7 finding 29): pg_dump's --lock-wait-timeout, configurable, and an
error naming the session that holds the lock; nothing kept, the lock holder untouched."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tests.conftest import Project, assert_clean_error

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

"""The in-place swap is one transaction: a failure or a kill between its two renames leaves the live
database under its name, untouched (issue #20, "Also"), against a real cluster."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from pgrunbook.errors import DatabaseError
from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.database_swap import read_database, rename_database, swap
from tests.conftest import wait_for
from tests.integration.test_owners import admin, drop_roles_and_databases

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(cluster: LocalCluster) -> Iterator[tuple[str, str, str]]:
    tag = secrets.token_hex(3)
    live, staging, replaced = f"live_{tag}", f"staging_{tag}", f"replaced_{tag}"
    for name, value in ((live, "old"), (staging, "new")):
        admin(cluster, f"CREATE DATABASE {name}")
        with psycopg.connect(cluster.url(name), autocommit=True) as conn:
            conn.execute(f"CREATE TABLE marker (v text); INSERT INTO marker VALUES ('{value}')".encode())
    admin(cluster, f"ALTER DATABASE {live} SET work_mem = '16MB'", f"ALTER DATABASE {live} CONNECTION LIMIT 7")
    yield live, staging, replaced
    drop_roles_and_databases(cluster, tag, [])


def marker(cluster: LocalCluster, dbname: str) -> str:
    with psycopg.connect(cluster.url(dbname)) as conn:
        row = conn.execute("SELECT v FROM marker").fetchone()
    assert row is not None
    return str(row[0])


def names(cluster: LocalCluster) -> set[str]:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def test_swap_carries_settings_and_renames_both(cluster: LocalCluster, pair: tuple[str, str, str]) -> None:
    live, staging, replaced = pair
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        before = read_database(conn, live)
        swap(conn, live, staging, replaced)
        after = read_database(conn, live)
    assert marker(cluster, live) == "new" and marker(cluster, replaced) == "old"
    assert before is not None and after is not None
    assert (
        (after.settings, after.connection_limit)
        == (before.settings, before.connection_limit)
        == (
            [(None, "work_mem=16MB")],
            7,
        )
    )


def test_a_failure_at_the_second_rename_leaves_the_live_database(
    cluster: LocalCluster, pair: tuple[str, str, str]
) -> None:
    """The staging database in use: its rename fails after the live one was renamed, in the same
    transaction, which is rolled back (two separate statements left no database named live)."""
    live, staging, replaced = pair
    with (
        psycopg.connect(cluster.url(staging)),
        psycopg.connect(cluster.url(), autocommit=True) as conn,
        pytest.raises(DatabaseError, match="nothing was swapped"),
    ):
        swap(conn, live, staging, replaced, attempts=2)
    assert {live, staging} <= names(cluster) and replaced not in names(cluster)
    assert marker(cluster, live) == "old"


SWAP_CHILD = """
import sys, psycopg
from pgrunbook.postgres.database_swap import swap
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    swap(conn, sys.argv[2], sys.argv[3], sys.argv[4])
"""


def test_a_kill_between_the_two_renames_leaves_the_live_database(
    cluster: LocalCluster, pair: tuple[str, str, str]
) -> None:
    """A lock held on the staging database makes the swap wait right after renaming the live one; the
    process is SIGKILLed there. The server rolls the transaction back: the live name still holds the
    live database."""
    live, staging, replaced = pair
    holder = psycopg.connect(cluster.url())
    holder.execute(f"COMMENT ON DATABASE {staging} IS 'held'".encode())  # keeps a lock until rollback
    child = subprocess.Popen(
        [sys.executable, "-c", SWAP_CHILD, cluster.url(), live, staging, replaced],
        env={**os.environ},
    )
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as watch:

            def waiting_on_second_rename() -> bool:
                row = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                    (f'ALTER DATABASE "{staging}" RENAME%',),
                ).fetchone()
                return bool(row and row[0])

            wait_for(waiting_on_second_rename, 30, "the swap waiting between its renames")
            child.send_signal(signal.SIGKILL)
            child.wait()
    finally:
        if child.poll() is None:
            child.kill()
        holder.rollback()
        holder.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and replaced in names(cluster):
        time.sleep(0.1)
    assert {live, staging} <= names(cluster) and replaced not in names(cluster)
    assert marker(cluster, live) == "old" and marker(cluster, staging) == "new"


def test_a_rename_onto_a_name_taken_meanwhile_offers_the_drop_not_the_rename(
    cluster: LocalCluster, pair: tuple[str, str, str]
) -> None:
    """breaker13 N11: two recoveries of one lost database at once; the loser's rename found the name
    taken and its hint offered the same rename, which cannot succeed while the winner's database
    exists. It now says the name was taken meanwhile and gives the DROP of its own, extra copy."""
    live, staging, _ = pair
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn, pytest.raises(DatabaseError) as caught:
        rename_database(conn, staging, live)
    assert f"a database {live} was created meanwhile" in caught.value.message
    assert caught.value.hint is not None and f'DROP DATABASE "{staging}";' in caught.value.hint
    assert "RENAME" not in caught.value.hint
    assert (marker(cluster, live), marker(cluster, staging)) == ("old", "new")  # both kept as they were

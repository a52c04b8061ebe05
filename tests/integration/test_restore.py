"""restore into a new database and in place, against a real server and the real pg_restore."""

from __future__ import annotations

import json

import psycopg
import pytest

from pgrunbook.backup.create import create_backup
from tests import evidence
from tests.conftest import Project, assert_clean_error, fingerprint

pytestmark = pytest.mark.integration


def catalog(url: str) -> dict[str, object]:
    """What a restore must bring back besides rows: sequences' values, enums, indexes."""
    with psycopg.connect(url) as conn:
        seqs = conn.execute("SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2").fetchall()
        enums = conn.execute(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e "
            "JOIN pg_type t ON t.oid = e.enumtypid GROUP BY 1 ORDER BY 1"
        ).fetchall()
        idx = conn.execute(
            "SELECT schemaname, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname NOT IN ('pg_catalog') ORDER BY 1, 2"
        ).fetchall()
    return {"sequences": seqs, "enums": enums, "indexes": idx}


def db_url(project: Project, name: str) -> str:
    return project.url.rsplit("/", 1)[0] + "/" + name


def databases(project: Project) -> set[str]:
    with psycopg.connect(project.url) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


@pytest.mark.parametrize("method", ["stream", "parallel"])
def test_restore_into_new_database_is_identical(seeded: Project, method: str) -> None:
    seeded.write_config(f'[backup]\nstorage = "backups"\n[restore]\nmethod = "{method}"\njobs = 2\n')
    m = create_backup(seeded.env())
    name = f"restored_{method}"
    r = seeded.cli("--json", "restore", m.id, "--into", name)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is True and out["database"] == name and out["backup_id"] == m.id
    assert out["method"].startswith(method)
    assert fingerprint(db_url(seeded, name)) == fingerprint(seeded.url)
    assert catalog(db_url(seeded, name)) == catalog(seeded.url)


def test_restore_refuses_a_non_empty_target_and_changes_nothing(seeded: Project) -> None:
    m = create_backup(seeded.env())
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE occupied")
    with psycopg.connect(db_url(seeded, "occupied"), autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)")
    r = seeded.cli("restore", m.id, "--into", "occupied")
    assert_clean_error(r, 2, "already exists and is not empty")
    assert fingerprint(db_url(seeded, "occupied")) == {
        "public.precious": (1, fingerprint(db_url(seeded, "occupied"))["public.precious"][1])
    }
    assert_clean_error(seeded.cli("restore", m.id, "--into", "bad name; drop"), 3, "invalid database name")
    assert_clean_error(seeded.cli("restore", m.id), 3, "exactly one of --into")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_backup_fails_before_any_database_is_created(seeded: Project, damage: str) -> None:
    m = create_backup(seeded.env())
    dump = seeded.storage / "default" / m.id / m.file
    data = bytearray(dump.read_bytes())
    if damage == "flip":
        data[len(data) // 3] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    dump.write_bytes(bytes(data))
    before = databases(seeded)
    r = seeded.cli("restore", m.id, "--into", "never_created")
    assert_clean_error(r, 2, "failed its integrity check", "no database was created or changed")
    assert databases(seeded) == before
    live_before = fingerprint(seeded.url)
    evidence.fault(f"{damage} backup file given to restore")
    seeded.write_config('[backup]\nstorage = "backups"\n')
    r = seeded.cli("restore", m.id, "--in-place", "--confirm", seeded.url.rsplit("/", 1)[1])
    assert r.returncode == 2 and "failed its integrity check" in r.stderr
    assert fingerprint(seeded.url) == live_before and databases(seeded) == before


def _hooks_config(project: Project, protected: bool) -> None:
    log = project.root / "hooks.log"
    project.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        f"protected = {'true' if protected else 'false'}\n"
        "[environments.production.hooks]\n"
        f"maintenance_on = 'echo \"on $PGRUNBOOK_ENV $PGRUNBOOK_HOOK\" >> {log}'\n"
        f"maintenance_off = 'echo off >> {log}'\n"
    )


def test_in_place_restore_refused_without_exact_confirm_then_exact_with_it(seeded: Project) -> None:
    _hooks_config(seeded, protected=True)
    good = create_backup(seeded.env(), label="pre-deploy")
    good_state = fingerprint(seeded.url)
    with psycopg.connect(seeded.url, autocommit=True) as conn:  # a bad deploy
        conn.execute("DELETE FROM billing.invoice WHERE id % 2 = 0; ALTER TABLE account ADD COLUMN junk int")
    bad_state = fingerprint(seeded.url)
    live = seeded.url.rsplit("/", 1)[1]
    for args in ([], ["--confirm", "wrong"]):
        r = seeded.cli("restore", good.id, "--in-place", *args)
        assert_clean_error(r, 3, f"in-place restore replaces database {live!r}")
        assert fingerprint(seeded.url) == bad_state
    assert not (seeded.root / "hooks.log").exists()

    r = seeded.cli("--json", "restore", good.id, "--in-place", "--confirm", live)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert fingerprint(seeded.url) == good_state
    assert (seeded.root / "hooks.log").read_text().splitlines() == ["on production maintenance_on", "off"]
    replaced = out["replaced_database"]
    assert fingerprint(db_url(seeded, replaced)) == bad_state  # kept, never dropped
    # the pre-restore backup holds the state just before, and restores
    pre = out["pre_restore_backup"]
    listed = {b["id"]: b for b in json.loads(seeded.cli("--json", "backup", "list", "--env", "production").stdout)}
    assert listed[pre]["label"] == "pre-restore" and listed[pre]["verified"] is True
    assert seeded.cli("restore", pre, "--into", "from_pre_restore").returncode == 0
    assert fingerprint(db_url(seeded, "from_pre_restore")) == bad_state
    runs = json.loads(seeded.cli("--json", "runs").stdout)
    in_place = next(r for r in runs if r["args"].get("in_place"))
    assert in_place["outcome"] == "succeeded"
    assert [s["name"] for s in in_place["steps"]] == [
        "check backup",
        "maintenance on",
        "pre-restore backup",
        "check backup",
        "create database",
        "restore",
        "verify restore",
        "swap databases",
        "verify live database",
        "maintenance off",
    ]
    assert "ALTER DATABASE" in in_place["recovery"]


def test_failed_in_place_restore_leaves_the_live_database_and_says_so(seeded: Project) -> None:
    _hooks_config(seeded, protected=False)
    good = create_backup(seeded.env())
    state = fingerprint(seeded.url)
    (seeded.root / "pgrunbook.toml").write_text(
        (seeded.root / "pgrunbook.toml")
        .read_text()
        .replace("maintenance_off = ", "app_rollback = 'true'\nmaintenance_off = ")
        .replace("maintenance_on = ", "maintenance_on = 'exit 7' #")
    )
    live = seeded.url.rsplit("/", 1)[1]
    r = seeded.cli("restore", good.id, "--in-place", "--confirm", live)
    assert r.returncode == 2
    assert "hook maintenance_on failed (exit 7)" in r.stderr
    assert f"recovery: database {live} is untouched" in r.stderr
    assert fingerprint(seeded.url) == state
    runs = json.loads(seeded.cli("--json", "runs").stdout)
    assert runs[0]["outcome"] == "failed"
    assert [(s["name"], s["status"]) for s in runs[0]["steps"]] == [
        ("check backup", "succeeded"),
        ("maintenance on", "failed"),
        ("maintenance off", "succeeded"),
    ]
    evidence.fault("maintenance hook failing during an in-place restore")

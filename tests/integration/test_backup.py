"""backup create against a real server: restorable by hand, exact manifest, safe files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgrunbook.backup.create import create_backup
from pgrunbook.backup.identity import is_backup_id
from tests.conftest import PASSWORD, Project, assert_clean_error, fingerprint, on_terminal, suite_tools, wait_for

pytestmark = pytest.mark.integration


def _new_db(project: Project, name: str) -> str:
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return project.url.rsplit("/", 1)[0] + "/" + name


def _tools():
    return suite_tools()


def test_zstd_backup_restores_by_hand_with_standard_tools(seeded: Project) -> None:
    result = seeded.cli("--json", "backup", "create")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"id", "environment", "location", "size", "sha256", "duration_s"} <= set(out)
    folder = seeded.storage / "default" / out["id"]
    dump = folder / "db.dump.zst"
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == out["sha256"]
    assert dump.stat().st_size == out["size"]
    manifest = json.loads((folder / "manifest.json").read_text())
    # the manifest's own command, run by hand through the shell, with the URL from the environment
    target = _new_db(seeded, "by_hand_zstd")
    cmd = manifest["restore_command"]  # as written, with this machine's PATH
    r = subprocess.run(
        cmd, shell=True, cwd=folder, env={**os.environ, "TARGET_DATABASE_URL": target}, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert fingerprint(target) == fingerprint(seeded.url)


def test_gzip_backup_is_the_runbooks_plain_custom_dump(seeded: Project) -> None:
    seeded.write_config('[backup]\nstorage = "backups"\ncompression = "gzip"\n')
    m = create_backup(seeded.env())
    dump = seeded.storage / "default" / m.id / "db.dump"
    assert dump.read_bytes()[:5] == b"PGDMP"
    target = _new_db(seeded, "by_hand_gzip")
    r = subprocess.run(
        [str(_tools().pg_restore), "--no-owner", "--dbname", target, str(dump)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert fingerprint(target) == fingerprint(seeded.url)
    assert m.restore_command == (
        'pg_restore --exit-on-error --dbname "$TARGET_DATABASE_URL" db.dump  # needs pg_restore 12 or newer'
    )


def test_files_are_0600_and_folders_0700(seeded: Project) -> None:
    m = create_backup(seeded.env())
    for path in [seeded.storage, seeded.storage / "default", seeded.storage / "default" / m.id]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in (seeded.storage / "default" / m.id).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in (seeded.storage / "default" / m.id).iterdir()) == ["db.dump.zst", "manifest.json"]


def test_manifest_has_every_field_and_exact_counts(seeded: Project) -> None:
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL,"
            " finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,"
            " started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0)"
        )
        conn.execute(
            "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, started_at) VALUES "
            "('1', 'a', now(), '01_init', now() - interval '2 min'),"
            "('2', 'b', now(), '02_next', now() - interval '1 min'),"
            "('3', 'c', NULL, '03_failed', now())"
        )
    m = create_backup(seeded.env(), label="pre-deploy")
    data = json.loads((seeded.storage / "default" / m.id / "manifest.json").read_text())
    for field in [
        "id",
        "environment",
        "database",
        "server_version",
        "pg_dump_version",
        "format",
        "compression",
        "size",
        "sha256",
        "started_at",
        "finished_at",
        "duration_s",
        "label",
        "migration_head",
        "tables",
        "tool_version",
        "restore_command",
        "verifications",
    ]:
        assert field in data, field
    assert data["label"] == "pre-deploy" and m.id.endswith("-pre-deploy")
    assert data["migration_head"] == {"name": "02_next", "count": 2}
    counts = {(t["schema"], t["name"]): t["rows"] for t in data["tables"]}
    assert counts[("public", "account")] == 500
    assert counts[("billing", "invoice")] == 2000
    assert counts[("public", 'odd name "quoted"')] == 3
    assert counts[("public", "empty_table")] == 0
    assert PASSWORD not in json.dumps(data)


def test_counts_describe_the_dump_exactly_while_the_app_writes(seeded: Project) -> None:
    """Row counts come from pg_dump's own snapshot: restored counts equal the manifest's even under load."""
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                conn.execute("INSERT INTO billing.invoice (account_id, amount) VALUES (1, %s)", (i,))
                i += 1

    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO billing.invoice (account_id, amount, note) SELECT 1, g, repeat(md5(g::text), 20) "
            "FROM generate_series(1, 60000) g"
        )
    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.2)
        m = create_backup(seeded.env())
        time.sleep(0.2)
    finally:
        stop.set()
        t.join()
    target = _new_db(seeded, "snapshot_check")
    dump = seeded.storage / "default" / m.id / "db.dump.zst"
    r = subprocess.run(
        f'zstd -dc "{dump}" | "{_tools().pg_restore}" --no-owner --dbname "$T"',
        shell=True,
        env={**os.environ, "T": target},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    with psycopg.connect(target) as conn:
        restored = conn.execute("SELECT count(*) FROM billing.invoice").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(seeded.url) as conn:
        live = conn.execute("SELECT count(*) FROM billing.invoice").fetchone()[0]  # type: ignore[index]
    assert m.row_counts()[("billing", "invoice")] == restored
    assert live > restored  # the writer kept going: the counts were not simply taken after the fact


def test_second_concurrent_backup_is_refused_naming_the_holder(seeded: Project) -> None:
    """While one backup holds the environment's lock, another says who holds it and exits 2."""
    with psycopg.connect(seeded.url, autocommit=True) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")  # the first backup's pg_dump waits here
        first = subprocess.Popen(
            [os.sys.executable, "-m", "pgrunbook", "backup", "create"],  # type: ignore[attr-defined]
            cwd=seeded.root,
            env=seeded.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: any((seeded.storage / "default").glob("*/.in-progress.json")))
            second = seeded.cli("backup", "create")
            assert second.returncode == 2
            assert "another backup of environment 'default' is running: pid" in second.stderr
            assert "pgrunbook backup default" in second.stderr
        finally:
            blocker.execute("ROLLBACK")
        _out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert seeded.cli("backup", "create").returncode == 0  # and the lock is gone afterwards


def test_progress_is_quiet_without_a_terminal(seeded: Project) -> None:
    result = seeded.cli("backup", "create", "--label", "scheduled")
    assert result.returncode == 0
    assert result.stdout.strip().endswith("-scheduled")
    assert "\r" not in result.stderr and "MB/s" not in result.stderr


def test_progress_shows_bytes_and_rate_on_a_terminal(seeded: Project) -> None:
    """On a real pseudo-terminal the dump shows a live bar with bytes and rate; the id still ends stdout."""
    with psycopg.connect(seeded.url, autocommit=True) as conn:  # enough data for the bar to be drawn
        conn.execute("CREATE TABLE bulk AS SELECT g, md5(g::text) t FROM generate_series(1, 2000000) g")
    rc, text = on_terminal(seeded, "backup", "create", timeout=60)
    assert rc == 0, text
    assert "backup default: dump" in text
    assert re.search(r"\d+(\.\d+)?/\? (kB|MB|GB)", text), "no byte count in the bar"
    assert re.search(r"\d+(\.\d+)? (kB|MB|GB)/s", text), "no transfer rate in the bar"
    assert text.rstrip().splitlines()[-1].strip().endswith("-manual")


def test_the_dump_bar_takes_its_total_from_the_last_backup(seeded: Project) -> None:
    """pg_dump does not say how much it will write: the first backup's bar counts bytes alone; the next
    takes the last backup's archive size as its total, so the operator sees how far along it is."""
    env = seeded.env()
    calls: list[tuple[int, int | None, str]] = []

    def record(stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
        if stage == "dump":
            calls.append((done, total, note))

    first = create_backup(env, progress=record)
    assert calls and all(total is None for _, total, _ in calls)  # nothing to go by yet
    calls.clear()
    create_backup(env, progress=record)
    assert first.archive_size and calls
    assert all(total == max(first.archive_size, done) for done, total, _ in calls)
    assert {note for *_, note in calls} == {"of about the last backup's size"}


def test_newest_skips_a_damaged_manifest(seeded: Project) -> None:
    env = seeded.env()
    older = create_backup(env)
    newer = create_backup(env, label="scheduled")
    assert env.repository.newest() == newer
    (seeded.storage / "default" / newer.id / "manifest.json").write_text("{not json")
    assert env.repository.newest() == older


@pytest.mark.parametrize("output", ["junk", "nothing"])
def test_a_pg_dump_that_writes_no_archive_is_refused(seeded: Project, tmp_path: Path, output: str) -> None:
    """break11 #4: a "pg_dump" (a wrapper that swallowed the real one's failure, a script) that exits 0
    but writes no custom-format archive made a "successful" backup of a few bytes of text. Now refused:
    the output must start with PGDMP; nothing is kept or listed. The fake is a real executable in a
    bin_dir that answers --version as the real pg_dump does (a process, not a mock)."""
    real = suite_tools()
    fake = tmp_path / "fakebin"
    fake.mkdir()
    for tool in ("pg_restore", "psql"):
        (fake / tool).symlink_to(getattr(real, tool, None) or (Path(real.pg_restore).parent / tool))
    body = 'echo "pg_dump: dumped it, honest"' if output == "junk" else "true"
    script = fake / "pg_dump"
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = "--version" ]; then exec "{real.pg_dump}" --version; fi\n{body}\nexit 0\n'
    )
    script.chmod(0o755)
    r = seeded.cli("backup", "create", extra_env={"PGRUNBOOK_POSTGRES__BIN_DIR": str(fake)})
    assert_clean_error(
        r, r.returncode or 1, f"pg_dump at {script} wrote no archive (its output does not start with PGDMP"
    )
    assert r.returncode != 0
    assert "nothing of this backup was kept" in r.stderr
    assert "hint: " in r.stderr
    left = [p for p in seeded.storage.glob("default/*/*") if is_backup_id(p.parent.name)]
    assert left == []
    assert json.loads(seeded.cli("--json", "backup", "list").stdout) == []

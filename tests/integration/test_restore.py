"""restore into a new database and in place, against a real server and the real pg_restore."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgrunbook.backup.create import create_backup
from pgrunbook.backup.restore import restore_into_new_database
from pgrunbook.backup.restore_counts import EarlyCounts, LoadProgress, data_items
from pgrunbook.postgres.runner import child_env, connection
from pgrunbook.progress import no_progress
from tests import evidence
from tests.conftest import Project, assert_clean_error, fingerprint, suite_tools, wait_for

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


@pytest.mark.parametrize(("method", "temp"), [("stream", "auto"), ("parallel", "memory"), ("parallel", "disk")])
def test_restore_into_new_database_is_identical(seeded: Project, method: str, temp: str) -> None:
    seeded.write_config(f'[backup]\nstorage = "backups"\n[restore]\nmethod = "{method}"\njobs = 2\ntemp = "{temp}"\n')
    m = create_backup(seeded.env())
    name = f"restored_{method}_{temp}"
    r = seeded.cli("--json", "restore", m.id, "--into", name)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is True and out["database"] == name and out["backup_id"] == m.id
    assert out["method"].startswith(method)
    if method == "parallel":
        assert out["method"].endswith(f"archive in {'memory' if temp == 'memory' else 'a temp file'})")
    counted = next(c["detail"] for c in out["checks"] if c["name"] == "row counts")
    if method == "stream":  # no --verbose progress to count by
        assert "counted while" not in counted
    assert fingerprint(db_url(seeded, name)) == fingerprint(seeded.url)
    assert catalog(db_url(seeded, name)) == catalog(seeded.url)


@pytest.mark.parametrize("method", ["stream", "parallel"])
def test_a_restore_hands_the_terminal_what_pg_restore_is_doing(
    seeded: Project, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar during pg_restore, the longest step: the archive's bytes fed to it (stream), or the
    manifest's rows of each table pg_restore reports loaded and the items it is working on (parallel)."""
    seeded.write_config(f'[backup]\nstorage = "backups"\n[restore]\nmethod = "{method}"\njobs = 2\n')
    for key, value in seeded.environ.items():
        monkeypatch.setenv(key, value)
    env = seeded.env()
    m = create_backup(env)
    calls: list[tuple[int, int | None, str, str]] = []

    def record(stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
        if stage == "restore":
            calls.append((done, total, unit, note))

    restore_into_new_database(env, m.id, f"shown_{method}", progress=record)
    if method == "stream":
        assert calls[-1][:3] == (m.archive_size, m.archive_size, "bytes")
        assert [done for done, *_ in calls] == sorted(done for done, *_ in calls)
    else:
        rows = sum(t.rows for t in m.tables)
        assert calls[-1] == (rows, rows, "rows", "")
        assert calls[0][0] == 0 and calls[0][3] != ""  # the first item under way, named
        assert any(note.startswith("TABLE DATA ") for *_, note in calls)
        assert any("INDEX " in note or "CONSTRAINT " in note for *_, note in calls)


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
    assert_clean_error(seeded.cli("restore", m.id, "--into", "é" * 32), 3, "invalid database name", "(64 bytes)")
    assert_clean_error(seeded.cli("restore", m.id), 3, "exactly one of --into")


def test_runs_shows_why_a_run_failed_even_one_refused_before_any_step(seeded: Project) -> None:
    """trial11 F2: `pgrunbook runs` printed a refused restore as a bare "failed" (it has no steps); the
    reason was only in --json's detail."""
    m = create_backup(seeded.env())
    assert_clean_error(seeded.cli("restore", m.id, "--into", "postgres"), 3, "refusing to restore into")
    detail = json.loads(seeded.cli("--json", "runs").stdout)[0]["detail"]
    assert "refusing to restore into 'postgres'" in detail
    text = seeded.cli("runs").stdout
    first = text.splitlines()
    assert "restore" in first[0] and "failed" in first[0], text
    assert first[1] == f"      detail: {detail}", text


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
        "check swap",
        "maintenance on",
        "pre-restore backup",
        "check backup",
        "preflight",
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
    assert f"recovery: live: {live} is untouched" in r.stderr and "maintenance: off." in r.stderr
    assert fingerprint(seeded.url) == state
    runs = json.loads(seeded.cli("--json", "runs").stdout)
    assert runs[0]["outcome"] == "failed"
    assert [(s["name"], s["status"]) for s in runs[0]["steps"]] == [
        ("check backup", "succeeded"),
        ("check swap", "succeeded"),
        ("maintenance on", "failed"),
        ("maintenance off", "succeeded"),
    ]
    evidence.fault("maintenance hook failing during an in-place restore")


FRAMES_CONFIG = '[backup]\nstorage = "backups"\nzstd_frame_mb = 0.0625\n[restore]\nmethod = "parallel"\njobs = 2\n'


def test_multi_frame_backup_restores_in_parallel_exactly_and_by_hand(seeded: Project) -> None:
    """Small frames force the parallel decompression a large backup gets, on a test-sized database."""
    seeded.write_config(FRAMES_CONFIG)
    m = create_backup(seeded.env())
    assert len(m.frames) >= 3 and sum(raw for _, raw in m.frames) == m.archive_size
    dump = seeded.storage / "default" / m.id / m.file
    assert sum(stored for stored, _ in m.frames) == dump.stat().st_size
    r = seeded.cli("--json", "restore", m.id, "--into", "from_frames")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["method"].startswith("parallel")
    assert fingerprint(db_url(seeded, "from_frames")) == fingerprint(seeded.url)
    assert catalog(db_url(seeded, "from_frames")) == catalog(seeded.url)
    # still one ordinary zstd file: the standard tool reads all frames as one archive
    by_hand = subprocess.run(["zstd", "-dc", str(dump)], capture_output=True, check=True).stdout
    assert len(by_hand) == m.archive_size and by_hand[:5] == b"PGDMP"
    r = seeded.cli("--json", "backup", "verify", m.id, "--drill")
    assert r.returncode == 0, r.stderr


def test_a_backup_cut_between_two_frames_fails_before_any_database_is_created(seeded: Project) -> None:
    """zstd alone sees a complete stream when it is cut at a frame boundary; the frame table does not."""
    seeded.write_config(FRAMES_CONFIG)
    m = create_backup(seeded.env())
    dump = seeded.storage / "default" / m.id / m.file
    dump.write_bytes(dump.read_bytes()[: sum(stored for stored, _ in m.frames[:2])])
    before = databases(seeded)
    r = seeded.cli("restore", m.id, "--into", "never_created")
    assert_clean_error(r, 2, "failed its integrity check", "no database was created or changed")
    assert databases(seeded) == before
    r = seeded.cli("--json", "backup", "verify", m.id)
    assert r.returncode != 0 and "holds 2 frames" in r.stdout + r.stderr


def _check_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pgrunbook-check"]


def test_the_backup_is_read_back_while_the_tools_are_chosen(seeded: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check's read-back (hash and decompression) starts before the tools are chosen and runs
    beside it: the choice (a connection, a version probe) no longer waits in line. The real storage
    read and the real choice of tools are wrapped only to see when each runs."""
    import pgrunbook.backup.restore as restore_module

    seeded.write_config(FRAMES_CONFIG)
    for key, value in seeded.environ.items():
        monkeypatch.setenv(key, value)
    env = seeded.env()
    m = create_backup(env)
    reading = threading.Event()
    read = env.storage.read

    def watched(key: str, *args: Any) -> Iterator[bytes]:
        if key.endswith(m.file):  # the backup itself, not its manifest
            reading.set()
        yield from read(key, *args)

    monkeypatch.setattr(env.storage, "read", watched)
    choose = restore_module.tools_to_restore
    seen: list[bool] = []

    def choose_watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(reading.wait(30))  # sequential (check after the tools): never set while choosing
        return choose(*args, **kwargs)

    monkeypatch.setattr(restore_module, "tools_to_restore", choose_watched)
    report = restore_into_new_database(env, m.id, "read_beside_tools")
    assert seen == [True] and report.verified
    assert fingerprint(db_url(seeded, "read_beside_tools")) == fingerprint(seeded.url)
    assert _check_threads() == []


def test_the_decompressed_archive_is_freed_while_the_restore_is_verified(
    seeded: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once pg_restore has ended its input is freed (the memory of a large archive takes a while to give
    back) while the verification runs, not after it. The real verification is wrapped only to look at
    this process's open files meanwhile."""
    import os

    import pgrunbook.backup.restore as restore_module

    seeded.write_config(FRAMES_CONFIG.replace('method = "parallel"', 'method = "parallel"\ntemp = "memory"'))
    for key, value in seeded.environ.items():
        monkeypatch.setenv(key, value)
    env = seeded.env()
    m = create_backup(env)

    def archives_open() -> list[str]:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return [link for link in links if f"pgrunbook-restore-{m.id}" in link]

    real_verify = restore_module.verify_restored
    seen: list[bool] = []

    def verify_watched(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + 10
        while archives_open() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(not archives_open())
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(restore_module, "verify_restored", verify_watched)
    report = restore_into_new_database(env, m.id, "freed_early")
    assert report.verified and report.method.endswith("archive in memory)")
    assert seen == [True] and archives_open() == []


@pytest.mark.parametrize("damaged", [False, True])
def test_tools_that_cannot_restore_stop_the_read_back_begun_beside_them(
    seeded: Project, tmp_path: Path, damaged: bool
) -> None:
    """The read-back began before the tools were chosen; when no pg_restore here can restore, the error
    is that (what to install), never a damaged backup, even when the backup is damaged too: the checks
    of a read-back that was abandoned are not reported. The temporary archive is removed and no
    database created."""
    seeded.write_config(FRAMES_CONFIG.replace('method = "parallel"', 'method = "parallel"\ntemp = "disk"'))
    m = create_backup(seeded.env())
    if damaged:
        dump = seeded.storage / "default" / m.id / m.file
        data = bytearray(dump.read_bytes())
        data[len(data) // 3] ^= 0xFF
        dump.write_bytes(bytes(data))
    (tmp_path / "empty-bin").mkdir()
    (tmp_path / "tmp").mkdir()
    before = databases(seeded)
    r = seeded.cli(
        "restore", m.id, "--into", "never_created",
        extra_env={"PGRUNBOOK_POSTGRES__BIN_DIR": str(tmp_path / "empty-bin"), "TMPDIR": str(tmp_path / "tmp")},
    )  # fmt: skip
    assert_clean_error(r, 2, "not found in")
    assert "integrity" not in r.stderr and "damaged" not in r.stderr
    assert list((tmp_path / "tmp").iterdir()) == []
    assert databases(seeded) == before


def test_a_damaged_backup_read_back_beside_the_tools_leaves_no_file_and_no_database(
    seeded: Project, tmp_path: Path
) -> None:
    """The read-back that ran beside the choice of tools found damage: reported exactly as before (the
    integrity check, nothing created), and its temporary archive removed."""
    seeded.write_config(FRAMES_CONFIG.replace('method = "parallel"', 'method = "parallel"\ntemp = "disk"'))
    m = create_backup(seeded.env())
    dump = seeded.storage / "default" / m.id / m.file
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    (tmp_path / "tmp").mkdir()
    before = databases(seeded)
    r = seeded.cli("restore", m.id, "--into", "never_created", extra_env={"TMPDIR": str(tmp_path / "tmp")})
    assert_clean_error(r, 2, "failed its integrity check", "no database was created or changed")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert databases(seeded) == before


@pytest.mark.parametrize("early", [True, False])
def test_the_table_of_contents_is_read_from_the_first_frame_while_the_rest_decompresses(
    seeded: Project, monkeypatch: pytest.MonkeyPatch, early: bool
) -> None:
    """The check's `pg_restore --list` reads the first frame's bytes while the other frames are still
    being decompressed, and gives exactly the whole file's table of contents; when the table of contents
    does not fit in what was kept (here: 64 bytes), the whole file's is read afterwards, as before. The
    real runner is wrapped only to see which `--list` ran."""
    import pgrunbook.backup.restore_archive as restore_archive
    from pgrunbook.backup.restore_archive import CheckedArchive
    from pgrunbook.postgres import runner

    seeded.write_config(FRAMES_CONFIG)
    for key, value in seeded.environ.items():
        monkeypatch.setenv(key, value)
    env = seeded.env()
    m = create_backup(env)
    assert len(m.frames) >= 3
    if not early:
        monkeypatch.setattr(restore_archive, "EARLY_LIST_MAX", 64)
    whole_file_lists: list[list[str]] = []
    real_run = runner.run

    def watched(binary: Path, args: list[str], **kwargs: Any) -> tuple[int, str, list[str]]:
        whole_file_lists.append(list(args))
        return real_run(binary, args, **kwargs)

    monkeypatch.setattr(runner, "run", watched)
    archive = CheckedArchive(env, m, no_progress, workers=2).start()
    try:
        checks = archive.check(suite_tools())
        assert [c.name for c in checks] == ["size", "checksum", "compression", "archive"] and all(c.ok for c in checks)
        assert len(whole_file_lists) == (0 if early else 1)
        rc, whole, _ = real_run(suite_tools().pg_restore, ["--list", archive.path], inherit_fds=archive.inherit_fds)
        assert rc == 0 and archive.listing == whole and " TABLE DATA " in whole
    finally:
        archive.cleanup()


@pytest.mark.parametrize("temp", ["memory", "disk"])
def test_the_archive_is_emptied_once_pg_restore_has_read_every_table_and_the_restore_still_verifies(
    seeded: Project, monkeypatch: pytest.MonkeyPatch, temp: str
) -> None:
    """A parallel restore held the whole decompressed archive (memory or disk) until pg_restore exited,
    through the index builds that read nothing from it. It is now emptied as soon as every table's data
    is in: once per restore, while pg_restore still runs, and the restore is as exact as before. The
    real release is wrapped only to see when it ran and what it left."""
    from pgrunbook.backup.restore_archive import CheckedArchive

    seeded.write_config(FRAMES_CONFIG + f'temp = "{temp}"\n')
    m = create_backup(seeded.env())
    seen: list[tuple[int, bool]] = []
    real = CheckedArchive.release_data

    def watched(self: CheckedArchive) -> None:
        real(self)
        size = os.fstat(self.fd).st_size if self.fd is not None else os.stat(self.path).st_size
        restoring = any(p.name == "pg_restore" for p in _children())
        seen.append((size, restoring))

    monkeypatch.setattr(CheckedArchive, "release_data", watched)
    report = restore_into_new_database(seeded.env(), m.id, f"released_{temp}")
    assert report.verified and seen == [(0, True)], seen
    assert fingerprint(db_url(seeded, f"released_{temp}")) == fingerprint(seeded.url)


def _children() -> list[Path]:
    """The executables of this process's child processes (Linux /proc)."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] == me:
                found.append(Path(os.readlink(stat.parent / "exe")))
        except OSError:
            continue
    return found


def test_a_backup_from_before_frames_still_restores(seeded: Project) -> None:
    """Manifests written before the frame table have none: the archive is decompressed in one thread."""
    seeded.write_config(FRAMES_CONFIG.replace("zstd_frame_mb = 0.0625\n", ""))
    m = create_backup(seeded.env())
    path = seeded.storage / "default" / m.id / "manifest.json"
    old = json.loads(path.read_text())
    del old["frames"]
    path.write_text(json.dumps(old))
    r = seeded.cli("--json", "restore", m.id, "--into", "from_old")
    assert r.returncode == 0, r.stderr
    assert fingerprint(db_url(seeded, "from_old")) == fingerprint(seeded.url)


def test_a_backup_written_at_the_former_level_restores_and_the_default_is_smaller(seeded: Project) -> None:
    """Backups taken before zstd level 2 became the default (level 1, same frames, same manifest) restore
    exactly; the default now writes a smaller file of the same archive."""
    seeded.write_config(FRAMES_CONFIG.replace("zstd_frame_mb = 0.0625\n", "zstd_level = 1\n"))
    old = create_backup(seeded.env())
    r = seeded.cli("--json", "restore", old.id, "--into", "from_level_1")
    assert r.returncode == 0, r.stderr
    assert fingerprint(db_url(seeded, "from_level_1")) == fingerprint(seeded.url)
    seeded.write_config(FRAMES_CONFIG.replace("zstd_frame_mb = 0.0625\n", ""))
    new = create_backup(seeded.env())
    assert new.archive_size == old.archive_size
    assert new.size < old.size, (new.size, old.size)


class _Recorder(EarlyCounts):
    """EarlyCounts keeping what it learns from pg_restore's lines, without counting."""

    launched: set[int]

    def _work(self) -> None:
        pass

    def line(self, text: str) -> None:
        if text.startswith("pg_restore: launching item "):
            self.launched.add(int(text.split()[3]))
        super().line(text)


def test_real_pg_restore_progress_drives_the_early_counts(seeded: Project, tmp_path: Path) -> None:
    """pg_restore's own --verbose lines (not a hand-written copy of them) are what EarlyCounts reads:
    every launched item is seen finished, and every table's data is seen loaded."""
    env = seeded.env()
    m = create_backup(env)
    archive = tmp_path / "archive.dump"
    dump = next(seeded.storage.rglob("db.dump.zst"))
    subprocess.run(["zstd", "-q", "-d", str(dump), "-o", str(archive)], check=True)
    tools = suite_tools()
    listing = subprocess.run([str(tools.pg_restore), "--list", str(archive)], capture_output=True, text=True).stdout
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE progress_lines")
    target = env.target(direct=True).with_dbname("progress_lines")
    rec = _Recorder(target, data_items(listing, m), jobs=2)
    rec.launched = set()
    proc = subprocess.run(
        [str(tools.pg_restore), "--no-owner", "--verbose", "--jobs=2", f"--dbname={target.conninfo()}", str(archive)],
        env=child_env(connection(target).env),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    load = LoadProgress(data_items(listing, m), m.row_counts(), no_progress)
    for text in proc.stderr.splitlines():
        rec.line(text)
        load.line(text)
    rec.abandon()
    assert rec.launched and rec._running == set(), proc.stderr  # each launch matched by its finish
    assert sorted(rec._loaded) == sorted((t.schema_, t.name) for t in m.tables)
    # the terminal's bar reached every row of the backup from pg_restore's own lines, with nothing
    # left shown as running
    assert load.loaded == load.total == sum(t.rows for t in m.tables) > 0 and load.running == {}


def test_a_failed_restore_is_not_kept_waiting_by_a_count_in_progress(seeded: Project) -> None:
    """abandon() (pg_restore failed or pgrunbook is interrupted) cancels the count running on the
    server instead of waiting for it: on a large table that wait would be minutes."""
    target = seeded.env().target(direct=True)
    with psycopg.connect(seeded.url) as blocker:
        blocker.execute("LOCK TABLE public.account IN ACCESS EXCLUSIVE MODE")  # the count waits behind it
        release = threading.Timer(8, blocker.rollback)  # without the cancel, abandon() would wait this long
        counts = EarlyCounts(target, {1: ("public", "account")}, jobs=2)
        counts.line("pg_restore: finished item 1 TABLE DATA account")
        with psycopg.connect(seeded.url, autocommit=True) as watch:
            wait_for(
                lambda: (
                    watch.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND query LIKE '%count(*)%'"
                    ).fetchone()
                    == (1,)
                ),
                what="the count waiting on the lock",
            )
        release.start()
        t0 = time.monotonic()
        counts.abandon()
        took = time.monotonic() - t0
        release.cancel()
    assert took < 3, took
    assert counts.counts == {}


def test_in_place_restore_of_latest_restores_the_latest_backup_not_its_own_pre_restore(seeded: Project) -> None:
    """trial7 finding 2: ``restore latest --in-place`` took its pre-restore backup (the current, bad
    state), resolved ``latest`` again and restored that: nothing was undone, success was reported.
    ``latest`` is now resolved once, first, and for an in-place restore never names a pre-restore
    backup (a second ``restore latest --in-place`` restores the good backup again, not the state
    before the first restore); by its id a pre-restore backup is restored."""
    _hooks_config(seeded, protected=False)
    good = create_backup(seeded.env(), label="good")
    good_state = fingerprint(seeded.url)
    live = seeded.url.rsplit("/", 1)[1]
    for _ in range(2):  # the second time, the newest backup is the first run's pre-restore backup
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute("INSERT INTO account (email) VALUES ('BAD-ROW')")
        r = seeded.cli("--json", "restore", "latest", "--in-place", "--confirm", live)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["backup_id"] == good.id and out["pre_restore_backup"] != good.id
        assert fingerprint(seeded.url) == good_state
        runs = json.loads(seeded.cli("--json", "runs").stdout)
        assert good.id in json.dumps(runs[0])
    # by its id, the pre-restore backup (the bad state) is what is restored
    pre = out["pre_restore_backup"]
    r = seeded.cli("--json", "restore", pre, "--in-place", "--confirm", live)
    assert r.returncode == 0 and json.loads(r.stdout)["backup_id"] == pre, r.stderr
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT count(*) FROM account WHERE email = 'BAD-ROW'").fetchone() == (1,)
    # restore --into latest still takes the newest backup of any label
    r = seeded.cli("--json", "restore", "latest", "--into", "latest_copy")
    assert r.returncode == 0 and json.loads(r.stdout)["backup_id"] != good.id, r.stderr


def test_in_place_restore_never_reuses_names_that_exist_in_the_same_second(seeded: Project) -> None:
    """CI stop 26: two in-place restores within one second chose the same ``<db>_replaced_<second>`` and
    the second failed at the swap, after the whole restore. The names are now the first second whose
    staging and replaced databases are both free; here every replaced name of the next 20 seconds is
    already taken (by databases that are not the live one's) and the restore still swaps, under a name
    past them, leaving them as they were."""
    _hooks_config(seeded, protected=False)
    create_backup(seeded.env(), label="good")
    live = seeded.url.rsplit("/", 1)[1]
    start = datetime.now(UTC)
    taken = [f"{live}_replaced_{start + timedelta(seconds=s):%Y%m%d%H%M%S}" for s in range(20)]
    with psycopg.connect(seeded.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        for name in taken:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0'.encode())
    try:
        r = seeded.cli("--json", "restore", "latest", "--in-place", "--confirm", live)
        assert r.returncode == 0, r.stderr
        replaced = json.loads(r.stdout)["replaced_database"]
        assert replaced.startswith(f"{live}_replaced_") and replaced > taken[-1]
        with psycopg.connect(seeded.url.rsplit("/", 1)[0] + "/postgres") as conn:
            there = {str(row[0]) for row in conn.execute("SELECT datname FROM pg_database").fetchall()}
        assert set(taken) <= there and replaced in there
    finally:
        with psycopg.connect(seeded.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            for name in taken:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"'.encode())


# --- a read query that fails is the query's problem, not the backup's (trial8 #8) ---------------------

READ_QUERY_CONFIG = '[backup]\nstorage = "backups"\n[environments.default]\nread_query = "{query}"\n'


def _comment(project: Project, name: str) -> str:
    with psycopg.connect(project.url) as conn:
        row = conn.execute(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return str(row[0]) if row else ""


def test_a_failing_read_query_blames_the_query_and_keeps_the_verified_copy(seeded: Project) -> None:
    """trial8 #8: a read query that fails (a missing table) on a restored copy was reported as "differs
    from the backup" and the good copy dropped. It is the query's problem: the error names the query's
    own error, the hint says to fix read_query, the copy (rows equal to the backup) is kept, unused."""
    seeded.write_config(READ_QUERY_CONFIG.format(query="SELECT count(*) FROM no_such_table"))
    backup_id = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    into = seeded.cli("restore", backup_id, "--into", "rq_copy")
    try:
        assert_clean_error(into, 2, "read query", 'relation "no_such_table" does not exist', "rq_copy")
        assert "differs from the backup" not in into.stderr and "damaged" not in into.stderr
        hint = next(ln for ln in into.stderr.splitlines() if ln.startswith("hint: "))
        assert "read_query" in hint and "pgrunbook health" in hint and 'DROP DATABASE "rq_copy"' in hint
        assert "rq_copy" in databases(seeded), "the verified copy was dropped"
        assert fingerprint(db_url(seeded, "rq_copy")) == fingerprint(seeded.url)
        comment = _comment(seeded, "rq_copy")
        assert comment.startswith(f"pgrunbook: restored from backup {backup_id}") and "read query failed" in comment
        assert "unfinished" not in comment  # not taken for a killed restore's leftover, never swept
        # the same name again: an existing non-empty database, refused as any other
        again = seeded.cli("restore", backup_id, "--into", "rq_copy")
        assert_clean_error(again, 2, "already exists and is not empty")
    finally:
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "rq_copy" WITH (FORCE)')


def test_a_recovery_whose_read_query_fails_names_the_rename_that_finishes_it(seeded: Project) -> None:
    """breaker13 N8: recreating a lost database whose copy verifies but whose read query fails keeps the
    copy under its staging name; the hint gave only the DROP. It now gives the ALTER DATABASE … RENAME
    that finishes the recovery by hand, and that statement works."""
    before = fingerprint(seeded.url)
    seeded.write_config(READ_QUERY_CONFIG.format(query="SELECT count(*) FROM no_such_table"))
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    live, server = _lose(seeded)
    r = seeded.cli("restore", bid, "--into", live)
    assert_clean_error(r, 2, "read query", f"the recovery's staging copy of the lost database {live}")
    hint = next(ln for ln in r.stderr.splitlines() if ln.startswith("hint: "))
    rename = hint.split("as an admin: ", 1)[1].split("; or drop", 1)[0]
    assert rename.startswith(f'ALTER DATABASE "{live}_restore_') and rename.endswith(f' RENAME TO "{live}"'), hint
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(rename.encode())
    assert fingerprint(seeded.url) == before


def test_a_drill_whose_read_query_fails_does_not_call_the_backup_damaged(seeded: Project) -> None:
    """trial8 #8, the drill: a read query with an SQL error is reported as such, never as damage."""
    seeded.write_config(READ_QUERY_CONFIG.format(query="SELEC 1"))
    backup_id = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    drill = seeded.cli("backup", "verify", backup_id, "--drill")
    assert drill.returncode == 2, drill.stdout + drill.stderr
    errors = [ln for ln in drill.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "read query" in errors[0] and 'syntax error at or near "SELEC"' in errors[0]
    assert "could not restore" not in errors[0] and "do not rely on it" not in drill.stderr
    assert "read_query" in drill.stderr and "damaged" not in drill.stderr
    data = json.loads(seeded.cli("--json", "backup", "verify", backup_id, "--drill").stdout)
    assert data["damaged"] is False and data["cause"]["kind"] == "read query"
    checks = {c["name"]: c["ok"] for c in data["checks"]}
    assert checks["checksum"] and checks["drill restore"] and checks["row counts"] and not checks["read query"]


def test_a_database_created_by_another_restore_meanwhile_is_not_a_createdb_problem(seeded: Project) -> None:
    """trial8 #7: two restores --into one name; the second looked while the name was free, and its
    CREATE DATABASE then failed: it was told to grant CREATEDB. It now says another session created it
    (the marker's pid when written). The window is taken deterministically: the name is created (and
    marked, as the first restore does) between the second's look and its CREATE."""
    from pgrunbook.backup.restore_database import create_database, marker
    from pgrunbook.errors import DatabaseError
    from pgrunbook.postgres.connect import connect

    server = seeded.env().target(direct=True)
    with psycopg.connect(seeded.url, autocommit=True) as other:
        other.execute('CREATE DATABASE "raced"')
        other.execute(psycopg.sql.SQL("COMMENT ON DATABASE raced IS {}").format(psycopg.sql.Literal(marker("b1"))))
    try:
        with connect(server, purpose="test") as admin, pytest.raises(DatabaseError) as err:
            create_database(admin, server, "raced")
        assert "created by another session" in err.value.message and "pid " in err.value.message
        assert "CREATEDB" not in (err.value.hint or "") and "wait for that restore" in (err.value.hint or "")
    finally:
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "raced"')


# What the loser of two restores into one new name may say, by where the other one was when it looked:
# holding the name (its session's lock), its database created and marked, or created a moment before
# the loser's own CREATE DATABASE. Each names the other's pid and says nothing was changed.
RACE_LOST = (
    r"^error: database '(?P<name>\w+)' is being restored right now by another restore into the same name "
    r"\(pid \d+, .*\); nothing was changed$",
    r"^error: database '(?P<name>\w+)' is being restored right now \(unfinished restore of .* by pid \d+ on .*\); "
    r"nothing was changed$",
    r"^error: database '(?P<name>\w+)' was just created by another session \(pid \d+ on .*\), probably another "
    r"restore into the same name; nothing was changed$",
)


@pytest.mark.parametrize("round_", range(1, 5))
def test_two_restore_processes_into_one_new_name_exactly_one_wins(seeded: Project, round_: int) -> None:
    """trial #5: two real `pgrunbook restore ID --into same` processes started at once (the earlier test
    takes the window with a second connection). Whichever wins restores and verifies; the other fails
    with one error line naming the race and the other's pid, exit 2, and leaves the winner's database as
    the winner made it (not dropped, not restored into twice). Four rounds: either may win. Before, the
    loser's CREATE DATABASE, in flight beside the winner's, failed on pg_database's unique index and was
    told "cannot create database … grant CREATEDB" (3 rounds of 12 here)."""
    import re

    with psycopg.connect(seeded.url, autocommit=True) as conn:  # a restore that takes a moment
        conn.execute("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g")
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    name = f"raced_{round_}"
    argv = [sys.executable, "-m", "pgrunbook", "--json", "restore", bid, "--into", name]
    procs = [
        subprocess.Popen(
            argv, cwd=seeded.root, env=seeded.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        codes = sorted(r[0] for r in results)
        assert codes == [0, 2], results
        (_, won_out, _), (_, lost_out, lost_err) = sorted(results, key=lambda r: r[0])
        lines = [ln for ln in lost_err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        assert len(errors) == 1 and lines[0] == errors[0] and lost_out == "", lost_err
        assert any(re.match(p, errors[0]) for p in RACE_LOST), errors[0]
        assert f"'{name}'" in errors[0] and "Traceback" not in lost_err
        assert lines[-1] == "hint: wait for that restore, or choose another name for --into", lost_err
        report = json.loads(won_out)
        assert report["database"] == name and report["verified"] is True
        # the winner's database: whole, verified, marked by the winner, as if it had been alone
        assert fingerprint(seeded.url.rsplit("/", 1)[0] + "/" + name) == fingerprint(seeded.url)
        with psycopg.connect(seeded.url) as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
        assert row is not None and str(row[0]).startswith(f"pgrunbook: restored from backup {bid}, verified ")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
            )


def test_a_name_held_by_another_restore_is_refused_before_anything(seeded: Project) -> None:
    """The name's lock (claim_name) held by another session, as a restore into it holds it from its first
    look to its end: a restore --into that name stops, naming that session's pid, and creates nothing."""
    from pgrunbook.backup.restore_database import claim_name

    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    with psycopg.connect(seeded.url, autocommit=True, application_name="pgrunbook restore other") as other:
        claim_name(other, "held_name")
        r = seeded.cli("restore", bid, "--into", "held_name")
        assert_clean_error(
            r, 2, "database 'held_name' is being restored right now by another restore into the same name "
            f"(pid {other.info.backend_pid}, pgrunbook restore other, since ", "); nothing was changed",
        )  # fmt: skip
        assert r.stderr.splitlines()[-1] == "hint: wait for that restore, or choose another name for --into"
        exists = other.execute("SELECT 1 FROM pg_database WHERE datname = 'held_name'").fetchone()
        assert exists is None
    r = seeded.cli("restore", bid, "--into", "held_name")  # the lock went with its session
    assert r.returncode == 0, r.stderr
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "held_name" WITH (FORCE)')


def test_an_app_left_on_a_restore_older_than_the_code_is_told_which_migrations_it_lacks(project: Project) -> None:
    """trial11 F21: an in-place restore of a backup taken before the newest migrations put the app on a
    schema its code does not match, and nothing said so. The restore says which migrations of the
    checkout the database lacks and the two ways forward; a restore the app does not run on (--into,
    no --point-app) and one at the checkout's head say nothing."""
    from tests.integration.test_migrate import make_migrations

    live = project.url.rsplit("/", 1)[1]
    make_migrations(project, {"20260101000000_a": "CREATE TABLE a (id int); INSERT INTO a VALUES (1), (2);"})
    assert project.cli("migrate", "deploy").returncode == 0
    old = json.loads(project.cli("--json", "backup", "create").stdout)["id"]
    make_migrations(project, {f"2026010{i}000000_{n}": f"CREATE TABLE {n} (id int);" for i, n in ((2, "b"), (3, "c"))})
    assert project.cli("migrate", "deploy").returncode == 0
    head = json.loads(project.cli("--json", "backup", "create").stdout)["id"]

    into = project.cli("--json", "restore", old, "--into", f"{live}_aside")
    assert into.returncode == 0, into.stderr
    assert json.loads(into.stdout)["warnings"] == []
    back = project.cli("restore", old, "--in-place", "--confirm", live)
    assert back.returncode == 0, back.stderr
    said = f"{live} has not applied 2 migration(s) of this checkout (20260102000000_b, 20260103000000_c)"
    assert f"warning: {said}" in back.stderr.replace("\n", " ")
    assert (
        "pgrunbook rollback --app-only --env default" in back.stderr and "migrate deploy --env default)" in back.stderr
    )
    again = project.cli("--json", "restore", head, "--in-place", "--confirm", live)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["warnings"] == []
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{live}_aside"')


def test_a_lost_database_is_recreated_by_restoring_into_its_own_name(seeded: Project) -> None:
    """trial11 F18, the disaster-recovery path: with the environment's database dropped, every restore
    failed to connect to it ("database … does not exist"), and `--into` its own name was refused as
    "this environment's own database". Now the restore works from the server's maintenance database
    (as createdb does), `--into` its own name recreates it exactly, an in-place restore of the missing
    database is refused before anything with that hint, and doctor's connection line points there."""
    before = fingerprint(seeded.url)
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    live, server = _lose(seeded)
    with psycopg.connect(server) as conn:
        databases = {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    doctor = json.loads(seeded.cli("--json", "doctor").stdout)["checks"]
    connection = next(c for c in doctor if c["name"] == "connection")
    assert connection["status"] == "failed" and f"restore latest --into {live} --env default" in connection["hint"]
    # breaker13 F4: the commands an on-call engineer reaches for first name the recovery too
    for args in (("backup", "create"), ("backup", "verify", bid, "--drill")):
        lost = seeded.cli(*args)
        assert_clean_error(lost, 2, f"database {live!r} does not exist")
        assert f"if it was lost, pgrunbook restore latest --into {live} --env default recreates it" in lost.stderr
        # breaker13 N2: "or create it" alone led to an empty database under the name, not the recovery
        assert "or create it if it is a new one; if it was lost, pgrunbook restore latest" in lost.stderr
    refused = seeded.cli("restore", bid, "--in-place", "--confirm", live)
    assert_clean_error(refused, 2, f"in-place restore replaces database {live!r}, which does not exist")
    assert f"hint: recreate it from the backup: pgrunbook restore {bid} --into {live} --env default" in refused.stderr
    with psycopg.connect(server) as conn:
        assert {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database").fetchall()} == databases
    pointed = seeded.cli("restore", "latest", "--into", live, "--point-app")
    assert_clean_error(pointed, 3, "--point-app: ", "there is nothing to point")
    assert f"hint: pgrunbook restore latest --into {live} --env default (without --point-app)" in pointed.stderr
    back = seeded.cli("--json", "restore", "latest", "--into", live)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["backup_id"] == bid and json.loads(back.stdout)["verified"]
    assert json.loads(back.stdout)["database"] == live
    assert fingerprint(seeded.url) == before
    # restored under a staging name, renamed once verified: the app never saw a partial database
    steps = json.loads(seeded.cli("--json", "runs", "--limit", "1").stdout)[0]["steps"]
    rename = next(s for s in steps if s["name"] == "rename")
    assert rename["detail"].startswith(f"{live}_restore_") and rename["detail"].endswith(f" -> {live}")
    with psycopg.connect(server) as conn:
        assert {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database").fetchall()} == databases | {live}
    # once it exists again it is the environment's own database, refused as before
    assert_clean_error(seeded.cli("restore", bid, "--into", live), 3, "it is this environment's own database")


@pytest.mark.parametrize("leftover", ["", "CREATE TYPE mood AS ENUM ('ok', 'sad')"], ids=["empty", "a type only"])
def test_a_lost_database_made_again_empty_is_set_aside_never_restored_into(seeded: Project, leftover: str) -> None:
    """breaker13 N2: the hint's "or create it" led to an empty database under the lost name, which the
    recovery refused as "this environment's own database". breaker14: restoring straight into it left a
    partial database under the app's name when killed, mixed in what the app wrote meanwhile, and failed
    on a type made there. Now the recovery restores under its staging name as for a missing database and
    then, in one transaction, sets the empty one aside (kept, with whatever it held) and takes the name."""
    before = fingerprint(seeded.url)
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    live, server = _lose(seeded)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{live}"'.encode())
    if leftover:
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute(leftover.encode())
    with psycopg.connect(seeded.url) as app:  # the app connected to the empty database: refused, nothing made
        busy = seeded.cli("restore", "latest", "--into", live)
        assert_clean_error(busy, 2, f"{live} exists, empty, and 1 session(s) use it")
        app.rollback()
    assert [n for n in databases(seeded) if n.startswith(f"{live}_")] == []
    r = seeded.cli("--json", "restore", "latest", "--into", live)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["backup_id"] == bid and out["database"] == live and out["verified"]
    assert fingerprint(seeded.url) == before
    [aside] = [n for n in databases(seeded) if n.startswith(f"{live}_replaced_")]
    assert f"the empty database that held the name {live} is kept as {aside}" in " ".join(out["warnings"])
    if leftover:  # what the empty one held is kept with it
        with psycopg.connect(db_url(seeded, aside)) as conn:
            assert conn.execute("SELECT count(*) FROM pg_type WHERE typname = 'mood'").fetchone() == (1,)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{aside}"'.encode())


def test_a_database_set_aside_is_called_empty_only_when_it_still_is(
    seeded: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """breaker14b B2: a session wrote into the empty database after the last check and before the rename
    (it can: the rename waits for sessions to end); the warning called it empty and gave its DROP. The
    database set aside is looked at after the rename. The late write is made here by wrapping the real
    rename; everything else is the real recovery on the real server."""
    import pgrunbook.procedures.restore as procedure
    from pgrunbook.journal import Journal, journal_path

    for key, value in seeded.environ.items():
        monkeypatch.setenv(key, value)
    json.loads(seeded.cli("--json", "backup", "create").stdout)
    live, server = _lose(seeded)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{live}"'.encode())
    real = procedure.set_aside

    def late_write(conn: psycopg.Connection, name: str, staging: str, aside: str) -> None:
        with psycopg.connect(seeded.url, autocommit=True) as app:
            app.execute("CREATE TABLE written_late (id int); INSERT INTO written_late VALUES (1)")
        real(conn, name, staging, aside)

    monkeypatch.setattr(procedure, "set_aside", late_write)
    env = seeded.env()
    journal = Journal(journal_path(env.config))
    try:
        report, _ = procedure.restore(env, journal, "latest", into=live)
    finally:
        journal.close()
    [aside] = [n for n in databases(seeded) if n.startswith(f"{live}_replaced_")]
    [note] = [w for w in report.warnings if aside in w]
    assert "it is NOT empty: something wrote to it while the recovery ran" in note and "DROP" not in note
    with psycopg.connect(db_url(seeded, aside)) as conn:
        assert conn.execute("SELECT count(*) FROM written_late").fetchone() == (1,)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{aside}"'.encode())


def test_recreating_a_lost_database_takes_the_newest_backup_that_is_not_a_pre_restore_one(seeded: Project) -> None:
    """breaker13 F11: `restore latest --into <its own name>` took the newest backup of any label: the
    pre-restore backup an earlier in-place restore took, holding the very state that restore replaced
    (or an empty database). Like --in-place, recreating skips pre-restore backups for `latest`."""
    _hooks_config(seeded, protected=False)
    good = create_backup(seeded.env(), label="good")
    good_state = fingerprint(seeded.url)
    live = seeded.url.rsplit("/", 1)[1]
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute("INSERT INTO account (email) VALUES ('BAD-ROW')")
    r = seeded.cli("--json", "restore", good.id, "--in-place", "--confirm", live)
    assert r.returncode == 0, r.stderr
    pre = json.loads(r.stdout)["pre_restore_backup"]
    server = seeded.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{live}" WITH (FORCE)'.encode())
    back = seeded.cli("--json", "restore", "latest", "--into", live)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["backup_id"] == good.id != pre
    assert fingerprint(seeded.url) == good_state


def test_a_killed_recovery_of_a_lost_database_leaves_no_partial_database_under_its_name(seeded: Project) -> None:
    """breaker13 F1: the recovery restored straight into the app's database name; killed, it left a
    half-restored database there that the app could use and that the same command then refused as "this
    environment's own database". Now it restores under a staging name and renames once verified: killed,
    the name stays free, and the same command recovers."""
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO billing.invoice (account_id, amount, note) SELECT 1 + g % 500, g, md5(g::text) "
            "FROM generate_series(1, 400000) g"
        )
    before = fingerprint(seeded.url)
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    live, server = _lose(seeded)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "restore", bid, "--into", live],
        cwd=seeded.root,
        env=seeded.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    staging = "SELECT datname FROM pg_database WHERE starts_with(datname, %s)"
    with psycopg.connect(server, autocommit=True) as conn:
        try:
            wait_for(lambda: conn.execute(staging, (f"{live}_restore_",)).fetchone() or proc.poll() is not None, 60)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (live,)).fetchone() is None
        left = [str(r[0]) for r in conn.execute(staging, (f"{live}_restore_",)).fetchall()]
    again = seeded.cli("--json", "restore", bid, "--into", live)
    assert again.returncode == 0, again.stderr
    assert fingerprint(seeded.url) == before
    assert left  # killed while it restored under the staging name
    checks = json.loads(seeded.cli("--json", "doctor").stdout)["checks"]
    leftovers = next(c for c in checks if c["name"] == "leftovers")
    assert leftovers["status"] == "warning", leftovers  # breaker13 N11: it said "in-place restore" alone
    assert (
        f"interrupted restore of {live} (in place, or recreating it after it was lost): {left[0]}"
        in leftovers["detail"]
    )
    with psycopg.connect(server, autocommit=True) as conn:
        for name in left:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def test_the_warning_after_a_restore_names_a_migration_that_failed_in_the_restored_database(project: Project) -> None:
    """breaker13 F7: a backup taken while a migration stood failed, restored in place: the warning left the
    failed migration out and offered `migrate deploy`, which then stops with P3009."""
    from tests.integration.test_migrate import make_migrations

    live = project.url.rsplit("/", 1)[1]
    folder = make_migrations(project, {"20260101000000_a": "CREATE TABLE a (id int); INSERT INTO a VALUES (1);"})
    assert project.cli("migrate", "deploy").returncode == 0
    make_migrations(project, {"20260102000000_b": "CREATE TABLE b (id int);\nSELECT 1/0;"})
    assert project.cli("migrate", "deploy").returncode == 2
    failed_state = json.loads(project.cli("--json", "backup", "create").stdout)["id"]
    assert project.cli("migrate", "resolve", "--rolled-back", "20260102000000_b").returncode == 0
    (folder / "20260102000000_b" / "migration.sql").write_text("CREATE TABLE b (id int);\n")
    assert project.cli("migrate", "deploy").returncode == 0
    r = project.cli("--json", "restore", failed_state, "--in-place", "--confirm", live)
    assert r.returncode == 0, r.stderr
    [warning] = json.loads(r.stdout)["warnings"]
    assert warning.startswith(f"{live} has not applied 1 migration(s) of this checkout (20260102000000_b); ")
    assert "20260102000000_b failed there: resolve it first (pgrunbook status shows how)" in warning


def test_a_role_without_connect_on_the_postgres_database_restores_in_place_and_recreates(
    project: Project, cluster: Any
) -> None:
    """breaker13b N1: the in-place swap, its leftover check and the rollback's settings carry-over
    connected to the `postgres` database only: a runbook role refused it (managed services often do) got
    "permission denied for database postgres" with the hint "check DATABASE_URL". They now fall back to
    template1, as createdb does, and so does the recovery of a lost database."""
    role, password = f"runbook_{secrets.token_hex(3)}", "Rb-pw-1"
    live = project.url.rsplit("/", 1)[1]
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'".encode())
        conn.execute(f'ALTER DATABASE "{live}" OWNER TO {role}'.encode())
        conn.execute("REVOKE CONNECT ON DATABASE postgres FROM PUBLIC")
    try:
        url = f"postgresql://{role}:{password}@127.0.0.1:{cluster.port}/{live}"
        project.environ["DATABASE_URL"] = url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE mine (id int); INSERT INTO mine VALUES (1), (2)")
        made = project.cli("--json", "backup", "create")
        assert made.returncode == 0, made.stderr
        bid = json.loads(made.stdout)["id"]
        r = project.cli("restore", bid, "--in-place", "--confirm", live)
        assert r.returncode == 0, r.stderr
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{live}" WITH (FORCE)'.encode())
        back = project.cli("restore", "latest", "--into", live)
        assert back.returncode == 0, back.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM mine").fetchone() == (2,)
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("GRANT CONNECT ON DATABASE postgres TO PUBLIC")
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname <> %s", (live, live)
            ).fetchall():
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _lose(project: Project) -> tuple[str, str]:
    """The disaster: the environment's database dropped. Returns its name and the server's `postgres` URL."""
    live = project.url.rsplit("/", 1)[1]
    server = project.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{live}" WITH (FORCE)'.encode())
    return live, server

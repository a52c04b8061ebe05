"""Bad input: one clear line, the SPEC's exit code, no traceback, no password, and no data touched."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import evidence
from tests.conftest import PASSWORD, SERVER, Project, assert_clean_error, suite_tools

pytestmark = pytest.mark.reliability


def _no_backups(project: Project) -> None:
    base = project.storage / "default"
    assert not base.exists() or not any(base.rglob("*")), list(base.rglob("*"))


def test_dead_port(project: Project) -> None:
    url = project.url.replace(project.url.split("@")[1].split("/")[0], "127.0.0.1:1")
    r = project.cli("backup", "create", extra_env={"DATABASE_URL": url})
    assert_clean_error(r, 2, "connection refused", "127.0.0.1:1")
    assert "hint: is PostgreSQL running" in r.stderr
    _no_backups(project)


def test_wrong_password(project: Project) -> None:
    wrong = "Wr0ng-Pw-777"
    from urllib.parse import quote

    url = project.url.replace(quote(PASSWORD, safe=""), wrong)
    assert url != project.url
    r = project.cli("backup", "create", extra_env={"DATABASE_URL": url})
    assert_clean_error(r, 2, "authentication failed for user 'postgres'")
    assert wrong not in r.stdout + r.stderr
    _no_backups(project)


def test_unknown_database(project: Project) -> None:
    url = project.url.rsplit("/", 1)[0] + "/no_such_db"
    r = project.cli("doctor", extra_env={"DATABASE_URL": url})
    assert r.returncode == 2
    assert "database 'no_such_db' does not exist" in r.stdout
    r = project.cli("backup", "create", extra_env={"DATABASE_URL": url})
    assert_clean_error(r, 2, "database 'no_such_db' does not exist")


def test_url_not_set_and_not_a_url(project: Project) -> None:
    env = {k: v for k, v in project.environ.items() if k != "DATABASE_URL"}
    r = subprocess.run(
        [sys.executable, "-m", "pgrunbook", "backup", "create"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert_clean_error(r, 3, "DATABASE_URL is not set")
    r = project.cli("backup", "create", extra_env={"DATABASE_URL": "mysql://x:y@h/d"})
    assert_clean_error(r, 3, "not a postgresql:// URL")


def test_missing_pg_dump(project: Project, tmp_path: Path) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    project.write_config(f'[backup]\nstorage = "backups"\n[postgres]\nbin_dir = "{empty}"\n')
    r = project.cli("backup", "create")
    assert_clean_error(r, 2, "pg_dump and pg_restore not found in", str(empty))
    assert f"apt-get install postgresql-client-{SERVER['major']}" in r.stderr
    _no_backups(project)


def test_pg_dump_older_than_the_server(project: Project, tmp_path: Path) -> None:
    # Stand-in: only PostgreSQL 15 can be installed here, so an older client is two scripts that answer
    # --version like pg_dump 12 does. pgrunbook must refuse before running them for anything else.
    old = tmp_path / "pg12"
    old.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        script = old / tool
        script.write_text(
            f'#!/bin/sh\n[ "$1" = "--version" ] && echo "{tool} (PostgreSQL) 12.22" && exit 0\n'
            "echo should-not-run >&2; exit 99\n"
        )
        script.chmod(0o755)
    project.write_config(f'[backup]\nstorage = "backups"\n[postgres]\nbin_dir = "{old}"\n')
    r = project.cli("backup", "create")
    assert_clean_error(r, 2, "pg_dump 12.22", f"older than the server (PostgreSQL {SERVER['version']})")
    assert "should-not-run" not in r.stderr
    _no_backups(project)


def test_unknown_backup_id(seeded: Project) -> None:
    for args in (["backup", "verify", "20990101T000000Z-nope"], ["backup", "verify", "../../etc", "--drill"]):
        r = seeded.cli(*args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: "), r.stderr
        assert "Traceback" not in r.stderr


def test_malformed_config(project: Project) -> None:
    project.write_config("[backup\nstorage = 1\n")
    r = project.cli("backup", "list")
    assert_clean_error(r, 3, "pgrunbook.toml", "line 1")
    project.write_config('[backup]\nretention = { daily = "lots" }\n')
    assert_clean_error(project.cli("backup", "prune"), 3, "backup.retention.daily")
    project.write_config('[backups]\nstorage = "x"\n')
    assert_clean_error(project.cli("doctor"), 3, "backups: unknown key")


def test_bad_label_and_unknown_environment(seeded: Project) -> None:
    assert_clean_error(seeded.cli("backup", "create", "--label", "x'; drop table account; --"), 3, "invalid label")
    assert_clean_error(seeded.cli("backup", "list", "--env", "prod"), 3, "unknown environment 'prod'")
    _no_backups(seeded)


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# (tmpfs size, MB of random bytes in the table): 1 MB fills before the local storage's first background
# flush; 48 MB fills after it, with a flush (fdatasync every SYNC_EVERY = 32 MB) started or under way
DISK_FULL = {"before the first flush": ("1m", 3), "after a background flush": ("48m", 72)}


@pytest.mark.parametrize("case", sorted(DISK_FULL))
def test_disk_full_leaves_nothing_behind(project: Project, tmp_path: Path, case: str) -> None:
    """A backup into storage whose disk fills up: one error naming "no space" and the archive's path in
    that storage, a true hint, nothing left there that `backup list` (or anybody) takes for a backup,
    exit 2, the database as it was. trial #4: also once the background flush of a large archive has
    begun (its thread must end before the file is removed)."""
    import psycopg

    from pgrunbook.backup.storage.local import SYNC_EVERY

    size, mb = DISK_FULL[case]
    with psycopg.connect(project.url, autocommit=True) as conn:  # random bytes: no compressor shrinks them
        conn.execute(
            "CREATE TABLE blob AS SELECT g AS id, (SELECT decode(string_agg(md5(random()::text || g || i), ''), "
            "'hex') FROM generate_series(1, 64) i) AS b FROM generate_series(1, %s) g",
            (mb * 1000,),
        )
    before = _digest(project.url)
    with _tmpfs(tmp_path / "small", f"size={size},mode=0700") as small:
        project.write_config(f'[backup]\nstorage = "{small}"\n')
        r = project.cli("backup", "create")
        assert_clean_error(r, 2, "storage full: no space left on the device of", f"{small}/")
        lines = r.stderr.splitlines()
        assert lines[-1] == (
            "hint: free space there or point [backup] storage at a larger volume; nothing of this backup was kept"
        ), r.stderr
        written = float(lines[0].rsplit("after writing ", 1)[1].split(" MB")[0])
        if mb * 1e6 > SYNC_EVERY:  # the flush path: more than SYNC_EVERY bytes went out before the disk filled
            assert written * 1e6 > SYNC_EVERY, lines[0]
        assert list(small.rglob("*.tmp-*")) == [] and not list(small.rglob(".*.zst*"))
        assert not any(p.is_file() and ".pgrunbook-" not in str(p) for p in small.rglob("*"))  # only markers
        assert project.cli("backup", "list", "--json").stdout.strip() == "[]"
        assert project.cli("backup", "list").returncode == 0
    assert _digest(project.url) == before
    evidence.fault(f"disk full during a backup ({size} tmpfs, {case})")


def _digest(url: str) -> list[tuple[object, ...]]:
    """Every table's row count and a digest of its rows: the database before and after."""
    import psycopg
    from psycopg import sql

    out: list[tuple[object, ...]] = []
    with psycopg.connect(url) as conn:
        for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1"
        ).fetchall():
            q = sql.SQL("SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY t::text)) FROM {} t")
            out.append((name, *(conn.execute(q.format(sql.Identifier(name))).fetchone() or ())))
    return out


def test_disk_full_while_a_restore_decompresses(seeded: Project, tmp_path: Path) -> None:
    """The temp folder fills up while the archive is decompressed for pg_restore -j: one clear line,
    no database created, nothing left in the temp folder."""
    import psycopg

    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    with psycopg.connect(seeded.url) as conn:
        databases = conn.execute("SELECT count(*) FROM pg_database").fetchone()
    with _tmpfs(tmp_path / "tmp", "size=64k,mode=0777") as small:
        seeded.write_config('[backup]\nstorage = "backups"\n[restore]\nmethod = "parallel"\ntemp = "disk"\n')
        r = seeded.cli("restore", bid, "--into", "no_room", extra_env={"TMPDIR": str(small)})
        assert_clean_error(r, 2, "no space left")
        assert not any(small.iterdir())
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database").fetchone() == databases
    evidence.fault("disk full while a restore decompresses (64 kB tmpfs as TMPDIR)")


def test_a_temp_folder_too_small_fails_before_anything_is_read(
    seeded: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive's full size is reserved first: a full disk costs nothing, not minutes of work.
    (The storage is the real folder storage; its read is wrapped only to count what was read.)"""
    import tempfile

    from pgrunbook.backup.create import create_backup
    from pgrunbook.backup.restore_archive import CheckedArchive
    from pgrunbook.errors import PgRunbookError
    from pgrunbook.progress import no_progress

    env = seeded.env()
    m = create_backup(env)
    assert m.archive_size and m.archive_size > 64 * 1024
    read = env.storage.read
    chunks: list[int] = []

    def counted(key: str) -> Iterator[bytes]:
        for chunk in read(key):
            chunks.append(len(chunk))
            yield chunk

    monkeypatch.setattr(env.storage, "read", counted)
    with _tmpfs(tmp_path / "tmp", "size=64k,mode=0777") as small:
        monkeypatch.setattr(tempfile, "tempdir", str(small))
        with pytest.raises(PgRunbookError, match="no space left"):
            CheckedArchive(env, m, no_progress, workers=2).check(suite_tools())
        assert chunks == [] and not any(small.iterdir())


def test_unwritable_storage(project: Project, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        project.write_config(f'[backup]\nstorage = "{ro}/backups"\n')
        r = project.cli("backup", "create")
        assert_clean_error(r, 2, "storage not writable")
        d = project.cli("doctor")
        assert d.returncode == 2 and "storage not writable" in d.stdout
    evidence.fault("read-only storage")


# Every command that reads the configuration, with the arguments it needs to get that far.
EVERY_COMMAND = [
    ["backup", "create"],
    ["backup", "list"],
    ["backup", "verify", "latest"],
    ["backup", "prune", "--dry-run"],
    ["backup", "copy", "latest", "--to", "elsewhere"],
    ["check"],
    ["deploy"],
    ["doctor"],
    ["drift", "a", "b"],
    ["health"],
    ["migrate", "deploy"],
    ["migrate", "resolve", "--applied", "x"],
    ["migrate", "lint"],
    ["restore", "latest", "--into", "fresh"],
    ["rollback", "--app-only"],
    ["runs"],
    ["schedule", "--print", "cron"],
    ["serve", "--port", "0"],
    ["status"],
]
MALFORMED = {
    "not TOML": ("[backup\nstorage = 1\n", "line 1"),
    "unknown key": ('[backups]\nstorage = "x"\n', "backups: unknown key"),
    "wrong type": ('[backup]\nretention = { daily = "lots" }\n', "backup.retention.daily"),
    "bad schedule": ('[schedule]\nbackup = "every night"\n', "schedule.backup"),
    "bad quiet window": (
        '[environments.default]\nquiet_window = "whenever"\n',
        "environments.default.quiet_window: 'whenever' is not a quiet window",
    ),
    "out of range": ("[backup]\nzstd_level = 50\n", "backup.zstd_level: must be a whole number from 1 to 19, not 50"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_command_refuses_a_malformed_config_in_one_line(project: Project, kind: str) -> None:
    text, needle = MALFORMED[kind]
    project.write_config(text)
    # 19 independent commands, each refused while reading the configuration: run four at a time (each one
    # is mostly Python's start-up), then judge every result the same way, in order
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda argv: project.cli(*argv, timeout=60), EVERY_COMMAND))
    assert len(results) == len(EVERY_COMMAND)
    for argv, r in zip(EVERY_COMMAND, results, strict=True):
        assert r.args[3:] == argv, (r.args, argv)  # [python, -m, pgrunbook, *argv]
        assert_clean_error(r, 3, "pgrunbook.toml", needle)
        assert "Value error" not in r.stderr and "Input should" not in r.stderr, r.stderr  # pydantic's words
        assert r.stderr.splitlines()[-1].startswith("hint: "), r.stderr


def test_a_migrate_role_with_the_prisma_engine_is_refused_before_anything(project: Project) -> None:
    """Polish #3: the combination is refused by the command line in one line, before any connection."""
    project.write_config('[migrate]\nengine = "prisma"\nrole = "app_owner"\n')
    r = project.cli("migrate", "deploy", timeout=30)
    assert_clean_error(r, 3, "pgrunbook.toml", '[migrate] role = "app_owner" with engine = "prisma"')
    assert "hint: remove role from [migrate]" in r.stderr, r.stderr


def test_a_missing_age_identity_file_is_named_with_its_config_key(seeded: Project) -> None:
    """The config names an identity file that does not exist: drill and restore refuse in one line naming
    the path and the config key, with a hint that says which key is needed (a new one reads no old backup)."""
    import pyrage

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    seeded.write_config(
        f'[backup]\nstorage = "backups"\n[backup.encryption]\nrecipients = ["{recipient}"]\n'
        'identity_file = "keys/age.key"\n'
    )
    assert seeded.cli("backup", "create").returncode == 0
    missing = seeded.root / "keys" / "age.key"
    for argv in (("restore", "latest", "--into", "no_key_here"), ("backup", "verify", "latest", "--drill")):
        r = seeded.cli(*argv)
        assert_clean_error(r, 3, f"the age identity file {missing} does not exist")
        first = r.stderr.splitlines()[0]
        assert "[backup.encryption] identity_file = 'keys/age.key'" in first, r.stderr
        hint = next(line for line in r.stderr.splitlines() if line.startswith("hint: "))
        assert "[backup.encryption] identity_file" in hint and "one of the backup's recipients" in hint
        assert "age-keygen" in hint


# trial8: with --json, where does a failure go? SPEC: stdout holds one JSON document and nothing else.
# Every command, failing: stdout is empty (the error line on stderr, one) or the command's one document
# (its negative answer: doctor, health, check; a procedure's failed run: deploy, rollback, outcome
# "failed"). The server is a dead port; nothing here needs one.
JSON_FAILURES: list[tuple[tuple[str, ...], int, str | None]] = [
    (("backup", "create"), 2, None),
    (("backup", "verify", "latest"), 2, None),
    (("backup", "copy", "latest", "--to", "elsewhere"), 2, None),
    (("migrate", "deploy"), 2, None),
    (("migrate", "resolve", "--applied", "nope"), 3, None),
    (("migrate", "lint", "no-such-file.sql"), 3, None),
    (("status",), 2, None),
    (("init",), 3, None),
    (("drift", "default", "other"), 3, None),
    (("deploy",), 2, None),  # refused before its run starts: no run, no document
    (("rollback", "--with-db"), 3, None),
    (("runs", "--limit", "x"), 3, None),
    (("restore", "latest", "--into", "x"), 2, None),
    (("schedule",), 3, None),
    (("backup",), 3, None),
    (("doctor",), 2, "checks"),
    (("health",), 2, "checks"),
    (("check",), 2, "checks"),
    (("rollback", "--app-only"), 2, "outcome"),  # the run started and failed: its report, as deploy's
]


@pytest.mark.parametrize(("argv", "code", "document"), JSON_FAILURES, ids=[" ".join(a) for a, _, _ in JSON_FAILURES])
def test_json_failures_keep_stdout_to_one_document(
    tmp_path: Path, argv: tuple[str, ...], code: int, document: str | None
) -> None:
    (tmp_path / "pgrunbook.toml").write_text(
        '[backup]\nstorage = "backups"\n[environments.default]\nhealth_url = "http://127.0.0.1:9/health"\n'
        'health_deadline_s = 1\nhealth_timeout_s = 1\n[environments.default.hooks]\napp_rollback = "true"\n'
    )
    (tmp_path / "prisma" / "migrations").mkdir(parents=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PGRUNBOOK_", "PG"))}
    environ["DATABASE_URL"] = f"postgresql://app:{PASSWORD}@127.0.0.1:9/shop"
    for flags in (("--json", *argv), (*argv, "--json")):  # --json before or after the command
        r = subprocess.run(
            [sys.executable, "-m", "pgrunbook", *flags], cwd=tmp_path, env=environ, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert r.returncode == code, (flags, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and PASSWORD not in r.stdout + r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        if document is None:
            assert r.stdout == "", (flags, r.stdout)
            assert len(errors) == 1, (flags, r.stderr)
        else:
            parsed = json.loads(r.stdout)  # exactly one document: json.loads refuses trailing data
            assert document in parsed, (flags, parsed)
            if document == "outcome":
                assert parsed["outcome"] == "failed" and len(errors) == 1, (flags, r.stderr)

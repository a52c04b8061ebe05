"""break11 #9: prune during a running verify, drill or restore of the same backup. The drill used to
rewrite manifest.json into the folder prune had emptied: a listed "ghost" backup with no archive,
marked "drill ok", protected by retention as the newest drilled one. Now readers leave an in-use
marker that prune honours, a verification is recorded only while the backup is still there, and a
manifest without its archive is never listed, restored or kept as a backup.

Everything runs against the suite's real PostgreSQL and real storage (local folder, and S3 on moto);
the prune "during" a verify is a real deletion made from the verify's own progress callback."""

from __future__ import annotations

import json
import os
import secrets
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgrunbook.backup.create import create_backup
from pgrunbook.backup.verify import verify_backup
from pgrunbook.errors import BackupNotFound
from tests import evidence
from tests.conftest import Project, assert_clean_error
from tests.s3_support import MotoServer, aws_env, client

pytestmark = pytest.mark.reliability

RETAIN_ONE = "retention = { daily = 1, weekly = 0, monthly = 0 }\n"


@pytest.fixture(scope="module")
def moto() -> Any:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, seeded: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    if request.param == "s3":
        server = request.getfixturevalue("moto")
        bucket = f"pgrunbook-{secrets.token_hex(4)}"
        client(server.endpoint).create_bucket(Bucket=bucket)
        seeded.environ.update(aws_env(server.endpoint))
        for k, v in aws_env(server.endpoint).items():
            monkeypatch.setenv(k, v)
        seeded.write_config(f'[backup]\nstorage = "s3://{bucket}/team/pg"\n{RETAIN_ONE}')
    else:
        seeded.write_config(f'[backup]\nstorage = "backups"\n{RETAIN_ONE}')
    return seeded


def _names(project: Project, backup_id: str) -> set[str]:
    env = project.env()
    return {o.key.rsplit("/", 1)[-1] for o in env.storage.list(f"{env.name}/{backup_id}/")}


def test_prune_during_a_verify_never_resurrects_the_manifest(backend: Project) -> None:
    """The trial's sequence, made deterministic: the backup is removed (as prune removes it) while its
    verify streams it. The verify must not write a manifest into the emptied folder nor claim a result;
    it says the backup was removed while it was verified."""
    old = create_backup(backend.env(), label="d1")
    create_backup(backend.env(), label="d2")
    env = backend.env()
    removed: list[bool] = []

    def progress(stage: str, done: int, total: int | None = None, **_: object) -> None:
        if not removed:
            removed.append(True)
            env.repository.delete_backup(old.id)  # what prune does: manifest first, then the archive

    evidence.fault("backup removed while its verify runs")
    with pytest.raises(BackupNotFound) as caught:
        verify_backup(env, old.id, progress=progress)  # type: ignore[arg-type]
    assert removed
    assert "was removed" in caught.value.message and "while it was being read" in caught.value.message
    assert "manifest.json" not in _names(backend, old.id)
    listed = json.loads(backend.cli("--json", "backup", "list").stdout)
    assert old.id not in [b["id"] for b in listed]


def test_prune_skips_a_backup_a_running_reader_holds(backend: Project) -> None:
    """A verify/drill/restore of the backup is running (its in-use marker, written by this live
    process): prune keeps it, saying who reads it; once the reader is done, prune removes it."""
    old = create_backup(backend.env(), label="d1")
    create_backup(backend.env(), label="d2")
    env = backend.env()
    with env.repository.reading(old, "backup verify --drill"):
        assert any(n.startswith(".in-use-") for n in _names(backend, old.id))
        r = backend.cli("--json", "backup", "prune")
        assert r.returncode == 0, r.stderr
        rows = {row["id"]: row for row in json.loads(r.stdout)}
        assert rows[old.id]["action"] == "keep"
        assert rows[old.id]["reasons"][0].startswith(f"in use by backup verify --drill pid {os.getpid()}")
        assert {"manifest.json", "db.dump.zst"} <= _names(backend, old.id)
    assert not any(n.startswith(".in-use-") for n in _names(backend, old.id))  # the reader cleared its marker
    r = backend.cli("--json", "backup", "prune")
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert rows[old.id]["action"] == "remove"
    assert not _names(backend, old.id)


def test_in_use_markers_dead_here_are_ignored_foreign_ones_count_for_a_day(seeded: Project) -> None:
    seeded.write_config(f'[backup]\nstorage = "backups"\n{RETAIN_ONE}')
    a = create_backup(seeded.env(), label="a")
    b = create_backup(seeded.env(), label="b")
    create_backup(seeded.env(), label="c")
    now = datetime.now(UTC)
    dead = {"pid": 2**22 + 12345, "host": socket.gethostname(), "started_at": now.isoformat(), "command": "restore"}
    (seeded.storage / "default" / a.id / ".in-use-0123456789abcdef.json").write_text(json.dumps(dead))
    away = {
        "pid": 77,
        "host": "other-host-x",
        "started_at": (now - timedelta(hours=1)).isoformat(),
        "command": "restore",
    }
    (seeded.storage / "default" / b.id / ".in-use-fedcba9876543210.json").write_text(json.dumps(away))
    rows = {row["id"]: row for row in json.loads(seeded.cli("--json", "backup", "prune").stdout)}
    assert rows[a.id]["action"] == "remove"
    assert not (seeded.storage / "default" / a.id).exists() or not any((seeded.storage / "default" / a.id).iterdir())
    assert rows[b.id]["action"] == "keep"
    assert rows[b.id]["reasons"] == [
        "in use by restore pid 77 on other-host-x: kept this time (a later prune decides again)"
    ]


def test_a_manifest_without_its_archive_is_no_backup(seeded: Project) -> None:
    """The ghost the race used to leave (or an archive deleted by hand): not listed, not kept as the
    newest verified, not picked by restore latest; naming it says what is wrong, with a hint."""
    good = create_backup(seeded.env(), label="good")
    ghost = create_backup(seeded.env(), label="ghost")
    seeded.cli("backup", "verify", ghost.id)
    folder: Path = seeded.storage / "default" / ghost.id
    (folder / ghost.file).unlink()
    evidence.fault("manifest without its archive")
    listed = json.loads(seeded.cli("--json", "backup", "list").stdout)
    assert [b["id"] for b in listed] == [good.id]
    r = seeded.cli("restore", ghost.id, "--into", f"ghost_{secrets.token_hex(3)}")
    assert_clean_error(r, 2, f"backup {ghost.id}", "has a manifest but no archive")
    assert "hint: choose another backup" in r.stderr
    r = seeded.cli("backup", "verify", ghost.id)
    assert_clean_error(r, 2, "has a manifest but no archive")
    assert (folder / "manifest.json").exists()  # nothing recorded, nothing deleted
    latest = seeded.cli("--json", "restore", "latest", "--into", f"latest_{secrets.token_hex(3)}")
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout)["backup_id"] == good.id

"""A manifest belongs to its folder (trial7 findings 13, 14, 15): a folder copied by hand, a manifest
naming a file outside its folder and an oversized manifest are unreadable everywhere — not listed as
backups, named by doctor, refused by verify/restore with a hint, never written to, never pruned."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from pgrunbook.backup.create import create_backup
from tests.conftest import Project, assert_clean_error

pytestmark = pytest.mark.integration


def _folder(project: Project, backup_id: str) -> Path:
    return project.storage / "default" / backup_id


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_unreadable_everywhere(project: Project, good: str, bad: str, needle: str) -> None:
    before = _tree(project.storage)
    listed = project.cli("backup", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [good]
    assert "1 backup(s) with an unreadable manifest not listed" in listed.stderr
    doctor = project.cli("doctor")
    assert bad in doctor.stdout and needle in doctor.stdout, doctor.stdout
    for args in (("backup", "verify", bad), ("restore", bad, "--into", "never_made")):
        r = project.cli(*args)
        assert_clean_error(r, 2, needle)
        assert "hint: " in r.stderr and "move the folder aside" in r.stderr
    pruned = project.cli("backup", "prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert bad not in {row["id"] for row in json.loads(pruned.stdout)}
    after = _tree(project.storage)
    assert {k: v for k, v in after.items() if bad in k} == {k: v for k, v in before.items() if bad in k}
    assert {k: v for k, v in after.items() if f"/{good}/" in k} == {k: v for k, v in before.items() if f"/{good}/" in k}


def test_a_folder_copied_by_hand_is_not_a_second_backup_and_never_writes_the_original(seeded: Project) -> None:
    """Finding 14: `cp -r ID ID-copy` listed the original id twice and verifying the copy appended the
    verification to the original's manifest."""
    good = create_backup(seeded.env(), label="manual").id
    copy = "20991205T000000Z-dup"
    shutil.copytree(_folder(seeded, good), _folder(seeded, copy))
    _assert_unreadable_everywhere(seeded, good, copy, f"describes backup {good}, not its own folder {copy}")


@pytest.mark.parametrize(
    "file", ["../../../outside/db.dump.zst", "/etc/passwd", "manifest.json", "other.dump", "sub/db.dump.zst"]
)
def test_a_manifest_naming_a_file_outside_its_folder_is_unreadable(seeded: Project, file: str) -> None:
    """Finding 15: a manifest whose archive is not one of pgrunbook's files in its own folder."""
    good = create_backup(seeded.env(), label="manual").id
    evil = "20991201T000001Z-evil"
    shutil.copytree(_folder(seeded, good), _folder(seeded, evil))
    path = _folder(seeded, evil) / "manifest.json"
    data = json.loads(path.read_text())
    data["id"], data["file"] = evil, file
    path.write_text(json.dumps(data))
    _assert_unreadable_everywhere(seeded, good, evil, f"names the archive {file!r}")


def test_an_oversized_manifest_is_not_read(seeded: Project) -> None:
    """Finding 13: a 160 MB manifest made every listing take 45 s and 2.6 GB. Now anything over the cap
    is reported unreadable without being parsed (a 17 MB one here, valid JSON otherwise)."""
    good = create_backup(seeded.env(), label="manual").id
    huge = "20991201T000005Z-huge"
    shutil.copytree(_folder(seeded, good), _folder(seeded, huge))
    path = _folder(seeded, huge) / "manifest.json"
    data = json.loads(path.read_text())
    data["id"] = huge
    table = data["tables"][0]
    data["tables"] = [dict(table, name=f"t{i}") for i in range(320_000)]
    path.write_text(json.dumps(data))
    assert path.stat().st_size > 16 * 2**20
    started = time.monotonic()
    listed = seeded.cli("backup", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert time.monotonic() - started < 15  # generous on a shared machine; the unparsed read is instant
    _assert_unreadable_everywhere(seeded, good, huge, "more than a manifest can be")

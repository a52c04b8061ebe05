"""Backups written before encryption became a codec type read back, verify, drill and restore exactly.

The backups are written at test time by main at 967ce79 itself (its `src`, taken from the project's git
history with `git archive`, runs its own `backup create` through tests/fixtures/old_backups/make.py):
zstd + age, gzip + age and plain zstd, with several zstd frames each. The on-disk format and the
manifest's fields did not change, so today's code must read every one of them. Nothing generated is
committed; without the git history (a shallow clone) the test fails and says why.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pgrunbook.backup.codec import named_by
from pgrunbook.backup.manifest import Manifest
from tests.conftest import Project, fingerprint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAKE = ROOT / "tests" / "fixtures" / "old_backups" / "make.py"
OLD_WRITER = "967ce79"  # main before encryption became a codec type


@pytest.fixture(scope="module")
def old_backups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with backups/, age.key and source.json written by the pgrunbook of ``OLD_WRITER``."""
    work = tmp_path_factory.mktemp("old-writer")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", OLD_WRITER, "src"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        why = archive.stderr.decode(errors="replace").strip()
        pytest.fail(f"needs the project's git history (commit {OLD_WRITER}); a shallow clone lacks it: {why}")
    archive_file = work / "old-src.tar"
    archive_file.write_bytes(archive.stdout)
    with tarfile.open(archive_file) as tar:
        tar.extractall(work / "old", filter="data")
    out = work / "fixture"
    r = subprocess.run(
        [sys.executable, str(MAKE), "--old-src", str(work / "old" / "src"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _use_fixture(project: Project, fixture: Path, *, with_identity: bool) -> dict[str, Any]:
    source: dict[str, Any] = json.loads((fixture / "source.json").read_text())
    shutil.copytree(fixture / "backups", project.storage, dirs_exist_ok=True)
    shutil.copy(fixture / "age.key", project.root / "age.key")
    identity = '[backup.encryption]\nidentity_file = "age.key"\n' if with_identity else ""
    project.write_config(f'[project]\nid = "{source["project_id"]}"\n[backup]\nstorage = "backups"\n{identity}')
    return source


@pytest.mark.parametrize("label", ["zstd-age", "gzip-age", "zstd"])
def test_an_old_backup_verifies_drills_and_restores_exactly(project: Project, old_backups: Path, label: str) -> None:
    source = _use_fixture(project, old_backups, with_identity=True)
    bid = source["backups"][label]
    manifest = Manifest.model_validate_json((project.storage / "default" / bid / "manifest.json").read_text())
    assert manifest.file == named_by(manifest).file_name  # the stack names the old file as it was written
    assert (manifest.encryption == "age") == label.endswith("-age")
    assert len(manifest.frames) > 1 if manifest.compression == "zstd" else manifest.frames == []
    r = project.cli("--json", "backup", "verify", bid, "--drill")
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert all(c["ok"] for c in checks.values()) and {"checksum", "archive", "drill restore"} <= set(checks)
    target = f"old_{label.replace('-', '_')}_{secrets.token_hex(3)}"
    r = project.cli("--json", "restore", bid, "--into", target)
    assert r.returncode == 0, r.stderr
    restored = fingerprint(project.url.rsplit("/", 1)[0] + "/" + target)
    assert {k: list(v) for k, v in restored.items()} == source["fingerprint"]


def test_an_old_encrypted_backup_without_the_identity_verifies_its_stored_bytes_only(
    project: Project, old_backups: Path
) -> None:
    source = _use_fixture(project, old_backups, with_identity=False)
    r = project.cli("--json", "backup", "verify", source["backups"]["zstd-age"])
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["checksum"]["ok"] and checks["size"]["ok"]
    assert checks["archive"]["detail"] == (
        "not read: the backup is age-encrypted and no identity_file is set here (drills and restores need it)"
    )

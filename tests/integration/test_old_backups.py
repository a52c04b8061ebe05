"""Backups written before encryption became a codec type read back, verify, drill and restore exactly.

tests/fixtures/old_backups holds real backups written by main at 967ce79 (its own `backup create`, run
by that folder's make.py): zstd + age, gzip + age and plain zstd, with several zstd frames each. The
on-disk format and the manifest's fields did not change, so today's code must read every one of them.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest

from pgrunbook.backup.codec import named_by
from pgrunbook.backup.manifest import Manifest
from tests.conftest import Project, fingerprint

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "old_backups"


def _use_fixture(project: Project, *, with_identity: bool) -> dict[str, Any]:
    source: dict[str, Any] = json.loads((FIXTURE / "source.json").read_text())
    shutil.copytree(FIXTURE / "backups", project.storage, dirs_exist_ok=True)
    shutil.copy(FIXTURE / "age.key", project.root / "age.key")
    identity = '[backup.encryption]\nidentity_file = "age.key"\n' if with_identity else ""
    project.write_config(f'[project]\nid = "{source["project_id"]}"\n[backup]\nstorage = "backups"\n{identity}')
    return source


@pytest.mark.parametrize("label", ["zstd-age", "gzip-age", "zstd"])
def test_an_old_backup_verifies_drills_and_restores_exactly(project: Project, label: str) -> None:
    source = _use_fixture(project, with_identity=True)
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


def test_an_old_encrypted_backup_without_the_identity_verifies_its_stored_bytes_only(project: Project) -> None:
    source = _use_fixture(project, with_identity=False)
    r = project.cli("--json", "backup", "verify", source["backups"]["zstd-age"])
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["checksum"]["ok"] and checks["size"]["ok"]
    assert checks["archive"]["detail"] == (
        "not read: the backup is age-encrypted and no identity_file is set here (drills and restores need it)"
    )

"""The journal's disk fills after `maintenance on` (break11 #10): the maintenance_off hook still runs
(unrecorded, said on stderr), and when it cannot end maintenance the error says the application is
still in maintenance, with the command that ends it — never a "maintenance window" as if it had ended.

A real tmpfs of 2 MB holds the journal (PGRUNBOOK_JOURNAL__PATH); the maintenance_on hook fills it, so
the journal's next write meets a full disk exactly after maintenance began. Needs root (mount); skipped
with the reason otherwise.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Project
from tests.integration.test_deploy import Stage
from tests.integration.test_deploy import stage as stage
from tests.integration.test_migrate import make_migrations

pytestmark = pytest.mark.reliability


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "journal-disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the journal (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _hooks(log: Path, disk: Path, *, off_fails: bool) -> dict[str, str | None]:
    fill = f"dd if=/dev/zero of={disk}/fill bs=4k >/dev/null 2>&1; true"
    return {
        "maintenance_on": f"echo on >> {log}; {fill}",
        "maintenance_off": f"echo off >> {log}" + ("; exit 4" if off_fails else ""),
    }


@pytest.mark.parametrize("off_fails", [False, True], ids=["off-runs", "off-fails"])
def test_deploy_whose_journal_disk_fills_still_ends_maintenance_or_says_it_could_not(
    stage: Stage, small_disk: Path, off_fails: bool
) -> None:
    make_migrations(stage.project, {"02_add_col": "ALTER TABLE note ADD COLUMN body text;"})
    stage.config(hooks=_hooks(stage.log, small_disk, off_fails=off_fails))
    journal = {"PGRUNBOOK_JOURNAL__PATH": str(small_disk / "journal.db")}
    r = stage.project.cli("deploy", "--env", "production", extra_env=journal)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert stage.hooks() == ["on", "off"], (stage.hooks(), r.stderr)  # maintenance_off ran, unrecorded
    assert "running the maintenance_off hook anyway" in r.stderr, r.stderr
    error = next(ln for ln in r.stderr.splitlines() if ln.startswith("error: "))
    assert "cannot be used" in error and "full" in error, error
    if off_fails:
        assert "the application is still in maintenance: maintenance_off failed" in error, error
        assert f"run the maintenance_off hook by hand: echo off >> {stage.log}; exit 4" in error, error
        assert "maintenance window" not in r.stdout, r.stdout
    else:
        assert "still in maintenance" not in r.stderr
    # nothing was migrated: the migration never ran
    status = json.loads(stage.project.cli("--json", "status", "--env", "production").stdout)
    assert status["pending"] == ["02_add_col"]


def test_in_place_restore_whose_journal_disk_fills_still_ends_maintenance(seeded: Project, small_disk: Path) -> None:
    log = seeded.root / "hooks.log"
    journal = {"PGRUNBOOK_JOURNAL__PATH": str(small_disk / "journal.db")}
    made = seeded.cli("--json", "backup", "create", extra_env=journal)
    assert made.returncode == 0, made.stderr
    backup = json.loads(made.stdout)["id"]
    hooks = _hooks(log, small_disk, off_fails=False)
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.default.hooks]\n'
        + "".join(f"{name} = '{cmd}'\n" for name, cmd in hooks.items())
    )
    live = seeded.url.rsplit("/", 1)[1]
    r = seeded.cli("restore", backup, "--in-place", "--confirm", live, extra_env=journal)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert log.read_text().split() == ["on", "off"], r.stderr  # used to stop after "on"
    assert "running the maintenance_off hook anyway" in r.stderr, r.stderr
    assert "was running, so maintenance may still be on" not in r.stderr  # the hook had not started

"""The password never reaches argv (what `ps` shows), manifests or output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.conftest import PASSWORD, Project, wait_for

pytestmark = pytest.mark.reliability


def _cmdlines() -> list[str]:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return out


def test_password_absent_from_every_argv_during_a_backup(seeded: Project) -> None:
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("needs /proc")
    with psycopg.connect(seeded.url, autocommit=True) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")  # holds pg_dump mid-run
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgrunbook", "backup", "create"],
            cwd=seeded.root,
            env=seeded.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: any("pg_dump" in c and "--snapshot" in c for c in _cmdlines()), what="pg_dump start")
            lines = _cmdlines()
            dump_lines = [c for c in lines if "pg_dump" in c and "--snapshot" in c]
            assert dump_lines and "host=127.0.0.1" in dump_lines[0]
            for secret in (PASSWORD, quote(PASSWORD, safe="")):
                assert not any(secret in c for c in lines)
        finally:
            blocker.execute("ROLLBACK")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for secret in (PASSWORD, quote(PASSWORD, safe="")):
        assert secret not in out + err
        for f in seeded.storage.rglob("manifest.json"):
            assert secret not in f.read_text()
    assert json.loads(seeded.cli("backup", "list", "--json").stdout)

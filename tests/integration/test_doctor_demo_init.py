from __future__ import annotations

import contextlib
import glob
import json
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PASSWORD, SERVER, Project, on_terminal

pytestmark = pytest.mark.integration


def test_doctor_all_green_then_names_each_problem(seeded: Project) -> None:
    r = seeded.cli("doctor", "--json")
    assert r.returncode == 0, r.stdout
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert set(checks) >= {
        "config",
        "connection",
        "client tools",
        "prisma history",
        "invalid indexes",
        "storage",
        "free space",
    }
    assert all(c["status"] in ("ok", "skipped") for c in checks.values())
    assert f"PostgreSQL {SERVER['version']}" in checks["connection"]["detail"]
    assert PASSWORD not in r.stdout

    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL,"
            " finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,"
            " started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0)"
        )
        conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name) VALUES ('1', 'x', '03_broken')")
        conn.execute("CREATE TABLE d (x int); INSERT INTO d VALUES (1), (1)")
        with contextlib.suppress(psycopg.errors.UniqueViolation):  # leaves an INVALID index, as in production
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY d_x_key ON d (x)")
    r = seeded.cli("doctor")
    assert r.returncode == 2
    assert "unresolved failed migration(s): 03_broken" in r.stdout
    assert "03_broken has no logs" in r.stdout and "--rolled-back 03_broken" in r.stdout  # a row without logs
    assert "1 invalid index(es): public.d_x_key" in r.stdout
    assert 'DROP INDEX CONCURRENTLY "public"."d_x_key"' in r.stdout
    (seeded.root / "prisma" / "migrations").mkdir(parents=True)
    status = json.loads(seeded.cli("--json", "status").stdout)
    assert status["invalid_indexes"] == [
        {"index": "public.d_x_key", "fix": 'DROP INDEX CONCURRENTLY "public"."d_x_key";'}
    ]


def test_doctor_names_what_a_killed_restore_into_left_and_drops_nothing(seeded: Project) -> None:
    """trial8 #10: a database left by a killed `restore --into` (its marker names a process gone from this
    host; the marker a real restore writes, restore_database.marker) is named by doctor with the statement
    that drops it; doctor drops nothing. One whose writer is alive (this test's own pid) is not listed."""
    import os
    import socket
    import subprocess

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    made = {
        "killed_copy": f"pgrunbook: unfinished restore of 20261201T000000Z-manual by pid {int(dead.stdout)} "
        f"on {host} since 2026-12-01T00:00:00Z",
        "running_copy": f"pgrunbook: unfinished restore of 20261201T000000Z-manual by pid {os.getpid()} "
        f"on {host} since 2026-12-01T00:00:00Z",
    }
    with psycopg.connect(seeded.url, autocommit=True) as admin:
        for name, comment in made.items():
            admin.execute(f'CREATE DATABASE "{name}"')
            admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")
    try:
        r = seeded.cli("--json", "doctor")
        assert r.returncode == 1, r.stdout + r.stderr  # a warning
        check = {c["name"]: c for c in json.loads(r.stdout)["checks"]}["leftovers"]
        assert check["status"] == "warning" and "killed restore --into" in check["detail"]
        assert "killed_copy" in check["detail"] and "running_copy" not in check["detail"]
        assert (
            'DROP DATABASE "killed_copy";' in check["hint"]
            and "FORCE" not in check["hint"]
            and "running_copy" not in check["hint"]
        )
        with psycopg.connect(seeded.url) as conn:
            kept = conn.execute("SELECT count(*) FROM pg_database WHERE datname IN ('killed_copy', 'running_copy')")
            assert kept.fetchone() == (2,)
    finally:
        with psycopg.connect(seeded.url, autocommit=True) as admin:
            for name in made:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_doctor_warns_when_free_space_is_short(seeded: Project, tmp_path: Path) -> None:
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount tmpfs")
    try:
        seeded.write_config(f'[backup]\nstorage = "{small}"\n')
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE blob AS SELECT decode(md5(random()::text), 'hex') b FROM generate_series(1, 5000)"
            )
        assert seeded.cli("backup", "create").returncode == 0
        r = seeded.cli("--json", "doctor")
        free = {c["name"]: c for c in json.loads(r.stdout)["checks"]}["free space"]
        assert free["status"] in ("warning", "failed") and "last backup" in free["detail"]
        assert r.returncode in (1, 2)
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_doctor_compares_free_space_with_the_database_before_the_first_backup(seeded: Project, tmp_path: Path) -> None:
    """trial11 F24: 20 MB free for a 770 MB database was "ok; no backup yet to compare with"; the
    first backup then failed on a full disk. Without a backup, pg_database_size is the measure."""
    import os
    import subprocess

    with psycopg.connect(seeded.url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    size = row[0]
    r = seeded.cli("--json", "doctor")
    free = {c["name"]: c for c in json.loads(r.stdout)["checks"]}["free space"]  # the test's own disk: room
    assert free["status"] == "ok" and f"no backup yet, the database is {size / 1e9:.2f} GB" in free["detail"], free
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "first"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount tmpfs")
    try:
        seeded.write_config(f'[backup]\nstorage = "{small}"\n')
        r = seeded.cli("--json", "doctor")
        free = {c["name"]: c for c in json.loads(r.stdout)["checks"]}["free space"]
        assert free["status"] == "warning" and r.returncode == 1, free
        assert f"the database is {size / 1e9:.2f} GB (a compressed backup is typically 5-30 % of it)" in free["detail"]
        assert "the first backup may not fit" in free["hint"] and "[backup] storage" in free["hint"]
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_demo_runs_the_runbook_and_cleans_up(tmp_path: Path) -> None:
    import subprocess

    before = set(glob.glob(f"{tempfile.gettempdir()}/pgrunbook-demo-*")) | set(glob.glob("/tmp/pgrunbook-demo-*"))
    r = subprocess.run(
        [sys.executable, "-m", "pgrunbook", "--json", "demo", "--rows", "3000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["ok"] is True
    titles = [s["step"] for s in summary["steps"]]
    assert any("doctor" in t for t in titles) and any("verify" in t and "--drill" in t for t in titles)
    assert any("prune --dry-run" in t for t in titles)
    last = {s["step"].split(".")[0]: s for s in summary["steps"]}
    assert "check" in last["12"]["step"] and last["12"]["status"] in ("ok", "warning")
    assert "serve" in last["13"]["step"] and last["13"]["ok"] is True
    outcomes = [s.get("outcome") for s in summary["steps"] if "deploy" in s["step"] and "outcome" in s]
    assert outcomes == ["succeeded", "rolled_back"]  # a good deploy, then a failing one rolled back
    after = set(glob.glob(f"{tempfile.gettempdir()}/pgrunbook-demo-*")) | set(glob.glob("/tmp/pgrunbook-demo-*"))
    assert after == before


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "app" / "prisma" / "migrations").mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "pgrunbook", "init"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "pgrunbook.toml").read_text()
    assert 'migrations = "app/prisma/migrations"' in text
    again = subprocess.run([sys.executable, "-m", "pgrunbook", "init"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 3 and again.stderr.startswith("error: ") and "already exists" in again.stderr
    from pgrunbook.config import load_config

    cfg = load_config(cwd=tmp_path, environ={})
    assert cfg.environment(None)[0] == "default"


def test_init_force_keeps_the_project_id_its_backups_carry(tmp_path: Path) -> None:
    """Breaker trial 11 #15: `init --force` minted a new [project] id, so every existing backup of this
    very database became "another project's" and restore and rollback found none."""
    import subprocess
    import tomllib

    def project_id() -> str:
        return str(tomllib.loads((tmp_path / "pgrunbook.toml").read_text())["project"]["id"])

    def init(*args: str) -> None:
        argv = [sys.executable, "-m", "pgrunbook", "init", *args]
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    init()
    first = project_id()
    init("--force")
    assert project_id() == first
    (tmp_path / "pgrunbook.toml").write_text("not [ toml")  # nothing to keep: a new id, as for a new project
    init("--force")
    assert project_id() != first


def test_init_says_where_it_expects_the_migrations_when_there_are_none_yet(tmp_path: Path) -> None:
    """SPEC: init writes pgrunbook.toml "detecting prisma/migrations". With no folder to detect it writes
    Prisma's default and says so (a note on stderr; --json: migrations, migrations_found); it creates no
    folder. With the folder there it says nothing more."""
    import subprocess

    def init(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pgrunbook", *args, "init"]
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True)

    r = init(tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("wrote "), r
    assert r.stderr.startswith("note: no migrations folder at prisma/migrations yet: pgrunbook reads"), r.stderr
    assert "[project] migrations" in r.stderr and not (tmp_path / "prisma").exists()
    (tmp_path / "pgrunbook.toml").unlink()
    assert json.loads(init(tmp_path, "--json").stdout) == {
        "path": str(tmp_path / "pgrunbook.toml"),
        "migrations": "prisma/migrations",
        "migrations_found": False,
    }
    found = tmp_path / "found"
    (found / "prisma" / "migrations").mkdir(parents=True)
    r = init(found)
    assert r.returncode == 0 and r.stderr == "", r
    (found / "pgrunbook.toml").unlink()
    assert json.loads(init(found, "--json").stdout)["migrations_found"] is True


def test_hints_on_a_terminal_keep_their_brackets(project: Project, tmp_path: Path) -> None:
    """rich reads `[postgres]` as markup and drops it: every detail and hint the terminal renderer prints
    is escaped, so the hint names the setting as it is spelled in pgrunbook.toml."""
    empty = tmp_path / "no tools [here]"
    empty.mkdir()
    project.write_config(f'[backup]\nstorage = "backups"\n[postgres]\nbin_dir = "{empty}"\n')
    rc, text = on_terminal(project, "doctor")
    assert rc == 2, text
    flat = " ".join(text.split())
    assert "set [postgres] bin_dir (or PGRUNBOOK_POSTGRES__BIN_DIR)" in flat, text
    assert "no tools [here]" in flat, text

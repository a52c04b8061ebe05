"""Hostile names across commands: spaces, quotes, unicode and SQL metacharacters in database names,
environment names, labels and migration names. Each is either handled exactly (identifiers quoted:
database names) or refused with one clear line, and nothing is touched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgrunbook.postgres.url import url_with_dbname
from tests.conftest import Project, assert_clean_error, fingerprint, seed

pytestmark = pytest.mark.reliability

HOSTILE_DB = 'shop "prod"; DROP DATABASE x; -- ü😀'
HOSTILE = [
    "x'; DROP TABLE account; --",
    'a "quoted" name',
    "with space",
    "ünïcode😀",
    "semi;colon",
    "back\\slash",
    "$(touch /tmp/pgrunbook-pwned)",
    "-starts-with-dash",
]


@pytest.fixture
def hostile_db(project: Project) -> Iterator[str]:
    """A source database whose very name is hostile, seeded like the others."""
    with psycopg.connect(url_with_dbname(project.url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(HOSTILE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(HOSTILE_DB)))
    url = url_with_dbname(project.url, HOSTILE_DB)
    seed(url)
    yield url
    with psycopg.connect(url_with_dbname(project.url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(HOSTILE_DB)))


def test_a_database_with_a_hostile_name_backs_up_drills_and_restores_exactly(project: Project, hostile_db: str) -> None:
    env = {"DATABASE_URL": hostile_db}
    r = project.cli("--json", "backup", "create", extra_env=env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    stored = json.loads(next(project.storage.rglob("manifest.json")).read_text())
    assert stored["database"] == HOSTILE_DB
    assert project.cli("backup", "verify", manifest["id"], "--drill", extra_env=env).returncode == 0
    r = project.cli("--json", "restore", manifest["id"], "--into", "restored_from_hostile", extra_env=env)
    assert r.returncode == 0, r.stderr
    assert fingerprint(url_with_dbname(project.url, "restored_from_hostile")) == fingerprint(hostile_db)
    with psycopg.connect(url_with_dbname(project.url, "postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE restored_from_hostile WITH (FORCE)")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_cleanly_and_touch_nothing(seeded: Project, name: str) -> None:
    before = fingerprint(seeded.url)
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    with psycopg.connect(seeded.url) as conn:
        databases = conn.execute("SELECT count(*) FROM pg_database").fetchone()
    # a database to restore into: any name PostgreSQL takes is restored into exactly (quoted everywhere)
    restored = seeded.cli("--json", "restore", bid, "--into", name)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["database"] == name
    assert fingerprint(url_with_dbname(seeded.url, name)) == before
    with psycopg.connect(url_with_dbname(seeded.url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    assert_clean_error(seeded.cli("restore", bid, "--into", name + "x" * 63), 3, "invalid database name")
    # a label
    assert_clean_error(seeded.cli("backup", "create", "--label", name), 3, "invalid label")
    # an environment on the command line, and one defined in the config file
    assert_clean_error(seeded.cli("backup", "list", "--env", name), 3, "unknown environment")
    cfg = seeded.root / "pgrunbook.toml"
    original = cfg.read_text()
    cfg.write_text(original + f"[environments.{json.dumps(name)}]\n")
    assert_clean_error(seeded.cli("backup", "list"), 3, "pgrunbook.toml")
    cfg.write_text(original)
    # a migration name given to resolve
    mig = seeded.root / "prisma" / "migrations" / "20260101000000_init"
    mig.mkdir(parents=True, exist_ok=True)
    (mig / "migration.sql").write_text("CREATE TABLE hostile_probe (id int);\n")
    assert_clean_error(seeded.cli("migrate", "resolve", "--applied", name), 3, "could not be found")
    # a backup id
    assert_clean_error(seeded.cli("backup", "verify", "--", name), 2, "no backup")
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database").fetchone() == databases
    assert fingerprint(seeded.url) == before
    assert not Path("/tmp/pgrunbook-pwned").exists()
    assert [b["id"] for b in json.loads(seeded.cli("--json", "backup", "list").stdout)] == [bid]


CONTROL = ["x\nerror: all good", "tab\there", "esc\x1b[2Jx", "bidi\u202eevil"]


@pytest.mark.parametrize("name", CONTROL)
def test_names_with_control_characters_are_refused_not_printed_as_other_lines(seeded: Project, name: str) -> None:
    """Breaker trial 11 #14: `restore --into $'x\\nerror: all good'` was accepted and its output ended with a
    fake `error: all good` line at exit 0; a migration folder named so printed a fake line in status and
    deploy. Both are refused, the name shown escaped, nothing touched."""
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    before = fingerprint(seeded.url)
    r = seeded.cli("restore", bid, "--into", name)
    assert_clean_error(r, 3, "invalid database name", "control character")
    assert name not in r.stderr + r.stdout
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)
    mig = seeded.root / "prisma" / "migrations" / f"20260101000000_{name}"
    mig.mkdir(parents=True)
    (mig / "migration.sql").write_text("CREATE TABLE control_probe (id int);\n")
    for args in (("status",), ("migrate", "deploy")):
        r = seeded.cli(*args)
        assert_clean_error(r, 3, "holds a control character")
        assert name not in r.stderr + r.stdout
    assert fingerprint(seeded.url) == before

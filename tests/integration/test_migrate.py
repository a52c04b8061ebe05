"""Native Prisma Migrate against a real server, on the umami history (19 real migrations) and on
purpose-built ones. Row details are pinned to schema-engine's sql_migration_persistence.rs and
commands/apply_migrations.rs, since Prisma's own deploy cannot run here (see shared/prisma-oracle)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PASSWORD, Project, assert_clean_error, suite_tools

pytestmark = pytest.mark.integration

UMAMI = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "prisma" / "umami" / "migrations"


def _require_umami() -> Path:
    if not UMAMI.is_dir():
        pytest.skip(f"fixture {UMAMI} not found (../shared beside the repository)")
    return UMAMI


def make_migrations(project: Project, files: dict[str, str]) -> Path:
    folder = project.root / "prisma" / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for name, sql_text in files.items():
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "migration.sql").write_text(sql_text)
    return folder


def rows(url: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT * FROM _prisma_migrations ORDER BY started_at")
        cols = [d.name for d in cur.description or ()]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def schema_dump(url: str) -> str:
    tools = suite_tools()
    out = subprocess.run(
        [str(tools.pg_dump), "--schema-only", "--no-owner", "--exclude-table=_prisma_migrations", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # \restrict lines carry a random key per dump (PostgreSQL 15.14+): not part of the schema
    return "\n".join(ln for ln in out.splitlines() if not ln.startswith(("--", "\\restrict", "\\unrestrict")))


def test_umami_from_scratch_matches_psql_and_prisma_rows(project: Project, cluster) -> None:
    src = _require_umami()
    shutil.copytree(src, project.root / "prisma" / "migrations")
    before = project.cli("status", "--json")
    assert before.returncode == 1
    assert len(json.loads(before.stdout)["pending"]) == 19
    deploy = project.cli("migrate", "deploy")
    assert deploy.returncode == 0, deploy.stderr
    after = project.cli("status")
    assert after.returncode == 0 and "Database schema is up to date!" in after.stdout
    history = rows(project.url)
    assert [r["migration_name"] for r in history] == sorted(p.name for p in src.iterdir() if p.is_dir())
    for r in history:
        script = (src / r["migration_name"] / "migration.sql").read_bytes()
        assert r["checksum"] == hashlib.sha256(script).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", r["id"])
        assert r["finished_at"] is not None and r["rolled_back_at"] is None and r["logs"] is None
        assert r["applied_steps_count"] == 1 and r["finished_at"] >= r["started_at"]
    # the reference: psql applying the files in order to another database
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS umami_psql")
        conn.execute("CREATE DATABASE umami_psql")
    ref = cluster.url("umami_psql")
    psql = suite_tools().pg_dump.with_name("psql")
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        subprocess.run(
            [str(psql), "-q", "-v", "ON_ERROR_STOP=1", "-f", str(folder / "migration.sql"), ref],
            check=True,
            capture_output=True,
        )
    assert schema_dump(project.url) == schema_dump(ref)
    # and the history table's DDL is Prisma's (flavour/postgres.rs, create_migrations_table)
    with psycopg.connect(project.url) as conn:
        cols = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position"
        ).fetchall()
    assert cols == [
        ("id", "character varying", 36, "NO", None),
        ("checksum", "character varying", 64, "NO", None),
        ("finished_at", "timestamp with time zone", None, "YES", None),
        ("migration_name", "character varying", 255, "NO", None),
        ("logs", "text", None, "YES", None),
        ("rolled_back_at", "timestamp with time zone", None, "YES", None),
        ("started_at", "timestamp with time zone", None, "NO", "now()"),
        ("applied_steps_count", "integer", None, "NO", "0"),
    ]


DUPLICATED = "detail: Key (browser)=(firefox) is duplicated."


def test_a_failed_migrations_error_carries_postgres_detail_and_hint(project: Project) -> None:
    """trial11 F6: the error line said `23505 could not create unique index "session_browser_key"` and
    dropped PostgreSQL's DETAIL, the part that says which rows to fix; status showed no error at all."""
    folder = make_migrations(
        project,
        {
            "01_init": "CREATE TABLE session (id int, browser text);\n"
            "INSERT INTO session VALUES (1, 'firefox'), (2, 'firefox'), (3, 'lynx');",
            "02_bad": 'CREATE UNIQUE INDEX "session_browser_key" ON "session"("browser");',
        },
    )
    deploy = project.cli("migrate", "deploy")
    assert_clean_error(
        deploy, 2, "migration 02_bad failed", '23505 could not create unique index "session_browser_key"'
    )
    assert DUPLICATED in deploy.stderr.splitlines()[0], deploy.stderr
    status = project.cli("status")
    assert status.returncode == 2
    assert re.search(r"failed  02_bad: 23505 could not create unique index .*; " + re.escape(DUPLICATED), status.stdout)
    data = json.loads(project.cli("--json", "status").stdout)
    assert DUPLICATED in data["errors"]["02_bad"] and data["errors"]["02_bad"].startswith("23505 ")
    # PostgreSQL's HINT goes to the hint line, as a restore failure's does
    assert project.cli("migrate", "resolve", "--rolled-back", "02_bad").returncode == 0
    (folder / "02_bad" / "migration.sql").write_text("SELECT no_such_function(1);\n")
    again = project.cli("--json", "migrate", "deploy")
    assert_clean_error(again, 2, "42883 function no_such_function(integer) does not exist")
    assert "hint: PostgreSQL says: No function matches the given name and argument types" in again.stderr
    assert "its history row keeps the logs" in again.stderr


def test_failed_migration_is_recorded_refused_then_resolved(project: Project) -> None:
    folder = make_migrations(
        project,
        {
            "01_init": "CREATE TABLE item (id int PRIMARY KEY, name text);",
            "02_broken": "ALTER TABLE item ADD COLUMN price int;\nUPDATE item SET price = no_such_column;\n",
        },
    )
    deploy = project.cli("migrate", "deploy")
    assert_clean_error(deploy, 2, "migration 02_broken failed", "42703", 'column "no_such_column" does not exist')
    assert "migrate resolve --rolled-back 02_broken" in deploy.stderr
    history = rows(project.url)
    broken = history[-1]
    assert broken["migration_name"] == "02_broken" and broken["finished_at"] is None
    assert broken["applied_steps_count"] == 0 and broken["rolled_back_at"] is None
    logs = broken["logs"]  # Prisma's P3018 text, the failing line numbered from 1 as Prisma numbers it
    assert "\n\nMigration name: 02_broken\n\nDatabase error code: 42703\n\nDatabase error:\nERROR: column" in logs
    assert "\n\nPosition:\n\x1b[1m  0\x1b[0m\n\x1b[1m  1\x1b[0m ALTER TABLE item ADD COLUMN price int;\n" in logs
    assert "\x1b[1m  2\x1b[1;31m UPDATE item SET price = no_such_column;\x1b[0m\n\nDbError { " in logs
    assert "code: SqlState(E42703)" in logs and "position: Some(Original(" in logs
    with psycopg.connect(project.url) as conn:  # one implicit transaction: the first ALTER is undone too
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'item'"
            ).fetchall()
        ]
    assert "price" not in cols
    status = project.cli("--json", "status")
    assert status.returncode == 2 and json.loads(status.stdout)["failed"] == ["02_broken"]
    again = project.cli("migrate", "deploy")
    assert_clean_error(again, 2, "P3009", "02_broken")
    resolved = project.cli("migrate", "resolve", "--rolled-back", "02_broken")
    assert resolved.returncode == 0, resolved.stderr
    assert rows(project.url)[-1]["rolled_back_at"] is not None
    (folder / "02_broken" / "migration.sql").write_text("ALTER TABLE item ADD COLUMN price int;\n")
    fixed = project.cli("migrate", "deploy")
    assert fixed.returncode == 0, fixed.stderr
    assert project.cli("status").returncode == 0
    names = [
        (r["migration_name"], r["finished_at"] is not None, r["rolled_back_at"] is not None) for r in rows(project.url)
    ]
    assert names == [("01_init", True, False), ("02_broken", False, True), ("02_broken", True, False)]


def test_scripts_run_as_one_string_like_prisma(project: Project) -> None:
    make_migrations(
        project,
        {
            "01_tx": "BEGIN;\nCREATE TABLE a (id int PRIMARY KEY, v int);\nINSERT INTO a VALUES (1, 1);\nCOMMIT;\n",
            "02_concurrent": "CREATE INDEX CONCURRENTLY a_v_idx ON a (v);\n",
        },
    )
    assert project.cli("migrate", "deploy").returncode == 0
    make_migrations(project, {"03_mixed": "CREATE TABLE b (id int);\nCREATE INDEX CONCURRENTLY b_idx ON b (id);\n"})
    r = project.cli("migrate", "deploy")
    assert_clean_error(r, 2, "03_mixed", "cannot run inside a transaction block")
    with psycopg.connect(project.url) as conn:
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)  # all or nothing, as Prisma
        assert conn.execute("SELECT to_regclass('a_v_idx') IS NOT NULL").fetchone() == (True,)


def test_two_deploys_at_once_apply_each_migration_once(project: Project) -> None:
    make_migrations(
        project,
        {
            "01_slow": "CREATE TABLE s (id int); SELECT pg_sleep(1.5);",
            "02_next": "ALTER TABLE s ADD COLUMN v int;",
        },
    )
    cmd = [sys.executable, "-m", "pgrunbook", "--json", "migrate", "deploy"]
    procs = [
        subprocess.Popen(
            cmd, cwd=project.root, env=project.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    applied = sorted(len(json.loads(out)["applied"]) for out, _ in results)
    assert applied == [0, 2]  # the second waited on the lock, then found nothing pending
    assert [r["migration_name"] for r in rows(project.url)] == ["01_slow", "02_next"]


def test_lock_held_by_someone_else_is_named(project: Project) -> None:
    make_migrations(project, {"01": "CREATE TABLE t (id int);"})
    project.write_config('[backup]\nstorage = "backups"\n[migrate]\nlock_wait_s = 1\n')
    holder = psycopg.connect(project.url, autocommit=True, application_name="stuck-migrator")
    try:
        holder.execute("SELECT pg_advisory_lock(72707369)")
        t0 = time.monotonic()
        r = project.cli("migrate", "deploy")
        assert time.monotonic() - t0 < 15
        assert_clean_error(r, 2, "P1002", f"pid {holder.info.backend_pid}", "stuck-migrator")
        assert f"pg_terminate_backend({holder.info.backend_pid})" in r.stderr
    finally:
        holder.close()
    assert project.cli("migrate", "deploy").returncode == 0


def test_a_lock_holder_hidden_from_the_role_is_not_called_a_local_socket(project: Project) -> None:
    """trial11 F16: a runbook role without pg_read_all_stats sees no client, start or query of another
    role's session; the message said "from local socket since unknown time, last query '<insufficient
    privilege>'" for a TCP client. It now says the details are hidden and how to see them."""
    make_migrations(project, {"01": "CREATE TABLE t (id int);"})
    project.write_config('[backup]\nstorage = "backups"\n[migrate]\nlock_wait_s = 1\n')
    role, password = "runbook_no_stats", "Pw-nostats-Zq9"
    dbname = project.url.rsplit("/", 1)[1]
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(sql.Identifier(dbname), sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(role)))
    url = project.url.replace(project.url.split("//", 1)[1].split("@", 1)[0], f"{role}:{password}", 1)
    holder = psycopg.connect(project.url, autocommit=True, application_name="stuck-migrator")  # TCP, superuser
    try:
        holder.execute("SELECT pg_advisory_lock(72707369)")
        r = project.cli("migrate", "deploy", extra_env={"DATABASE_URL": url})
        pid = holder.info.backend_pid
        assert_clean_error(r, 2, "P1002", f"pid {pid}", "hidden from this role", "pg_read_all_stats")
        assert "local socket" not in r.stderr and "insufficient privilege" not in r.stderr
    finally:
        holder.close()
        with psycopg.connect(project.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_prisma_error_rules(project: Project) -> None:
    make_migrations(project, {"01_init": "CREATE TABLE t (id int);", "02_more": "CREATE TABLE u (id int);"})
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE legacy (id int)")
    p3005 = project.cli("migrate", "deploy")
    assert_clean_error(p3005, 2, "P3005", "legacy")
    assert "baseline" in p3005.stderr
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute("DROP TABLE legacy; CREATE TABLE t (id int)")
    assert project.cli("migrate", "resolve", "--applied", "01_init").returncode == 0  # baseline
    baseline = rows(project.url)[0]
    assert baseline["logs"] == "" and baseline["started_at"] == baseline["finished_at"]
    assert baseline["applied_steps_count"] == 0
    assert_clean_error(project.cli("migrate", "resolve", "--applied", "01_init"), 2, "P3008")
    assert_clean_error(project.cli("migrate", "resolve", "--applied", "99_nope"), 3, "P3017")
    assert_clean_error(project.cli("migrate", "resolve", "--rolled-back", "02_more"), 2, "P3011")
    assert_clean_error(project.cli("migrate", "resolve", "--rolled-back", "01_init"), 2, "P3012")
    assert_clean_error(project.cli("migrate", "resolve"), 3, "exactly one of")
    dry = project.cli("migrate", "deploy", "--dry-run")
    assert dry.returncode == 0 and "02_more" in dry.stdout
    assert len(rows(project.url)) == 1
    assert project.cli("migrate", "deploy").returncode == 0


def test_status_reports_modified_and_missing_locally(project: Project) -> None:
    folder = make_migrations(project, {"01_a": "CREATE TABLE a (id int);", "02_b": "CREATE TABLE b (id int);"})
    assert project.cli("migrate", "deploy").returncode == 0
    (folder / "01_a" / "migration.sql").write_text("CREATE TABLE a (id bigint);")
    shutil.rmtree(folder / "02_b")
    r = project.cli("--json", "status")
    assert r.returncode == 2
    data = json.loads(r.stdout)
    assert data["modified"] == ["01_a"] and data["missing_locally"] == ["02_b"]
    # CRLF conversion by git is not a modification (checksum.rs)
    (folder / "01_a" / "migration.sql").write_bytes(b"CREATE TABLE a (id int);".replace(b"\n", b"\r\n"))
    assert json.loads(project.cli("--json", "status").stdout)["modified"] == []


def test_protected_environment_needs_a_fresh_verified_backup_or_confirm(project: Project) -> None:
    make_migrations(project, {"01": "CREATE TABLE t (id int);"})
    project.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = '
        '"DATABASE_URL"\nprotected = true\n'
    )
    r = project.cli("migrate", "deploy")
    assert_clean_error(r, 3, "is protected and has no verified backup from the last hour")
    dbname = project.url.rsplit("/", 1)[1]
    assert_clean_error(project.cli("migrate", "deploy", "--confirm", "wrong"), 3, "does not match")
    backup = json.loads(project.cli("--json", "backup", "create").stdout)["id"]
    assert project.cli("backup", "verify", backup).returncode == 0
    allowed = project.cli("migrate", "deploy")
    assert allowed.returncode == 0, allowed.stderr
    # newuser14 U3: which backup let the migration run on a protected environment is said
    assert f"note: environment production is protected: verified backup {backup} (" in allowed.stderr
    assert "min ago) is the restore point before this migration" in allowed.stderr
    make_migrations(project, {"02": "CREATE TABLE u (id int);"})
    assert project.cli("migrate", "deploy", "--confirm", dbname).returncode == 0


def test_engine_prisma_runs_the_configured_command_with_the_url_in_its_environment(project: Project) -> None:
    make_migrations(project, {"01": "CREATE TABLE t (id int);"})
    # the "Prisma" here is pgrunbook itself run as an external command: it reads DATABASE_URL from its
    # environment exactly as `pnpm prisma migrate deploy` would (Prisma's deploy cannot run on this machine)
    (project.root / "inner.toml").write_text('[project]\nmigrations = "prisma/migrations"\n')
    command = f"{sys.executable} -m pgrunbook --config inner.toml migrate deploy"
    project.write_config(f'[migrate]\nengine = "prisma"\nprisma_command = "{command}"\n')
    r = project.cli("--json", "migrate", "deploy")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["engine"] == "prisma" and [a["name"] for a in data["applied"]] == ["01"]
    assert PASSWORD not in r.stdout + r.stderr


def test_pooler_url_warns(project: Project) -> None:
    make_migrations(project, {"01": "CREATE TABLE t (id int);"})
    r = project.cli("migrate", "deploy", extra_env={"DATABASE_URL": project.url + "?pgbouncer=true"})
    assert r.returncode == 0
    assert "transaction-mode pooler" in r.stderr


def test_lint_cli_checks_pending_migrations_only(project: Project) -> None:
    folder = make_migrations(project, {"01_init": 'CREATE TABLE "User" ("id" INT, "age" INT);'})
    assert project.cli("migrate", "deploy").returncode == 0
    make_migrations(
        project,
        {
            "02_drop": 'ALTER TABLE "User" DROP COLUMN "age";',
            "03_idx": 'CREATE INDEX CONCURRENTLY "u_id" ON "User"("id");',
        },
    )
    r = project.cli("--json", "migrate", "lint")
    assert r.returncode == 2
    data = json.loads(r.stdout)
    assert data["scope"] == "pending migrations" and data["files"] == 2
    assert [(f["file"], f["line"], f["rule"]) for f in data["findings"]] == [
        ("02_drop/migration.sql", 1, "ban-drop-column")
    ]
    text = project.cli("migrate", "lint")
    assert "02_drop/migration.sql:1: error [ban-drop-column] drops a column" in text.stdout
    assert "instead:" in text.stdout
    clean = project.cli("migrate", "lint", str(folder / "03_idx" / "migration.sql"))
    assert clean.returncode == 0

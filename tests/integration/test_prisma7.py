"""Prisma 7 parity against a real server: prisma.config.ts projects, ``?schema=``, statement splitting.

What Prisma 7.4+ leaves after a script fails is pinned from prisma-engines #5767 (the native connector sends
each statement of split_script_into_statements with its own simple_query, so each is its own implicit
transaction; apply_migrations.rs records one step per script): the statements before the failing one stay
committed, the failing one is rolled back, the rest never run, and the history row has finished_at NULL,
applied_steps_count 0 and the error in logs. Prisma 7's own engine reads those rows in
test_prisma7_oracle.py.
"""

from __future__ import annotations

import json
import os
import secrets

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pgrunbook.environment import Environment
from pgrunbook.prisma.config_file import load_project_config
from pgrunbook.prisma.engine import MigrationFailed, migrate_deploy
from tests.conftest import PASSWORD, assert_clean_error
from tests.integration.conftest import CONFIG_TS, P7, SCHEMA

pytestmark = pytest.mark.integration

# a column added and two indexes built without blocking writes: one migration, four statements
CONCURRENT = (
    'ALTER TABLE "item" ADD COLUMN "price" INTEGER;\n'
    'INSERT INTO "item" ("price") SELECT g FROM generate_series(1, 500) g;\n'
    'CREATE INDEX CONCURRENTLY "item_price_idx" ON "item"("price");\n'
    'CREATE INDEX CONCURRENTLY "item_id_price_idx" ON "item"("id", "price");\n'
)
# a failing statement in the middle
BROKEN = (
    'CREATE TABLE "first" ("id" INTEGER);\n'
    'INSERT INTO "first" VALUES (1);\n'
    "-- fails: division by zero\n"
    'INSERT INTO "first" SELECT 1 / 0;\n'
    'CREATE TABLE "never" ("id" INTEGER);\n'
)


def _one(url: str, query: str, *args: object) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, args or None).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None


def _tables(url: str, schema: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
            (schema,),
        ).fetchall()
    return [r[0] for r in rows]


def _history(url: str, schema: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY started_at").format(sql.Identifier(schema, "_prisma_migrations"))
        )
        cols = [d.name for d in cur.description or ()]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# --- prisma.config.ts without pgrunbook.toml ---------------------------------------------------------


def test_prisma7_project_without_toml_status_migrate_backup_deploy_and_init(p7: P7) -> None:
    assert not (p7.root / "pgrunbook.toml").exists()
    before = p7.cli("--json", "status")
    assert before.returncode == 1, before.stderr  # pending, not "set [project] migrations"
    assert json.loads(before.stdout)["pending"] == ["20260101000000_init"]

    deploy = p7.cli("migrate", "deploy")
    assert deploy.returncode == 0, deploy.stderr
    assert _tables(p7.base_url, "public") == ["_prisma_migrations", "item"]
    assert p7.cli("status").returncode == 0

    backup = p7.cli("--json", "backup", "create")
    assert backup.returncode == 0, backup.stderr
    assert (p7.root / "backups").is_dir()  # storage relative to the project root

    p7.migration("20260102000000_price", CONCURRENT)
    full = p7.cli("--json", "deploy")
    assert full.returncode == 0, full.stdout + full.stderr
    assert _one(p7.base_url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0

    doctor = p7.cli("doctor")
    assert "db/migrations" in doctor.stdout and "prisma.config.ts: migrations.path" in doctor.stdout
    assert 'datasource.url = env("APP_DB_URL")' in doctor.stdout
    assert "7.4.0 from package.json" in doctor.stdout and "statement by statement" in doctor.stdout

    init = p7.cli("init")
    assert init.returncode == 0, init.stderr
    text = (p7.root / "pgrunbook.toml").read_text()
    assert 'migrations = "db/migrations"' in text and 'database_url_env = "APP_DB_URL"' in text
    assert '# prisma_version = "7.4.0"' in text  # not pinned: read from package.json at every run
    assert p7.cli("status").returncode == 0  # the written file reads the same project


def test_dotenv_is_loaded_only_as_the_projects_prisma_would(p7: P7) -> None:
    url = p7.environ.pop("APP_DB_URL")
    (p7.root / ".env").write_text(f"APP_DB_URL={url}\n")
    ok = p7.cli("migrate", "deploy")
    assert ok.returncode == 0, ok.stderr  # prisma.config.ts imports dotenv/config: .env is read
    doctor = p7.cli("doctor")
    assert "APP_DB_URL from .env (prisma.config.ts imports dotenv/config)" in doctor.stdout

    # Prisma 7 does not load .env by itself: without the import, neither does pgrunbook
    (p7.root / "prisma.config.ts").write_text(CONFIG_TS.replace('import "dotenv/config";\n', ""))
    missing = p7.cli("status")
    assert_clean_error(missing, 3, "APP_DB_URL is not set", 'prisma.config.ts: datasource.url = env("APP_DB_URL")')
    assert 'hint: .env holds APP_DB_URL, but prisma.config.ts does not import "dotenv/config"' in missing.stderr

    # a variable set in the environment wins over .env, as dotenv never overrides
    (p7.root / "prisma.config.ts").write_text(CONFIG_TS)
    (p7.root / ".env").write_text("APP_DB_URL=postgresql://nobody@127.0.0.1:1/none\n")
    assert p7.cli("status", extra_env={"APP_DB_URL": url}).returncode == 0


@pytest.mark.parametrize(
    ("config", "needle", "key"),
    [
        (
            "export default defineConfig({ migrations: { path: dirs.migrations }, datasource: { url: env('X') } });",
            "migrations.path",
            "[project] migrations",
        ),
        (
            "export default defineConfig({ datasource: { url: `postgresql://${host}/shop` } });",
            "datasource.url",
            "database_url_env",
        ),
        ("export default buildConfig(process.env.STAGE);", "cannot be read statically", "pgrunbook.toml"),
    ],
)
def test_unreadable_prisma_config_is_one_error_line_naming_the_toml_key(
    p7: P7, config: str, needle: str, key: str
) -> None:
    (p7.root / "prisma.config.ts").write_text(config)
    for command in (("status",), ("migrate", "deploy"), ("backup", "create")):
        result = p7.cli(*command)
        assert_clean_error(result, 3, "prisma.config.ts", needle)
        assert key in result.stderr and "hint: set " in result.stderr
    assert _tables(p7.base_url, "public") == []  # nothing touched
    assert not (p7.root / "backups").exists()
    init = p7.cli("init")  # init still works, and says what it could not read
    assert init.returncode == 0 and "# could not read: prisma.config.ts" in (p7.root / "pgrunbook.toml").read_text()


# --- ?schema= ------------------------------------------------------------------------------------------


def test_schema_parameter_on_a_fresh_database_end_to_end(p7: P7) -> None:
    url = p7.use_schema("Billing-Prod")
    p7.migration("20260102000000_price", CONCURRENT)
    before = p7.cli("--json", "status")  # read-only: reports pending, creates nothing
    assert before.returncode == 1 and len(json.loads(before.stdout)["pending"]) == 2
    assert p7.cli("migrate", "deploy", "--dry-run").returncode == 0
    assert _one(p7.base_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'Billing-Prod'") == 0
    deploy = p7.cli("migrate", "deploy")
    assert deploy.returncode == 0, deploy.stderr
    assert _tables(p7.base_url, "Billing-Prod") == ["_prisma_migrations", "item"]
    assert _tables(p7.base_url, "public") == []
    assert p7.cli("status").returncode == 0

    # lint and the health read query resolve unqualified names in the schema, as the app does
    assert p7.cli("migrate", "lint").returncode == 0
    (p7.root / "pgrunbook.toml").write_text(
        '[environments.default]\ndatabase_url_env = "APP_DB_URL"\nread_query = "SELECT count(*) FROM item"\n'
        '[environments.twin]\ndatabase_url_env = "TWIN_URL"\n'
    )
    health = p7.cli("health", "--env", "default")
    assert health.returncode == 0, health.stdout + health.stderr

    # backup row counts and the restore's verification count the schema's rows
    backup = p7.cli("--json", "backup", "create", "--env", "default")
    assert backup.returncode == 0, backup.stderr
    backup_id = json.loads(backup.stdout)["id"]
    manifest = json.loads((p7.root / "backups" / "default" / backup_id / "manifest.json").read_text())
    counts = {(t["schema"], t["name"]): t["rows"] for t in manifest["tables"]}
    assert counts[("Billing-Prod", "item")] == 500
    assert manifest["migration_head"]["name"] == "20260102000000_price"  # read from the schema's history
    verify = p7.cli("backup", "verify", backup_id, "--env", "default")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # drift against a twin deployed the same way: aligned; then a column added by hand shows
    with psycopg.connect(p7.base_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE twin_" + p7.base_url.rsplit("/", 1)[1])
    twin = p7.base_url.rsplit("/", 1)[0] + "/twin_" + p7.base_url.rsplit("/", 1)[1]
    twin_url = f"{twin}?schema=Billing-Prod"
    assert p7.cli("migrate", "deploy", "--env", "twin", extra_env={"TWIN_URL": twin_url}).returncode == 0
    same = p7.cli("drift", "default", "twin", extra_env={"TWIN_URL": twin_url})
    assert same.returncode == 0, same.stdout + same.stderr
    with psycopg.connect(twin, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Billing-Prod".item ADD COLUMN extra int')
    drifted = p7.cli("drift", "default", "twin", extra_env={"TWIN_URL": twin_url})
    assert drifted.returncode == 1 and "extra" in drifted.stdout
    with psycopg.connect(p7.base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(twin.rsplit("/", 1)[1])))
    assert url.endswith("Billing-Prod")


@pytest.mark.parametrize("schema", ['Billing "Prod" 2', "ünï-Schema", "UPPER"])
def test_any_schema_name_works_as_in_prisma(p7: P7, schema: str) -> None:
    p7.use_schema(schema)
    assert p7.cli("migrate", "deploy").returncode == 0
    assert _tables(p7.base_url, schema) == ["_prisma_migrations", "item"]
    assert _tables(p7.base_url, "public") == []
    assert p7.cli("status").returncode == 0
    resolve = p7.cli("migrate", "resolve", "--applied", "20260101000000_init")
    assert resolve.returncode == 2 and "P3008" in resolve.stderr  # read from the same schema


def test_schema_created_by_hand_gets_the_tables_too(p7: P7) -> None:
    """Before: the history went to the schema and the tables to public, and status said up to date."""
    p7.use_schema("Billing-Prod")
    with psycopg.connect(p7.base_url, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Billing-Prod"')
    assert p7.cli("migrate", "deploy").returncode == 0
    assert _tables(p7.base_url, "Billing-Prod") == ["_prisma_migrations", "item"]
    assert _tables(p7.base_url, "public") == []


def test_a_mistyped_schema_names_the_schema_that_has_the_history(p7: P7) -> None:
    """trial11 F11: ``?schema=shopp`` for ``shop`` was reported as a database with nothing applied, in
    status, doctor and migrate deploy alike, with nothing pointing at the typo. Each now names the schema
    holding the history and the variable to correct; a new schema on purpose (a new tenant) still
    deploys, as under Prisma."""
    p7.use_schema("shop")
    assert p7.cli("migrate", "deploy").returncode == 0
    p7.use_schema("shopp")
    status = p7.cli("status")
    assert status.returncode == 1
    said = "schema shopp has no migration history, but shop in the same database has one"
    assert said in status.stdout and "?schema= in APP_DB_URL" in status.stdout
    assert json.loads(p7.cli("--json", "status").stdout)["history_elsewhere"] == ["shop"]
    doctor = p7.cli("--json", "doctor")
    history = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "prisma history"]
    assert history[0]["status"] == "warning" and said in history[0]["detail"]
    assert "correct ?schema= in APP_DB_URL" in history[0]["hint"]
    deploy = p7.cli("migrate", "deploy")
    assert deploy.returncode == 0 and said in deploy.stderr
    assert _tables(p7.base_url, "shopp") == ["_prisma_migrations", "item"]
    # once it has its own history the schema is a tenant of its own: nothing more is said
    again = p7.cli("status")
    assert again.returncode == 0 and "no migration history" not in again.stdout + again.stderr


def test_a_database_without_any_history_says_nothing_of_other_schemas(p7: P7) -> None:
    p7.use_schema("fresh")
    status = p7.cli("--json", "status")
    assert json.loads(status.stdout)["history_elsewhere"] == []
    assert "no migration history" not in p7.cli("status").stdout


def test_invalid_schema_name_is_refused_before_anything_is_touched(p7: P7) -> None:
    p7.use_schema("x" * 64)
    for command in (("status",), ("migrate", "deploy")):
        assert_clean_error(p7.cli(*command), 3, "?schema= names an invalid PostgreSQL schema")
    with psycopg.connect(p7.base_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'xxxx%'").fetchone() == (0,)


def test_multi_schema_datasource_deploys_reports_and_drifts(p7: P7) -> None:
    """Prisma's ``schemas = [...]``: migrations name their schemas; the history stays in the URL's schema."""
    (p7.root / "prisma" / "schema.prisma").write_text(
        SCHEMA.replace('provider = "postgresql"\n', 'provider = "postgresql"\n  schemas  = ["base", "Billing-Prod"]\n')
    )
    p7.migration(
        "20260102000000_multi",
        'CREATE SCHEMA IF NOT EXISTS "base";\nCREATE SCHEMA IF NOT EXISTS "Billing-Prod";\n'
        'CREATE TABLE "base"."user" ("id" INTEGER PRIMARY KEY);\n'
        'CREATE TABLE "Billing-Prod"."invoice" ("id" INTEGER PRIMARY KEY,\n'
        '  "user_id" INTEGER REFERENCES "base"."user"("id"));\n',
    )
    p7.use_schema("base")
    assert p7.cli("migrate", "deploy").returncode == 0
    assert _tables(p7.base_url, "base") == ["_prisma_migrations", "item", "user"]
    assert _tables(p7.base_url, "Billing-Prod") == ["invoice"]
    assert p7.cli("status").returncode == 0
    assert "base, Billing-Prod" in p7.cli("doctor").stdout
    (p7.root / "pgrunbook.toml").write_text(
        '[environments.a]\ndatabase_url_env = "APP_DB_URL"\n[environments.b]\ndatabase_url_env = "APP_DB_URL"\n'
    )
    assert p7.cli("drift", "a", "b").returncode == 0


# --- statement splitting ---------------------------------------------------------------------------------


def test_concurrent_indexes_with_a_column_apply_under_prisma7_and_fail_under_prisma6(p7: P7) -> None:
    assert p7.cli("migrate", "deploy").returncode == 0
    p7.migration("20260102000000_price", CONCURRENT)

    p7.prisma_version("6.19.3")
    old = p7.cli("migrate", "deploy")
    assert old.returncode == 2 and "25001" in old.stderr  # as today: one string, one implicit transaction
    assert _one(p7.base_url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'price'") == 0
    lint6 = p7.cli("migrate", "lint", "--all")
    assert lint6.returncode == 2 and "concurrently-in-multi-statement-script" in lint6.stdout
    assert p7.cli("migrate", "resolve", "--rolled-back", "20260102000000_price").returncode == 0

    p7.prisma_version("^7.4.0")
    lint7 = p7.cli("migrate", "lint", "--all")
    assert "concurrently-in-multi-statement-script" not in lint7.stdout
    new = p7.cli("migrate", "deploy")
    assert new.returncode == 0, new.stderr
    valid = _one(
        p7.base_url,
        "SELECT array_agg(c.relname::text || ':' || i.indisvalid ORDER BY c.relname) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'item_%idx'",
    )
    assert valid == ["item_id_price_idx:true", "item_price_idx:true"]
    row = _history(p7.base_url, "public")[-1]
    assert row["finished_at"] is not None and row["applied_steps_count"] == 1 and row["logs"] is None


@pytest.mark.parametrize(
    "script",
    [
        'DROP INDEX CONCURRENTLY "item_id_idx";\nALTER TABLE "item" ADD COLUMN "x" INTEGER;\n',
        'DO $$ BEGIN RAISE NOTICE \'backfill\'; END $$;\nCREATE INDEX CONCURRENTLY "item_x_idx" ON "item"("id");\n',
    ],
)
def test_what_prismas_splitter_cannot_parse_still_fails_under_prisma7_as_prisma_does(p7: P7, script: str) -> None:
    """prisma-engines #5847 (open): sqlparser 0.61 cannot parse it, so the whole script goes at once."""
    p7.migration("20260102000000_idx", 'CREATE INDEX "item_id_idx" ON "item"("id");\n')
    assert p7.cli("migrate", "deploy").returncode == 0
    p7.migration("20260103000000_next", script)
    result = p7.cli("migrate", "deploy")
    assert result.returncode == 2 and "25001" in result.stderr
    assert _one(p7.base_url, "SELECT count(*) FROM pg_class WHERE relname = 'item_x_idx'") == 0
    lint = p7.cli("migrate", "lint", "--all")
    assert "concurrently-in-multi-statement-script" in lint.stdout


@pytest.mark.parametrize(("version", "first_table_rows"), [("7.4.0", 1), ("6.19.3", None)])
def test_failing_statement_in_the_middle_leaves_what_that_prisma_leaves(
    p7: P7, version: str, first_table_rows: int | None
) -> None:
    p7.prisma_version(version)
    p7.migration("20260102000000_broken", BROKEN)
    result = p7.cli("migrate", "deploy")
    assert_clean_error(result, 2, "20260102000000_broken", "22012")
    if first_table_rows is None:
        assert "(nothing applied)" in result.stderr
    else:  # the hint says what stayed, so resolving it is a true choice
        assert "statement 3 of 4" in result.stderr and "the 2 statement(s) before it stayed applied" in result.stderr
    status = p7.cli("status")  # what the next on-call reads (trial11 F15): never "nothing applied" for it
    assert status.returncode != 0 and "(nothing applied)" not in status.stdout + status.stderr
    assert "the statements before the failing one" in status.stdout + status.stderr, status.stdout + status.stderr
    tables = _tables(p7.base_url, "public")
    assert "never" not in tables and "item" in tables  # the earlier migration stays, the rest never runs
    if first_table_rows is None:  # one implicit transaction: nothing of the script stays
        assert "first" not in tables
    else:  # each statement its own implicit transaction: those before the failure stay committed
        assert _one(p7.base_url, 'SELECT count(*) FROM "first"') == first_table_rows
    row = _history(p7.base_url, "public")[-1]
    assert row["migration_name"] == "20260102000000_broken"
    assert row["finished_at"] is None and row["rolled_back_at"] is None and row["applied_steps_count"] == 0
    logs = row["logs"]  # Prisma's P3018 text (pgrunbook.prisma.logs; tests/unit/test_prisma_logs.py)
    assert logs.startswith("A migration failed to apply. New migrations cannot be applied before the error")
    assert "\n\nMigration name: 20260102000000_broken\n\nDatabase error code: 22012\n\n" in logs
    assert '\n\nDatabase error:\nERROR: division by zero\n\nDbError { severity: "ERROR", ' in logs
    assert 'code: SqlState(E22012), message: "division by zero"' in logs and logs.endswith(" }\n")
    status = p7.cli("--json", "status")
    assert status.returncode == 2 and json.loads(status.stdout)["failed"] == ["20260102000000_broken"]


POSITIONED = (
    'CREATE TABLE "a" ("id" INTEGER);\n\n-- the broken one\nUPDATE "a"\nSET "nope" = 1;\n'
    'CREATE TABLE "b" ("id" INTEGER);\n'
)
B, R, X = "\x1b[1m", "\x1b[1;31m", "\x1b[0m"


@pytest.mark.parametrize(
    ("version", "block"),
    [  # Prisma counts PostgreSQL's position in the text it sent: the statement (7.4+) or the whole script
        ("7.4.0", f'{B}  0{X}\n{B}  1{X} -- the broken one\n{B}  2{X} UPDATE "a"\n{B}  3{R} SET "nope" = 1{X}'),
        (
            "6.19.3",
            f'{B}  0{X}\n{B}  1{X} CREATE TABLE "a" ("id" INTEGER);\n{B}  2{X}\n{B}  3{X} -- the broken one\n'
            f'{B}  4{X} UPDATE "a"\n{B}  5{R} SET "nope" = 1;{X}',
        ),
    ],
)
def test_the_position_in_the_logs_is_counted_in_what_was_sent(p7: P7, version: str, block: str) -> None:
    p7.prisma_version(version)
    p7.migration("20260102000000_pos", POSITIONED)
    assert p7.cli("migrate", "deploy").returncode == 2
    logs = _history(p7.base_url, "public")[-1]["logs"]
    assert f'ERROR: column "nope" of relation "a" does not exist\n\nPosition:\n{block}\n\nDbError {{ ' in logs
    assert "code: SqlState(E42703)" in logs


def test_every_field_postgresql_reports_reaches_the_logs_as_prismas_driver_renders_it(p7: P7) -> None:
    """A unique violation carries DETAIL, schema, table and constraint: each lands where Prisma puts it."""
    p7.migration("20260102000000_dup", 'INSERT INTO "item" ("id") VALUES (1);\nINSERT INTO "item" ("id") VALUES (1);\n')
    assert p7.cli("migrate", "deploy").returncode == 2
    logs = _history(p7.base_url, "public")[-1]["logs"]
    assert (
        "Database error code: 23505\n\nDatabase error:\nERROR: duplicate key value violates unique constraint" in logs
    )
    assert (
        '\nDETAIL: Key (id)=(1) already exists.\n\nDbError { severity: "ERROR", parsed_severity: Some(Error), ' in logs
    )
    assert 'code: SqlState(E23505), message: "duplicate key value violates unique constraint \\"item_pkey\\"", ' in logs
    assert 'detail: Some("Key (id)=(1) already exists."), hint: None, position: None, where_: None, ' in logs
    assert 'schema: Some("public"), table: Some("item"), column: None, datatype: None, ' in logs
    assert 'constraint: Some("item_pkey"), file: Some("nbtinsert.c"), line: Some(' in logs


def test_begin_commit_block_failing_inside_is_rolled_back_whole_under_split(p7: P7) -> None:
    p7.migration(
        "20260102000000_tx",
        'CREATE TABLE "before" ("id" INTEGER);\nBEGIN;\nCREATE TABLE "inside" ("id" INTEGER);\nSELECT 1/0;\nCOMMIT;\n',
    )
    result = p7.cli("migrate", "deploy")
    assert result.returncode == 2
    tables = _tables(p7.base_url, "public")
    assert "before" in tables and "inside" not in tables
    assert p7.cli("migrate", "resolve", "--rolled-back", "20260102000000_tx").returncode == 0  # session usable


def test_secrets_stay_out_of_the_new_messages(p7: P7) -> None:
    p7.environ["APP_DB_URL"] = p7.base_url.replace("@", "@") + "?schema=" + "y" * 70
    result = p7.cli("status")
    assert_clean_error(result, 3)
    assert PASSWORD not in result.stdout + result.stderr


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(min_value=1, max_value=6),
    fail_at=st.integers(min_value=0, max_value=6),
    version=st.sampled_from(["6.19.3", "7.4.0", "7.10.1"]),
)
def test_a_failure_leaves_exactly_what_that_prisma_version_leaves(p7: P7, n: int, fail_at: int, version: str) -> None:
    """The kind, not the example: any script length, any failing position, either semantics (in-process)."""
    schema = f"h_{secrets.token_hex(4)}"
    url = p7.use_schema(schema)
    (p7.root / "pgrunbook.toml").write_text(
        f'[migrate]\nprisma_version = "{version}"\n[environments.default]\ndatabase_url_env = "APP_DB_URL"\n'
    )
    statements = [f'CREATE TABLE "t{i}" ("id" INTEGER)' for i in range(n)]
    failing = fail_at < n
    if failing:
        statements[fail_at] = "SELECT 1 / 0"
    p7.migration("20260102000000_generated", "".join(f"-- step {i}\n{s};\n" for i, s in enumerate(statements)))
    saved = os.environ.get("APP_DB_URL")
    os.environ["APP_DB_URL"] = url
    try:
        env = Environment.resolve(load_project_config(cwd=p7.root, environ=p7.environ))
        if failing:
            with pytest.raises(MigrationFailed):
                migrate_deploy(env)
        else:
            migrate_deploy(env)
    finally:
        if saved is None:
            os.environ.pop("APP_DB_URL", None)
        else:
            os.environ["APP_DB_URL"] = saved
    created = {t for t in _tables(p7.base_url, schema) if t.startswith("t")}
    if not failing:
        expected = {f"t{i}" for i in range(n)}
    elif version.startswith("6"):
        expected = set()  # one string, one implicit transaction
    else:
        expected = {f"t{i}" for i in range(fail_at)}  # each statement its own transaction
    assert created == expected
    row = _history(p7.base_url, schema)[-1]
    assert (row["finished_at"] is None) is failing and row["applied_steps_count"] == (0 if failing else 1)

"""Every failed backup, restore and drill names its real cause, against a real cluster.

Each kind from issue #18: row-level security on backup, a function relying on search_path under
pg_restore's empty one (an expression index, a column default), roles the target lacks, rights a
non-superuser lacks, superuser-only objects. Each asserts the named cause in the ``error:`` line, a
true ``hint:``, the exit code, and never "worker process died", "damaged" or a traceback.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from pgrunbook.postgres.cluster import LocalCluster
from tests.conftest import Project, assert_clean_error
from tests.integration.test_deploy import Stage, stage  # noqa: F401  (the deploy fixture)
from tests.integration.test_migrate import make_migrations
from tests.integration.test_owners import admin, drop_roles_and_databases, schema_dump

pytestmark = pytest.mark.integration

PW = "role-pw-Zr4"
NEVER = (
    "worker process died",
    "damaged",
    "Command was",
    "Query was",
    "partial restore remains",
    "holds a partial restore",  # every database here was created by the restore, and dropped again
    "Traceback",
)


def never_misleading(text: str) -> None:
    for phrase in NEVER:
        assert phrase not in text, (phrase, text)


def exists(cluster: LocalCluster, dbname: str) -> bool:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


class Roles:
    def __init__(self, cluster: LocalCluster, tag: str):
        self.cluster, self.tag, self.names = cluster, tag, []  # type: ignore[var-annotated]

    def create(self, base: str, options: str = "") -> str:
        name = f"{base}_{self.tag}"
        admin(self.cluster, f"CREATE ROLE {name} {options} PASSWORD '{PW}'")
        self.names.append(name)
        return name

    def url(self, role: str, dbname: str) -> str:
        return f"postgresql://{role}:{quote(PW)}@127.0.0.1:{self.cluster.port}/{dbname}"


@pytest.fixture
def roles(cluster: LocalCluster) -> Iterator[Roles]:
    r = Roles(cluster, secrets.token_hex(3))
    yield r
    drop_roles_and_databases(cluster, r.tag, list(reversed(r.names)))


def project_on(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, config: str = "") -> Project:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PGRUNBOOK_", "PG"))}
    environ["DATABASE_URL"] = url
    (tmp_path / "pgrunbook.toml").write_text('[backup]\nstorage = "backups"\n' + config)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path, url, environ)


def new_db(cluster: LocalCluster, name: str, owner: str | None = None, *sql_text: str) -> None:
    admin(cluster, f"CREATE DATABASE {name}" + (f" OWNER {owner}" if owner else ""))
    with psycopg.connect(cluster.url(name), autocommit=True) as conn:
        for stmt in sql_text:
            conn.execute(stmt.encode())


def backup_id(project: Project) -> str:
    r = project.cli("--json", "backup", "create")
    assert r.returncode == 0, r.stderr
    return str(json.loads(r.stdout)["id"])


# --- row-level security on backup -----------------------------------------------------------------


def test_backup_of_a_forced_rls_table_names_the_policy_and_bypassrls(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = roles.create("app", "LOGIN")
    db = f"rls_{roles.tag}"
    new_db(cluster, db, app)
    with psycopg.connect(roles.url(app, db), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE secret (id int, who text); INSERT INTO secret VALUES (1, 'x');"
            "ALTER TABLE secret ENABLE ROW LEVEL SECURITY; ALTER TABLE secret FORCE ROW LEVEL SECURITY;"
            "CREATE POLICY mine ON secret USING (who = current_user)"
        )
    project = project_on(tmp_path, roles.url(app, db), monkeypatch)
    r = project.cli("backup", "create")
    assert_clean_error(r, 2, "secret", "FORCE ROW LEVEL SECURITY", "row-level security policy")
    never_misleading(r.stderr)
    hint = r.stderr.split("hint: ", 1)[1]
    assert f"ALTER ROLE {app} BYPASSRLS" in hint
    assert not list(project.storage.rglob("manifest.json"))
    admin(cluster, f"ALTER ROLE {app} BYPASSRLS")  # the hint is true: with it the backup works
    assert project.cli("backup", "create").returncode == 0


# --- functions that rely on search_path -----------------------------------------------------------

SEARCH_PATH_INDEX = [
    "CREATE FUNCTION norm(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower(t) $$",
    "CREATE FUNCTION helper(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT norm(t) $$",
    "CREATE TABLE customer (id int PRIMARY KEY, email text)",
    "INSERT INTO customer SELECT g, 'c' || g FROM generate_series(1, 50) g",
    "CREATE INDEX customer_helper ON customer (helper(email))",
]
SEARCH_PATH_DEFAULT = [
    "CREATE FUNCTION mk() RETURNS int LANGUAGE sql AS $$ SELECT 7 $$",
    "CREATE FUNCTION dflt() RETURNS int LANGUAGE sql AS $$ SELECT mk() $$",
    "CREATE TABLE item (id int, v int DEFAULT dflt() CHECK (v = dflt()))",
    "INSERT INTO item (id) SELECT g FROM generate_series(1, 20) g",
]


@pytest.mark.parametrize(
    ("method", "schema", "function", "entry"),
    [
        ("stream", SEARCH_PATH_INDEX, "helper", "INDEX public.customer_helper"),
        ("parallel", SEARCH_PATH_INDEX, "helper", "INDEX public.customer_helper"),
        ("parallel", SEARCH_PATH_DEFAULT, "dflt", "TABLE DATA public.item"),
    ],
)
def test_a_function_relying_on_search_path_is_named_and_the_backup_is_not_blamed(
    cluster: LocalCluster,
    roles: Roles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    schema: list[str],
    function: str,
    entry: str,
) -> None:
    db = f"sp_{roles.tag}"
    new_db(cluster, db, None, *schema)
    project = project_on(tmp_path, cluster.url(db), monkeypatch, f'[restore]\nmethod = "{method}"\njobs = 2\n')
    bid = backup_id(project)
    target = f"sp_{roles.tag}_copy"
    r = project.cli("restore", bid, "--into", target)
    assert_clean_error(r, 2, f"function {function} uses", "search_path", entry)
    never_misleading(r.stderr)
    assert f"{target} was dropped again" in r.stderr
    assert "SET search_path" in r.stderr.split("hint: ", 1)[1]
    assert not exists(cluster, target)

    r = project.cli("backup", "verify", bid, "--drill")  # the drill: a definition problem, not damage
    assert_clean_error(r, 2, "the drill could not restore", f"function {function} uses")
    never_misleading(r.stderr)
    assert "failed verification" not in r.stderr
    listed = json.loads(project.cli("--json", "backup", "list").stdout)
    assert listed[0]["verified"] is True  # the backup's own record is not marked failed
    manifest = json.loads(next(project.storage.rglob("manifest.json")).read_text())
    last = manifest["verifications"][-1]
    assert last["ok"] is True and last["cause"]["kind"] == "search_path" and last["cause"]["where"] == "definition"
    assert "drill could not run" in project.cli("backup", "list").stdout

    check = json.loads(project.cli("--json", "check").stdout)
    drill = next(c for c in check["checks"] if c["name"] == "restore drill")
    assert drill["status"] == "warning" and "could not run" in drill["detail"], drill
    assert check["status"] != "critical" or any(
        c["status"] == "critical" and c["name"] != "restore drill" for c in check["checks"]
    )

    with psycopg.connect(cluster.url(db), autocommit=True) as conn:  # the hint is true
        conn.execute(f"ALTER FUNCTION {function} SET search_path = public".encode())
    fixed = backup_id(project)
    assert project.cli("restore", fixed, "--into", target).returncode == 0


def test_rollback_with_db_names_the_cause(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"rb_{roles.tag}"
    new_db(cluster, db, None, *SEARCH_PATH_INDEX)
    url_file = tmp_path / "app.url"
    project = project_on(
        tmp_path,
        cluster.url(db),
        monkeypatch,
        '[environments.production]\ndatabase_url_env = "DATABASE_URL"\napp_url_env = "DATABASE_URL"\n'
        "[environments.production.hooks]\n"
        f"point_app = 'printf %s \"$PGRUNBOOK_DATABASE_URL\" > {url_file}'\napp_rollback = 'true'\n",
    )
    bid = backup_id(project)
    r = project.cli("rollback", "--with-db", "--backup", bid)
    assert_clean_error(r, 2, "function helper uses", "search_path")
    never_misleading(r.stderr)
    assert not url_file.exists()  # the app was not pointed anywhere


# --- roles the target lacks -----------------------------------------------------------------------


def test_missing_roles_are_found_before_anything_is_created(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = roles.create("reader")
    ghost = roles.create("ghost")
    db = f"mr_{roles.tag}"
    new_db(
        cluster,
        db,
        None,
        "CREATE TABLE t (id int, note text)",
        "INSERT INTO t VALUES (1, 'a')",
        f"GRANT SELECT ON t TO {reader}",
        f"GRANT SELECT, INSERT ON t TO {ghost}",
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY ghost_reads ON t FOR SELECT TO {ghost} USING (true)",
    )
    project = project_on(tmp_path, cluster.url(db), monkeypatch)
    bid = backup_id(project)
    with psycopg.connect(cluster.url(db), autocommit=True) as conn:  # the target server lacks the role
        conn.execute(f"DROP POLICY ghost_reads ON t; REVOKE ALL ON t FROM {ghost}".encode())
    admin(cluster, f"DROP ROLE {ghost}")
    target = f"mr_{roles.tag}_copy"
    r = project.cli("restore", bid, "--into", target)
    assert_clean_error(r, 2, "pre-flight", "nothing was created")
    assert f"role {ghost} (ACL on TABLE public.t, POLICY ghost_reads ON public.t)" in r.stderr
    assert f'CREATE ROLE "{ghost}"' in r.stderr and "--skip-missing-roles" in r.stderr
    assert not exists(cluster, target)
    r = project.cli("--json", "restore", bid, "--into", target, "--skip-missing-roles")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["skipped"]) == 2 and all(ghost in line for line in out["skipped"]), out["skipped"]
    assert out["options"] == ["--skip-missing-roles"]
    with psycopg.connect(cluster.url(target)) as conn:  # the other grants of that entry are kept
        ok = conn.execute(f"SELECT has_table_privilege('{reader}', 'public.t', 'SELECT')").fetchone()
    assert ok == (True,)


def test_owner_with_skip_missing_roles_verifies_onto_a_server_without_the_roles(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--owner ROLE --skip-missing-roles, the documented way onto another server: an object whose only
    other grant was left out keeps its NULL ACL, which is the new owner's defaults: verified (trial 7 #22)."""
    app = roles.create("app")
    ghost = roles.create("ghost")
    db = f"os_{roles.tag}"
    new_db(
        cluster,
        db,
        app,
        "CREATE SCHEMA shop",
        "CREATE TABLE shop.t (id int)",
        "INSERT INTO shop.t VALUES (1)",
        f"ALTER SCHEMA shop OWNER TO {app}",
        f"ALTER TABLE shop.t OWNER TO {app}",
        f"GRANT USAGE ON SCHEMA shop TO {ghost}",
        f"GRANT SELECT ON shop.t TO {ghost}",
    )
    project = project_on(tmp_path, cluster.url(db), monkeypatch)
    bid = backup_id(project)
    with psycopg.connect(cluster.url(db), autocommit=True) as conn:
        conn.execute(f"REVOKE ALL ON shop.t FROM {ghost}; REVOKE ALL ON SCHEMA shop FROM {ghost}".encode())
    admin(cluster, f"DROP ROLE {ghost}")
    target = f"os_{roles.tag}_copy"
    r = project.cli("--json", "restore", bid, "--into", target, "--owner", "postgres", "--skip-missing-roles")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is True and len(out["skipped"]) == 2
    with psycopg.connect(cluster.url(target)) as conn:
        acl = conn.execute("SELECT relacl IS NULL, pg_get_userbyid(relowner) FROM pg_class WHERE relname = 't'")
        assert acl.fetchone() == (True, "postgres")


# --- a role with only CREATEDB (a managed service's main user) ---------------------------------------


def test_a_createdb_role_backs_up_drills_and_restores_its_own_database(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = roles.create("main", "LOGIN CREATEDB")
    db = f"own_{roles.tag}"
    new_db(cluster, db, main)
    with psycopg.connect(roles.url(main, db), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE account (id serial PRIMARY KEY, email text); "
            "INSERT INTO account (email) SELECT 'a' || g FROM generate_series(1, 100) g; "
            "CREATE VIEW emails AS SELECT email FROM account"
        )
    project = project_on(tmp_path, roles.url(main, db), monkeypatch)
    bid = backup_id(project)
    r = project.cli("--json", "backup", "verify", bid, "--drill")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    target = f"own_{roles.tag}_copy"
    r = project.cli("--json", "restore", bid, "--into", target)
    assert r.returncode == 0, r.stderr
    assert schema_dump(cluster.url(target)) == schema_dump(cluster.url(db))
    with psycopg.connect(roles.url(main, target), autocommit=True) as conn:
        conn.execute("INSERT INTO account (email) VALUES ('new')")
    # --owner to itself, as a managed service's main user restores elsewhere: public keeps the owner
    # the server gives it (the bootstrap superuser on 13/14), and that is what verification expects
    owned = f"own_{roles.tag}_owned"
    r = project.cli("--json", "restore", bid, "--into", owned, "--owner", main)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] is True


def test_no_hint_hands_out_a_superuser_role(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects owned by a superuser (or --owner naming one), restored by a CREATEDB-only role: the
    pre-flight says only a superuser may, and never suggests GRANT <superuser> TO <role>."""
    boss = roles.create("boss", "SUPERUSER")
    main = roles.create("main", "LOGIN CREATEDB")
    db = f"sup_{roles.tag}"
    new_db(cluster, db, main, f"CREATE TABLE t (id int); ALTER TABLE t OWNER TO {boss}")
    project = project_on(tmp_path, cluster.url(db), monkeypatch)
    bid = backup_id(project)
    main_env = {**project.environ, "DATABASE_URL": roles.url(main, db)}
    for extra in ((), ("--owner", boss)):
        r = project.cli("restore", bid, "--into", f"sup_{roles.tag}_copy", *extra, extra_env=main_env)
        assert_clean_error(r, 2, "pre-flight", "nothing was created")
        assert "(a superuser" in r.stderr and "restore as a superuser" in r.stderr, r.stderr
        assert f'GRANT "{boss}"' not in r.stderr and "GRANT postgres" not in r.stderr
        assert not exists(cluster, f"sup_{roles.tag}_copy")


def test_a_non_superuser_is_told_what_it_may_not_do_and_how_to_get_on(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup of a database whose objects belong to another role and that has an event trigger,
    restored by a CREATEDB-only role: owner rights and superuser-only objects are named first;
    --owner and --skip-superuser-objects get it restored, and the report says what was left out."""
    app = roles.create("app")
    main = roles.create("main", "LOGIN CREATEDB")
    db = f"su_{roles.tag}"
    new_db(
        cluster,
        db,
        app,
        f"CREATE TABLE account (id int PRIMARY KEY); ALTER TABLE account OWNER TO {app}",
        "INSERT INTO account SELECT generate_series(1, 10)",
        "CREATE FUNCTION et() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$",
        "CREATE EVENT TRIGGER audit_ddl ON ddl_command_end EXECUTE FUNCTION et()",
    )
    admin_project = project_on(tmp_path, cluster.url(db), monkeypatch)
    bid = backup_id(admin_project)
    main_env = {**admin_project.environ, "DATABASE_URL": roles.url(main, db)}
    target = f"su_{roles.tag}_copy"
    r = admin_project.cli("restore", bid, "--into", target, extra_env=main_env)
    assert_clean_error(r, 2, "pre-flight", "nothing was created")
    assert f"role {app} (the database, TABLE public.account" in r.stderr
    assert f'GRANT "{app}" TO "{main}"' in r.stderr
    assert f"role {main} is not a superuser (EVENT TRIGGER audit_ddl)" in r.stderr
    never_misleading(r.stderr)
    assert not exists(cluster, target)
    r = admin_project.cli(
        "--json", "restore", bid, "--into", target, "--owner", main, "--skip-superuser-objects", extra_env=main_env
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["skipped"] == ["EVENT TRIGGER audit_ddl: needs a superuser (--skip-superuser-objects)"]
    with psycopg.connect(cluster.url(target)) as conn:
        owner = conn.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'account'").fetchone()
        triggers = conn.execute("SELECT count(*) FROM pg_event_trigger").fetchone()
    assert owner == (main,) and triggers == (0,)


def test_drill_on_a_server_without_the_roles_is_a_warning_about_the_drill_server(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill whose server lacks the backup's roles cannot run: the check warns about the drill
    server; the backup stays verified."""
    app = roles.create("app")
    main = roles.create("main", "LOGIN CREATEDB")
    db = f"dr_{roles.tag}"
    new_db(cluster, db, app, f"CREATE TABLE t (id int); ALTER TABLE t OWNER TO {app}")
    project = project_on(tmp_path, cluster.url(db), monkeypatch, 'drill_database_url_env = "DRILL_URL"\n')
    project.environ["DRILL_URL"] = roles.url(main, "postgres")
    bid = backup_id(project)
    r = project.cli("backup", "verify", bid, "--drill")
    assert_clean_error(r, 2, "the drill could not restore", "pre-flight")
    never_misleading(r.stderr)
    check = json.loads(project.cli("--json", "check").stdout)
    drill = next(c for c in check["checks"] if c["name"] == "restore drill")
    assert drill["status"] == "warning" and "drill server" in drill["detail"]
    assert json.loads(project.cli("--json", "backup", "list").stdout)[0]["verified"] is True
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'pgrunbook_drill_%'").fetchone()
    assert left == (0,)


def test_deploy_auto_rollback_names_why_the_restore_failed(stage: Stage) -> None:  # noqa: F811
    """A failed migration, and the automatic rollback's restore fails too (a function relying on
    search_path): the deploy's error names that cause, not the last line pg_restore printed."""
    with psycopg.connect(stage.project.url, autocommit=True) as conn:
        for stmt in SEARCH_PATH_INDEX:
            conn.execute(stmt.encode())
    make_migrations(stage.project, {"02_bad": "ALTER TABLE note ADD COLUMN x int;\nSELECT 1/0;"})
    r, out = stage.deploy("--auto-rollback")
    assert r.returncode == 2, r.stderr
    assert "the automatic rollback failed too: pg_restore failed at INDEX public.customer_helper" in out["error"]
    assert "function helper uses function norm(text)" in out["error"]
    never_misleading(r.stderr + json.dumps(out))


def test_a_role_that_may_not_create_databases_is_told_before_anything(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = roles.create("plain", "LOGIN")
    db = f"nc_{roles.tag}"
    new_db(cluster, db, plain)
    with psycopg.connect(roles.url(plain, db), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    project = project_on(tmp_path, roles.url(plain, db), monkeypatch)
    bid = backup_id(project)
    r = project.cli("restore", bid, "--into", f"nc_{roles.tag}_copy")
    assert_clean_error(r, 2, "pre-flight", "nothing was created")
    assert f'role {plain}: may not create databases: ALTER ROLE "{plain}" CREATEDB' in r.stderr
    never_misleading(r.stderr)
    admin(cluster, f"CREATE DATABASE nc_{roles.tag}_copy OWNER {plain}")  # the hint's other way: made beforehand
    assert project.cli("restore", bid, "--into", f"nc_{roles.tag}_copy").returncode == 0


def test_a_role_without_createdb_is_told_before_the_recovery_how_to_get_through(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """breaker13 N13: the recovery restores into a staging database first, which a role without
    CREATEDB may not create, and the pre-flight's "create the database beforehand" named no database
    that would work. The role is now told before anything: CREATEDB for the role, or an admin's URL;
    with CREATEDB granted the same command recovers the database exactly."""
    plain = roles.create("plain", "LOGIN")
    db = f"nl_{roles.tag}"
    new_db(cluster, db, plain)
    with psycopg.connect(roles.url(plain, db), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); "
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g"
        )
    project = project_on(tmp_path, roles.url(plain, db), monkeypatch)
    bid = backup_id(project)
    before = schema_dump(cluster.url(db)), _rows(cluster.url(db))
    admin(cluster, f'DROP DATABASE "{db}" WITH (FORCE)')
    r = project.cli("restore", "latest", "--into", db)
    assert_clean_error(r, 2, f"role {plain} may not create databases, and the recovery of {db} restores into")
    assert (
        f'hint: as an admin: ALTER ROLE "{plain}" CREATEDB' in r.stderr and "an admin's URL in DATABASE_URL" in r.stderr
    )
    with psycopg.connect(cluster.url("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)", (db,)).fetchone() == (0,)
    admin(cluster, f'ALTER ROLE "{plain}" CREATEDB')
    done = project.cli("--json", "restore", "latest", "--into", db)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backup_id"] == bid and json.loads(done.stdout)["verified"]
    assert (schema_dump(cluster.url(db)), _rows(cluster.url(db))) == before


def test_an_empty_database_made_again_by_another_role_is_refused_before_the_recovery(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """breaker14b B4: an admin re-created the lost database (owned by the admin): the whole restore ran,
    then renaming the empty one aside failed ("must be owner"). It is refused before anything, with the
    two ways through; after the admin hands it over, the same command recovers it."""
    owner = roles.create("owner", "LOGIN CREATEDB")
    db = f"nr_{roles.tag}"
    new_db(cluster, db, owner)
    with psycopg.connect(roles.url(owner, db), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    project = project_on(tmp_path, roles.url(owner, db), monkeypatch)
    bid = backup_id(project)
    admin(cluster, f'DROP DATABASE "{db}" WITH (FORCE)', f'CREATE DATABASE "{db}"')  # by the admin, for it
    r = project.cli("restore", "latest", "--into", db)
    assert_clean_error(r, 2, f"{db} exists, empty, and belongs to postgres", "nothing was changed")
    assert f'DROP DATABASE "{db}" (it holds no table), or ALTER DATABASE "{db}" OWNER TO' in r.stderr
    with psycopg.connect(cluster.url("postgres")) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)", (f"{db}_",)).fetchone()
    assert left == (0,)
    admin(cluster, f'ALTER DATABASE "{db}" OWNER TO "{owner}"')
    done = project.cli("--json", "restore", "latest", "--into", db)
    assert done.returncode == 0 and json.loads(done.stdout)["backup_id"] == bid, done.stderr
    assert _rows(cluster.url(db)) == [(1, "a"), (2, "b")]


def _rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()


def test_a_drill_refused_by_its_server_is_that_servers_problem_and_doctor_says_so_first(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trial11 F23 (issue #16): run as the app's own role (no CREATEDB), `verify latest --drill` said
    "latest: FAILED verification" for a backup that passed every check, hinting "create the database
    beforehand" for a random scratch name; doctor was all green before it."""
    plain = roles.create("plain", "LOGIN")
    db = f"nd_{roles.tag}"
    new_db(cluster, db, plain)
    with psycopg.connect(roles.url(plain, db), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    project = project_on(tmp_path, roles.url(plain, db), monkeypatch)
    r = project.cli("--json", "doctor")
    line = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "create databases")
    assert line["status"] == "warning" and r.returncode == 1, r.stdout
    assert f"role {plain} may not create databases on this server: drills (backup verify --drill)" in line["detail"]
    assert "rollback --with-db and deploy --auto-rollback will be refused" in line["detail"]
    assert f'ALTER ROLE "{plain}" CREATEDB' in line["hint"] and "[backup] drill_database_url_env" in line["hint"]
    bid = backup_id(project)
    r = project.cli("backup", "verify", "latest", "--drill")
    assert r.returncode == 2, r.stderr
    assert (
        "FAILED" not in r.stdout
        and "): drill could not run on postgresql://" in r.stdout
        and r.stdout.count("latest (") == 1
    ), r.stdout
    assert "a problem of that server, not of the backup" in r.stdout
    assert f"error: the drill could not restore latest: role {plain} may not create databases" in r.stderr
    assert "beforehand" not in r.stderr and "[backup] drill_database_url_env" in r.stderr
    assert "the backup itself passed its checks" in r.stderr
    never_misleading(r.stdout + r.stderr)
    data = json.loads(project.cli("--json", "backup", "verify", bid, "--drill").stdout)
    assert (data["ok"], data["backup_ok"], data["drill_could_not_run"], data["damaged"]) == (False, True, True, False)
    assert data["cause"]["where"] == "target" and data["cause"]["server"].startswith("postgresql://")
    listed = json.loads(project.cli("--json", "backup", "list").stdout)
    assert listed[0]["verified"] is True  # never recorded against the backup
    manifest = json.loads(next(p for p in project.storage.rglob("manifest.json") if bid in str(p)).read_text())
    assert all(v["ok"] for v in manifest["verifications"]), manifest["verifications"]
    assert "drill could not run" in project.cli("backup", "list").stdout


# --- in place, as a non-superuser, with a superuser's session on the database ----------------------------


def test_in_place_as_a_non_superuser_names_a_superusers_session_before_anything(
    cluster: LocalCluster, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DBA's psql on the live database: the CREATEDB owner may not end it. Said before maintenance and
    the pre-restore backup, with the session's pid and user; at the swap itself (a session that came
    later) the swap is rolled back and the recovery line says the live database is untouched (trial 7 #30)."""
    from pgrunbook.errors import DatabaseError
    from pgrunbook.postgres.database_swap import swap

    main = roles.create("main", "LOGIN CREATEDB")
    db = f"ip_{roles.tag}"
    new_db(cluster, db, main)
    with psycopg.connect(roles.url(main, db), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)")
    project = project_on(tmp_path, roles.url(main, db), monkeypatch)
    bid = backup_id(project)
    with psycopg.connect(cluster.url(db), autocommit=True) as dba:
        dba.execute("SET application_name = 'psql'")
        pid = dba.execute("SELECT pg_backend_pid()").fetchone()
        assert pid is not None
        r = project.cli("restore", bid, "--in-place", "--confirm", db)
        assert_clean_error(r, 2, f"cannot disconnect pid {pid[0]} (user postgres, application psql) from {db}")
        assert "only a superuser may end it; nothing was changed" in r.stderr and "pg_terminate_backend" in r.stderr
        never_misleading(r.stderr)
        assert len(json.loads(project.cli("--json", "backup", "list").stdout)) == 1  # no pre-restore backup
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            made = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"ip_{roles.tag}_%",))
            assert made.fetchone() == (0,)
        # the swap itself, as the CREATEDB role, with the superuser's session there
        new_db(cluster, f"ip_{roles.tag}_staging", main)
        with (
            psycopg.connect(roles.url(main, "postgres"), autocommit=True) as conn,
            pytest.raises(DatabaseError, match="only a superuser may end it; nothing was swapped"),
        ):
            swap(conn, db, f"ip_{roles.tag}_staging", f"ip_{roles.tag}_old", attempts=2)
    assert exists(cluster, db) and exists(cluster, f"ip_{roles.tag}_staging")
    assert not exists(cluster, f"ip_{roles.tag}_old")
    r = project.cli("--json", "restore", bid, "--in-place", "--confirm", db)  # the session gone: it works
    assert r.returncode == 0, r.stderr

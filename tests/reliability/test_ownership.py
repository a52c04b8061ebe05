"""Kind 1 of issue 20: pgrunbook deletes and restores only what is its own.

Each example of the issue is a test here, against a real cluster, the real command line and real
storage (a local folder; S3 through moto where the kind applies): a storage root with other content,
an environment folder that is a symbolic link, two projects on one storage folder with the same
environment name (same database name on two servers too), a rotted primary copied over a good second
copy, and template or maintenance databases as restore targets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgrunbook.backup.identity import foreign_key, is_backup_id, own_file_name
from pgrunbook.postgres.cluster import LocalCluster
from tests import evidence
from tests.conftest import BASE_CONFIG, PASSWORD, Project, assert_clean_error, seed
from tests.s3_support import MotoServer, aws_env, client

pytestmark = pytest.mark.reliability


def _age(path: Path, seconds: float = 3600) -> None:
    """Make a file look old (prune leaves anything written in the last ten minutes alone)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _new_db(cluster: LocalCluster, name: str | None = None) -> str:
    name = name or f"t_{secrets.token_hex(4)}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return cluster.url(name)


def _other_project(tmp_path: Path, url: str, config: str, name: str = "other") -> Project:
    root = tmp_path / name
    root.mkdir()
    (root / "pgrunbook.toml").write_text(config)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PGRUNBOOK_", "PG"))}
    environ["DATABASE_URL"] = url
    return Project(root, url, environ)


# --- storage root with other content -------------------------------------------------------------


def test_storage_dot_with_env_named_prisma_never_deletes_migrations(seeded: Project) -> None:
    """The issue's example: storage = "." and an environment named prisma; prune used to delete
    prisma/migrations as leftovers. Now the folder is refused before anything is removed."""
    root = seeded.root
    migration = root / "prisma" / "migrations" / "20240101000000_init" / "migration.sql"
    migration.parent.mkdir(parents=True)
    migration.write_text("CREATE TABLE a (id int);\n")
    (root / "prisma" / "schema.prisma").write_text("// schema\n")
    for p in (migration, root / "prisma" / "schema.prisma"):
        _age(p)
    seeded.write_config('[backup]\nstorage = "."\n[environments.prisma]\ndatabase_url_env = "DATABASE_URL"\n')
    before = _tree(root / "prisma")
    evidence.data_loss_scenario("prune with storage = '.' and an environment named prisma")
    for args in (("backup", "prune"), ("backup", "create")):
        r = seeded.cli(*args)
        assert_clean_error(r, 2, "holds other files than pgrunbook's backups")
        assert "hint: point [backup] storage at an empty folder" in r.stderr
    dry = seeded.cli("backup", "prune", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == []  # nothing there is a backup or a leftover of pgrunbook's
    assert _tree(root / "prisma") == before


def test_foreign_key_shapes() -> None:
    """Table of what the root check takes for pgrunbook's own layout and what for someone else's."""
    own = [
        "production/20240101T020000Z-scheduled/manifest.json",
        "production/20240101T020000Z-scheduled/db.dump.zst",
        "production/20240101T020000Z-scheduled-2/.db.dump.zst.tmp-0123456789ab",
        "production/.pgrunbook-environment/abc.json",
        ".pgrunbook-repository/abc.json",
        ".pgrunbook-probe",
        ".DS_Store",
        "production/.DS_Store",
        "@eaDir/x",
    ]
    foreign = [
        "pgrunbook.toml",
        "prisma/migrations/20240101000000_init/migration.sql",
        "production/20240101T020000Z-scheduled/notes.txt",
        "production/readme.md",
        "node_modules/x/index.js",
        "production/20240101T020000Z-scheduled/sub/manifest.json",
    ]
    assert [k for k in own if foreign_key(k)] == []
    assert [k for k in foreign if not foreign_key(k)] == []
    assert is_backup_id("20240101T020000Z-pre-deploy") and not is_backup_id("migrations")
    assert own_file_name(".manifest.json.tmp-0a1b2c3d4e5f") and not own_file_name("migration.sql")


def test_prune_deletes_only_pgrunbook_files_in_its_own_folders(seeded: Project) -> None:
    """Inside a repository pgrunbook claimed, a stranger's file in a backup folder, a folder with
    another name, and a file at the environment level all survive prune; pgrunbook's own leftovers go."""
    assert seeded.cli("backup", "create").returncode == 0
    env_dir = seeded.storage / "default"
    stranger = [
        env_dir / "notes.txt",
        env_dir / "keep-me" / "db.dump",
        env_dir / "20200101T000000Z-manual" / "notes.txt",
    ]
    dead = env_dir / "20200101T000000Z-manual" / "db.dump.zst"
    for p in [*stranger, dead]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        _age(p)
    evidence.data_loss_scenario("prune with strangers' files inside the repository")
    r = seeded.cli("backup", "prune", "--json")
    assert r.returncode == 0, r.stderr
    assert all(p.exists() for p in stranger)
    assert not dead.exists()
    assert any(row["id"] == "20200101T000000Z-manual" and row["action"] == "remove" for row in json.loads(r.stdout))


# --- symbolic links ------------------------------------------------------------------------------


def test_environment_folder_symlink_is_never_followed(seeded: Project, tmp_path: Path) -> None:
    """The issue's example: the environment's folder is a symlink; prune followed it and deleted files
    outside the repository. Now every command refuses to go through it; nothing outside is touched."""
    outside = tmp_path / "outside"
    victim = outside / "20200101T000000Z-manual" / "db.dump.zst"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"precious")
    (outside / "precious.txt").write_text("precious")
    _age(victim)
    seeded.storage.mkdir()
    (seeded.storage / "default").symlink_to(outside, target_is_directory=True)
    before = _tree(outside)
    evidence.data_loss_scenario("prune with the environment folder a symlink out of the repository")
    for args in (("backup", "prune"), ("backup", "list"), ("backup", "create")):
        r = seeded.cli(*args)
        assert_clean_error(r, 2, "is a symbolic link")
    assert _tree(outside) == before


def test_symlinked_files_inside_the_repository_are_not_followed(seeded: Project, tmp_path: Path) -> None:
    assert seeded.cli("backup", "create").returncode == 0
    outside = tmp_path / "outside.dump"
    outside.write_bytes(b"precious")
    link_dir = seeded.storage / "default" / "20200101T000000Z-manual"
    link_dir.mkdir()
    (link_dir / "db.dump.zst").symlink_to(outside)
    _age(link_dir)
    evidence.data_loss_scenario("prune with a symlinked dump file pointing out of the repository")
    r = seeded.cli("backup", "prune")
    assert r.returncode == 0, r.stderr
    assert outside.read_bytes() == b"precious"


def test_a_backup_folder_that_is_a_symlink_is_neither_listed_nor_pruned(seeded: Project, tmp_path: Path) -> None:
    """Found by a trial: a link named like a backup id, to a real backup's copy outside the repository
    with an old date, was listed and then pruned through the link. It is not pgrunbook's to touch."""
    assert seeded.cli("backup", "create").returncode == 0
    env_dir = seeded.storage / "default"
    real = next(p for p in env_dir.iterdir() if p.is_dir() and (p / "manifest.json").exists())
    outside = tmp_path / "outside" / "20200101T000000Z-old"
    shutil.copytree(real, outside)
    manifest = json.loads((outside / "manifest.json").read_text())
    manifest["id"] = outside.name
    manifest["started_at"] = manifest["finished_at"] = "2020-01-01T00:00:00+00:00"
    (outside / "manifest.json").write_text(json.dumps(manifest))
    (env_dir / outside.name).symlink_to(outside, target_is_directory=True)
    before = _tree(outside.parent)
    evidence.data_loss_scenario("prune with a backup folder that is a symlink out of the repository")
    listed = seeded.cli("backup", "list", "--json")
    assert outside.name not in listed.stdout
    seeded.write_config(BASE_CONFIG + "retention = { daily = 1, weekly = 0, monthly = 0 }\n")
    r = seeded.cli("backup", "prune")
    assert outside.name not in r.stdout
    assert _tree(outside.parent) == before


# --- two projects, one storage folder --------------------------------------------------------------


def _project_config(storage: Path, project_id: str | None) -> str:
    head = f'[project]\nid = "{project_id}"\nname = "{project_id}"\n' if project_id else ""
    return f'{head}[backup]\nstorage = "{storage}"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'


@pytest.mark.parametrize(
    "ids", [("shop", "crm"), (None, None), ("shop", "shop")], ids=["project ids", "no project ids", "one id for two"]
)
def test_two_projects_sharing_a_folder_never_see_each_other(
    cluster: LocalCluster, tmp_path: Path, ids: tuple[str | None, str | None]
) -> None:
    """The issue's example: two projects, one NAS folder, the same environment name. Each lists only its
    own backups (and says how many others it ignored), restore latest takes its own, prune never
    removes the other's only backup. Without project ids the database (name) tells them apart; so it
    does when one pgrunbook.toml (one id) serves two databases (break11 #13: each took the other's
    backups for its own, and prune deleted them)."""
    shared = tmp_path / "nas"
    a = _other_project(tmp_path, _new_db(cluster), _project_config(shared, ids[0]), "a")
    b = _other_project(tmp_path, _new_db(cluster), _project_config(shared, ids[1]), "b")
    seed(a.url, accounts=10, invoices=10)
    with psycopg.connect(b.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE b_only (id int); INSERT INTO b_only VALUES (1), (2)")
    a_ids = [a.cli("backup", "create").stdout.strip() for _ in range(2)]
    b_id = b.cli("backup", "create", "--label", "only").stdout.strip()
    assert all(a_ids) and b_id
    la = a.cli("backup", "list", "--json")
    lb = b.cli("backup", "list", "--json")
    assert sorted(x["id"] for x in json.loads(la.stdout)) == sorted(a_ids)
    assert [x["id"] for x in json.loads(lb.stdout)] == [b_id]
    assert "note: 1 backup of another project/database ignored" in la.stderr
    assert "note: 2 backups of another project/database ignored" in lb.stderr
    # restore latest: b's newest backup is b's own (a's were taken earlier... and later)
    a.cli("backup", "create")
    into = f"r_{secrets.token_hex(3)}"
    r = b.cli("restore", "latest", "--into", into, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backup_id"] == b_id
    with psycopg.connect(cluster.url(into)) as conn:
        assert conn.execute("SELECT count(*) FROM b_only").fetchone() == (2,)
    if ids[0] == ids[1] == "shop":
        # breaker13 F9: a database of this project with no backup of its own yet is pointed at the others
        c = _other_project(tmp_path, _new_db(cluster), _project_config(shared, "shop"), "c")
        none = c.cli("restore", "latest", "--into", f"r_{secrets.token_hex(3)}")
        assert_clean_error(none, 2, "backup(s) of this project under another database name are there, the newest")
        assert "restore it by its id: pgrunbook restore " in none.stderr
        # by its id, a backup of the same project is restored (a database renamed outside pgrunbook keeps
        # reaching its old backups so); doctor says the id serves two databases
        r = b.cli("restore", a_ids[0], "--into", f"r_{secrets.token_hex(3)}", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["backup_id"] == a_ids[0], r.stderr
        doctor = {c["name"]: c for c in json.loads(b.cli("doctor", "--json").stdout)["checks"]}
        ownership = doctor["backup ownership"]
        assert (
            ownership["status"] == "warning"
            and f"also writes backups of database(s) {a.url.rsplit('/', 1)[1]}" in (ownership["detail"])
        )
    else:  # an explicit id of the other project's backup is refused, nothing created
        r = b.cli("restore", a_ids[0], "--into", f"r_{secrets.token_hex(3)}")
        assert_clean_error(r, 2, "is a backup of")
    # prune by a: b's only backup is not even considered, and stays
    evidence.data_loss_scenario("prune of one project on a folder shared with another project")
    pa = a.cli("backup", "prune", "--json")
    assert pa.returncode == 0, pa.stderr
    assert b_id not in {row["id"] for row in json.loads(pa.stdout)}
    assert (shared / "production" / b_id / "manifest.json").exists()
    assert [x["id"] for x in json.loads(b.cli("backup", "list", "--json").stdout)] == [b_id]


def test_a_database_renamed_outside_pgrunbook_is_pointed_at_its_backups_and_never_prunes_them(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """breaker13 F6 and breaker13b N3/N5: with one project id serving two databases, a database renamed
    by ALTER DATABASE no longer lists its earlier name's backups as its own. Taking a vanished name for
    an earlier one was tried and withdrawn: a dropped database, or one recreated under the old name,
    looks the same from the catalog, and the guess made prune delete another database's backups. Now
    nothing is guessed: its `restore latest` names those backups and the command restoring one by id,
    and neither side's prune touches the other's."""
    shared = tmp_path / "nas"
    old_name, new_name = f"solo_{secrets.token_hex(3)}", f"solo_v2_{secrets.token_hex(3)}"
    p = _other_project(tmp_path, _new_db(cluster, old_name), _project_config(shared, "solo"), "p")
    other = _other_project(tmp_path, _new_db(cluster), _project_config(shared, "solo"), "other")
    seed(p.url, accounts=5, invoices=5)
    mine = p.cli("backup", "create").stdout.strip()
    theirs = other.cli("backup", "create").stdout.strip()
    assert mine and theirs
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
        conn.execute(rename.format(sql.Identifier(old_name), sql.Identifier(new_name)))
    p.environ["DATABASE_URL"] = cluster.url(new_name)
    none = p.cli("restore", "latest", "--into", f"r_{secrets.token_hex(3)}")
    assert_clean_error(none, 2, "backup(s) of this project under another database name are there")
    assert "restore it by its id: pgrunbook restore " in none.stderr
    # breaker14 F5: the database exists, so the hint names a new database, not its own (which is refused)
    assert f"--into {new_name}_restored --env production" in none.stderr, none.stderr
    by_id = p.cli("restore", mine, "--into", f"r_{secrets.token_hex(3)}", "--json")
    assert by_id.returncode == 0 and json.loads(by_id.stdout)["backup_id"] == mine, by_id.stderr
    newer = p.cli("backup", "create").stdout.strip()
    for side in (p, other):
        assert side.cli("backup", "prune").returncode == 0
    assert all((shared / "production" / i / "manifest.json").exists() for i in (mine, theirs, newer))
    assert [x["id"] for x in json.loads(other.cli("backup", "list", "--json").stdout)] == [theirs]


@pytest.fixture(scope="module")
def second_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(password=PASSWORD, name="pgrunbook-test-2") as c:
        yield c


def test_same_database_name_on_two_servers_is_told_apart(
    cluster: LocalCluster, second_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Two projects without ids whose databases have the same name (every Supabase database is called
    postgres): the server's system identifier, recorded in each manifest, tells them apart."""
    name = f"app_{secrets.token_hex(3)}"
    shared = tmp_path / "nas"
    a = _other_project(tmp_path, _new_db(cluster, name), _project_config(shared, None), "a")
    b = _other_project(tmp_path, _new_db(second_cluster, name), _project_config(shared, None), "b")
    a_id = a.cli("backup", "create", "--label", "a").stdout.strip()
    b_id = b.cli("backup", "create", "--label", "b").stdout.strip()
    assert a_id and b_id
    ma = json.loads((shared / "production" / a_id / "manifest.json").read_text())
    mb = json.loads((shared / "production" / b_id / "manifest.json").read_text())
    assert ma["system_identifier"] and mb["system_identifier"] and ma["system_identifier"] != mb["system_identifier"]
    assert [x["id"] for x in json.loads(a.cli("backup", "list", "--json").stdout)] == [a_id]
    assert [x["id"] for x in json.loads(b.cli("backup", "list", "--json").stdout)] == [b_id]
    r = a.cli("restore", "latest", "--into", f"r_{secrets.token_hex(3)}", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["backup_id"] == a_id, r.stderr


def test_repository_without_markers_is_adopted_on_first_write(seeded: Project) -> None:
    """Backups written before markers existed (manifests without project or server) stay listed and
    restorable; the first write adopts them, and a project arriving later never does."""
    first = seeded.cli("backup", "create").stdout.strip()
    env_dir = seeded.storage / "default"
    shutil.rmtree(seeded.storage / ".pgrunbook-repository")
    shutil.rmtree(env_dir / ".pgrunbook-environment")
    manifest = env_dir / first / "manifest.json"
    data = json.loads(manifest.read_text())
    for k in ("project_id", "project_name", "system_identifier"):
        data.pop(k)
    manifest.write_text(json.dumps(data))  # a manifest as pgrunbook wrote it before this change
    assert [x["id"] for x in json.loads(seeded.cli("backup", "list", "--json").stdout)] == [first]
    second = seeded.cli("backup", "create").stdout.strip()
    markers = list((env_dir / ".pgrunbook-environment").glob("*.json"))
    assert len(markers) == 1 and json.loads(markers[0].read_text())["adopts_legacy"] is True
    assert (seeded.storage / ".pgrunbook-repository").is_dir()
    ids = {x["id"] for x in json.loads(seeded.cli("backup", "list", "--json").stdout)}
    assert ids == {first, second}


# --- backup copy -----------------------------------------------------------------------------------


def test_copy_never_replaces_a_good_copy_with_rotted_bytes(seeded: Project, tmp_path: Path) -> None:
    """The issue's example: copy, the primary rots, copy again. It used to overwrite the good second
    copy with the bad bytes and then delete it. Now the rotted source is refused and the good copy stays."""
    bid = seeded.cli("backup", "create").stdout.strip()
    second = tmp_path / "second"
    r = seeded.cli("backup", "copy", bid, "--to", str(second))
    assert r.returncode == 0, r.stderr
    dump = next((seeded.storage / "default" / bid).glob("db.dump*"))
    copy_dump = second / "default" / bid / dump.name
    good = copy_dump.read_bytes()
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    evidence.data_loss_scenario("backup copy re-run after the primary copy rotted")
    r = seeded.cli("backup", "copy", bid, "--to", str(second))
    assert r.returncode == 0, r.stderr  # the destination already holds a verified copy: nothing to do
    assert copy_dump.read_bytes() == good
    shutil.rmtree(second / "default" / bid)  # now without a good copy: the rotted source is refused
    r = seeded.cli("backup", "copy", bid, "--to", str(second))
    assert_clean_error(r, 2, "no longer matches its manifest")
    assert not (second / "default" / bid).exists() or not any((second / "default" / bid).iterdir())


def test_copy_replaces_a_damaged_destination_from_a_good_source(seeded: Project, tmp_path: Path) -> None:
    bid = seeded.cli("backup", "create").stdout.strip()
    second = tmp_path / "second"
    assert seeded.cli("backup", "copy", bid, "--to", str(second)).returncode == 0
    copy_dump = next((second / "default" / bid).glob("db.dump*"))
    copy_dump.write_bytes(b"rotted")
    r = seeded.cli("backup", "copy", bid, "--to", str(second))
    assert r.returncode == 0, r.stderr
    assert copy_dump.read_bytes() == next((seeded.storage / "default" / bid).glob("db.dump*")).read_bytes()


# --- refused restore targets -----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["template1", "template0", "postgres", "<source>", "<template>"])
def test_template_maintenance_and_source_databases_are_refused(
    seeded: Project, cluster: LocalCluster, target: str
) -> None:
    """The issue's example: restore --into template1 was accepted, and every database created afterwards
    contained production data. Refused with one error line and a hint; nothing is touched."""
    bid = seeded.cli("backup", "create").stdout.strip()
    source = seeded.url.rsplit("/", 1)[1]
    if target == "<source>":
        target = source
    elif target == "<template>":
        target = f"tpl_{secrets.token_hex(3)}"
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} IS_TEMPLATE true").format(sql.Identifier(target)))

    def tables(db: str) -> int:
        with psycopg.connect(cluster.url(db)) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')"
            ).fetchone()[0]  # type: ignore[index]

    evidence.data_loss_scenario("restore into a template, maintenance or the source database")
    try:
        before = tables(target) if target != "template0" else None
        r = seeded.cli("restore", bid, "--into", target)
        assert_clean_error(r, 3, "refusing to restore into")
        assert "hint: " in r.stderr
        if before is not None:
            assert tables(target) == before
    finally:
        if target.startswith("tpl_"):
            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(target)))
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(target)))


# --- S3: a shared prefix ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


def test_two_projects_sharing_an_s3_prefix(cluster: LocalCluster, moto_server: MotoServer, tmp_path: Path) -> None:
    bucket = f"pgrunbook-{secrets.token_hex(4)}"
    s3 = client(moto_server.endpoint)
    s3.create_bucket(Bucket=bucket)
    storage = f"s3://{bucket}/team"
    cfg = '[project]\nid = "{id}"\n[backup]\nstorage = "' + storage + '"\n[environments.production]\n'
    a = _other_project(tmp_path, _new_db(cluster), cfg.format(id="shop"), "a")
    b = _other_project(tmp_path, _new_db(cluster), cfg.format(id="crm"), "b")
    for p in (a, b):
        p.environ.update(aws_env(moto_server.endpoint))
    a_id = a.cli("backup", "create").stdout.strip()
    s3.put_object(Bucket=bucket, Key="team/production/readme.txt", Body=b"not a backup")  # a stranger, later
    b_id = b.cli("backup", "create", "--label", "only").stdout.strip()
    assert a_id and b_id
    lb = b.cli("backup", "list", "--json")
    assert [x["id"] for x in json.loads(lb.stdout)] == [b_id]
    assert "1 backup of another project/database ignored" in lb.stderr
    evidence.data_loss_scenario("prune of one project on an S3 prefix shared with another project")
    assert a.cli("backup", "prune").returncode == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="team/")["Contents"]}
    assert f"team/production/{b_id}/manifest.json" in keys
    assert "team/production/readme.txt" in keys


@pytest.mark.parametrize("project_id", [None, "shop"], ids=["no project id", "project id"])
def test_a_database_moved_to_a_new_server_still_finds_its_backups(
    cluster: LocalCluster, second_cluster: LocalCluster, tmp_path: Path, project_id: str | None
) -> None:
    """Disaster recovery: the server died, the database is re-created on a new server (another system
    identifier) under the same name. Its backups must still be found and restored."""
    name = f"app_{secrets.token_hex(3)}"
    shared = tmp_path / "nas"
    p = _other_project(tmp_path, _new_db(cluster, name), _project_config(shared, project_id), "p")
    seed(p.url, accounts=5, invoices=5)
    old = p.cli("backup", "create").stdout.strip()
    assert old
    p.environ["DATABASE_URL"] = _new_db(second_cluster, name)  # the new server, same database name
    assert [x["id"] for x in json.loads(p.cli("backup", "list", "--json").stdout)] == [old]
    into = f"r_{secrets.token_hex(3)}"
    r = p.cli("restore", "latest", "--into", into, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["backup_id"] == old, r.stderr
    new = p.cli("backup", "create", "--label", "new-server").stdout.strip()
    listed = [x["id"] for x in json.loads(p.cli("backup", "list", "--json").stdout)]
    # with a project id the project's backups from both servers are its own; without one, once the new
    # server has a backup, the old server's are another database's (listed as ignored)
    assert listed == ([new, old] if project_id else [new])


def _app_on_a_restored_copy(
    cluster: LocalCluster, tmp_path: Path, shared: Path, project_id: str | None
) -> tuple[Project, str, str]:
    """A project backed up once into ``shared``, restored into a copy, and its DATABASE_URL moved to the
    copy (as after a rollback): (the project, the backup's id, the copy's name)."""
    p = _other_project(tmp_path, _new_db(cluster), _project_config(shared, project_id), "p")
    seed(p.url, accounts=5, invoices=5)
    old = p.cli("backup", "create").stdout.strip()
    copy = f"r_{secrets.token_hex(3)}"
    assert p.cli("restore", old, "--into", copy).returncode == 0
    p.environ["DATABASE_URL"] = cluster.url(copy)
    return p, old, copy


def test_a_restored_copy_the_app_now_uses_keeps_the_history(cluster: LocalCluster, tmp_path: Path) -> None:
    """After a rollback (or restore --into) the application runs on the restored copy and DATABASE_URL
    names it: the backups of the database it came from are still this project's, before and after the
    copy's own first backup (the copy's comment says which backup it came from). Another project's
    database of another name, never backed up here, sees none of them."""
    shared = tmp_path / "nas"
    p, old, _ = _app_on_a_restored_copy(cluster, tmp_path, shared, None)
    assert [x["id"] for x in json.loads(p.cli("backup", "list", "--json").stdout)] == [old]
    new = p.cli("backup", "create").stdout.strip()
    assert [x["id"] for x in json.loads(p.cli("backup", "list", "--json").stdout)] == [new, old]
    stranger = _other_project(tmp_path, _new_db(cluster), _project_config(shared, None), "stranger")
    listed = stranger.cli("backup", "list", "--json")
    assert json.loads(listed.stdout) == [] and "2 backups of another project/database ignored" in listed.stderr


@pytest.mark.parametrize("project_id", [None, "shop"], ids=["no project id", "project id"])
def test_a_prune_without_the_database_url_never_mixes_two_databases_backups(
    cluster: LocalCluster, tmp_path: Path, project_id: str | None
) -> None:
    """breaker14b B1 (data loss): with DATABASE_URL unset, prune did not know which database was its
    own and ran retention over a database's and its restored copy's backups together: it removed every
    backup of the live database. It is refused, nothing removed and no marker written."""
    shared = tmp_path / "nas"
    config = _project_config(shared, project_id).replace(
        "[environments.production]", "[backup.retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n[environments.production]"
    )
    p = _other_project(tmp_path, _new_db(cluster), config, "p")
    seed(p.url, accounts=5, invoices=5)
    first = p.cli("backup", "create").stdout.strip()
    copy = f"r_{secrets.token_hex(3)}"
    assert p.cli("restore", first, "--into", copy).returncode == 0
    second = p.cli("backup", "create").stdout.strip()
    own = p.cli("backup", "create", extra_env={"DATABASE_URL": cluster.url(copy)}).stdout.strip()
    assert first and second and own
    markers_before = sorted((shared / "production").rglob(".pgrunbook-environment/*.json"))
    evidence.data_loss_scenario("prune with the database URL unset over two databases' backups")
    url = p.environ.pop("DATABASE_URL")
    try:
        refused = p.cli("backup", "prune")
    finally:
        p.environ["DATABASE_URL"] = url
    assert_clean_error(refused, 2, "prune refused: DATABASE_URL is not set", "nothing was removed")
    assert all((shared / "production" / i / "manifest.json").exists() for i in (first, second, own))
    assert sorted((shared / "production").rglob(".pgrunbook-environment/*.json")) == markers_before


@pytest.mark.parametrize("project_id", [None, "shop"], ids=["no project id", "project id"])
def test_a_prune_before_the_copys_first_backup_keeps_its_history(
    cluster: LocalCluster, tmp_path: Path, project_id: str | None
) -> None:
    """newuser14: the app moved to a restored copy (a rollback at 02:30) and the scheduled prune ran
    before the copy's first backup. Its marker was written without the copy's lineage, and from then on
    the copy's list was empty, check critical, and `restore latest` refused, a later backup changing
    nothing. The prune now writes the lineage, and a later claim adds it to a marker written without."""
    shared = tmp_path / "nas"
    p, old, copy = _app_on_a_restored_copy(cluster, tmp_path, shared, project_id)
    assert p.cli("backup", "prune").returncode == 0
    assert [x["id"] for x in json.loads(p.cli("backup", "list", "--json").stdout)] == [old]
    r = p.cli("restore", "latest", "--into", f"r_{secrets.token_hex(3)}", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["backup_id"] == old, r.stderr
    # a marker written without it (by the prune of an earlier release) learns it at the next backup
    folder = shared / "production" / ".pgrunbook-environment"
    markers = [m for m in folder.glob("*.json") if json.loads(m.read_text())["database"]["name"] == copy]
    assert markers and all(json.loads(m.read_text())["also"] for m in markers)  # written with the lineage
    for marker in markers:
        data = json.loads(marker.read_text())
        data["also"], data["until"] = [], {}
        marker.write_text(json.dumps(data))
    assert [x["id"] for x in json.loads(p.cli("backup", "list", "--json").stdout)] == []  # the fault, as it was
    new = p.cli("backup", "create").stdout.strip()
    assert [x["id"] for x in json.loads(p.cli("backup", "list", "--json").stdout)] == [new, old]


@pytest.mark.parametrize("project_id", [None, "shop"], ids=["no project id", "project id"])
def test_a_restored_copy_backed_up_beside_its_live_source_never_takes_the_sources_newer_backups(
    cluster: LocalCluster, tmp_path: Path, project_id: str | None
) -> None:
    """breaker13 F5 (data loss): a copy restored from the source's backup (restore --into) and backed
    up under the same configuration while the source went on being backed up took every backup of the
    source for its own, the newer ones too: its `restore latest` restored the source's newest backup and
    its prune deleted the source's backups. The copy continues the source's history only up to the
    backup it was restored from."""
    shared = tmp_path / "nas"
    config = _project_config(shared, project_id).replace(
        "[environments.production]", "[backup.retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n[environments.production]"
    )
    src = _other_project(tmp_path, _new_db(cluster), config, "src")
    seed(src.url, accounts=5, invoices=5)
    fork = src.cli("backup", "create", "--label", "fork").stdout.strip()
    copy = f"copy_{secrets.token_hex(3)}"
    assert src.cli("restore", fork, "--into", copy).returncode == 0
    dup = _other_project(tmp_path, cluster.url(copy), config, "copy")
    time.sleep(1.1)  # ids order by their second, then their label: one second apart, the order is the time's
    own = dup.cli("backup", "create", "--label", "own").stdout.strip()
    time.sleep(1.1)
    later = src.cli("backup", "create", "--label", "later").stdout.strip()
    assert fork and own and later
    listed = [x["id"] for x in json.loads(dup.cli("backup", "list", "--json").stdout)]
    assert listed == [own, fork]  # its own, and the history up to the fork; not the source's newer one
    r = dup.cli("restore", "latest", "--into", f"r_{secrets.token_hex(3)}", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["backup_id"] == own, r.stderr
    evidence.data_loss_scenario("prune by a restored copy while its source goes on being backed up")
    pruned = dup.cli("backup", "prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    decided = {row["id"]: row for row in json.loads(pruned.stdout)}
    assert later not in decided
    # breaker13b N4: the backup it was restored from is the live source's too: kept while the source exists
    assert decided[fork]["action"] == "keep" and "which still exists: its own prune decides" in str(decided[fork])
    assert all((shared / "production" / i / "manifest.json").exists() for i in (later, fork))
    assert later in [x["id"] for x in json.loads(src.cli("backup", "list", "--json").stdout)]
    # breaker14 F5 (data loss): the source renamed outside pgrunbook looked dropped, and the copy's prune
    # removed the backup it was restored from, which may be the renamed database's only one
    source_name = src.url.rsplit("/", 1)[1]
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{source_name}" RENAME TO "{source_name}_renamed"'.encode())
    try:
        pruned = dup.cli("backup", "prune", "--json")
        assert pruned.returncode == 0, pruned.stderr
        decided = {row["id"]: row for row in json.loads(pruned.stdout)}
        assert decided[fork]["action"] == "keep" and "no longer on the server under that name" in str(decided[fork])
        assert (shared / "production" / fork / "manifest.json").exists()
    finally:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{source_name}_renamed" RENAME TO "{source_name}"'.encode())


def test_a_copy_of_a_copy_continues_each_history_only_up_to_its_own_fork(cluster: LocalCluster, tmp_path: Path) -> None:
    """breaker13b N12: the second copy's marker kept one cut for every earlier name, so the first
    source's backups taken after the first fork became the second copy's history."""
    shared = tmp_path / "nas"
    config = _project_config(shared, "chain")
    src = _other_project(tmp_path, _new_db(cluster), config, "src")
    seed(src.url, accounts=5, invoices=5)
    fork1 = src.cli("backup", "create", "--label", "fork1").stdout.strip()
    ch1_name, ch2_name = f"ch1_{secrets.token_hex(3)}", f"ch2_{secrets.token_hex(3)}"
    assert src.cli("restore", fork1, "--into", ch1_name).returncode == 0
    time.sleep(1.1)  # ids order by their second, then their label: one second apart, the order is the time's
    after_fork1 = src.cli("backup", "create", "--label", "s2").stdout.strip()
    time.sleep(1.1)
    ch1 = _other_project(tmp_path, cluster.url(ch1_name), config, "ch1")
    c1 = ch1.cli("backup", "create", "--label", "c1").stdout.strip()
    assert ch1.cli("restore", c1, "--into", ch2_name).returncode == 0
    ch2 = _other_project(tmp_path, cluster.url(ch2_name), config, "ch2")
    time.sleep(1.1)
    c2 = ch2.cli("backup", "create", "--label", "c2").stdout.strip()
    assert fork1 < after_fork1 < c1 < c2
    assert [x["id"] for x in json.loads(ch2.cli("backup", "list", "--json").stdout)] == [c2, c1, fork1]
    marker = next(
        json.loads(p.read_text())
        for p in (shared / "production" / ".pgrunbook-environment").glob("*.json")
        if json.loads(p.read_text()).get("database", {}).get("name") == ch2_name
    )
    assert marker["until"] == {ch1_name: c1, src.url.rsplit("/", 1)[1]: fork1}


def test_a_project_without_id_never_prunes_backups_it_only_presumes_its_own(
    cluster: LocalCluster, second_cluster: LocalCluster, tmp_path: Path
) -> None:
    """trial7 finding 23 (data loss): two hand-written configs without ``[project] id`` share a folder
    and a database name on two servers. Y's first backup failed (as a scheduled one may), so the folder
    holds only X's backups; Y presumed them its own and its prune deleted X's backup. Now Y lists them
    with a note, and its prune and ``restore latest --in-place`` refuse (nothing deleted or replaced),
    saying why and how to settle it; X, whose server wrote them, prunes as before."""
    name = f"shop_{secrets.token_hex(3)}"
    shared = tmp_path / "legacy"
    config = (
        f'[backup]\nstorage = "{shared}"\nretention = {{ daily = 1, weekly = 0, monthly = 0 }}\n'
        '[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
    )
    x = _other_project(tmp_path, _new_db(cluster, name), config, "x")
    y = _other_project(tmp_path, _new_db(second_cluster, name), config, "y")
    x_ids = [x.cli("backup", "create", "--label", label).stdout.strip() for label in ("x1", "x2")]
    assert all(x_ids)
    before = _tree(shared)
    listed = y.cli("backup", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["id"] for row in json.loads(listed.stdout)) == sorted(x_ids)  # presumed: disaster recovery
    assert "presumed this database's, not proven" in listed.stderr
    evidence.data_loss_scenario("prune by a project without id whose server wrote none of the folder's backups")
    for args in (("backup", "prune"), ("backup", "prune", "--dry-run")):
        r = y.cli(*args)
        assert_clean_error(r, 2, "prune removed nothing", x_ids[0], "taken on another server")
        assert "[project] id" in r.stderr
    doctor = {c["name"]: c for c in json.loads(y.cli("doctor", "--json").stdout)["checks"]}
    assert doctor["backup ownership"]["status"] == "warning" and "not proven" in doctor["backup ownership"]["detail"]
    assert "[project] id" in doctor["backup ownership"]["hint"]
    doctor = {c["name"]: c for c in json.loads(x.cli("doctor", "--json").stdout)["checks"]}
    assert doctor["backup ownership"]["status"] == "ok", doctor["backup ownership"]
    r = y.cli("restore", "latest", "--in-place", "--confirm", name)
    assert_clean_error(r, 2, "restore latest --in-place refused", x_ids[1])
    assert f"pgrunbook restore {x_ids[1]} --in-place --confirm {name}" in r.stderr
    assert _tree(shared) == before
    # the database unreachable: not provable either
    y.environ["DATABASE_URL"] = second_cluster.url(name).replace(f":{second_cluster.port}/", ":1/")
    r = y.cli("backup", "prune")
    assert_clean_error(r, 2, "prune removed nothing", "the database cannot be reached or read, so whether")
    assert "another server" not in r.stderr.splitlines()[0]  # down is not foreign (a re-trial's finding)
    assert "hint: run prune again once the database is reachable" in r.stderr
    assert _tree(shared) == before
    # X, whose server wrote them, prunes by its retention
    px = x.cli("backup", "prune", "--json")
    assert px.returncode == 0, px.stderr
    assert {row["id"]: row["action"] for row in json.loads(px.stdout)} == {x_ids[1]: "keep", x_ids[0]: "remove"}
    assert not (shared / "production" / x_ids[0]).exists()


def test_a_moved_database_prunes_again_once_this_server_wrote_a_backup(
    cluster: LocalCluster, second_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The other side of finding 23: a database moved to a new server (no project id) restores its old
    backups (restore --into latest, by id in place) but prunes none of them on presumption; after its
    first backup from the new server, its prune works and the old server's backups are left alone."""
    name = f"app_{secrets.token_hex(3)}"
    shared = tmp_path / "nas"
    config = (
        f'[backup]\nstorage = "{shared}"\nretention = {{ daily = 1, weekly = 0, monthly = 0 }}\n'
        '[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
    )
    p = _other_project(tmp_path, _new_db(cluster, name), config, "p")
    old = [p.cli("backup", "create", "--label", f"old{i}").stdout.strip() for i in range(2)]
    p.environ["DATABASE_URL"] = _new_db(second_cluster, name)
    assert_clean_error(p.cli("backup", "prune"), 2, "prune removed nothing")
    assert all((shared / "production" / i / "manifest.json").exists() for i in old)
    new = [p.cli("backup", "create", "--label", f"new{i}").stdout.strip() for i in range(2)]
    r = p.cli("backup", "prune", "--json")
    assert r.returncode == 0, r.stderr
    assert {row["id"]: row["action"] for row in json.loads(r.stdout)} == {new[1]: "keep", new[0]: "remove"}
    assert all((shared / "production" / i / "manifest.json").exists() for i in old)


def _move_backup(folder: Path, new_id: str) -> Path:
    """Give a real backup another id (its folder and its manifest's id), as a backup of another project
    that happened to take the same id the same night would have it; the archive is untouched."""
    target = folder.parent / new_id
    folder.rename(target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["id"] = new_id
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize("holder", ["another project", "another backup of this project"])
def test_copy_never_replaces_another_backup_holding_the_same_id(seeded: Project, tmp_path: Path, holder: str) -> None:
    """break11 #11: two projects sharing a destination take the same id the same night (the default
    schedule and label); copying A's backup there replaced B's backup. Now refused, naming whose backup
    holds the id; nothing at the destination changes. Only this same backup's own copy is replaced."""
    shared = tmp_path / "shared"
    seeded.write_config('[project]\nid = "proj-a"\n[backup]\nstorage = "backups"\n')
    bid = seeded.cli("backup", "create", "--label", "scheduled").stdout.strip()
    if holder == "another project":
        seeded.write_config(f'[project]\nid = "proj-b"\n[backup]\nstorage = "{shared}"\n')
        other = seeded.cli("backup", "create", "--label", "other").stdout.strip()
        _move_backup(shared / "default" / other, bid)
        seeded.write_config('[project]\nid = "proj-a"\n[backup]\nstorage = "backups"\n')
        needle = "project proj-b's backup of database"
    else:
        other = seeded.cli("backup", "create", "--label", "other").stdout.strip()
        assert seeded.cli("backup", "copy", other, "--to", str(shared)).returncode == 0
        _move_backup(shared / "default" / other, bid)
        needle = "project proj-a's backup of database"
    before = _tree(shared)
    evidence.data_loss_scenario(f"backup copy onto {holder}'s backup of the same id")
    r = seeded.cli("backup", "copy", bid, "--to", str(shared))
    assert_clean_error(r, 2, f"cannot copy backup {bid}: its id is taken at", needle)
    assert "hint: nothing was copied or replaced" in r.stderr
    assert _tree(shared) == before

"""list, verify (checksum, table of contents, drill) and prune against real backups."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from pgrunbook.backup.create import create_backup
from pgrunbook.backup.manifest import Manifest
from tests import evidence
from tests.conftest import Project, assert_clean_error

pytestmark = pytest.mark.integration


def test_list_shows_every_backup_with_the_spec_fields(seeded: Project) -> None:
    a = create_backup(seeded.env(), label="scheduled")
    b = create_backup(seeded.env(), label="pre-deploy")
    result = seeded.cli("backup", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == [b.id, a.id]  # newest first
    for r in rows:
        assert {"id", "label", "created_at", "size", "verified", "migration_head"} <= set(r)
        assert r["verified"] is False
    table = seeded.cli("backup", "list")
    assert a.id in table.stdout and b.id in table.stdout and "pre-deploy" in table.stdout


def test_backups_under_a_renamed_environment_are_pointed_at_not_hidden(seeded: Project) -> None:
    """trial11 F1: init writes [environments.default]; renamed to production (the README's go-live), every
    command said "no backups" while this project's backups sat under backups/default."""
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    assert (seeded.storage / "default" / bid / "manifest.json").is_file()
    seeded.write_config('[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n')
    note = f"1 backup of this project and database is under environment 'default' in {seeded.storage} (renamed?)"
    move = f"move its backup folders from {seeded.storage}/default into {seeded.storage}/production"
    listed = seeded.cli("backup", "list")
    assert listed.returncode == 0 and f"warning: {note}" in listed.stderr, listed.stderr
    assert move in listed.stderr and "name the environment 'default' again in pgrunbook.toml" in listed.stderr
    r = seeded.cli("restore", bid, "--into", "renamed_env")
    assert_clean_error(r, 2, f"no backup '{bid}' in environment 'production'", note)
    assert move in r.stderr, r.stderr
    r = seeded.cli("restore", "latest", "--into", "renamed_env")
    assert_clean_error(r, 2, "no backup in environment 'production'", note)
    doctor = seeded.cli("doctor")
    line = next(ln for ln in doctor.stdout.splitlines() if "backup ownership" in ln)
    assert "no backups under environment 'production', but " + note in line and doctor.returncode == 1, doctor.stdout
    # with both environments configured, --env reaches them
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        '[environments.default]\ndatabase_url_env = "DATABASE_URL"\n'
    )
    listed = seeded.cli("backup", "list", "--env", "production")
    assert "; or use --env default" in listed.stderr, listed.stderr
    assert bid in seeded.cli("backup", "list", "--env", "default").stdout


def test_verify_passes_and_is_recorded_in_the_manifest(seeded: Project) -> None:
    m = create_backup(seeded.env())
    result = seeded.cli("--json", "backup", "verify", m.id)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["id"] == m.id
    assert {c["name"] for c in report["checks"]} == {"size", "checksum", "compression", "archive"}
    stored = Manifest.model_validate_json((seeded.storage / "default" / m.id / "manifest.json").read_text())
    assert stored.verified and stored.verifications[-1].kind == "checksum"
    listed = json.loads(seeded.cli("backup", "list", "--json").stdout)
    assert listed[0]["verified"] is True


def test_drill_restores_compares_counts_and_drops_the_scratch_database(seeded: Project) -> None:
    m = create_backup(seeded.env())
    result = seeded.cli("backup", "verify", m.id, "--drill", "--json")
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["drill restore"]["ok"] and checks["row counts"]["ok"] and checks["read query"]["ok"]
    with psycopg.connect(seeded.url) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'pgrunbook_drill_%'").fetchone()
    assert left == (0,)
    assert Manifest.model_validate_json((seeded.storage / "default" / m.id / "manifest.json").read_text()).drilled


def test_drill_catches_row_counts_that_differ_from_the_manifest(seeded: Project) -> None:
    m = create_backup(seeded.env())
    path = seeded.storage / "default" / m.id / "manifest.json"
    data = json.loads(path.read_text())
    for t in data["tables"]:
        if t["name"] == "account":
            t["rows"] += 1
    path.write_text(json.dumps(data))
    result = seeded.cli("backup", "verify", m.id, "--drill", "--json")
    assert result.returncode == 2
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["row counts"]["ok"] and "public.account: 500 vs 501" in checks["row counts"]["detail"]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_verify_fails_on_a_flipped_byte_or_a_truncated_file(seeded: Project, damage: str, compression: str) -> None:
    seeded.write_config(f'[backup]\nstorage = "backups"\ncompression = "{compression}"\n')
    m = create_backup(seeded.env())
    dump = seeded.storage / "default" / m.id / m.file
    data = bytearray(dump.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) * 2 // 3]
    dump.write_bytes(bytes(data))
    result = seeded.cli("backup", "verify", m.id, "--drill")
    assert_clean_error(result, 2, "failed verification")
    assert "checksum" in result.stdout and "FAIL" in result.stdout
    assert "skipped: the stored file failed its checks" in result.stdout
    listed = json.loads(seeded.cli("backup", "list", "--json").stdout)
    assert listed[0]["verified"] is False
    evidence.fault(f"{damage} of a stored {compression} backup")


def _age(project: Project, manifest: Manifest, when: datetime, label: str | None = None) -> str:
    """A copy of a real backup that claims an older date: retention only looks at dates and labels."""
    label = label or manifest.label
    new_id = f"{when:%Y%m%dT%H%M%SZ}-{label}"
    src = project.storage / "default" / manifest.id
    dst = project.storage / "default" / new_id
    shutil.copytree(src, dst)
    data = json.loads((dst / "manifest.json").read_text())
    data.update(id=new_id, started_at=when.isoformat(), finished_at=when.isoformat(), label=label)
    (dst / "manifest.json").write_text(json.dumps(data))
    return new_id


def test_prune_applies_retention_and_says_why(seeded: Project) -> None:
    seeded.write_config('[backup]\nstorage = "backups"\nretention = { daily = 2, weekly = 1, monthly = 1 }\n')
    base = create_backup(seeded.env(), label="scheduled")
    now = datetime.now(UTC)
    ids = [_age(seeded, base, now - timedelta(days=d, hours=1)) for d in range(1, 6)]
    dry = seeded.cli("backup", "prune", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    rows = {r["id"]: r for r in json.loads(dry.stdout)}
    removed = [i for i, r in rows.items() if r["action"] == "remove"]
    assert removed and all(rows[i]["reasons"] == ["not needed by any rule"] for i in removed)
    assert rows[base.id]["action"] == "keep" and any(r.startswith("daily") for r in rows[base.id]["reasons"])
    assert all((seeded.storage / "default" / i).exists() for i in ids)  # dry run deleted nothing
    text = seeded.cli("backup", "prune")
    assert text.returncode == 0
    for i in removed:
        assert f"removed  {i}" in text.stdout
        assert not (seeded.storage / "default" / i).exists()
    kept = [r["id"] for r in json.loads(seeded.cli("backup", "list", "--json").stdout)]
    assert sorted(kept) == sorted(i for i, r in rows.items() if r["action"] == "keep")


def test_prune_never_removes_newest_verified_or_pre_deploy(seeded: Project) -> None:
    seeded.write_config('[backup]\nstorage = "backups"\nretention = { daily = 1, weekly = 0, monthly = 0 }\n')
    base = create_backup(seeded.env(), label="scheduled")
    now = datetime.now(UTC)
    pre = _age(seeded, base, now - timedelta(days=3), "pre-deploy")
    verified = _age(seeded, base, now - timedelta(days=5))
    assert seeded.cli("backup", "verify", verified).returncode == 0
    other = _age(seeded, base, now - timedelta(days=7))
    rows = {r["id"]: r for r in json.loads(seeded.cli("backup", "prune", "--json").stdout)}
    assert rows[pre]["action"] == "keep" and "newest pre-deploy backup (never removed)" in rows[pre]["reasons"]
    assert rows[verified]["action"] == "keep"
    assert rows[other]["action"] == "remove"


def test_damaged_ciphertext_is_reported_as_encryption_not_compression(
    seeded: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An age-encrypted backup whose stored bytes are damaged: the read-back's failure is the
    ``encryption`` check (age's authentication failed before any compressed byte was read), never
    "compression"."""
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    key = tmp_path_factory.mktemp("age") / "age.key"
    key.write_text(f"{ident}\n")
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[backup.encryption]\n'
        f'recipients = ["{ident.to_public()}"]\nidentity_file = "{key}"\n'
    )
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    (stored,) = (seeded.storage / "default" / bid).glob("db.dump*.age")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte inside an age chunk: its authentication fails
    stored.write_bytes(bytes(data))
    r = seeded.cli("--json", "backup", "verify", bid)
    assert r.returncode == 2, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert not checks["encryption"]["ok"] and "age decryption failed" in checks["encryption"]["detail"]
    assert "compression" not in checks, checks


def _sealed(project: Project, manifest: Manifest, data: bytes) -> None:
    """Store ``data`` as the backup's file with a manifest that matches it (size, sha256): damage done
    before the file was hashed (a writer's bad RAM or disk), which only the archive's own checks find."""
    (project.storage / "default" / manifest.id / manifest.file).write_bytes(data)
    path = project.storage / "default" / manifest.id / "manifest.json"
    fields = json.loads(path.read_text())
    fields.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    path.write_text(json.dumps(fields))


@pytest.mark.parametrize("where", ["middle", "end"])
def test_gzip_verify_reads_every_data_block_and_names_the_damaged_one(seeded: Project, where: str) -> None:
    """trial8 #3: a gzip backup (pg_dump's own compression) was checked only up to its table of
    contents, so damage in its data went unnoticed until pg_restore. Every data block is now read and
    decompressed (zlib's own checksum per block), and the table whose block is damaged is named."""
    seeded.write_config('[backup]\nstorage = "backups"\ncompression = "gzip"\n')
    m = create_backup(seeded.env())
    intact = seeded.cli("--json", "backup", "verify", m.id)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    checks = {c["name"]: c for c in json.loads(intact.stdout)["checks"]}
    assert checks["compression"]["ok"] and "every data block" in checks["compression"]["detail"]
    data = bytearray((seeded.storage / "default" / m.id / m.file).read_bytes())
    # middle: inside the big invoice table's deflate stream; end: the last block's adler32 (before the
    # block's closing zero-length int of 5 bytes)
    data[len(data) // 2 if where == "middle" else len(data) - 7] ^= 0x10
    _sealed(seeded, m, bytes(data))
    result = seeded.cli("backup", "verify", m.id, "--drill")
    assert_clean_error(result, 2, "failed verification")
    line = next(ln for ln in result.stdout.splitlines() if "compression:" in ln)
    assert "FAIL" in line and "data of table" in line, result.stdout
    assert "checksum: sha256 matches" in result.stdout  # the stored bytes are the ones hashed
    assert "skipped: the stored file failed its checks" in result.stdout
    report = json.loads(seeded.cli("--json", "backup", "verify", m.id).stdout)
    assert report["damaged"] is True
    # the stream restore's check reads every block too, before any database is created; the parallel
    # restore's pg_restore reads them itself (not twice), and its database is dropped again
    seeded.write_config('[backup]\nstorage = "backups"\ncompression = "gzip"\n[restore]\nmethod = "stream"\n')
    r = seeded.cli("restore", m.id, "--into", "gzip_damaged")
    assert_clean_error(r, 2, "failed its integrity check", "compression: data of table")
    seeded.write_config('[backup]\nstorage = "backups"\ncompression = "gzip"\n[restore]\nmethod = "parallel"\n')
    r = seeded.cli("restore", m.id, "--into", "gzip_damaged")
    assert_clean_error(r, 2, "could not uncompress data", "dropped again, nothing was kept")
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'gzip_damaged'").fetchone() is None


FRAMES = '[backup]\nstorage = "backups"\nzstd_frame_mb = 0.0625\n[restore]\nmethod = "{method}"\njobs = 2\n'


def _edit_manifest(project: Project, manifest: Manifest, edit: str) -> str:
    """A hand-edited or corrupted manifest: the field it changed (the stored file is untouched)."""
    path = project.storage / "default" / manifest.id / "manifest.json"
    fields = json.loads(path.read_text())
    if edit == "frame dropped":
        fields["frames"] = fields["frames"][:-1]
    elif edit == "frame sizes":  # same totals, wrong boundaries
        (s0, r0), (s1, r1) = fields["frames"][:2]
        fields["frames"][:2] = [[s0 + 7, r0], [s1 - 7, r1]]
    else:
        fields["archive_size"] += 1000
    path.write_text(json.dumps(fields))
    return "archive_size" if edit == "archive_size" else "frames"


@pytest.mark.parametrize("edit", ["frame dropped", "frame sizes", "archive_size"])
def test_a_manifest_inconsistent_with_its_file_is_said_so_not_called_damage(seeded: Project, edit: str) -> None:
    """trial8 #9: a hand-edited or corrupted frame list / archive_size got an odd wording ("truncated",
    "frame 1 is incomplete or damaged"). The true one: the manifest is inconsistent with the stored file
    (which field, expected vs found), the file's own bytes (sha256) may be fine, and what to do."""
    seeded.write_config(FRAMES.format(method="parallel"))
    m = create_backup(seeded.env())
    assert len(m.frames) >= 3
    field = _edit_manifest(seeded, m, edit)
    result = seeded.cli("backup", "verify", m.id)
    assert_clean_error(result, 2, "manifest", "inconsistent with the stored file", field)
    assert "do not rely on it" not in result.stderr and "truncated" not in result.stderr + result.stdout
    hint = next(ln for ln in result.stderr.splitlines() if ln.startswith("hint: "))
    assert "sha256" in hint and "manifest.json" in hint
    assert "checksum: sha256 matches" in result.stdout
    report = json.loads(seeded.cli("--json", "backup", "verify", m.id).stdout)
    assert report["ok"] is False and report["damaged"] is False and report["cause"]["kind"] == "manifest"
    for method in ("parallel", "stream"):
        seeded.write_config(FRAMES.format(method=method))
        r = seeded.cli("restore", m.id, "--into", "from_bad_manifest")
        assert_clean_error(r, 2, "manifest", "inconsistent with the stored file", "no database was created")
        assert "integrity" not in r.stderr and "damaged" not in r.stderr
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'from_bad_manifest'").fetchone() is None


@pytest.mark.parametrize("method", ["parallel", "stream"])
def test_a_manifest_naming_another_pg_dump_than_the_archive_header_is_inconsistent(
    seeded: Project, method: str
) -> None:
    """break11 #2: a hand-edited pg_dump_version made "unsupported version (1.16) in file header" a
    FAILED verification ("do not rely on it") and restore "failed its integrity check", though the bytes
    were exactly pg_dump's. The archive's own header (PGDMP + format version) is compared with the
    manifest: a mismatch is the manifest's ("manifest" check, damaged false), and the pg_restore the
    archive needs is named from the header."""
    seeded.write_config(FRAMES.format(method=method))
    m = create_backup(seeded.env())
    major = int(m.pg_dump_version.split(".")[0])
    # a pg_dump whose archive format differs from the real one, and whose archives the tools here read
    # (so the tool choice from the manifest goes ahead and only the header can tell)
    lie = "15.18" if major >= 16 else "11.22"
    path = seeded.storage / "default" / m.id / "manifest.json"
    fields = json.loads(path.read_text())
    fields["pg_dump_version"] = lie
    path.write_text(json.dumps(fields))
    fmt = "1.16" if major >= 17 else "1.15" if major == 16 else "1.14"
    result = seeded.cli("backup", "verify", m.id)
    assert_clean_error(result, 2, "manifest", "inconsistent with the stored file", f"format {fmt}", lie)
    assert "do not rely on it" not in result.stderr
    assert f"needs pg_restore {min(major, 17) if major >= 16 else 12} or newer" in result.stderr
    report = json.loads(seeded.cli("--json", "backup", "verify", m.id).stdout)
    assert report["ok"] is False and report["damaged"] is False and report["cause"]["kind"] == "manifest"
    r = seeded.cli("restore", m.id, "--into", "from_lying_manifest")
    assert_clean_error(r, 2, "manifest", "inconsistent with the stored file", "no database was created")
    assert "integrity" not in r.stderr and "damaged" not in r.stderr
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'from_lying_manifest'").fetchone() is None

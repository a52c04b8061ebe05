"""S3 storage against a real S3-compatible server over HTTP (moto in server mode), with faults; the same
backup/verify/restore/prune tests run over both backends; age encryption at rest; second copies."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgrunbook.backup.storage import open_storage
from pgrunbook.errors import StorageError
from tests import evidence
from tests.conftest import PASSWORD, Project, assert_clean_error, fingerprint, wait_for
from tests.s3_support import SECRET_KEY, FaultProxy, MotoServer, aws_env, client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    name = f"pgrunbook-{secrets.token_hex(4)}"
    client(moto.endpoint).create_bucket(Bucket=name)
    return name


def _use_s3(project: Project, endpoint: str, bucket: str, extra: str = "") -> str:
    project.environ.update(aws_env(endpoint))
    location = f"s3://{bucket}/team/pg"
    project.write_config(f'[backup]\nstorage = "{location}"\n{extra}')
    return location


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, seeded: Project, moto: MotoServer) -> Project:
    if request.param == "s3":
        name = f"pgrunbook-{secrets.token_hex(4)}"
        client(moto.endpoint).create_bucket(Bucket=name)
        _use_s3(seeded, moto.endpoint, name)
    return seeded


def test_storage_contract(tmp_path: Path, moto: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both backends: invisible until commit, listing by prefix, ranged reads, abort leaves nothing."""
    for k, v in aws_env(moto.endpoint).items():
        monkeypatch.setenv(k, v)
    for store in (
        open_storage(str(tmp_path / "local"), tmp_path),
        open_storage(f"s3://{bucket}/p", tmp_path, part_size=5 * 1024 * 1024),
    ):
        data = bytes(range(256)) * 50_000  # 12.8 MB: several parts on S3
        w = store.writer("env/id1/db.dump.zst")
        w.write(data[:7_000_000])
        assert "env/id1/db.dump.zst" not in [o.key for o in store.list("env/")]  # invisible before commit
        w.write(data[7_000_000:])
        w.commit()
        assert [(o.key, o.size) for o in store.list("env/")] == [("env/id1/db.dump.zst", len(data))]
        assert store.read_bytes("env/id1/db.dump.zst") == data
        assert b"".join(store.read("env/id1/db.dump.zst", 1000, 5000)) == data[1000:6000]
        store.write_bytes("env/id10/manifest.json", b"{}")
        assert [o.key for o in store.list("env/id1/")] == ["env/id1/db.dump.zst"]
        aborted = store.writer("env/id2/db.dump.zst")
        aborted.write(data)
        aborted.abort()
        assert [o.key for o in store.list("env/")] == ["env/id1/db.dump.zst", "env/id10/manifest.json"]
        store.delete("env/id1/db.dump.zst")
        store.delete("env/id10/manifest.json")
        assert store.list("env/") == []
        with pytest.raises(StorageError, match="missing"):
            store.read_bytes("env/nope")
    s3 = open_storage(f"s3://{bucket}/p", tmp_path)
    assert s3.incomplete_uploads("") == []  # type: ignore[attr-defined]


def test_backup_verify_drill_restore_prune_on_both_backends(backend: Project) -> None:
    r = backend.cli("--json", "backup", "create", "--label", "pre-deploy")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["location"].startswith(
        "s3://" if "s3://" in (backend.root / "pgrunbook.toml").read_text() else str(backend.root)
    )
    second = json.loads(backend.cli("--json", "backup", "create").stdout)
    listed = json.loads(backend.cli("--json", "backup", "list").stdout)
    assert [b["id"] for b in listed] == [second["id"], first["id"]]
    drill = backend.cli("--json", "backup", "verify", first["id"], "--drill")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert all(c["ok"] for c in json.loads(drill.stdout)["checks"])
    target = f"from_backend_{secrets.token_hex(3)}"  # the session's cluster is shared across params
    restored = backend.cli("--json", "restore", second["id"], "--into", target)
    assert restored.returncode == 0, restored.stderr
    assert fingerprint(backend.url.rsplit("/", 1)[0] + "/" + target) == fingerprint(backend.url)
    (backend.root / "pgrunbook.toml").write_text(
        (backend.root / "pgrunbook.toml").read_text() + "retention = { daily = 1, weekly = 0, monthly = 0 }\n"
    )
    rows = {r["id"]: r for r in json.loads(backend.cli("--json", "backup", "prune").stdout)}
    assert rows[second["id"]]["action"] == "keep" and rows[first["id"]]["action"] == "keep"  # pre-deploy, verified
    for text in (r.stdout + r.stderr, drill.stdout, restored.stdout):
        assert SECRET_KEY not in text and PASSWORD not in text


def test_corrupt_object_in_s3_fails_verification(seeded: Project, moto: MotoServer, bucket: str) -> None:
    _use_s3(seeded, moto.endpoint, bucket)
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    c = client(moto.endpoint)
    key = f"team/pg/default/{bid}/db.dump.zst"
    body = bytearray(c.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 1
    c.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    r = seeded.cli("backup", "verify", bid)
    assert_clean_error(r, 2, "failed verification")


def test_bucket_missing_and_server_unreachable(seeded: Project, moto: MotoServer) -> None:
    _use_s3(seeded, moto.endpoint, "no-such-bucket-here")
    r = seeded.cli("backup", "create")
    assert_clean_error(r, 2, "does not exist")
    assert SECRET_KEY not in r.stderr
    r = seeded.cli("backup", "list")
    assert_clean_error(r, 2, "does not exist")
    from pgrunbook.postgres.cluster import free_port

    _use_s3(seeded, f"http://127.0.0.1:{free_port()}", "whatever")
    r = seeded.cli("backup", "list")
    assert_clean_error(r, 2, "cannot reach the S3 endpoint")


def test_wrong_credentials(seeded: Project) -> None:
    strict = MotoServer(auth=True)  # knows no access key at all: every request is refused
    try:
        _use_s3(seeded, strict.endpoint, "any-bucket")
        r = seeded.cli("backup", "create")
        assert_clean_error(r, 2, "S3 refused the credentials")
        assert SECRET_KEY not in r.stdout + r.stderr
    finally:
        strict.stop()


def test_bursts_of_5xx_are_retried_then_fail_clearly(seeded: Project, moto: MotoServer, bucket: str) -> None:
    proxy = FaultProxy(moto.port)
    try:
        _use_s3(seeded, proxy.endpoint, bucket)
        proxy.fail_next = 3
        r = seeded.cli("--json", "backup", "create")
        assert r.returncode == 0, r.stderr  # retried with backoff
        bid = json.loads(r.stdout)["id"]
        assert seeded.cli("backup", "verify", bid).returncode == 0
        proxy.fail_next = 10_000
        r = seeded.cli("backup", "create")
        assert_clean_error(r, 2, "S3 kept failing", "HTTP 503")
        proxy.fail_next = 0
        assert [b["id"] for b in json.loads(seeded.cli("--json", "backup", "list").stdout)] == [bid]
        evidence.fault("bursts of HTTP 503 from S3")
    finally:
        proxy.stop()


def test_storage_server_killed_mid_upload(seeded: Project, moto: MotoServer, bucket: str) -> None:
    """The storage endpoint dies while parts are uploading: a clear failure, nothing listed; the
    incomplete multipart upload is aborted by the next prune."""
    random_hex = " || ".join(["md5(random()::text)"] * 8)
    with psycopg.connect(seeded.url, autocommit=True) as conn:  # ~50 MB that does not compress
        conn.execute(
            f"CREATE TABLE blob AS SELECT g, decode({random_hex}, 'hex') b "  # type: ignore[arg-type]
            "FROM generate_series(1, 400000) g"
        )
    proxy = FaultProxy(moto.port)
    _use_s3(seeded, proxy.endpoint, bucket, "[backup.s3]\npart_size_mb = 5\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "backup", "create"],
        cwd=seeded.root,
        env=seeded.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    c = client(moto.endpoint)
    wait_for(lambda: c.list_multipart_uploads(Bucket=bucket).get("Uploads") or proc.poll() is not None, 60)
    assert proc.poll() is None, "the backup ended before its upload could be cut"
    proxy.stop()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.startswith("error: ") and "Traceback" not in err and SECRET_KEY not in err
    _use_s3(seeded, moto.endpoint, bucket, "[backup.s3]\npart_size_mb = 5\n")
    assert json.loads(seeded.cli("--json", "backup", "list").stdout) == []
    pruned = seeded.cli("--json", "backup", "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert not c.list_multipart_uploads(Bucket=bucket).get("Uploads")
    leftovers = [o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert leftovers == []
    assert seeded.cli("backup", "create").returncode == 0  # and the next backup works
    evidence.fault("S3 endpoint killed mid-upload")


# --- age encryption at rest --------------------------------------------------------------------------


def _age_keys(project: Project) -> tuple[str, Path]:
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    key = project.root / "age.key"
    key.write_text(f"# created for the test\n{ident}\n")
    return str(ident.to_public()), key


@pytest.mark.parametrize("where", ["local", "s3"])
def test_encrypted_backups_are_age_ciphertext_and_restore_only_with_the_identity(
    seeded: Project, moto: MotoServer, where: str
) -> None:
    recipient, key = _age_keys(seeded)
    encryption = f'[backup.encryption]\nrecipients = ["{recipient}"]\n'
    # small frames: the restore below decompresses decrypted frames in parallel, as a large backup's would
    seeded.environ.update(PGRUNBOOK_BACKUP__ZSTD_FRAME_MB="0.0625", PGRUNBOOK_RESTORE__METHOD="parallel")
    if where == "s3":
        name = f"pgrunbook-{secrets.token_hex(4)}"
        client(moto.endpoint).create_bucket(Bucket=name)
        _use_s3(seeded, moto.endpoint, name, encryption)
    else:
        seeded.write_config(f'[backup]\nstorage = "backups"\n{encryption}')
    r = seeded.cli("--json", "backup", "create")
    assert r.returncode == 0, r.stderr
    bid = json.loads(r.stdout)["id"]
    # what is stored is age ciphertext: no pg_dump header anywhere
    if where == "s3":
        c = client(moto.endpoint)
        objects = [
            c.get_object(Bucket=name, Key=o["Key"])["Body"].read() for o in c.list_objects_v2(Bucket=name)["Contents"]
        ]
    else:
        objects = [p.read_bytes() for p in (seeded.root / "backups").rglob("*") if p.is_file()]
    dumps = [o for o in objects if o.startswith(b"age-encryption.org/v1")]
    assert len(dumps) == 1 and all(b"PGDMP" not in o for o in objects)
    manifest = next(json.loads(o) for o in objects if o.startswith(b"{"))
    assert manifest["encryption"] == "age" and manifest["recipients"] == [recipient]
    assert len(manifest["frames"]) >= 3
    assert manifest["file"].endswith(".age") and "age -d" in manifest["restore_command"]
    # without the identity: the ciphertext's checksum verifies; drill and restore refuse clearly
    plain = seeded.cli("--json", "backup", "verify", bid)
    assert plain.returncode == 0, plain.stdout
    r = seeded.cli("restore", bid, "--into", f"needs_key_{secrets.token_hex(3)}")
    assert_clean_error(r, 3, "encrypted", "identity_file is not set")
    # with it: exact
    (seeded.root / "pgrunbook.toml").write_text(
        (seeded.root / "pgrunbook.toml").read_text() + f'identity_file = "{key}"\n'
    )
    drill = seeded.cli("--json", "backup", "verify", bid, "--drill")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    target = f"with_key_{secrets.token_hex(3)}"
    r = seeded.cli("--json", "restore", bid, "--into", target)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["method"].startswith("parallel")
    assert fingerprint(seeded.url.rsplit("/", 1)[0] + "/" + target) == fingerprint(seeded.url)


@pytest.mark.skipif(
    shutil.which("age") is None and os.environ.get("CI") != "true", reason="the age CLI is not installed (CI has it)"
)
def test_encrypted_backup_restores_by_hand_with_the_age_cli(seeded: Project) -> None:
    """The manifest's by-hand command, with the real `age` binary, zstd and pg_restore: no pgrunbook, no
    Python, exactly what an operator types when pgrunbook itself is unavailable."""
    assert shutil.which("age"), "CI must have the age CLI"
    recipient, key = _age_keys(seeded)
    seeded.write_config(f'[backup]\nstorage = "backups"\n[backup.encryption]\nrecipients = ["{recipient}"]\n')
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    folder = seeded.storage / "default" / bid
    manifest = json.loads((folder / "manifest.json").read_text())
    target = f"by_hand_age_{secrets.token_hex(3)}"
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {target}")
    target_url = seeded.url.rsplit("/", 1)[0] + "/" + target
    r = subprocess.run(  # as written: the manifest names the pg_restore that reads the archive here
        manifest["restore_command"],
        shell=True,
        cwd=folder,
        env={**os.environ, "TARGET_DATABASE_URL": target_url, "AGE_IDENTITY_FILE": str(key)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert fingerprint(target_url) == fingerprint(seeded.url)


def test_wrong_identity_fails_clearly(seeded: Project) -> None:
    recipient, _ = _age_keys(seeded)
    seeded.write_config(f'[backup]\nstorage = "backups"\n[backup.encryption]\nrecipients = ["{recipient}"]\n')
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    import pyrage

    other = seeded.root / "other.key"
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    (seeded.root / "pgrunbook.toml").write_text(
        (seeded.root / "pgrunbook.toml").read_text() + f'identity_file = "{other}"\n'
    )
    r = seeded.cli("restore", bid, "--into", f"wrong_key_{secrets.token_hex(3)}")
    assert_clean_error(r, 2, "failed its integrity check")
    assert "decryption" in r.stderr


# --- second copies -----------------------------------------------------------------------------------


def test_copy_to_s3_is_verified_and_restorable_there(seeded: Project, moto: MotoServer, bucket: str) -> None:
    seeded.environ.update(aws_env(moto.endpoint))
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    dest = f"s3://{bucket}/offsite"
    r = seeded.cli("--json", "backup", "copy", bid, "--to", dest)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] is True
    seeded.write_config(f'[backup]\nstorage = "{dest}"\n')
    assert [b["id"] for b in json.loads(seeded.cli("--json", "backup", "list").stdout)] == [bid]
    target = f"from_copy_{secrets.token_hex(3)}"
    assert seeded.cli("restore", bid, "--into", target).returncode == 0
    assert fingerprint(seeded.url.rsplit("/", 1)[0] + "/" + target) == fingerprint(seeded.url)


def test_configured_copies_after_every_backup(seeded: Project, moto: MotoServer, bucket: str) -> None:
    seeded.environ.update(aws_env(moto.endpoint))
    seeded.write_config(f'[backup]\nstorage = "backups"\ncopies = ["s3://{bucket}/second"]\n')
    r = seeded.cli("--json", "backup", "create")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["copies"] == [f"s3://{bucket}/second"]
    keys = sorted(o["Key"] for o in client(moto.endpoint).list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"second/default/{out['id']}/db.dump.zst", f"second/default/{out['id']}/manifest.json"]
    seeded.write_config('[backup]\nstorage = "backups"\ncopies = ["s3://no-such-bucket-zz/x"]\n')
    r = seeded.cli("backup", "create")
    assert_clean_error(r, 2, "is stored in", "but its copy to s3://no-such-bucket-zz/x failed")

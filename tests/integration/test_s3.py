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
from typing import Any

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
    assert [k for k in leftovers if "/.pgrunbook-" not in k] == []  # only the repository's markers stay
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
    manifest = next(json.loads(o) for o in objects if o.startswith(b"{") and b'"sha256"' in o)  # not a marker
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
    # the key here is the machine's problem, not a damaged backup (trial8 #2): named, with the recipients
    assert_clean_error(r, 3, "cannot decrypt", recipient, "holds none of their keys")  # a config error
    assert "integrity" not in r.stderr and "damaged" not in r.stderr
    v = seeded.cli("--json", "backup", "verify", bid)
    assert v.returncode == 0, v.stdout + v.stderr  # its stored bytes are checked and sound: never FAILED
    checks = {c["name"]: c for c in json.loads(v.stdout)["checks"]}
    assert checks["checksum"]["ok"] and "holds none of their keys" in checks["archive"]["detail"]


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
    keys = [k for k in keys if "/.pgrunbook-" not in k]  # the copy's repository markers aside
    assert keys == [f"second/default/{out['id']}/db.dump.zst", f"second/default/{out['id']}/manifest.json"]
    seeded.write_config('[backup]\nstorage = "backups"\ncopies = ["s3://no-such-bucket-zz/x"]\n')
    r = seeded.cli("backup", "create")
    assert_clean_error(r, 2, "is stored in", "but its copy to s3://no-such-bucket-zz/x failed")


# --- large objects, parts in flight, integrity in transit, per-part retries (#19) -------------------------


def _incompressible(project: Project, mb: int) -> None:
    """A table of ``mb`` MB of random bytes: the archive is about that size whatever the codec."""
    random_hex = " || ".join(["md5(random()::text)"] * 8)  # 128 random bytes a row
    with psycopg.connect(project.url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE blob AS SELECT g, decode({random_hex}, 'hex') b "  # type: ignore[arg-type]
            f"FROM generate_series(1, {mb * 1_000_000 // 128}) g"
        )


def _parts_sent(proxy: FaultProxy) -> list[int]:
    """Part numbers the store accepted, in the order it answered."""
    import re

    return [
        int(m.group(1))
        for path, status in proxy.statuses
        if status == 200 and (m := re.search(r"partNumber=(\d+)", path))
    ]


def test_parts_grow_past_the_lowered_part_limit(seeded: Project, moto: MotoServer, bucket: str) -> None:
    """Part limit lowered to 3 and 5 MiB first parts: with fixed parts the store would hold 15 MiB; the
    growing schedule (5, 10, 20 MiB) takes a 25 MB backup, which completes, verifies and restores."""
    _incompressible(seeded, 25)
    proxy = FaultProxy(moto.port)
    try:
        _use_s3(seeded, proxy.endpoint, bucket, "[backup.s3]\npart_size_mb = 5\nmax_parts = 3\n")
        r = seeded.cli("--json", "backup", "create", timeout=300)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["size"] > 3 * 5 * 1024 * 1024
        assert sorted(_parts_sent(proxy)) == [1, 2, 3]
        v = seeded.cli("--json", "backup", "verify", out["id"], "--drill", timeout=300)
        assert v.returncode == 0, v.stdout + v.stderr
        # and an object beyond what 3 growing parts hold is refused at the limit, clearly, leaving nothing
        _use_s3(seeded, proxy.endpoint, bucket, "[backup.s3]\npart_size_mb = 5\nmax_parts = 2\n")
        r = seeded.cli("backup", "create", timeout=300)
        assert_clean_error(r, 2, "grew past the store's limit of 2 parts")
        assert [b["id"] for b in json.loads(seeded.cli("--json", "backup", "list").stdout)] == [out["id"]]
        assert not client(moto.endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads")
    finally:
        proxy.stop()


def test_large_backup_to_s3_has_bounded_memory(seeded: Project, moto: MotoServer, bucket: str) -> None:
    """A ~220 MB archive through 4 parts in flight of 8 MiB: the CLI's peak RSS stays under 200 MB
    (holding the archive, or unbounded queues of parts, would exceed it)."""
    _incompressible(seeded, 220)
    _use_s3(seeded, moto.endpoint, bucket, "[backup.s3]\nparts_in_flight = 4\n")
    peak_file = seeded.root / "peak-rss-kb"
    # pgrunbook's own peak RSS: VmHWM of its own address space. (getrusage's ru_maxrss survives exec on
    # Linux, so it would report the pytest process that spawned it: 287 MB late in a full run.)
    measured = (
        "import runpy, sys\n"
        "sys.argv = ['pgrunbook', '--json', 'backup', 'create']\n"
        "try:\n    runpy.run_module('pgrunbook', run_name='__main__')\n"
        "finally:\n"
        "    hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]\n"
        f"    open({str(peak_file)!r}, 'w').write(hwm)\n"
    )
    made = subprocess.run(
        [sys.executable, "-c", measured], cwd=seeded.root, env=seeded.environ, capture_output=True, timeout=600
    )
    assert made.returncode == 0, made.stderr.decode()
    out = made.stdout
    peak_mb = int(peak_file.read_text()) / 1024
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"
    bid = json.loads(out)["id"]
    size = json.loads(out)["size"]
    assert size > 200 * 1024 * 1024
    restored = f"large_{secrets.token_hex(3)}"
    r = seeded.cli("--json", "restore", bid, "--into", restored, timeout=600)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(seeded.url.rsplit("/", 1)[0] + "/" + restored) as conn:
        row = conn.execute("SELECT count(*), sum(length(b)) FROM blob").fetchone()
    assert row is not None and row[1] == row[0] * 128


def test_part_corrupted_in_transit_is_refused_and_sent_again(seeded: Project, moto: MotoServer, bucket: str) -> None:
    """The proxy flips one byte in a part's body between boto3 and the store: the part's SHA-256 checksum
    does not match, the store answers 400 BadDigest, the part is sent again; the backup verifies."""
    _incompressible(seeded, 12)
    proxy = FaultProxy(moto.port)
    try:
        _use_s3(seeded, proxy.endpoint, bucket, "[backup.s3]\npart_size_mb = 5\n")
        proxy.corrupt_parts = 1
        r = seeded.cli("--json", "backup", "create", timeout=300)
        assert r.returncode == 0, r.stderr
        assert len(proxy.corrupted) == 1
        damaged = proxy.corrupted[0]
        answers = [status for path, status in proxy.statuses if path == damaged]
        assert answers[0] == 400 and answers[-1] == 200  # refused, then accepted when sent again
        bid = json.loads(r.stdout)["id"]
        v = seeded.cli("--json", "backup", "verify", bid)
        assert v.returncode == 0, v.stdout
        evidence.fault("an S3 part corrupted in transit")
    finally:
        proxy.stop()


def test_without_checksums_a_corrupted_part_is_stored_and_caught_only_by_verify(
    seeded: Project, moto: MotoServer, bucket: str
) -> None:
    """checksum = "off" (for stores that reject checksums): the same damage is stored silently; the
    manifest's sha256 still catches it at verify. What the in-transit checksum is worth."""
    _incompressible(seeded, 12)
    proxy = FaultProxy(moto.port)
    try:
        _use_s3(seeded, proxy.endpoint, bucket, '[backup.s3]\npart_size_mb = 5\nchecksum = "off"\n')
        proxy.corrupt_parts = 1
        r = seeded.cli("--json", "backup", "create", timeout=300)
        assert r.returncode == 0, r.stderr
        assert len(proxy.corrupted) == 1 and 400 not in [s for _, s in proxy.statuses]
        assert_clean_error(seeded.cli("backup", "verify", json.loads(r.stdout)["id"]), 2, "failed verification")
    finally:
        proxy.stop()


def test_a_part_that_keeps_failing_ends_the_backup_with_one_line(
    seeded: Project, moto: MotoServer, bucket: str
) -> None:
    _incompressible(seeded, 12)
    proxy = FaultProxy(moto.port)
    try:
        _use_s3(seeded, proxy.endpoint, bucket, "[backup.s3]\npart_size_mb = 5\nmax_attempts = 3\n")
        proxy.fail_part = 2
        r = seeded.cli("backup", "create", timeout=300)
        assert_clean_error(r, 2, "S3 kept failing", "at part 2 (bytes 5242880-10485759)", "HTTP 503", "3 attempts")
        assert len(r.stderr.strip().splitlines()) <= 2  # error: and hint:
        assert SECRET_KEY not in r.stderr
        tries = [s for path, s in proxy.statuses if "partNumber=2&" in path + "&"]
        assert tries == []  # the proxy answered them itself: none reached the store
        proxy.fail_part = None
        assert json.loads(seeded.cli("--json", "backup", "list").stdout) == []
        c = client(moto.endpoint)
        assert not c.list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted, nothing billed
        keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert [k for k in keys if "/.pgrunbook-" not in k] == []  # only the repository's markers
        evidence.fault("an S3 part that keeps failing")
    finally:
        proxy.stop()


def test_credentials_never_in_s3_errors(seeded: Project) -> None:
    """An endpoint URL with user:password that cannot be reached, and a storage URL with credentials:
    neither the key nor the secret appears in the error."""
    from pgrunbook.postgres.cluster import free_port

    seeded.environ.update(aws_env("http://unused"))
    seeded.environ["AWS_ENDPOINT_URL_S3"] = f"http://AKIDLEAK:{SECRET_KEY}@127.0.0.1:{free_port()}"
    seeded.write_config('[backup]\nstorage = "s3://b/p"\n')
    r = seeded.cli("backup", "list")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert SECRET_KEY not in r.stdout + r.stderr and "AKIDLEAK" not in r.stdout + r.stderr
    seeded.write_config(f'[backup]\nstorage = "s3://AKIDLEAK:{SECRET_KEY}@b/p"\n')
    r = seeded.cli("backup", "list")
    assert_clean_error(r, 3, "carries credentials")
    assert SECRET_KEY not in r.stdout + r.stderr and "AKIDLEAK" not in r.stdout + r.stderr


def test_parallel_ranged_reads_keep_order_and_never_mix_versions(
    tmp_path: Path, moto: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five 8 MiB ranges, three in flight: the bytes arrive in order; an object replaced between two
    ranges fails the read (If-Match on the first range's ETag) instead of splicing two versions."""

    for k, v in aws_env(moto.endpoint).items():
        monkeypatch.setenv(k, v)
    store = open_storage(f"s3://{bucket}/r", tmp_path, {"s3": {"ranges_in_flight": 3}})
    data = secrets.token_bytes(37 * 1024 * 1024)
    store.write_bytes("obj", data)
    chunks = list(store.read("obj"))
    assert len(chunks) == 5 and b"".join(chunks) == data
    assert b"".join(store.read("obj", 9_000_000, 20_000_000)) == data[9_000_000:29_000_000]
    reading = store.read("obj")
    assert next(reading) == data[: 8 * 1024 * 1024]
    store.write_bytes("obj", b"another version " * 3_000_000)
    with pytest.raises(StorageError, match="was replaced while it was being read"):
        b"".join(reading)


@pytest.mark.parametrize("checksum", ["sha256", "crc32", "off"])
def test_each_part_is_hashed_once_and_its_checksum_travels_in_a_signed_header(
    tmp_path: Path, moto: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch, checksum: str
) -> None:
    """What goes on the wire for parts and PUTs, as botocore hands it to the connection: with a checksum,
    the x-amz-checksum-* header carries the body's digest (a signed header: the store refuses bytes that
    do not match it) and the payload is not hashed a second time for the signature (UNSIGNED-PAYLOAD),
    and never as an aws-chunked trailer (which several S3-compatible stores refuse); with checksum = off
    the payload stays signed with its SHA-256, as botocore does by default."""
    import base64
    import hashlib
    import zlib

    for k, v in aws_env(moto.endpoint).items():
        monkeypatch.setenv(k, v)
    store = open_storage(f"s3://{bucket}/wire-{checksum}", tmp_path, {"s3": {"part_size_mb": 5, "checksum": checksum}})
    sent: list[tuple[str, dict[str, str], bytes]] = []

    def record(request: Any, **_: Any) -> None:
        body = request.body.getvalue() if hasattr(request.body, "getvalue") else request.body or b""
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((request.method, headers, body))

    for c in {id(c): c for c in (store.client, store.parts_client, store.body_client)}.values():  # type: ignore[attr-defined]
        c.meta.events.register("before-send.s3", record)
    data = secrets.token_bytes(11 * 1024 * 1024)  # two parts of 5 MiB and one of 1 MiB
    store.write_bytes("big", data)
    store.write_bytes("small", b"a manifest")
    assert b"".join(store.read("big")) == data
    bodies = [(h, b) for m, h, b in sent if m == "PUT" and b]
    assert len(bodies) == 4  # three parts, one PUT
    for headers, body in bodies:
        assert "aws-chunked" not in headers.get("content-encoding", "")
        if checksum == "off":
            assert not any(k.startswith("x-amz-checksum-") for k in headers)
            assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
            continue
        digest = hashlib.sha256(body).digest() if checksum == "sha256" else zlib.crc32(body).to_bytes(4, "big")
        assert headers[f"x-amz-checksum-{checksum}"] == base64.b64encode(digest).decode()
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert f"x-amz-checksum-{checksum}" in headers["authorization"]  # the checksum header is signed


def test_manifests_are_read_without_listing_them_first(seeded: Project, moto: MotoServer, bucket: str) -> None:
    """On an object store every request is a round trip (tens of ms on a real network): `backup list`
    lists the folder once and reads each manifest with one GET, and a restore reads its backup's manifest
    with one GET — never a listing per manifest first (which cost one more round trip each)."""
    proxy = FaultProxy(moto.port)
    try:
        _use_s3(seeded, proxy.endpoint, bucket)
        ids = []
        for n in range(3):
            made = seeded.cli("--json", "backup", "create", "--label", f"n{n}")
            assert made.returncode == 0, made.stderr
            ids.append(json.loads(made.stdout)["id"])

        def asked_by(*args: str) -> list[str]:
            before = len(proxy.statuses)
            r = seeded.cli(*args, timeout=300)
            assert r.returncode == 0, r.stderr
            return [path for path, _status in proxy.statuses[before:]]

        listed = asked_by("--json", "backup", "list")
        assert sorted(p for p in listed if p.endswith("/manifest.json")) == sorted(
            f"/{bucket}/team/pg/default/{i}/manifest.json" for i in ids
        )
        assert not [p for p in listed if "list-type" in p and "manifest.json" in p]
        restored = asked_by("--json", "restore", ids[0], "--into", f"few_{secrets.token_hex(3)}")
        assert [p for p in restored if p.endswith("/manifest.json")] == [
            f"/{bucket}/team/pg/default/{ids[0]}/manifest.json"
        ]
        assert not [p for p in restored if "list-type" in p and "manifest.json" in p]
    finally:
        proxy.stop()

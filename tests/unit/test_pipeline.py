"""The backup's write path in overlapping stages (backup/pipeline.py): reading pg_dump's output runs
ahead of a slow compressor or sink within a bound, the frames and frame table mean exactly what the
one-thread writer's did for any input size and any way the pipe hands the bytes over, and a source
or sink that fails mid-frame fails the write cleanly with no stage left running."""

from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.backup.codec import codec
from pgrunbook.backup.pipeline import PIPE_SIZE, ReadAhead, WriteBehind, widen_pipe
from pgrunbook.config import BackupConfig

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class _Source:
    """pg_dump's stdout as a pipe hands it over: reads of any size up to ``step``, an optional
    failure after ``fail_after`` bytes (pg_dump killed mid-frame), and a count of what was read."""

    def __init__(self, data: bytes, step: int, fail_after: int | None = None):
        self.data, self.step, self.fail_after, self.pos = data, step, fail_after, 0

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise OSError("pg_dump's pipe broke")
        take = min(n if n >= 0 else len(self.data), self.step)
        out = self.data[self.pos : self.pos + take]
        self.pos += len(out)
        return out


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def _cfg(frame: int) -> BackupConfig:
    return BackupConfig().model_copy(update={"zstd_frame_mb": frame / (1 << 20)})


def _ours_stages() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name in ("pgrunbook-read", "pgrunbook-write")}


def _stages_end(timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _ours_stages() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _ours_stages()


FRAME = 4096


@settings(max_examples=80, deadline=None)
@given(
    frames=st.integers(0, 5),
    offset=st.integers(-3, 3),  # around a frame boundary: one frame exactly full, one byte more or less
    step=st.integers(1, 3 * FRAME),
    seed=st.binary(min_size=1, max_size=64),
)
def test_frames_and_table_mean_the_same_for_any_size_at_frame_boundaries(
    frames: int, offset: int, step: int, seed: bytes
) -> None:
    size = max(0, frames * FRAME + offset)
    data = (seed * (size // len(seed) + 1))[:size]
    sink = _Sink()
    raw, table = codec("zstd").write(_Source(data, step), sink, _cfg(FRAME), lambda _n: None)  # type: ignore[arg-type]
    assert raw == len(data)
    # the one-thread writer's table: full frames, the rest in a last one, never an empty frame at the end
    expected = [FRAME] * (len(data) // FRAME) + ([len(data) % FRAME] if len(data) % FRAME else [])
    assert [r for _, r in table] == (expected or [0])
    assert sum(s for s, _ in table) == len(sink.data)
    stored, at = bytes(sink.data), 0
    for i, (s, r) in enumerate(table):  # every frame on its own, at the offsets the table gives
        dobj = zstandard.ZstdDecompressor().decompressobj()
        assert dobj.decompress(stored[at : at + s]) == data[i * FRAME : i * FRAME + r]
        assert dobj.eof and not dobj.unused_data
        at += s
    assert zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(stored) == data  # zstd -dc
    assert _stages_end()


def _read_while_the_sink_stalls(name: str) -> int:
    """Bytes read from the source while the sink's first write is held for 1.5 s (then it is let go
    and the write must complete with everything)."""
    data = os.urandom(64 << 20) * 2  # 128 MB, incompressible (no repeat within zstd's window)
    src = _Source(data, 1 << 20)
    release = threading.Event()

    class Stalled(_Sink):
        def write(self, data: bytes) -> int:
            release.wait(30)
            return len(data)

    result: list[tuple[int, object]] = []
    writer = threading.Thread(
        target=lambda: result.append(codec(name).write(src, Stalled(), _cfg(8 << 20), lambda _n: None))  # type: ignore[arg-type]
    )
    writer.start()
    time.sleep(1.5)
    ahead = src.pos
    release.set()
    writer.join(60)
    assert result and result[0][0] == len(data)
    return ahead


def test_pg_dump_is_read_on_while_storage_stalls() -> None:
    """pg_dump is no longer stopped the moment storage pauses (it used to be read one chunk at a time
    in the thread that wrote): its output keeps being read, into bounded queues."""
    ahead = _read_while_the_sink_stalls("gzip")  # no compressor between: only the pipeline's queues
    assert ahead >= 8 << 20, f"only {ahead} bytes read while the sink stalled: pg_dump would block"
    assert ahead <= 48 << 20, f"{ahead} bytes read ahead of a stalled sink: memory is not bounded"


def test_memory_stays_bounded_behind_a_stalled_sink_with_the_compressor_between() -> None:
    ahead = _read_while_the_sink_stalls("zstd")
    assert ahead <= 96 << 20, f"{ahead} bytes read ahead of a stalled sink: memory is not bounded"


@pytest.mark.parametrize("name", ["zstd", "gzip"])
@pytest.mark.parametrize("fail_at", [1, FRAME - 1, FRAME, 3 * FRAME + 17])
def test_a_source_failing_mid_frame_fails_the_write_and_stops_every_stage(name: str, fail_at: int) -> None:
    sink = _Sink()
    with pytest.raises(OSError, match="pg_dump's pipe broke"):
        codec(name).write(_Source(os.urandom(FRAME) * 8, 1000, fail_after=fail_at), sink, _cfg(FRAME), lambda _n: None)  # type: ignore[arg-type]
    assert _stages_end()


@pytest.mark.parametrize("name", ["zstd", "gzip"])
def test_a_failing_sink_fails_the_write_and_stops_reading(name: str) -> None:
    class Full(_Sink):
        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    src = _Source(os.urandom(1 << 20) * 64, 1 << 20)
    with pytest.raises(OSError, match="No space left"):
        codec(name).write(src, Full(), _cfg(1 << 20), lambda _n: None)  # type: ignore[arg-type]
    assert _stages_end()
    assert src.pos < 64 << 20  # it stopped reading instead of draining the whole dump


@pytest.mark.parametrize("name", ["zstd", "gzip"])
def test_the_write_widens_pg_dumps_pipe(name: str) -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb") as src:
        assert fcntl.fcntl(r, F_GETPIPE_SZ) < PIPE_SIZE  # Linux's default: 64 KB
        os.write(w, b"archive")
        os.close(w)
        raw, _ = codec(name).write(src, _Sink(), _cfg(FRAME), lambda _n: None)
        assert raw == len(b"archive")
        assert fcntl.fcntl(r, F_GETPIPE_SZ) >= PIPE_SIZE


def test_what_is_not_a_pipe_is_left_alone(tmp_path: object) -> None:
    import io

    widen_pipe(io.BytesIO(b"x"))  # no fileno: nothing to do, nothing raised


def test_read_ahead_and_write_behind_hand_everything_over_in_order() -> None:
    data = os.urandom(10_000)
    sink = _Sink()
    with ReadAhead(_Source(data, 7), 100, 2) as reader, WriteBehind(sink, 3) as out:  # type: ignore[arg-type]
        for chunk in reader.chunks():
            out.write(memoryview(chunk))
    assert bytes(sink.data) == data
    assert _stages_end()

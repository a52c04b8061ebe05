"""Backups as a sequence of independent zstd frames, so that a restore can decompress them in parallel.

One zstd frame can only be decompressed by one thread, which made decompression the largest cost a
restore pays on top of pg_restore (bench/restore_bench.py). A backup is therefore written as frames of
[backup] zstd_frame_mb of archive each (64 MB by default: the size grows by a few KB per GB, and a
restore has many frames to share out); the manifest records each frame's stored and archive sizes, so
a restore knows where every frame starts in both streams without scanning. The file stays one ordinary
zstd file: `zstd -d` decompresses concatenated frames as one stream, so the by-hand restore is unchanged.
Backups from before frames (one frame, no frame table) are decompressed in one thread, as before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import zstandard

SLICE = 1 << 20  # compressed bytes fed per call: bounds the memory each worker holds at once


class FrameError(zstandard.ZstdError):
    """The stored stream does not decompress to the archive its manifest describes."""


class ManifestMismatch(FrameError):
    """The stored stream decompresses, but not as the manifest's ``field`` (frames, archive_size) says:
    when the stored bytes are the ones hashed (size, sha256), the manifest is what is wrong (trial8 #9)."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def frame_table_problem(
    frames: Sequence[tuple[int, int]], archive_size: int | None, compressed_size: int | None
) -> ManifestMismatch | None:
    """The manifest's frame table against its own totals, before anything is read: the frames' archive
    sizes add up to ``archive_size``, their stored sizes to ``compressed_size`` (the stored file's size
    when no layer such as encryption changes it; None otherwise), none negative."""
    if not frames:
        return None
    bad = next((i for i, (stored, raw) in enumerate(frames) if stored <= 0 or raw < 0), None)
    if bad is not None:
        return ManifestMismatch("frames", f"frame {bad + 1} lists {frames[bad][0]} stored / {frames[bad][1]} bytes")
    raw = sum(r for _, r in frames)
    if archive_size is not None and raw != archive_size:
        return ManifestMismatch("archive_size", f"the manifest says {archive_size} bytes, its frames add up to {raw}")
    stored = sum(s for s, _ in frames)
    if compressed_size is not None and stored != compressed_size:
        return ManifestMismatch(
            "frames", f"the frames' stored sizes add up to {stored} bytes, the stored file is {compressed_size}"
        )
    return None


def decompress_frames(chunks: Iterator[bytes], table: Sequence[tuple[int, int]] = ()) -> Iterator[bytes]:
    """The archive's bytes from a stream of one or more zstd frames, in one thread.

    Each frame gets its own decompressor, so a stream cut exactly between two frames is still seen
    as incomplete when the manifest's frame table says more frames follow.
    """
    dobj = zstandard.ZstdDecompressor().decompressobj()
    fed = False  # has the current frame received any input?
    done = 0  # complete frames
    stored = raw = 0  # the current frame's sizes so far, compared with the table's when it ends
    for chunk in chunks:
        while chunk:
            out = dobj.decompress(chunk)
            fed = True
            raw += len(out)
            if out:
                yield out
            if not dobj.eof:
                stored += len(chunk)
                break
            rest = dobj.unused_data
            stored += len(chunk) - len(rest)
            if table:
                _compare_frame(table, done, stored, raw)
            done += 1
            chunk = rest
            dobj, fed = zstandard.ZstdDecompressor().decompressobj(), False
            stored = raw = 0
    if fed:
        raise FrameError("the zstd stream ends before its end of frame (truncated)")
    if done == 0:
        raise FrameError("the zstd stream is empty (truncated)")
    if table and done != len(table):
        raise ManifestMismatch("frames", f"the zstd stream holds {done} frames, the manifest lists {len(table)}")


def _compare_frame(table: Sequence[tuple[int, int]], index: int, stored: int, raw: int) -> None:
    """A complete frame of the stream against the manifest's entry for it (ManifestMismatch)."""
    if index >= len(table):
        raise ManifestMismatch("frames", f"the manifest lists {len(table)} frames, the zstd stream holds more")
    if (stored, raw) != tuple(table[index]):
        listed = table[index]
        raise ManifestMismatch(
            "frames",
            f"frame {index + 1}: the manifest lists {listed[0]} stored / {listed[1]} archive bytes, "
            f"the stream's frame is {stored} / {raw}",
        )


def _frames_of(chunks: Iterator[bytes], table: Sequence[tuple[int, int]]) -> Iterator[tuple[int, list[memoryview]]]:
    """Cut the stored stream at the frame table's boundaries: (frame number, its compressed bytes as
    views of the chunks read, never copied: a copy per frame cost a restore ~0.05 s per GB)."""
    index, need, parts = 0, table[0][0] if table else 0, []
    for chunk in chunks:
        view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk))  # bytes: nobody can change it
        while view:
            if index >= len(table):
                raise FrameError(f"the zstd stream goes on after the {len(table)} frames its manifest lists")
            take = view[:need]
            parts.append(take)
            view, need = view[len(take) :], need - len(take)
            if need == 0:
                yield index, parts
                index, parts = index + 1, []
                need = table[index][0] if index < len(table) else 0
    if index < len(table):
        raise FrameError(f"the zstd stream ends in frame {index + 1} of {len(table)} (truncated)")


def _decompress_one(fd: int, parts: list[memoryview], index: int, offset: int, size: int) -> None:
    """Decompress one frame to its place in the output file; the GIL is released while zstd and the
    write run, so the workers use the cores."""
    dobj = zstandard.ZstdDecompressor().decompressobj()
    written = 0
    for part in parts:
        for start in range(0, len(part), SLICE):
            out = dobj.decompress(part[start : start + SLICE])
            if written + len(out) > size:
                raise FrameError(f"frame {index + 1} decompresses to more than the {size} bytes its manifest lists")
            if out:
                _pwrite_all(fd, out, offset + written)
                written += len(out)
    if not dobj.eof or dobj.unused_data or written != size:
        raise FrameError(f"frame {index + 1} is incomplete or damaged ({written} of {size} bytes)")


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def decompress_parallel_to(fd: int, chunks: Iterator[bytes], table: Sequence[tuple[int, int]], workers: int) -> None:
    """Decompress the stored stream into the file `fd`, frames in parallel, each at its own offset.

    At most `workers + 1` frames are held in memory at once (compressed), whatever the backup's size.
    Raises FrameError (or zstandard.ZstdError) on any mismatch; OSError from writing passes through.
    """
    slots = threading.BoundedSemaphore(workers + 1)
    offsets = [0]
    for _, raw in table:
        offsets.append(offsets[-1] + raw)
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgrunbook-zstd") as pool:
        try:
            for index, data in _frames_of(chunks, table):
                slots.acquire()
                future = pool.submit(_decompress_one, fd, data, index, offsets[index], table[index][1])
                future.add_done_callback(lambda _f: slots.release())
                pending.append(future)
                _raise_first_failure(pending)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    _raise_first_failure(pending, wait=True)


def _raise_first_failure(pending: list[Future[None]], *, wait: bool = False) -> None:
    # Frames are looked at in stream order and only up to the first one still running, so the error
    # reported is always the earliest damaged frame's, whichever worker happened to finish first.
    while pending:
        future = pending[0]
        if not (wait or future.done()):
            return
        if not future.cancelled() and (exc := future.exception()) is not None:
            raise exc
        pending.pop(0)

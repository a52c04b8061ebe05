"""Compression codecs of the logical dump: how an archive is written, read back, and restored by hand.

The manifest names its codec in ``compression`` (the JSON field is unchanged): ``"zstd"`` is pgrunbook's
own zstd stream of independent frames around an uncompressed pg_dump archive; ``"gzip"`` means pg_dump's
own compression (``pg_dump -Fc``'s default, zlib), so the stored file is a plain custom-format archive.
A new codec is one subclass of `Codec` and one entry in `CODECS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Protocol

import zstandard

from pgrunbook.backup.frames import decompress_frames, decompress_parallel_to
from pgrunbook.backup.manifest import Check
from pgrunbook.backup.pipeline import ReadAhead, WriteBehind
from pgrunbook.config import BackupConfig
from pgrunbook.errors import PgRunbookError

CHUNK = 1 << 20
AHEAD = 16  # chunks of pg_dump's output read ahead of the encoder (backup/pipeline.py): 16 MB at most
BEHIND = 16  # encoded writes (up to a chunk each, most far smaller) waiting for the sink
Frames = list[tuple[int, int]]  # per frame: (stored bytes, archive bytes)


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class Codec:
    """One way of storing a pg_dump archive. ``name``: the manifest's ``compression`` value."""

    name: str = ""
    label: str = ""  # in words, for descriptions
    suffix: str = ""  # the stored file's name: "db.dump" + suffix (+ ".age" when encrypted)

    def file_name(self, *, encrypted: bool) -> str:
        return "db.dump" + self.suffix + (".age" if encrypted else "")

    def dump_args(self) -> list[str]:
        """pg_dump's compression arguments."""
        return []

    def write(
        self, src: IO[bytes], sink: Sink, cfg: BackupConfig, progress: Callable[[int], None]
    ) -> tuple[int, Frames]:
        """Move pg_dump's output from ``src`` to ``sink`` encoded; (archive bytes, frame table).
        ``progress`` gets the archive bytes read so far."""
        raw = 0
        with ReadAhead(src, CHUNK, AHEAD) as reader, WriteBehind(sink, BEHIND) as out:
            for chunk in reader.chunks():
                out.write(chunk)
                raw += len(chunk)
                progress(raw)
        return raw, []

    def read(self, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The archive's bytes from the stored (decrypted) ones; raises zstandard.ZstdError on damage."""
        return chunks

    def read_into(self, fd: int, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]], workers: int) -> None:
        """Write the archive to the file ``fd`` (positioned at 0), with ``workers`` threads where the
        codec can share the work out."""
        for chunk in self.read(chunks, frames):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]

    def checks(self, error: str, *, ok_detail: str) -> list[Check]:
        """The codec's own integrity check of a read-back (``error``: what decoding raised, or "")."""
        return []

    def restore_command(
        self,
        file: str,
        *,
        encrypted: bool,
        pg_restore: str = "pg_restore",
        needs: int | None = None,
        flags: Sequence[str] = ("--exit-on-error",),
    ) -> str:
        """The by-hand path (SPEC principle 2): standard tools only, URL from the environment. Owners and
        grants are restored as recorded (run it as a superuser or the owning role); on another server or
        a managed service add ``--no-owner --role=ROLE`` to give everything to one role.

        ``pg_restore``: how to call the pg_restore that reads this archive on the machine that took it
        (its absolute path when the one first on PATH cannot); ``needs``: the oldest pg_restore major
        that reads the archive, said in a trailing shell comment for any other machine; ``flags``: the
        error handling for the backed-up server's major (tools.restore_error_flags: no
        ``--exit-on-error`` where pg_restore >= 17 meets a server <= 16 and its one SET must fail)."""
        restore = " ".join([pg_restore, *flags, '--dbname "$TARGET_DATABASE_URL"'])
        return _needs(self._command(file, encrypted, restore), needs)

    def _command(self, file: str, encrypted: bool, restore: str) -> str:
        return f"{_age(file)}{restore}" if encrypted else f"{restore} {file}"


def _needs(command: str, needs: int | None) -> str:
    return f"{command}  # needs pg_restore {needs} or newer" if needs else command


def _age(file: str) -> str:
    return f'age -d -i "$AGE_IDENTITY_FILE" {file} | '


class PgDumpCompression(Codec):
    """``"gzip"``: pg_dump compresses by itself; the stored file is an ordinary custom-format archive."""

    name = "gzip"
    label = "pg_dump's own compression (gzip)"


class Zstd(Codec):
    """``"zstd"``: pg_dump writes uncompressed, pgrunbook compresses in independent frames of
    ``[backup] zstd_frame_mb`` of archive each, so that restores decompress them in parallel
    (backup/frames.py). The file is still one ordinary zstd file for ``zstd -d``."""

    name = "zstd"
    label = "zstd, in independent frames"
    suffix = ".zst"

    def dump_args(self) -> list[str]:
        return ["--compress=0"]

    def write(
        self, src: IO[bytes], sink: Sink, cfg: BackupConfig, progress: Callable[[int], None]
    ) -> tuple[int, Frames]:
        table: Frames = []
        raw, frame_start, in_frame, frame_raw = 0, 0, 0, int(cfg.zstd_frame_mb * (1 << 20))
        threads = cfg.zstd_threads or (os.cpu_count() or 1)
        cctx = zstandard.ZstdCompressor(level=cfg.zstd_level, threads=threads, write_checksum=True)
        with ReadAhead(src, CHUNK, AHEAD) as reader, WriteBehind(sink, BEHIND) as behind:
            out = _Counted(behind)
            with cctx.stream_writer(out, closefd=False, write_size=CHUNK) as zw:  # type: ignore[arg-type]
                for chunk in reader.chunks():
                    raw += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        if in_frame == frame_raw:  # ended only when more follows: no empty frame at the end
                            zw.flush(zstandard.FLUSH_FRAME)
                            table.append((out.size - frame_start, in_frame))
                            frame_start, in_frame = out.size, 0
                        take = view[: frame_raw - in_frame]
                        zw.write(take)
                        in_frame += len(take)
                        view = view[len(take) :]
                    progress(raw)
        table.append((out.size - frame_start, in_frame))
        return raw, table

    def read(self, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        return decompress_frames(chunks, frames)

    def read_into(self, fd: int, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]], workers: int) -> None:
        if len(frames) > 1 and workers > 1:
            decompress_parallel_to(fd, chunks, frames, workers)
        else:
            super().read_into(fd, chunks, frames, workers)

    def checks(self, error: str, *, ok_detail: str) -> list[Check]:
        return [Check(name="compression", ok=not error, detail=error or ok_detail)]

    def _command(self, file: str, encrypted: bool, restore: str) -> str:
        read = f"{_age(file)}zstd -dc" if encrypted else f"zstd -dc {file}"
        return f"{read} | {restore}"


class _Counted:
    """Counts the compressed bytes (before any encryption): the frame table's offsets are in that stream."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sink.write(data)
        self.size += len(data)
        return len(data)


CODECS: dict[str, Codec] = {c.name: c for c in (Zstd(), PgDumpCompression())}


def codec(name: str) -> Codec:
    """The codec a manifest or ``[backup] compression`` names; PgRunbookError for an unknown one."""
    try:
        return CODECS[name]
    except KeyError:
        raise PgRunbookError(f"unknown compression {name!r}", hint=f"one of: {', '.join(CODECS)}") from None

"""The checked archive of a parallel restore: the stored backup read back once, its bytes hashed while
they are decompressed into a private file (memory when it fits, else a temp file), and its table of
contents read, all before any database is created or changed (restore.py)."""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import zstandard

from pgrunbook.backup.archive import (
    HashTap,
    check_stored,
    codecs,
    header_problem,
    read_checks,
    require_intact,
    stored_bytes,
    table_problem,
    toc_check,
)
from pgrunbook.backup.frames import ManifestMismatch
from pgrunbook.backup.manifest import Check, Manifest
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError, VerificationFailed
from pgrunbook.postgres import runner
from pgrunbook.postgres.tools import ClientTools
from pgrunbook.progress import ProgressFn


def check_backup(
    env: Environment, manifest: Manifest, tools: ClientTools, progress: ProgressFn, listing: list[str] | None = None
) -> list[Check]:
    """The stored file must be the one written: checked before any database is created or changed;
    raises VerificationFailed otherwise. ``listing`` receives the table of contents."""
    return require_intact(manifest, check_stored(env, manifest, tools, progress, listing_out=listing))


def _read_ahead(chunks: Iterator[bytes], depth: int = 8) -> Iterator[bytes]:
    """Read and hash storage in a thread while this one decompresses and writes: the stages overlap."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)

    def produce() -> None:
        try:
            for chunk in chunks:
                q.put(chunk)
            q.put(None)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def _sweep_stale_temp_dirs() -> None:
    """Remove the decompressed archives of restores that were killed (their pid is gone): each is as
    large as the database's dump, and nothing else would ever delete it."""
    import glob

    for path in glob.glob(os.path.join(tempfile.gettempdir(), "pgrunbook-restore-*-*")):
        m = re.match(r"pgrunbook-restore-(\d+)-", os.path.basename(path))
        if not m or int(m.group(1)) == os.getpid():
            continue
        if not runner.pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _temp_write_error(exc: OSError, folder: str, manifest: Manifest) -> PgRunbookError:
    need = f"{(manifest.archive_size or manifest.size * 3) / 1e6:,.0f} MB"
    if exc.errno == errno.ENOSPC:
        return PgRunbookError(
            f"no space left in {folder} for the decompressed archive (about {need}); nothing was restored",
            hint='set TMPDIR to a folder with room, or [restore] method = "stream" (no temporary file)',
        )
    return PgRunbookError(
        f"cannot write the decompressed archive in {folder}: {exc.strerror or exc}; nothing was restored",
        hint="set TMPDIR to a writable folder",
    )


class CheckedArchive:
    """The archive decompressed to a private temporary file while its stored bytes are hashed: the
    integrity check and the decompression share one pass over storage, and a backup written as several
    zstd frames is decompressed by `workers` threads at once (bench/restore_bench.py measured both).

    The file is anonymous memory (memfd, Linux only) when it fits comfortably: nothing is written to
    disk, and the kernel frees it whenever pgrunbook ends, even killed. Otherwise (and on every other
    platform) a 0600 file in the temp folder. pg_restore reads either by path; for memory,
    /proc/self/fd/N of the descriptor it inherits.

    Nothing happens on construction. ``start()`` reads back in a background thread, so that a restore
    chooses its tools and readies the target meanwhile; ``check(tools)`` (after ``start()``, or reading
    back in the calling thread) waits for the read-back, reads the table of contents and raises
    VerificationFailed unless every check passed. Whatever fails, the file is removed again
    (``cleanup()``, also for the caller once pg_restore is done with it).
    """

    def __init__(
        self, env: Environment, manifest: Manifest, progress: ProgressFn, workers: int = 1, in_memory: bool = False
    ):
        self.env = env
        self.manifest = manifest
        self.progress = progress
        self.workers = workers
        self.in_memory = in_memory and runner.has_memfd()
        self.dir: str | None = None
        self.fd: int | None = None
        self.path = ""
        self.listing = ""
        self.inherit_fds: tuple[int, ...] = ()
        self.checks: list[Check] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outcome: list[Check] | BaseException | None = None
        self._releasing: threading.Thread | None = None
        self._first: _FirstBytes | None = None
        self._failure: BaseException | None = None  # what reading back raised, for the checks' names

    def start(self) -> CheckedArchive:
        """Read back in a background thread; ``check()`` waits for it, reading the table of contents
        meanwhile from the first bytes read (see ``_list_early``)."""
        first_frame = self.manifest.frames[0][0] if self.manifest.frames else EARLY_LIST_MAX
        self._first = _FirstBytes(min(first_frame, EARLY_LIST_MAX))
        self._thread = threading.Thread(target=self._read_back_safely, name="pgrunbook-check", daemon=True)
        self._thread.start()
        return self

    def check(self, tools: ClientTools) -> list[Check]:
        """The checks of the stored file (size, sha256, compression, table of contents), all passed:
        raises VerificationFailed (or the error that stopped the read-back) otherwise, the file removed."""
        try:
            early = None
            if self._thread is None:
                self._read_back_safely()
            else:
                early = self._list_early(tools)
                self._thread.join()
            self._first = None  # its bytes are no longer needed
            if isinstance(self._outcome, BaseException):
                raise self._outcome
            checks = list(self._outcome or [])
            if all(c.ok for c in checks):  # the archive's own header against the manifest (break11 #2)
                with open(self.path, "rb") as f:
                    mismatch = header_problem(self.manifest, f.read(8))
                if mismatch is not None:
                    checks = read_checks(checks, codecs(self.env, self.manifest), mismatch)
            if all(c.ok for c in checks):
                if early is None or early[0] != 0:  # read the whole file's (an early read fell short)
                    early = runner.run(tools.pg_restore, ["--list", self.path], inherit_fds=self.inherit_fds)
                rc, self.listing, stderr = early
                checks.append(toc_check(self.manifest, rc, self.listing, stderr))
            self.checks = require_intact(self.manifest, checks)
            return self.checks
        except BaseException:
            self.cleanup()
            raise

    def _list_early(self, tools: ClientTools) -> tuple[int, str, list[str]] | None:
        """``pg_restore --list`` of the archive's first bytes, read while the rest is still decompressing:
        the table of contents comes first in a custom-format archive, and almost always fits in the
        first frame. Used only when it succeeded and the read-back passed every check (the same stored
        bytes, hashed); otherwise ``check`` reads the whole file's, as before. None when there was
        nothing to read."""
        first = self._first
        if first is None:
            return None
        frame = codecs(self.env, self.manifest).first_bytes_decoder()
        with runner.start(tools.pg_restore, ["--list"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as lister:
            out: list[bytes] = []
            reader = threading.Thread(target=lambda: out.append(lister.stdout.read()), daemon=True)
            reader.start()
            try:
                for chunk in first.chunks():
                    data = frame.decompress(chunk) if frame is not None else chunk
                    if data:
                        lister.stdin.write(data)
            except (OSError, zstandard.ZstdError):  # it has read what it needs, or the first frame ended
                pass
            with contextlib.suppress(OSError):
                lister.stdin.close()
            rc = lister.wait()
            reader.join()
            return rc, b"".join(out).decode(errors="replace"), lister.lines()

    def _read_back_safely(self) -> None:
        try:
            self._outcome = self._read_back()
        except BaseException as exc:  # handed to check(), in the thread that asked
            self._outcome = exc
        finally:
            first = self._first
            if first is not None:  # however the read-back ended, the early reader waits no longer
                first.end()

    def _read_back(self) -> list[Check]:
        """Fill the file from storage; the size, checksum and compression checks (not yet required)."""
        fd = self._open(self.manifest, self.in_memory)
        tap = HashTap(
            self._unless_stopped(stored_bytes(self.env, self.manifest)), self.progress, self.manifest.size, "check"
        )
        stack = codecs(self.env, self.manifest)
        mismatch = table_problem(self.manifest, stack)  # a frame table that cannot be right: not decoded by
        try:
            if mismatch is None:
                frame_error = self._decompress(fd, self.env, self.manifest, tap, self.workers)
            else:
                for _ in tap:  # the size and checksum are still reported exactly
                    pass
                frame_error = ""
        finally:
            if self.fd is None:
                os.close(fd)
        checks = [*tap.checks(self.manifest)]
        if mismatch is None and frame_error and self.manifest.frames and all(c.ok for c in checks):
            mismatch = self._table_mismatch()  # the bytes hashed are the ones written: is the table wrong?
        if mismatch is not None:
            return read_checks(checks, stack, mismatch)
        return checks + stack.checks(frame_error, ok_detail="zstd frames complete", failure=self._failure)

    def _table_mismatch(self) -> ManifestMismatch | None:
        """After the parallel decompression failed on stored bytes whose size and sha256 pass: one
        sequential pass that compares every frame with the manifest's table (frames.decompress_frames)
        says whether the table is wrong (trial8 #9) rather than the frames. Only on this failure path."""
        try:
            for _ in codecs(self.env, self.manifest).read(
                self._unless_stopped(stored_bytes(self.env, self.manifest)), self.manifest.frames
            ):
                pass
        except ManifestMismatch as exc:
            return exc
        except (zstandard.ZstdError, VerificationFailed):
            return None
        return None

    def _unless_stopped(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if self._stop.is_set():
                raise _Abandoned()
            yield chunk

    def _open(self, manifest: Manifest, in_memory: bool) -> int:
        if in_memory:
            self.fd = os.memfd_create(f"pgrunbook-restore-{manifest.id}", 0)  # inheritable: pg_restore reads it
            self.path = f"/proc/self/fd/{self.fd}"
            self.inherit_fds = (self.fd,)
            return self.fd
        _sweep_stale_temp_dirs()
        try:
            self.dir = tempfile.mkdtemp(prefix=f"pgrunbook-restore-{os.getpid()}-")
        except OSError as exc:
            raise _temp_write_error(exc, tempfile.gettempdir(), manifest) from None
        self.path = os.path.join(self.dir, "archive.dump")
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as exc:
            raise _temp_write_error(exc, os.path.dirname(self.dir), manifest) from None

    def _decompress(self, fd: int, env: Environment, manifest: Manifest, tap: HashTap, workers: int) -> str:
        """Fill the file; '' when the stored stream decompressed cleanly, else what was wrong."""
        try:
            _preallocate(fd, manifest.archive_size)
            ahead = _read_ahead(iter(tap))
            stack = codecs(env, manifest)
            stored = stack.unwrap(ahead)  # decrypted: still compressed
            if self._first is not None:
                stored = self._first.tee(stored)
            try:
                stack.decompress_into(fd, stored, manifest.frames, workers)
            except (zstandard.ZstdError, VerificationFailed) as exc:
                self._failure = exc  # which layer failed names the check (CodecStack.checks)
                for _ in ahead:  # the size and checksum are still reported exactly
                    pass
                return str(exc)
        except OSError as exc:
            if self.fd is not None:
                raise PgRunbookError(
                    f"cannot hold the decompressed archive in memory: {exc.strerror or exc}; nothing was restored",
                    hint='set [restore] temp = "disk"',
                ) from None
            raise _temp_write_error(exc, os.path.dirname(self.dir or self.path), manifest) from None
        return ""

    def release_data(self) -> None:
        """pg_restore has read every data block it will read (restore_counts.DataRead): empty the file
        now, while it still builds indexes, rather than once it exits. Its open descriptors stay valid,
        and what it does from then on reads nothing from the file; the memory (or disk) freed is what
        the server's index builds and write-ahead log take next. Never raises: the file is removed at
        the end in any case."""
        with contextlib.suppress(OSError):
            if self.fd is not None:
                os.ftruncate(self.fd, 0)
            elif self.path:
                os.truncate(self.path, 0)

    def release(self) -> None:
        """pg_restore is done with the file: remove it in a thread while the restore goes on (verifies).
        Freeing a large archive's memory takes a while (~0.1 s per GB, measured); ``cleanup()`` waits."""
        if self._releasing is None:
            self._releasing = threading.Thread(target=self.cleanup, name="pgrunbook-release")
            self._releasing.start()

    def cleanup(self) -> None:
        """Stop a read-back still running (the restore failed before it was needed) and remove the file."""
        if self._releasing is not None and self._releasing is not threading.current_thread():
            self._releasing.join()
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join()  # never close the file under the thread still writing it
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


#: at most this many stored bytes are kept for the early table of contents (the first frame's, if smaller)
EARLY_LIST_MAX = 64 << 20


class _FirstBytes:
    """The first ``limit`` stored (decrypted, still compressed) bytes, kept as the read-back passes them
    on, for a reader in another thread (``chunks``) that may lag behind or run ahead."""

    def __init__(self, limit: int):
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._ended = False
        self._cond = threading.Condition()

    def tee(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                if self._size < self.limit:
                    with self._cond:
                        self._chunks.append(chunk[: self.limit - self._size])
                        self._size += len(self._chunks[-1])
                        self._cond.notify_all()
                yield chunk
        finally:
            self.end()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def chunks(self) -> Iterator[bytes]:
        """The kept bytes in order, waiting for more until ``limit`` is reached or the read-back ended."""
        i = 0
        while True:
            with self._cond:
                while i >= len(self._chunks) and not self._ended and self._size < self.limit:
                    self._cond.wait()
                if i >= len(self._chunks):
                    return
                chunk = self._chunks[i]
            i += 1
            yield chunk


class _Abandoned(Exception):
    """The read-back was stopped: the restore it was for failed before needing it."""


def _preallocate(fd: int, size: int | None) -> None:
    """Reserve the archive's room before decompressing: a full disk is found at once, not after minutes of
    work, and the writes then only fill blocks already allocated. (POSIX only; elsewhere the writes
    allocate.)"""
    if not size or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # the file system cannot: the writes allocate
            return
        raise

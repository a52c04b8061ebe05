"""A backup's write path in three stages that overlap: reading pg_dump's output, encoding it, and the
sink (hashing, encryption, storage).

With all three in one thread, pg_dump stopped on a full pipe whenever the thread waited for the
compressor (at every frame end a multithreaded zstd drains all its workers) or for storage, and the
compressor waited while the thread read or hashed: `pg_dump -Fc -Z0 | zstd -T2 -3`, whose stages are
separate processes, was faster on PostgreSQL 18 although it spends more CPU (bench/RESULTS.md). Here
a reader thread keeps pg_dump's pipe drained into a bounded queue and a writer thread feeds the sink
from another, so each stage waits only when the next one is really behind. Memory stays bounded: at
most ``depth`` chunks wait in each queue, whatever the database's size.
"""

from __future__ import annotations

import contextlib
import fcntl
import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Protocol

PIPE_SIZE = 1 << 20  # pg_dump's pipe: 1 MB instead of Linux's 64 KB default, fewer wake-ups
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux's value, named in Python >= 3.10 only
_POLL_S = 0.1  # how often a blocked stage looks whether the other side has given up


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def widen_pipe(src: IO[bytes]) -> None:
    """Ask for a 1 MB pipe buffer on ``src`` when it is a pipe (Linux); anything else is left as it is."""
    # not a pipe, not Linux, over the system's pipe-max-size, no file descriptor: left as it is
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fcntl.fcntl(src.fileno(), F_SETPIPE_SZ, PIPE_SIZE)


class ReadAhead:
    """Reads ``src`` in ``chunk``-byte reads in its own thread, at most ``depth`` chunks ahead of
    `chunks`' consumer. A read error is raised by `chunks` where the consumer is; use as a context
    manager (leaving it early stops the thread at its next chunk)."""

    def __init__(self, src: IO[bytes], chunk: int, depth: int):
        self._src, self._chunk = src, chunk
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgrunbook-read", daemon=True)

    def __enter__(self) -> ReadAhead:
        widen_pipe(self._src)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if kind is None:
            self._thread.join()
        # else: the thread may be blocked in a read until the caller stops pg_dump; it is a daemon and
        # ends at that EOF (or at its next chunk), holding nothing the caller still needs.

    def chunks(self) -> Iterator[bytes]:
        """The bytes of ``src`` in order; raises what reading raised."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._src.read(self._chunk)
                if not data:
                    break
                self._put(data)
            self._put(None)
        except BaseException as exc:  # handed to the consumer, which reports it
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue


class WriteBehind:
    """A sink that hands what it is given to ``sink`` in its own thread, at most ``depth`` writes
    behind. The first error of ``sink`` is raised by the next `write` or by `close`; after an error
    nothing more reaches ``sink``. Use as a context manager: leaving it waits for the thread, so the
    caller may finish or abort the storage afterwards without racing it."""

    def __init__(self, sink: Sink, depth: int):
        self._sink = sink
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgrunbook-write", daemon=True)

    def __enter__(self) -> WriteBehind:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self._stop.set()  # drop what is queued: the backup failed
        self._put(None)
        self._thread.join()
        if kind is None and self._error is not None:
            raise self._error

    def write(self, data: bytes | memoryview, /) -> int:
        if self._error is not None:
            raise self._error
        self._put(bytes(data))  # a copy only if it was a view: the producer may reuse its buffer
        return len(data)

    def _put(self, item: bytes | None) -> None:
        while True:
            if self._error is not None and item is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None and not self._stop.is_set():
                try:
                    self._sink.write(item)
                except BaseException as exc:  # raised to the producer by its next write or at close
                    self._error = exc

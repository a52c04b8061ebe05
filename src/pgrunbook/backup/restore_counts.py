"""Row counts of a restore taken while pg_restore is still building indexes.

A restore is verified by exact row counts, which means a full scan of every table. Counted after
pg_restore, that scan adds to the restore's time; yet a table's rows are final as soon as pg_restore
reports its TABLE DATA item finished, and the index builds that follow leave cores idle (one long GIN
build on one core is typical). So loaded tables are counted on a connection of their own whenever one
of pg_restore's jobs is idle (EarlyCounts), and only what was not counted that way is counted
afterwards. The verification is as exact; it just no longer waits for the end.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Protocol

import psycopg

from pgrunbook.backup.manifest import Manifest
from pgrunbook.postgres.catalog import count_tables
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.tool_errors import concerns_failure, error_message, fold_prefixes
from pgrunbook.postgres.url import DatabaseTarget
from pgrunbook.progress import ProgressFn

_TOC_DATA = re.compile(r"^(\d+); \d+ \d+ TABLE DATA (.*)$")
SETTLE = 0.05  # seconds a pg_restore job must stay idle before a count starts beside it
# pg_restore's jobs share one stderr and write the "pg_restore: " prefix apart from the message, so
# lines come interleaved ("pg_restore:pg_restore: finished item 7 ...", then a message without its
# prefix): progress is found anywhere in a line, and repeated prefixes are folded into one.
_PROGRESS = re.compile(r"(launching|finished) item (\d+) (TABLE DATA|\S+)")


def data_items(listing: str, manifest: Manifest) -> dict[int, tuple[str, str]]:
    """The TOC's TABLE DATA items by dump id, for the manifest's tables. `pg_restore --list` prints names
    unquoted, so an item that could be either of two tables is left out (counted at the end instead)."""
    items: dict[int, tuple[str, str]] = {}
    for line in listing.splitlines():
        m = _TOC_DATA.match(line)
        if not m:
            continue
        rest = m.group(2) + " "
        matches = [(t.schema_, t.name) for t in manifest.tables if rest.startswith(f"{t.schema_} {t.name} ")]
        if len(matches) == 1:
            items[int(m.group(1))] = matches[0]
    return items


class EarlyCounts:
    """Counts the tables pg_restore (with --verbose, in parallel mode) has loaded, while one of its jobs
    is idle.

    pg_restore says when it launches and finishes each item, so the number of items running is known
    at every moment: fewer than its jobs means a core it would use is free (pg_restore has nothing
    ready; typically one long index build is left). A count started only then takes no time from the
    restore itself; one started while every job works slows the restore by about its own length
    (measured on two cores: +0.25 s of pg_restore time when the counts ran beside two index builds).
    The counts run serially (max_parallel_workers_per_gather = 0) for the same reason. Tables not
    counted by the time pg_restore ends are counted by the verification afterwards.
    """

    def __init__(self, target: DatabaseTarget, items: dict[int, tuple[str, str]], jobs: int):
        self.target = target
        self.items = items
        self.jobs = jobs
        self.counts: dict[tuple[str, str], int] = {}
        self._running: set[int] = set()
        self._loaded: deque[tuple[str, str]] = deque()
        self._closed = False
        self._changed = time.monotonic()
        self._wake = threading.Condition()
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._work, name="pgrunbook-count", daemon=True)
        self._thread.start()

    def line(self, text: str) -> None:
        m = _PROGRESS.search(text)
        if not m:
            return
        item = int(m.group(2))
        with self._wake:
            self._changed = time.monotonic()
            if m.group(1) == "launching":
                self._running.add(item)
            else:
                self._running.discard(item)
                if m.group(3) == "TABLE DATA" and (table := self.items.get(item)) is not None:
                    self._loaded.append(table)
            self._wake.notify()

    def _next(self) -> tuple[str, str] | None:
        """The next loaded table, once a pg_restore job has been idle for SETTLE seconds (a job that
        finishes one item usually launches the next at once); None when pg_restore has ended."""
        with self._wake:
            while True:
                self._wake.wait_for(lambda: self._closed or (self._loaded and len(self._running) < self.jobs))
                if self._closed:
                    return None
                wait = self._changed + SETTLE - time.monotonic()
                if wait <= 0:
                    return self._loaded.popleft()
                self._wake.wait(wait)

    def _work(self) -> None:
        with contextlib.suppress(Exception):  # a count not taken here is taken by the verification
            while (table := self._next()) is not None:
                if self._conn is None:
                    conn = connect(self.target, purpose="verify")
                    conn.autocommit = True
                    conn.execute("SET max_parallel_workers_per_gather = 0")
                    with self._wake:  # published under the lock, so that _stop can cancel its query
                        self._conn = conn
                        if self._closed:
                            return
                self.counts.update(count_tables(self._conn, [table]))

    def _stop(self, *, cancel: bool = False) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
            conn = self._conn
        if cancel and conn is not None:  # a failed restore is not kept waiting for a long count
            with contextlib.suppress(Exception):
                conn.cancel()
        self._thread.join()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def finish(self) -> dict[tuple[str, str], int]:
        """The counts taken (a count still running is waited for); the rest is left to the verification."""
        self._stop()
        return dict(self.counts)

    def abandon(self) -> None:
        self._stop(cancel=True)


class LoadProgress:
    """What a terminal shows while pg_restore runs: the rows loaded so far (the manifest's exact counts
    of the tables whose data pg_restore reports finished, of all the backup's rows) and the items it is
    working on now. The rows measure the data phase; once they are all in, the note names the index
    or constraint still being built, so a long last step (a GIN build of minutes) reads as work, not
    as a hang."""

    NOTE_MAX = 80

    def __init__(self, items: dict[int, tuple[str, str]], rows: dict[tuple[str, str], int], progress: ProgressFn):
        self.items = items
        self.rows = rows
        self.progress = progress
        self.total = sum(rows.values())
        self.loaded = 0
        self.running: dict[int, str] = {}

    def line(self, text: str) -> None:
        m = _PROGRESS.search(text)
        if not m:
            return
        item = int(m.group(2))
        if m.group(1) == "launching":
            self.running[item] = text[m.start(3) :].strip()
        else:
            self.running.pop(item, None)
            if m.group(3) == "TABLE DATA" and (table := self.items.get(item)) is not None:
                self.loaded += self.rows.get(table, 0)
        self._show()

    def done(self) -> None:
        """pg_restore ended well: every row is in, whichever items the listing could not name."""
        self.loaded, self.running = self.total, {}
        self._show()

    def _show(self) -> None:
        note = ", ".join(sorted(self.running.values()))
        if len(note) > self.NOTE_MAX:
            note = note[: self.NOTE_MAX - 1] + "…"
        self.progress("restore", self.loaded, self.total, unit="rows", note=note)


_TOC_ITEM = re.compile(r"^(\d+); \d+ \d+ (.*)$")
# item types whose data blocks are read by other items than TABLE DATA: large objects (BLOBS up to
# PostgreSQL 16; BLOB METADATA and LARGE OBJECTS from 17 on)
_LARGE_OBJECTS = re.compile(r"^(?:BLOBS?|BLOB METADATA|LARGE OBJECTS?)\b")


class DataRead:
    """Calls ``done`` once, when pg_restore (``--verbose``) has reported every TABLE DATA item of
    ``listing`` (``pg_restore --list``) finished: from then on it reads nothing more from the archive
    file. In a custom-format archive only items with data blocks read the file after its table of
    contents; the indexes, constraints, grants and comments still to come are SQL held in the table of
    contents (PostgreSQL src/bin/pg_dump/pg_backup_custom.c, _PrintTocData). Never calls it for an
    archive with large objects, or without any data."""

    def __init__(self, listing: str, done: Callable[[], None]):
        items = [m for line in listing.splitlines() if (m := _TOC_ITEM.match(line))]
        self._waiting = {int(m.group(1)) for m in items if m.group(2).startswith("TABLE DATA ")}
        lobs = any(_LARGE_OBJECTS.match(m.group(2)) for m in items)
        self._done: Callable[[], None] | None = done if self._waiting and not lobs else None

    def line(self, text: str) -> None:
        if self._done is None:
            return
        m = _PROGRESS.search(text)
        if m is None or m.group(1) != "finished":
            return
        self._waiting.discard(int(m.group(2)))
        if not self._waiting:
            done, self._done = self._done, None
            done()


class LineReader(Protocol):
    def line(self, text: str) -> None: ...


def read_verbose(stream: IO[str], *readers: LineReader, keep: int = 400, errors: list[str] | None = None) -> list[str]:
    """Feed pg_restore's --verbose progress lines to each of `readers`; return the first lines that are
    not progress information (errors, their context, the entry they concern): the first error is the
    cause, whatever follows it ("a worker process died unexpectedly") is not. `errors`, when given,
    receives every error line (up to 10,000): a tolerated error is judged against all of them."""
    kept: list[str] = []
    for raw in stream:
        line = fold_prefixes(raw.rstrip("\n"))
        if _PROGRESS.search(line):
            for reader in readers:
                reader.line(line)
        elif concerns_failure(line):  # kept for the failure's cause (postgres/tool_errors.py)
            if len(kept) < keep:
                kept.append(line)
            if errors is not None and error_message(line) is not None and len(errors) < 10_000:
                errors.append(line)
    return kept

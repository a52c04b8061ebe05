"""Row counts of a restore taken while pg_restore is still building indexes.

A restore is verified by exact row counts, which means a full scan of every table. Counted after
pg_restore, that scan adds to the restore's time; yet a table's rows are final as soon as pg_restore
reports its TABLE DATA item finished, and the index builds that follow leave cores idle (one long GIN
build on one core is typical). So each table is counted on its own connection the moment its data is
in, and only what was not counted that way is counted afterwards. The verification is as exact; it
just no longer waits for the end.
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

import psycopg

from pgrunbook.backup.manifest import Manifest
from pgrunbook.postgres.catalog import count_tables
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.url import DatabaseTarget

_TOC_DATA = re.compile(r"^(\d+); \d+ \d+ TABLE DATA (.*)$")
_FINISHED = re.compile(r"^pg_restore: finished item (\d+) TABLE DATA ")
_NOT_INFO = re.compile(r"^pg_restore: (error|warning|detail|hint):|^(?!pg_restore: )")


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
    """Counts each table as pg_restore (with --verbose, in parallel mode) reports its data finished."""

    def __init__(self, target: DatabaseTarget, var: str, items: dict[int, tuple[str, str]]):
        self.target = target
        self.var = var
        self.items = items
        self.counts: dict[tuple[str, str], int] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgrunbook-count")
        self._futures: list[Future[None]] = []
        self._conn: psycopg.Connection | None = None

    def line(self, text: str) -> None:
        m = _FINISHED.match(text)
        if m and (table := self.items.get(int(m.group(1)))) is not None:
            self._futures.append(self._pool.submit(self._count, table))

    def _count(self, table: tuple[str, str]) -> None:
        if self._conn is None:
            self._conn = connect(self.target, purpose="verify", var=self.var)
            self._conn.autocommit = True
        self.counts.update(count_tables(self._conn, [table]))

    def finish(self) -> dict[tuple[str, str], int]:
        """The counts taken; a count that failed is simply left to the verification afterwards."""
        for future in self._futures:
            with contextlib.suppress(Exception):
                future.result()
        self._pool.shutdown()
        if self._conn is not None:
            self._conn.close()
        return dict(self.counts)

    def abandon(self) -> None:
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()


def read_verbose(stream: IO[str], counts: EarlyCounts, keep: int = 20) -> deque[str]:
    """Feed pg_restore's --verbose lines to `counts`; return the last lines that are not progress
    information (errors and their context), for a one-line failure message."""
    tail: deque[str] = deque(maxlen=keep)
    for raw in stream:
        line = raw.rstrip("\n")
        counts.line(line)
        if line.strip() and _NOT_INFO.match(line):
            tail.append(line)
    return tail

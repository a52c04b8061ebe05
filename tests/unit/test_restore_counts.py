"""Which TOC items name which tables, and which pg_restore lines are errors: the pure parts of counting
a restore's rows while pg_restore still runs."""

from __future__ import annotations

import io
import time

import pytest

from pgrunbook.backup import restore_counts
from pgrunbook.backup.restore_counts import EarlyCounts, LoadProgress, data_items, read_verbose
from tests.factories import make_manifest

LISTING = """;
; Archive created at 2026-11-25 18:10:00 UTC
3380; 1259 16390 TABLE public event postgres
3392; 0 16390 TABLE DATA public event postgres
3393; 0 16400 TABLE DATA billing invoice postgres
3394; 0 16410 TABLE DATA a b c postgres
3395; 0 16420 TABLE DATA a b c postgres
3396; 0 16430 TABLE DATA public not_in_manifest postgres
"""


def test_data_items_map_dump_ids_to_the_manifests_tables() -> None:
    m = make_manifest((("public", "event"), ("billing", "invoice"), ("a b", "c"), ("a", "b c")))
    items = data_items(LISTING, m)
    assert items == {3392: ("public", "event"), 3393: ("billing", "invoice")}  # "a b c" could be either


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)


def test_verbose_progress_is_fed_and_only_errors_are_kept() -> None:
    stderr = io.StringIO(
        "pg_restore: connecting to database for restore\n"
        "pg_restore: launching item 3392 TABLE DATA event\n"
        "pg_restore: finished item 3392 TABLE DATA event\n"
        "pg_restore: error: could not execute query: ERROR:  duplicate key value\n"
        "Command was: ALTER TABLE ONLY public.event ADD CONSTRAINT event_pkey PRIMARY KEY (id);\n"
        "pg_restore: finished main parallel loop\n"
        # two jobs writing at once: one line with both prefixes, then a message without its own
        "pg_restore:pg_restore: finished item 3225 CONSTRAINT event event_pkey\n"
        "finished item 3372 TABLE DATA invoice\n"
    )
    rec = Recorder()
    tail = read_verbose(stderr, rec)
    assert rec.lines == [
        "pg_restore: launching item 3392 TABLE DATA event",
        "pg_restore: finished item 3392 TABLE DATA event",
        "pg_restore: finished item 3225 CONSTRAINT event event_pkey",
        "finished item 3372 TABLE DATA invoice",
    ]
    assert list(tail) == [
        "pg_restore: error: could not execute query: ERROR:  duplicate key value",
        "Command was: ALTER TABLE ONLY public.event ADD CONSTRAINT event_pkey PRIMARY KEY (id);",
    ]


class ProgressCalls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int | None, str, str]] = []

    def __call__(self, stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
        self.calls.append((stage, done, total, unit, note))


def test_load_progress_counts_the_rows_of_loaded_tables_and_names_what_runs() -> None:
    """The bar a terminal shows during pg_restore: rows from the manifest's exact counts as each table's
    data is reported finished, and beside it the items under way (the last long index build by name)."""
    m = make_manifest((("public", "event"), ("billing", "invoice")))
    rows = {("public", "event"): 700, ("billing", "invoice"): 300}
    calls = ProgressCalls()
    load = LoadProgress(data_items(LISTING, m), rows, calls)
    stderr = io.StringIO(
        "pg_restore: launching item 3392 TABLE DATA event\n"
        "pg_restore: launching item 3393 TABLE DATA invoice\n"
        "pg_restore:pg_restore: finished item 3393 TABLE DATA invoice\n"
        "launching item 3400 INDEX event_payload_gin\n"
        "pg_restore: finished item 3392 TABLE DATA event\n"
        "pg_restore: launching item 3401 CONSTRAINT event_pkey\n"
        "pg_restore: finished item 3401 CONSTRAINT event_pkey\n"
    )
    read_verbose(stderr, load)
    assert [(done, total, unit) for _, done, total, unit, _ in calls.calls] == [
        (0, 1000, "rows"),
        (0, 1000, "rows"),
        (300, 1000, "rows"),
        (300, 1000, "rows"),
        (1000, 1000, "rows"),
        (1000, 1000, "rows"),
        (1000, 1000, "rows"),
    ]
    notes = [note for *_, note in calls.calls]
    assert notes[1] == "TABLE DATA event, TABLE DATA invoice"
    assert notes[4] == "INDEX event_payload_gin"  # data all in: what the wait is for
    assert notes[5] == "CONSTRAINT event_pkey, INDEX event_payload_gin"
    assert notes[6] == "INDEX event_payload_gin"
    load.done()
    assert calls.calls[-1] == ("restore", 1000, 1000, "rows", "")
    assert {stage for stage, *_ in calls.calls} == {"restore"}


def test_load_progress_notes_are_cut_to_one_short_line() -> None:
    calls = ProgressCalls()
    load = LoadProgress({}, {}, calls)
    load.line("pg_restore: launching item 1 INDEX " + "x" * 200)
    note = calls.calls[-1][4]
    assert len(note) == LoadProgress.NOTE_MAX and note.endswith("…") and note.startswith("INDEX xxx")


class CountingRecorder(EarlyCounts):
    """EarlyCounts with the database left out: records which table would be counted, and what pg_restore
    was running at that moment."""

    def __init__(self, items: dict[int, tuple[str, str]], jobs: int) -> None:
        self.taken: list[tuple[tuple[str, str], set[int]]] = []
        super().__init__(None, items, jobs)  # type: ignore[arg-type]

    def _work(self) -> None:
        while (table := self._next()) is not None:
            self.taken.append((table, set(self._running)))


def _feed(counts: CountingRecorder, *lines: str, then: float = 0.6) -> list[tuple[str, str]]:
    """Lines as pg_restore writes them (at once), then a pause; what was counted by the end of it."""
    for text in lines:
        counts.line(f"pg_restore: {text}")
    time.sleep(then)
    return [t for t, _ in counts.taken]


def test_loaded_tables_are_counted_only_while_a_pg_restore_job_is_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restore_counts, "SETTLE", 0.2)  # wide margins: a loaded CI machine stays exact
    invoice, event = ("billing", "invoice"), ("public", "event")
    counts = CountingRecorder({3392: event, 3393: invoice}, jobs=2)
    assert _feed(counts, "launching item 3393 TABLE DATA invoice", "launching item 3392 TABLE DATA event") == []
    # a job that finishes one item and launches the next at once was never idle: nothing counted
    assert _feed(counts, "finished item 3393 TABLE DATA invoice", "launching item 3400 INDEX invoice_idx") == []
    assert _feed(counts, "finished item 3400 INDEX invoice_idx") == [invoice]  # one job idle: counted
    assert _feed(
        counts,
        "finished item 3392 TABLE DATA event",
        "launching item 3401 INDEX event_payload_idx",
        "launching item 3402 INDEX event_user_idx",
    ) == [invoice]  # both jobs busy: event waits
    assert _feed(counts, "finished item 3402 INDEX event_user_idx") == [invoice, event]
    counts.finish()
    assert all(len(running) < 2 for _, running in counts.taken)


def test_tables_left_when_pg_restore_ends_are_left_to_the_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restore_counts, "SETTLE", 0.5)
    counts = CountingRecorder({3392: ("public", "event")}, jobs=1)
    _feed(counts, "launching item 3392 TABLE DATA event", "finished item 3392 TABLE DATA event", then=0)
    _feed(counts, "launching item 3401 INDEX event_payload_idx", then=0)
    counts.finish()
    assert counts.taken == []  # pg_restore never had an idle job: the verification counts event


# every TABLE DATA item of LISTING, and an index that follows them
DATA_IDS = (3392, 3393, 3394, 3395, 3396)


@pytest.mark.parametrize(
    ("listing", "lines", "called"),
    [
        # every data item finished (in any order, lines interleaved as parallel jobs write them): once
        (LISTING, [f"pg_restore: finished item {i} TABLE DATA x" for i in reversed(DATA_IDS)], 1),
        (LISTING, [f"pg_restore:pg_restore: finished item {i} TABLE DATA x" for i in DATA_IDS], 1),
        # one still loading, or only launched: not yet
        (LISTING, [f"pg_restore: finished item {i} TABLE DATA x" for i in DATA_IDS[:-1]], 0),
        (LISTING, [f"pg_restore: launching item {i} TABLE DATA x" for i in DATA_IDS], 0),
        # finishing other items (the table's definition, an index) counts for nothing
        (LISTING, ["pg_restore: finished item 3380 TABLE public event", "pg_restore: finished item 9 INDEX i"], 0),
        # large objects: their data blocks are read by other items, so the file is never emptied early
        (
            LISTING + "3400; 2613 16500 BLOBS - BLOBS postgres\n",
            [f"finished item {i} TABLE DATA x" for i in DATA_IDS],
            0,
        ),
        (
            LISTING + "3401; 0 0 LARGE OBJECTS 16501..16510 postgres\n",
            [f"finished item {i} TABLE DATA" for i in DATA_IDS],
            0,
        ),
        # no data at all: nothing to wait for, nothing to release
        ("3380; 1259 16390 TABLE public event postgres\n", ["pg_restore: finished item 3380 TABLE public event"], 0),
    ],
)
def test_the_archive_is_released_once_every_data_item_is_read(listing: str, lines: list[str], called: int) -> None:
    calls: list[int] = []
    reader = restore_counts.DataRead(listing, lambda: calls.append(1))
    for line in lines + lines:  # a line seen twice never releases twice
        reader.line(line)
    assert len(calls) == called

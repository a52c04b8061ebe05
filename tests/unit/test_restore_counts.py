"""Which TOC items name which tables, and which pg_restore lines are errors: the pure parts of counting
a restore's rows while pg_restore still runs."""

from __future__ import annotations

import io

from pgrunbook.restore_counts import data_items, read_verbose
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
    )
    rec = Recorder()
    tail = read_verbose(stderr, rec)  # type: ignore[arg-type]
    assert "pg_restore: finished item 3392 TABLE DATA event" in rec.lines and len(rec.lines) == 6
    assert list(tail) == [
        "pg_restore: error: could not execute query: ERROR:  duplicate key value",
        "Command was: ALTER TABLE ONLY public.event ADD CONSTRAINT event_pkey PRIMARY KEY (id);",
    ]

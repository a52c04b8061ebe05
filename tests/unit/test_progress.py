"""The kernel's progress module: the callback type, counting, the dump's estimated total, and the
terminal's throttle (pure: a fake clock decides)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.progress import ProgressFn, Throttle, counted, no_progress, with_estimate


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
        self.calls.append((stage, done, total, unit, note))


@given(st.lists(st.binary(max_size=50), max_size=20), st.none() | st.integers(0, 2000))
def test_counted_passes_chunks_on_and_reports_the_bytes_so_far(chunks: list[bytes], total: int | None) -> None:
    rec = Recorder()
    assert list(counted(iter(chunks), rec, "verify", total)) == chunks
    sums = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks))]
    assert rec.calls == [("verify", s, total, "bytes", "") for s in sums]


def test_the_estimate_fills_in_the_dumps_unknown_total_and_grows_past_a_short_guess() -> None:
    rec = Recorder()
    progress = with_estimate(rec, "dump", 1000, "of about the last backup's size")
    progress("dump", 400, None)
    progress("dump", 1500, None)  # the database grew: the bar never runs past its end
    progress("dump", 10, 20)  # a known total is left alone
    progress("verify", 5, None)  # another stage is left alone
    progress("dump", 5, None, note="waiting for a lock")  # a note of the step's own wins
    assert rec.calls == [
        ("dump", 400, 1000, "bytes", "of about the last backup's size"),
        ("dump", 1500, 1500, "bytes", "of about the last backup's size"),
        ("dump", 10, 20, "bytes", ""),
        ("verify", 5, None, "bytes", ""),
        ("dump", 5, 1000, "bytes", "waiting for a lock"),
    ]


@pytest.mark.parametrize("expected", [None, 0])
def test_without_a_guess_or_a_display_progress_is_unchanged(expected: int | None) -> None:
    rec: ProgressFn = Recorder()
    assert with_estimate(rec, "dump", expected, "x") is rec
    assert with_estimate(no_progress, "dump", 1000, "x") is no_progress


# (time, stage, done, total, note) -> drawn?
THROTTLE = [
    ((0.00, "check", 1, 100, ""), True),  # the first update
    ((0.05, "check", 2, 100, ""), False),  # within 0.1 s of the last drawn one
    ((0.09, "check", 100, 100, ""), True),  # the stage's end, always
    ((0.12, "restore", 1, None, ""), True),  # a new stage's first update, always
    ((0.13, "restore", 2, None, ""), False),
    ((0.14, "restore", 3, None, "INDEX i"), True),  # a changed note, always (never a stale note)
    ((0.15, "restore", 4, None, "INDEX i"), False),
    ((0.30, "restore", 5, None, "INDEX i"), True),  # the interval passed
]


def test_the_throttle_draws_at_most_every_interval_but_always_ends_and_new_notes() -> None:
    now = [0.0]
    throttle = Throttle(0.1, clock=lambda: now[0])
    got = []
    for (t, stage, done, total, note), _ in THROTTLE:
        now[0] = t
        got.append(throttle.due(stage, done, total, note))
    assert got == [drawn for _, drawn in THROTTLE]

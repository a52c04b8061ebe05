"""What a terminal shows while a long step runs: rich's bars rendered into a forced terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from pgrunbook.cli.render import Output, human_count
from pgrunbook.environment import no_progress


def _terminal(out: Output) -> io.StringIO:
    buf = io.StringIO()
    out.err = Console(file=buf, force_terminal=True, width=200)
    return buf


def test_a_restore_bar_counts_rows_and_names_what_runs_beside_a_bytes_bar() -> None:
    out = Output()
    buf = _terminal(out)
    with out.progress("restore 20261126T000000Z-manual") as progress:
        progress("check", 50_000_000, 100_000_000)
        progress("restore", 3_200_000, 5_000_000, unit="rows", note="INDEX event_payload_gin")
    text = buf.getvalue()
    assert "restore 20261126T000000Z-manual: restore" in text
    assert "3.2M/5.0M rows" in text and "INDEX event_payload_gin" in text
    assert "50.0/100.0 MB" in text  # bytes still shown as sizes


def test_a_narrow_terminal_keeps_each_bar_on_one_line() -> None:
    """80 columns: the label shrinks to the stage and the note is cut, so nothing wraps into a mess."""
    out = Output()
    buf = io.StringIO()
    out.err = Console(file=buf, force_terminal=True, width=80)
    with out.progress("restore 20261126T000000Z-manual") as progress:
        progress("check", 120_000_000, 240_600_000)
        progress("restore", 1_600_000, 1_600_000, unit="rows", note="CONSTRAINT event event_pkey, INDEX " + "x" * 60)
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue()).replace("\r", "\n")
    drawn = [ln for ln in plain.splitlines() if ln.strip()]
    assert all(len(ln) <= 80 for ln in drawn)
    assert any(ln.startswith("restore ") and "1.6M/1.6M rows" in ln and ln.rstrip().endswith("…") for ln in drawn)
    assert any(ln.startswith("check ") and "120.0/240.6 MB" in ln for ln in drawn)


def test_without_a_terminal_or_with_json_nothing_is_drawn() -> None:
    for out in (Output(), Output(json_mode=True)):
        buf = io.StringIO()
        out.err = Console(file=buf, force_terminal=out.json_mode)  # json: a terminal, yet quiet
        with out.progress("restore x") as progress:
            assert progress is no_progress
            progress("restore", 1, 2, unit="rows", note="INDEX i")
        assert buf.getvalue() == ""


def test_human_count() -> None:
    assert [human_count(n) for n in (0, 999, 1000, 12_345, 5_000_000, 2_500_000_000)] == [
        "0",
        "999",
        "1.0k",
        "12.3k",
        "5.0M",
        "2.5bn",
    ]

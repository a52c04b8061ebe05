"""What a terminal shows while a long step runs: rich's bars rendered into a forced terminal."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rich.table import Table

from pgrunbook.cli.render import Output, SafeConsole, human_count, step_line
from pgrunbook.errors import printable
from pgrunbook.progress import no_progress


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


# --- trial7 #26: text from storage, the database or a hook is shown, never obeyed ------------------

HOSTILE = [
    "\x1b[2J\x1b[31mok",  # clear screen, red
    "\x1b]0;pwned\x07x",  # terminal title
    "over\rwrite",  # carriage return overwrites the line
    "bidi \u202eexe.txt",  # right-to-left override
    "c1 \x9b31m",  # the one-byte CSI
    "del\x7f",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_safe_console_shows_control_characters_as_escapes(text: str) -> None:
    buf = io.StringIO()
    console = SafeConsole(file=buf, force_terminal=False, width=200)
    console.print(f"label: {text}", highlight=False)
    table = Table("id", "label")
    table.add_row("20261201T000007Z-ansi", text)
    console.print(table)
    out = buf.getvalue()
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", out), repr(out)
    assert printable(text) in out


def test_printable_one_line_escapes_newlines_and_keeps_ordinary_text() -> None:
    assert printable("ok\nrestored fine", one_line=True) == "ok\\nrestored fine"
    assert printable("ok\nrestored fine") == "ok\nrestored fine"
    assert printable("Prisma 7 — Größe café 😀") == "Prisma 7 — Größe café 😀"


def test_step_lines_have_no_trailing_space() -> None:
    """trial7 #18: ``ok  maintenance on (0.0s) `` ended with a space when the step had no detail."""
    line = step_line({"status": "succeeded", "name": "maintenance on", "duration_s": 0.01, "detail": ""})
    assert line.endswith("(0.0s)") and not line.endswith(" ")
    assert step_line({"status": "failed", "name": "m", "duration_s": 1, "detail": "x"}).endswith("(1.0s) x")


@pytest.mark.parametrize(
    ("delta_s", "shown"),
    [(5, "5s ago"), (-20, "0s ago"), (600, "10m ago"), (7200, "2h ago"), (259197, "3d ago"),
     (-259197, "in 3d (clock skew?)"), (-600, "in 10m (clock skew?)")],
)  # fmt: skip
def test_human_age_is_never_negative(delta_s: int, shown: str) -> None:
    """trial7 #18: a future-dated backup showed ``-259197s ago``."""
    from datetime import UTC, datetime, timedelta

    from pgrunbook.cli.render import human_age

    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert human_age(now - timedelta(seconds=delta_s), now) == shown


@pytest.mark.parametrize("name", ["shop:fire:db", ":smile:", "backup :+1: note"])
def test_emoji_codes_in_names_are_printed_as_written(name: str) -> None:
    """A database or file name holding ":fire:" is shown as written, never turned into an emoji (and
    rich's emoji table is not loaded for the first line every command prints)."""
    buf = io.StringIO()
    SafeConsole(file=buf, force_terminal=False, width=200).print(f"restored into {name}", highlight=False)
    assert buf.getvalue().strip() == f"restored into {name}"
    out = Output(False)
    out.err = SafeConsole(file=buf, force_terminal=False, width=200)
    out.info(name)
    assert buf.getvalue().splitlines()[-1] == name


def test_a_piped_backups_progress_draws_nothing_and_readies_the_output_at_its_first_report() -> None:
    """cli.render.preparing: where nothing is drawn the callback says so (no estimate is read for a
    bar, progress.draws), and its first report makes the consoles (rich loads while pg_dump reads the
    catalog). Where a bar is drawn the bar's own callback is used as it is."""
    from pgrunbook.cli.render import preparing
    from pgrunbook.progress import draws, with_estimate

    out = Output()
    quiet = preparing(out, no_progress)
    assert not draws(quiet) and with_estimate(quiet, "dump", 1000, "why") is quiet
    assert out._err is None and out._out is None
    quiet("dump", 0, None)
    assert out._err is not None and out._out is not None

    def bar(stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
        pass

    assert preparing(out, bar) is bar and draws(bar)

"""Output: rich on a terminal, one JSON document with --json, plain quiet lines otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from pgrunbook.errors import printable
from pgrunbook.progress import ProgressFn, Throttle, no_progress

if TYPE_CHECKING:
    from rich.progress import Progress

_MARKS = {
    "succeeded": ("ok", "green"),
    "failed": ("FAIL", "red"),
    "skipped": ("skip", "dim"),
    "running": ("…", "yellow"),
}


def step_line(step: dict[str, Any]) -> str:
    """One journal step as a line: its mark, name, duration and detail (rich markup, names escaped)."""
    status = str(step["status"])
    text, style = _MARKS.get(status, (status, "bold"))
    head = f"  [{style}]{escape(text):>4}[/]  {escape(str(step['name']))}"
    if status == "running":
        return head
    detail = str(step.get("detail") or "")
    return f"{head} ({step.get('duration_s') or 0:.1f}s)" + (f" {escape(detail)}" if detail else "")


class SafeConsole(Console):
    """A rich Console that shows, never obeys, control characters in the text it is given (a label
    or table name from storage or the database could clear the screen or retitle the terminal); its
    own colours are added after this, when the text is rendered."""

    def __init__(self, **kwargs: Any):
        # ":name:" in a database, table or file name is text, never an emoji (and rich's table of
        # emoji codes, ~3,600 entries, is then never loaded: ~15 ms of every command's first line)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)


class Output:
    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        self.live_steps = False  # steps were shown on the terminal as they ran (show_step)
        self._bars: tuple[Progress, dict[str, Any]] | None = None  # the live display, while progress() runs
        # piped output is read by scripts and grep: never wrap a backup id across lines there
        self.out: Console = SafeConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        self.err: Console = SafeConsole(stderr=True, soft_wrap=True)

    @property
    def interactive(self) -> bool:
        return not self.json_mode and self.err.is_terminal

    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")
        sys.stdout.flush()

    def info(self, message: str) -> None:
        """Narration goes to stderr so stdout stays the command's answer."""
        if not self.json_mode:
            self.err.print(message, highlight=False)

    def notice(self, kind: str, message: str, fields: dict[str, Any]) -> None:
        """A notice while a step runs (progress.NoticeFn), on stderr at once, above any live bar:
        a ``note:`` line for people (piped too: a cron log shows why a backup sat still), or with
        --json one JSON object per line, ``{"event": kind, "message": …, **fields}`` (stdout stays the
        one JSON document)."""
        if self.json_mode:
            sys.stderr.write(json.dumps({"event": kind, "message": message, **fields}, default=_default) + "\n")
            sys.stderr.flush()
            return
        self.err.print(f"[yellow]note:[/] {escape(message)}", highlight=False)

    def show_step(self, step: dict[str, Any]) -> None:
        """A procedure's step as it starts and as it ends, on stderr above any live bar. The bars belong
        to the step that drew them: they go when it ends, so only the running step's bars stay."""
        if step["status"] != "running" and self._bars is not None:
            bar, tasks = self._bars
            for task in tasks.values():
                bar.remove_task(task)
            tasks.clear()
            bar.refresh()
        self.err.print(step_line(step), highlight=False)

    @contextmanager
    def progress(self, description: str) -> Iterator[ProgressFn]:
        """A live bar per stage on a terminal (bytes and rate, or a count of rows; what is under way
        beside it); nothing at all otherwise."""
        # The bars (rich.progress) load here, not at the top: start-up time that a command which shows
        # no bar (--help, status, --json) should not pay. (pgrunbook.progress is pure and small.)
        if not self.interactive:
            yield no_progress
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Column

        from pgrunbook.cli.bars import AmountColumn, RateColumn

        width = self.err.width  # narrow: a short bar, and labels cut to the stage, so nothing wraps
        fixed = Column(no_wrap=True)
        with Progress(
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=20 if width < 120 else 40),
            AmountColumn(table_column=fixed),
            RateColumn(table_column=fixed),
            TimeElapsedColumn(table_column=fixed),
            TextColumn("{task.fields[note]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=self.err,
            transient=True,
            expand=True,  # the note takes what the other columns leave, and is cut, not wrapped
        ) as bar:
            tasks: dict[str, Any] = {}
            throttle = Throttle()

            def update(stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
                if stage not in tasks:
                    label = f"{description}: {stage}"
                    if width < len(label) + 90:  # what the bar, amounts, time and a note need beside it
                        label = stage
                    tasks[stage] = bar.add_task(label, total=total, unit=unit, note=note)
                    bar.refresh()  # drawn at once, not at the next tick: a short step still shows its bar
                if throttle.due(stage, done, total, note):
                    bar.update(tasks[stage], completed=done, total=total, note=note)

            self._bars = (bar, tasks)
            try:
                yield update
            finally:
                self._bars = None


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_count(n: float) -> str:
    for unit in ("", "k", "M"):
        if abs(n) < 1000:
            return f"{n:.0f}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}bn"


def human_age(when: datetime, now: datetime | None = None) -> str:
    """``12m ago``; a time ahead of the clock (over a minute: not mere rounding) as ``in 3d (clock
    skew?)``, never a negative age."""
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < -60:
        return f"in {_span(-seconds)} (clock skew?)"
    return f"{_span(max(seconds, 0.0))} ago"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"

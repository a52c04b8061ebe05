"""Output: rich on a terminal, one JSON document with --json, plain quiet lines otherwise."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from pgrunbook.progress import ProgressFn, Throttle, no_progress

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from pgrunbook.cli.console import SafeConsole as SafeConsole

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


def escape(text: str) -> str:
    """rich's escaping of markup, loaded when first used (start-up time: see `Output`)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def __getattr__(name: str) -> Any:
    if name == "SafeConsole":  # defined with rich, in pgrunbook.cli.console (start-up time: see `Output`)
        from pgrunbook.cli.console import SafeConsole

        return SafeConsole
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _may_be_terminal(stream: IO[str]) -> bool:
    """False only where rich's ``Console.is_terminal`` is False too: no ``TTY_COMPATIBLE=1``, no
    ``FORCE_COLOR`` and ``stream`` not a terminal. Lets a piped command decide without loading rich."""
    if os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR") is not None:
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Output:
    """The consoles (rich) are made when first printed to: a command that prints nothing before its
    work (``--help``, a piped backup until pg_dump runs) does not load rich for it."""

    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        self.live_steps = False  # steps were shown on the terminal as they ran (show_step)
        self._bars: tuple[Progress, dict[str, Any]] | None = None  # the live display, while progress() runs
        self._out: Console | None = None
        self._err: Console | None = None
        self._making = threading.Lock()  # a notice from another thread may print first

    @property
    def out(self) -> Console:
        if self._out is None:
            with self._making:
                if self._out is None:
                    from pgrunbook.cli.console import SafeConsole

                    # piped output is read by scripts and grep: never wrap a backup id across lines there
                    self._out = SafeConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        return self._out

    @out.setter
    def out(self, console: Console) -> None:
        self._out = console

    @property
    def err(self) -> Console:
        if self._err is None:
            with self._making:
                if self._err is None:
                    from pgrunbook.cli.console import SafeConsole

                    self._err = SafeConsole(stderr=True, soft_wrap=True)
        return self._err

    @err.setter
    def err(self, console: Console) -> None:
        self._err = console

    def prepare(self) -> None:
        """Make the consoles now (loading rich): for a command to call while it waits anyway, so that
        its first line later does not pay for it."""
        _ = self.out, self.err

    @property
    def interactive(self) -> bool:
        if self.json_mode:
            return False
        if self._err is None and not _may_be_terminal(sys.stderr):
            return False
        return self.err.is_terminal

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
        label = "warning" if kind in WARNING_NOTICES else "note"
        self.err.print(f"[yellow]{label}:[/] {escape(message)}", highlight=False)

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


def preparing(output: Output, progress: ProgressFn) -> ProgressFn:
    """``progress``, or where nothing is drawn (`no_progress`) a callback that draws nothing either and
    makes ``output``'s consoles at its first report (`Output.prepare`): a backup reports 0 bytes as
    pg_dump starts, so rich loads while pg_dump reads the catalog, not before it starts or after the
    stream. It says ``draws = False``: nothing is read only to be drawn (progress.draws)."""
    if progress is not no_progress:
        return progress
    return _Preparing(output)


class _Preparing:
    draws = False

    def __init__(self, output: Output):
        self._output: Output | None = output

    def __call__(self, stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
        if self._output is not None:
            output, self._output = self._output, None
            output.prepare()


# notices that are warnings, not narration (a restore into an older major: break11 #7)
WARNING_NOTICES = frozenset({"downgrade"})


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

"""Output: rich on a terminal, one JSON document with --json, plain quiet lines otherwise."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

from pgrunbook.environment import ProgressFn, no_progress


class Output:
    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        # piped output is read by scripts and grep: never wrap a backup id across lines there
        self.out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        self.err = Console(stderr=True, soft_wrap=True)

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

    @contextmanager
    def progress(self, description: str) -> Iterator[ProgressFn]:
        """A live bytes/rate bar on a terminal; nothing at all otherwise."""
        if not self.interactive:
            yield no_progress
            return
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
        ) as bar:
            tasks: dict[str, Any] = {}
            last = [0.0]

            def update(stage: str, done: int, total: int | None) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{description}: {stage}", total=total)
                now = time.monotonic()
                if now - last[0] > 0.1 or (total is not None and done >= total):
                    last[0] = now
                    bar.update(tasks[stage], completed=done, total=total)

            yield update


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


def human_age(when: datetime, now: datetime | None = None) -> str:
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"

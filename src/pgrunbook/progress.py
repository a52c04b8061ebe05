"""Progress of long steps (dump, read-back, restore): the callback types every engine reports to (bars,
notices, migrations), and the helpers around them. Pure: it imports nothing of pgrunbook's, draws
nothing (the terminal's bars and notices are the CLI's, cli/render.py) and is silent by default
(library callers, --json, non-TTY runs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol


class ProgressFn(Protocol):
    """Progress of a long step: `stage` names its bar; `done` of `total` (None: unknown) counted in
    `unit`, bytes by default or a noun such as "rows"; `note` says what is under way right now (during
    a restore's last long index build, which index), so a wait is never a blank bar."""

    def __call__(self, stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None: ...


def no_progress(stage: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
    """The default for library callers and non-TTY runs: silence."""


def draws(progress: ProgressFn) -> bool:
    """Whether ``progress`` shows anything: not `no_progress`, nor a callback that says it draws
    nothing (``draws = False``: one that only readies the output, cli/render.py). Work done only for
    what is drawn (the last backup's size, read as an estimate) is skipped when it does not."""
    return progress is not no_progress and getattr(progress, "draws", True) is not False


class NoticeFn(Protocol):
    """A one-line notice while a step runs, about something the operator may act on now (a backup
    waiting behind another session's lock): `kind` names it for machines ("lock_wait"), `message` is
    the sentence for people, `fields` its facts (JSON-able)."""

    def __call__(self, kind: str, message: str, fields: dict[str, Any], /) -> None: ...


def no_notice(kind: str, message: str, fields: dict[str, Any], /) -> None:
    """The default for library callers: silence (the command line prints notices, or emits them as
    JSON lines on stderr with --json)."""


#: a migration's progress, called as (event, migration name, seconds or None): "start", "ok", "failed"
MigrationProgress = Callable[[str, str, float | None], None]


def no_migration_progress(event: str, name: str, seconds: float | None) -> None:
    """The default for library callers: silence."""


def counted(chunks: Iterable[bytes], progress: ProgressFn, stage: str, total: int | None) -> Iterator[bytes]:
    """``chunks`` passed on unchanged, their bytes so far reported to ``progress`` as ``stage``."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        progress(stage, done, total)
        yield chunk


def with_estimate(progress: ProgressFn, stage: str, expected: int | None, why: str) -> ProgressFn:
    """``progress`` with ``expected`` (bytes) as the total of ``stage`` while the step itself cannot say
    (pg_dump writes an unknown amount; the last backup's size is a good guess), ``why`` as its note;
    the total grows with ``done`` when the guess was short. ``progress`` itself when there is no guess
    or nothing is drawn."""
    if not draws(progress) or not expected:
        return progress
    guess = expected

    def update(name: str, done: int, total: int | None, /, *, unit: str = "bytes", note: str = "") -> None:
        if name == stage and total is None:
            total, note = max(guess, done), note or why
        progress(name, done, total, unit=unit, note=note)

    return update


class Throttle:
    """Whether an update is worth drawing: at most one per ``interval_s`` (a terminal redrawn for every
    megabyte slows the work it shows), but always a stage's end and a changed note (never stale)."""

    def __init__(self, interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._last = float("-inf")
        self._notes: dict[str, str] = {}

    def due(self, stage: str, done: int, total: int | None, note: str = "") -> bool:
        now = self.clock()
        finished = total is not None and done >= total
        if now - self._last > self.interval_s or finished or self._notes.get(stage) != note:
            self._last = now
            self._notes[stage] = note
            return True
        return False

"""When scheduled jobs are due: pure functions of a schedule, the last handled fire time and now.

A schedule is a five-field cron expression (evaluated by croniter in the configured timezone) or
``@every <N>s|m|h`` for short fixed intervals aligned to the epoch (tests, frequent checks).

Missed runs coalesce the way anacron and systemd's ``Persistent=true`` do: after downtime the job runs
once, not once per missed slot. Overlap is the caller's decision, made with ``Slot.overlaps``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from types import ModuleType


def _cron() -> ModuleType:
    """croniter, imported when a cron expression is first read: commands without schedules (a restore
    at 2 a.m.) do not pay for loading it (~15 ms, with dateutil)."""
    import croniter

    return croniter


_EVERY = re.compile(r"^@every\s+(\d+)\s*(s|m|h)$")
_UNIT = {"s": 1, "m": 60, "h": 3600}


class BadSchedule(ValueError):
    """A schedule string that is neither a valid cron expression nor ``@every``, or one that never fires."""


# A valid expression must fire within this many years of any moment: a leap day (``0 0 29 2 *``) fires
# every 4 years, at most 8 across a century year; ``0 0 31 2 *`` (February 31st) never does.
MAX_YEARS_BETWEEN_FIRES = 8
# Where "never fires" is checked from: fixed, so validation does not depend on today's date, and the
# start of a century year's leap gap (2096-03-01 .. 2104-02-29) is covered by the 8 years.
_REFERENCE = datetime(2096, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Schedule:
    text: str
    tz: tzinfo = UTC

    def __post_init__(self) -> None:
        if self.every is None and not self._cron_ok():
            raise BadSchedule(
                f"schedule {self.text!r} is not a five-field cron expression (e.g. '0 2 * * *') or '@every 30s'"
            )
        if self.every is None and not self._fires():
            raise BadSchedule(
                f"schedule {self.text!r} never fires (no such date, e.g. February 31st): "
                "the job would never run; check the day-of-month and month fields"
            )

    def _fires(self) -> bool:
        """True when the expression fires at least once in any ``MAX_YEARS_BETWEEN_FIRES`` years."""
        try:
            it = _cron().croniter(self.text, _REFERENCE, max_years_between_matches=MAX_YEARS_BETWEEN_FIRES)
            nxt = it.get_next(datetime)
        except (_cron().CroniterBadDateError, _cron().CroniterBadCronError, ValueError, KeyError, OverflowError):
            return False
        return bool(nxt - _REFERENCE <= timedelta(days=366 * MAX_YEARS_BETWEEN_FIRES))

    def _cron_ok(self) -> bool:
        if len(self.text.split()) != 5:
            return False
        try:
            _cron().croniter(self.text)
        except (_cron().CroniterBadCronError, ValueError, KeyError):
            return False
        return True

    @property
    def every(self) -> timedelta | None:
        m = _EVERY.match(self.text.strip())
        if not m:
            return None
        seconds = int(m.group(1)) * _UNIT[m.group(2)]
        if seconds <= 0:
            raise BadSchedule(f"schedule {self.text!r}: the interval must be positive")
        return timedelta(seconds=seconds)

    def next_after(self, t: datetime) -> datetime:
        """The first fire time strictly after ``t``."""
        step = self.every
        if step is not None:
            n = int(t.timestamp() // step.total_seconds()) + 1
            return datetime.fromtimestamp(n * step.total_seconds(), UTC)
        nxt = _cron().croniter(self.text, t.astimezone(self.tz)).get_next(datetime)
        return nxt.astimezone(UTC)

    def last_at_or_before(self, t: datetime) -> datetime:
        """The newest fire time at or before ``t``."""
        step = self.every
        if step is not None:
            n = int(t.timestamp() // step.total_seconds())
            return datetime.fromtimestamp(n * step.total_seconds(), UTC)
        local = t.astimezone(self.tz)
        it = _cron().croniter(self.text, local + timedelta(microseconds=1))
        return it.get_prev(datetime).astimezone(UTC)


@dataclass(frozen=True)
class Due:
    fire: datetime  # the slot being run
    missed: int  # earlier slots since the last handled one that coalesced into this run


def due(schedule: Schedule, last_handled: datetime, now: datetime, max_count: int = 1000) -> Due | None:
    """The slot to run now, if any: the newest fire time in (last_handled, now].

    ``missed`` counts the older slots skipped in between (capped at ``max_count``), so the service can
    say "3 runs were missed while pgrunbook serve was down; ran once to catch up".
    """
    first = schedule.next_after(last_handled)
    if first > now:
        return None
    newest = schedule.last_at_or_before(now)
    missed = 0
    t = first
    while t < newest and missed < max_count:
        missed += 1
        t = schedule.next_after(t)
    return Due(newest, missed)

"""Quiet windows: "Mon-Fri 02:00-05:00 Europe/Berlin" — a pure parser and check.

Days are a range or a comma list (Mon-Fri, Sat,Sun, Mon-Sun), or left out for every day ("02:00-05:00",
as cron's ``*``); times are HH:MM in the zone given (an IANA name, default UTC); a window that ends before
it starts runs over midnight (22:00-02:00), and then belongs to the day it starts on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass(frozen=True)
class QuietWindow:
    days: frozenset[int]
    start: time
    end: time
    zone: ZoneInfo
    text: str

    def contains(self, when: datetime) -> bool:
        local = when.astimezone(self.zone)
        t = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            return local.weekday() in self.days and self.start <= t < self.end
        if t >= self.start:
            return local.weekday() in self.days
        return t < self.end and (local - timedelta(days=1)).weekday() in self.days

    def next_opening(self, when: datetime) -> datetime:
        """When the window next opens after ``when`` (aware), in the window's zone: the start time on
        the next of its days whose start lies ahead. A start that falls into a daylight-saving gap is
        read as the clock reads it then (zoneinfo's rule)."""
        local = when.astimezone(self.zone)
        starts = (datetime.combine(local.date() + timedelta(days=n), self.start, tzinfo=self.zone) for n in range(0, 9))
        return next(s for s in starts if s.weekday() in self.days and s > local)


def parse_window(text: str) -> QuietWindow:
    m = re.fullmatch(
        r"\s*(?:([A-Za-z][A-Za-z,\- ]*?)\s+)?(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})(?:\s+(\S+))?\s*", text
    )
    if not m:
        raise ValueError(f"{text!r} is not a quiet window: days (optional), HH:MM-HH:MM, a time zone (optional)")
    days: set[int] = set()
    for part in (m.group(1) or "mon-sun").replace(" ", "").lower().split(","):
        bounds = part.split("-")
        if not all(b[:3] in DAYS and len(b) >= 3 for b in bounds) or len(bounds) > 2:
            raise ValueError(f"{text!r}: unknown day {part!r} (days are Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
        a, b = DAYS.index(bounds[0][:3]), DAYS.index(bounds[-1][:3])
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    h1, m1, h2, m2 = (int(m.group(i)) for i in range(2, 6))
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{text!r}: no such time of day (00:00 to 23:59, and 24:00 for the end of the day)")
    if (h1, m1) == (h2, m2):  # contains() would never be true: every deploy refused as "outside"
        raise ValueError(
            f"{text!r} is empty: it starts and ends at {h1:02d}:{m1:02d}; for whole days write "
            "00:00-24:00, or leave quiet_window out to allow deploys at any time"
        )
    try:
        zone = ZoneInfo(m.group(6) or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{text!r}: unknown time zone {m.group(6)!r}") from None
    end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
    return QuietWindow(frozenset(days), time(h1, m1), end, zone, text.strip())

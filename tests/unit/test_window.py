from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.timespec.window import parse_window


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_spec_example_in_berlin_time() -> None:
    w = parse_window("Mon-Fri 02:00-05:00 Europe/Berlin")
    assert w.contains(at("2026-11-24T01:30"))  # Tue 02:30 in Berlin (UTC+1)
    assert not w.contains(at("2026-11-24T04:30"))  # 05:30 Berlin
    assert not w.contains(at("2026-11-28T01:30"))  # Saturday
    assert w.contains(at("2026-07-14T00:30"))  # summer time: 02:30 Berlin is 00:30 UTC


def test_over_midnight_and_lists() -> None:
    w = parse_window("Fri,Sat 22:00-02:00")
    assert w.contains(at("2026-11-27T23:00"))  # Fri 23:00
    assert w.contains(at("2026-11-29T01:00"))  # Sun 01:00 belongs to Sat's window
    assert not w.contains(at("2026-11-30T01:00"))  # Mon 01:00 would be Sun's window


@pytest.mark.parametrize(
    "bad",
    [
        "whenever",
        "Mon-Fri 2-5",
        "Xyz 02:00-05:00",
        "Mon 25:00-26:00",
        "Mon 02:00-05:00 Mars/Base",
        "Mon 22:00-24:30",  # 24:30 was read as the end of the day
    ],
)
def test_bad_windows_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_window(bad)


@pytest.mark.parametrize("empty", ["Mon-Fri 02:00-02:00 Europe/Berlin", "Sun 00:00-00:00", "Mon 23:59-23:59 UTC"])
def test_a_window_of_no_minutes_is_refused_with_what_to_write(empty: str) -> None:
    """Start == end: contains() is never true, so every deploy was refused as "outside the window" with
    an opening that never admits it. Refused where the config is read, saying what to write instead."""
    with pytest.raises(ValueError, match=r"is empty: it starts and ends at \d\d:\d\d; for whole days write 00:00-24"):
        parse_window(empty)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_every_day_all_day_contains_everything(when: datetime) -> None:
    assert parse_window("Mon-Sun 00:00-24:00 UTC").contains(when)


@pytest.mark.parametrize(
    "window, now, opens",
    [
        ("Sat-Sun 02:00-05:00 UTC", "2026-12-01T04:29", "2026-12-05T02:00+00:00"),  # Tue: Saturday's start
        ("Sat-Sun 02:00-05:00 UTC", "2026-12-05T06:00", "2026-12-06T02:00+00:00"),  # Sat after: Sunday's
        ("Sat-Sun 02:00-05:00 UTC", "2026-12-06T05:00", "2026-12-12T02:00+00:00"),  # Sun at its end: next Sat
        ("Fri,Sat 22:00-02:00", "2026-11-29T03:00", "2026-12-04T22:00+00:00"),  # Sun 03:00: Friday's
        ("Mon-Fri 02:00-05:00 Europe/Berlin", "2026-11-24T04:30", "2026-11-25T02:00+01:00"),  # Tue 05:30 Berlin
        ("Mon-Fri 02:00-05:00 Europe/Berlin", "2026-07-17T05:00", "2026-07-20T02:00+02:00"),  # Fri, summer time
    ],
)
def test_next_opening_of_a_window(window: str, now: str, opens: str) -> None:
    """trial7 #18: deploy outside the window says when it next opens (in the window's own zone)."""
    w = parse_window(window)
    assert not w.contains(at(now))
    got = w.next_opening(at(now))
    assert got == datetime.fromisoformat(opens) and got.utcoffset() == datetime.fromisoformat(opens).utcoffset()
    assert w.contains(got)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.sets(st.sampled_from(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]), min_size=1),
    st.integers(0, 23),
    st.integers(0, 23),
)
def test_the_next_opening_is_the_first_moment_inside(when: datetime, days: set[str], h1: int, h2: int) -> None:
    """Any UTC window, any moment outside it: the next opening is inside, ahead, within 8 days, and the
    minute before it is outside (no earlier opening was skipped)."""
    w = parse_window(f"{','.join(sorted(days))} {h1:02d}:00-{h2:02d}:30 UTC")
    if w.contains(when):
        return
    got = w.next_opening(when)
    assert when < got <= when + timedelta(days=8)
    assert w.contains(got) and not w.contains(got - timedelta(minutes=1))


@pytest.mark.parametrize(
    ("window", "inside", "outside"),
    [
        (
            "10:00-12:00",
            ["2026-11-30T10:00", "2026-12-05T11:59", "2026-12-06T10:30"],
            ["2026-12-06T12:00", "2026-12-01T09:59"],
        ),
        (
            "10:00-12:00 Europe/Berlin",
            ["2026-12-05T09:30", "2026-07-12T08:30"],
            ["2026-12-05T11:30", "2026-07-12T10:30"],
        ),
        (
            "22:00-02:00",
            ["2026-12-05T23:00", "2026-12-07T01:30", "2026-11-30T00:10"],
            ["2026-12-05T02:00", "2026-12-05T21:59"],
        ),
        ("00:00-24:00 UTC", ["2026-12-05T00:00", "2026-12-06T23:59"], []),
    ],
)
def test_a_window_without_days_is_every_day(window: str, inside: list[str], outside: list[str]) -> None:
    """trial #3: "10:00-12:00" was refused for its shape. Days left out mean every day (cron's `*`),
    the zone left out UTC, as with days; every day of the week is checked, weekends included."""
    w = parse_window(window)
    assert w.days == frozenset(range(7))
    assert all(w.contains(at(t)) for t in inside)
    assert not any(w.contains(at(t)) for t in outside)


def test_the_next_opening_of_a_window_without_days_is_the_next_start() -> None:
    w = parse_window("10:00-12:00")
    assert w.next_opening(at("2026-12-05T12:00")) == at("2026-12-06T10:00")  # Saturday to Sunday
    assert w.next_opening(at("2026-12-05T09:00")) == at("2026-12-05T10:00")


@pytest.mark.parametrize(
    "bad", ["10:00", "10:00-", "daily 10:00-12:00", "Europe/Berlin 10:00-12:00", "10:00-12:00 Mars/X"]
)
def test_a_window_without_days_is_still_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_window(bad)

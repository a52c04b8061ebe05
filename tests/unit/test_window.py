from __future__ import annotations

from datetime import UTC, datetime

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
    "bad", ["whenever", "Mon-Fri 2-5", "Xyz 02:00-05:00", "Mon 25:00-26:00", "Mon 02:00-05:00 Mars/Base"]
)
def test_bad_windows_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_window(bad)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_every_day_all_day_contains_everything(when: datetime) -> None:
    assert parse_window("Mon-Sun 00:00-24:00 UTC").contains(when)

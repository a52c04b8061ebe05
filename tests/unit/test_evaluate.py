"""evaluate() is pure: a table of observations and the verdicts they give, and properties over ages
and clock skew (backups or drills dated in the future never count as fresh; #20 Kind 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.monitor.evaluate import CLOCK_SKEW_TOLERANCE, Limits, Observed, evaluate, newest_trusted, overall

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
ORDER = {"ok": 0, "warning": 1, "critical": 2}


def seen(age_h: float | None, drill_d: float | None = 1, *, more_h: tuple[float, ...] = (), **kw: Any) -> Observed:
    """Backups ``age_h`` (and ``more_h``) hours old: negative ages are dated in the future."""
    ages = ((age_h,) if age_h is not None else ()) + more_h
    return Observed(
        tuple(NOW - timedelta(hours=a) for a in ages),
        (NOW - timedelta(days=drill_d),) if drill_d is not None else (),
        len(ages),
        0,
        **kw,
    )


def finding(o: Observed, name: str) -> tuple[str, str] | None:
    return next(((f.status, f.detail) for f in evaluate(NOW, o, Limits()) if f.name == name), None)


def test_no_backup_is_critical_fresh_is_ok_then_ages() -> None:
    limits = Limits()
    assert overall(evaluate(NOW, seen(None), limits)) == "critical"
    assert overall(evaluate(NOW, seen(1), limits)) == "ok"
    assert overall(evaluate(NOW, seen(30), limits)) == "warning"
    assert overall(evaluate(NOW, seen(50), limits)) == "critical"


def test_drill_retention_migrations_storage() -> None:
    assert overall(evaluate(NOW, seen(1, drill_d=None), Limits())) == "warning"
    assert overall(evaluate(NOW, seen(1, drill_d=9), Limits())) == "warning"
    assert overall(evaluate(NOW, Observed((NOW,), (NOW,), 9, 2), Limits())) == "warning"
    assert overall(evaluate(NOW, seen(1, failed_migrations=["03_x"]), Limits())) == "critical"
    assert overall(evaluate(NOW, seen(1, storage_error="bucket gone"), Limits())) == "critical"


def test_a_lost_database_is_critical_an_unreachable_one_a_warning() -> None:
    """The server says the database does not exist: the app has nothing to run on (critical, with the
    recovery command); a refused connection may be passing (a warning, as before)."""
    lost = seen(1, database_missing="database 'shop' does not exist; if it was lost, pgrunbook restore …")
    assert overall(evaluate(NOW, lost, Limits())) == "critical"
    assert finding(lost, "database") == ("critical", lost.database_missing)
    assert finding(lost, "migrations") is None  # not also "not checked": one finding, the real one
    down = seen(1, database_error="cannot connect: connection refused")
    assert overall(evaluate(NOW, down, Limits())) == "warning"
    assert finding(down, "database") is None


# (backup ages in hours, negative = in the future; expected freshness; expected clock finding)
CLOCK_TABLE = [
    ((-24 * 365 * 20,), "critical", "warning"),  # the example: one backup dated decades ahead
    ((-24 * 365 * 20, 60), "critical", "warning"),  # a future one does not hide the real, stale one
    ((-3, 1), "ok", "warning"),  # a real fresh one still counts; the future one is flagged
    ((-0.05, 30), "ok", None),  # three minutes ahead: within NTP-grade tolerance, counts
    ((1,), "ok", None),
    ((30,), "warning", None),
]


@pytest.mark.parametrize(("ages", "freshness", "clock"), CLOCK_TABLE)
def test_backups_dated_in_the_future_are_flagged_and_not_fresh(
    ages: tuple[float, ...], freshness: str, clock: str | None
) -> None:
    o = seen(ages[0], more_h=ages[1:])
    fresh = finding(o, "backup freshness")
    assert fresh is not None and fresh[0] == freshness
    flagged = finding(o, "clock")
    assert (flagged[0] if flagged else None) == clock
    if flagged:
        assert "in the future" in flagged[1] and "do not count as fresh" in flagged[1]


def test_a_drill_dated_in_the_future_does_not_count_either() -> None:
    o = seen(1, drill_d=-400)  # a drill "400 days from now"
    drill = finding(o, "restore drill")
    assert drill == ("warning", "no successful verify --drill yet")
    clock = finding(o, "clock")
    assert clock is not None and "1 drill(s)" in clock[1]


ages_h = st.floats(-24 * 365 * 50, 24 * 365 * 5, allow_nan=False)


@given(st.lists(ages_h, min_size=1, max_size=6), ages_h)
def test_adding_a_backup_from_the_future_never_makes_freshness_better(ages: list[float], future_by_h: float) -> None:
    """Whatever the real backups, one more dated beyond the tolerance leaves freshness as it was."""
    ahead = -abs(future_by_h) - CLOCK_SKEW_TOLERANCE.total_seconds() / 3600 - 0.01
    base, more = seen(ages[0], more_h=tuple(ages[1:])), seen(ages[0], more_h=(*ages[1:], ahead))
    assert finding(base, "backup freshness") == finding(more, "backup freshness")
    assert finding(more, "clock") is not None and finding(more, "clock")[0] == "warning"  # type: ignore[index]


@given(st.lists(ages_h, max_size=6))
def test_the_newest_trusted_time_is_never_in_the_future(ages: list[float]) -> None:
    times = [NOW - timedelta(hours=a) for a in ages]
    newest = newest_trusted(times, NOW)
    assert newest is None or newest <= NOW + CLOCK_SKEW_TOLERANCE
    assert newest == max((t for t in times if t <= NOW + CLOCK_SKEW_TOLERANCE), default=None)


@given(st.floats(0, 1000), st.floats(0, 1000))
def test_older_is_never_better(a: float, b: float) -> None:
    younger, older = sorted((a, b))
    verdict = [ORDER[overall(evaluate(NOW, seen(age), Limits()))] for age in (younger, older)]
    assert verdict[0] <= verdict[1]


@pytest.mark.parametrize("interrupted", [[], ["restore 20261201T014641Z-restore-abc123 at step restore"]])
def test_a_killed_run_is_a_warning_of_check_until_settled(interrupted: list[str]) -> None:
    """A re-trial's finding: only doctor and runs told of a killed in-place restore or deploy; check (and
    so serve, /metrics and the notifications) said nothing while maintenance stayed on."""
    seen = Observed((NOW,), (NOW,), 1, 0, interrupted_runs=interrupted)
    found = {f.name: f for f in evaluate(NOW, seen, Limits())}
    if not interrupted:
        assert "interrupted runs" not in found and overall(list(found.values())) == "ok"
        return
    f = found["interrupted runs"]
    assert f.status == "warning" and interrupted[0] in f.detail and "pgrunbook runs" in f.detail
    assert overall(list(found.values())) == "warning"


def test_past_retention_is_a_warning_only_when_overdue() -> None:
    """trial11 F19: backups past retention that the next scheduled prune removes are no warning."""
    due = NOW + timedelta(hours=15)
    waiting = Observed((NOW,), (NOW,), 3, 2, prune_overdue=0, prune_due=due)
    assert finding(waiting, "retention") == (
        "ok",
        "2 backup(s) past retention since a newer backup; the next scheduled prune removes them "
        "(a warning if still there at 2026-11-25 03:00 UTC)",
    )
    assert overall(evaluate(NOW, waiting, Limits())) == "ok"
    late = Observed((NOW,), (NOW,), 3, 2, prune_overdue=1)
    status, detail = finding(late, "retention") or ("", "")
    assert status == "warning" and detail.startswith("1 backup(s) past retention for longer than the prune schedule")
    assert "(2 in all)" in detail

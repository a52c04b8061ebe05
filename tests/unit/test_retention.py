"""Retention is restic's ApplyPolicy (internal/restic/snapshot_policy.go) plus pgrunbook's protections."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.backup.retention import BackupInfo, Policy, apply_policy, plan_retention


def b(ts: str, label: str = "scheduled", verified: bool = False) -> BackupInfo:
    when = datetime.fromisoformat(ts).replace(tzinfo=UTC)
    return BackupInfo(f"{when:%Y%m%dT%H%M%SZ}-{label}", when, label, verified)


def kept(decisions: list) -> list[str]:
    return [d.id for d in decisions if d.action == "keep"]


def test_daily_keeps_newest_per_day_and_counts_only_days_with_backups() -> None:
    backups = [
        b("2026-11-24T02:00"),
        b("2026-11-24T14:00"),
        b("2026-11-22T02:00"),
        b("2026-11-20T02:00"),
        b("2026-11-19T02:00"),
    ]
    decisions = apply_policy(backups, Policy(daily=2, weekly=0, monthly=0), UTC)
    # the 23rd and 21st have no backup: they do not use up the count
    assert kept(decisions) == ["20261124T140000Z-scheduled", "20261122T020000Z-scheduled"]
    assert [d.action for d in decisions] == ["keep", "remove", "keep", "remove", "remove"]


def test_oldest_is_kept_while_a_rule_has_count_left() -> None:
    backups = [b("2026-11-24T14:00"), b("2026-11-24T02:00")]
    decisions = apply_policy(backups, Policy(daily=7, weekly=0, monthly=0), UTC)
    assert kept(decisions) == [x.id for x in backups]
    assert "oldest backup" in decisions[1].reasons[0]


def test_weekly_uses_iso_weeks_across_a_year_boundary() -> None:
    # 2026-12-31 (Thu) and 2027-01-03 (Sun) are both in ISO week 2026-W53
    backups = [b("2027-01-03T02:00"), b("2026-12-31T02:00"), b("2026-12-27T02:00"), b("2026-12-20T02:00")]
    decisions = apply_policy(backups, Policy(daily=0, weekly=2, monthly=0), UTC)
    assert kept(decisions) == ["20270103T020000Z-scheduled", "20261227T020000Z-scheduled"]
    assert decisions[0].reasons == ("weekly 2026-W53",)


def test_periods_are_taken_in_the_configured_timezone() -> None:
    # 23:30 UTC on the 23rd is already the 24th in Berlin: one day there, two days in UTC
    backups = [b("2026-11-24T08:00"), b("2026-11-23T23:30")]
    utc = apply_policy(backups, Policy(daily=1, weekly=0, monthly=0), UTC)
    berlin = apply_policy(backups, Policy(daily=1, weekly=0, monthly=0), ZoneInfo("Europe/Berlin"))
    assert kept(utc) == ["20261124T080000Z-scheduled"]
    assert kept(berlin) == ["20261124T080000Z-scheduled"]
    assert utc[1].action == "remove" and berlin[1].action == "remove"
    two = apply_policy(backups, Policy(daily=2, weekly=0, monthly=0), ZoneInfo("Europe/Berlin"))
    assert "oldest backup" in two[1].reasons[0]  # same Berlin day: kept only as the oldest with count left


def test_default_policy_over_a_year_of_nightly_backups() -> None:
    start = datetime(2026, 1, 1, 2, tzinfo=UTC)
    backups = [BackupInfo(f"n{i:03d}", start + timedelta(days=i)) for i in range(365)]
    decisions = apply_policy(backups, Policy(7, 4, 6), UTC)
    keep = kept(decisions)
    # 7 dailies, weeklies reach back 4 ISO weeks, monthlies 6 months; some overlap
    assert keep[:7] == [f"n{i:03d}" for i in range(364, 357, -1)]
    assert len(keep) <= 17
    months = {(start + timedelta(days=int(i[1:]))).month for i in keep}
    assert months == {7, 8, 9, 10, 11, 12}


def test_negative_one_keeps_every_period() -> None:
    backups = [b(f"2026-11-{d:02d}T02:00") for d in range(1, 25)]
    assert len(kept(apply_policy(backups, Policy(-1, 0, 0), UTC))) == 24


def test_empty_policy_keeps_everything_like_restic() -> None:
    backups = [b("2026-11-24T02:00"), b("2026-11-23T02:00")]
    assert kept(apply_policy(backups, Policy(0, 0, 0), UTC)) == [x.id for x in backups]


def test_newest_verified_and_newest_pre_deploy_are_never_removed() -> None:
    backups = [
        b("2026-11-24T14:00"),
        b("2026-11-24T10:00", "pre-deploy"),
        b("2026-11-24T08:00", verified=True),
        b("2026-11-24T06:00", "pre-deploy"),
        b("2026-11-23T02:00"),
    ]
    decisions = {d.id: d for d in plan_retention(backups, Policy(daily=1, weekly=0, monthly=0), UTC)}
    assert decisions["20261124T100000Z-pre-deploy"].action == "keep"
    assert "newest pre-deploy backup (never removed)" in decisions["20261124T100000Z-pre-deploy"].reasons
    assert decisions["20261124T080000Z-scheduled"].action == "keep"
    assert decisions["20261124T060000Z-pre-deploy"].action == "remove"
    assert decisions["20261123T020000Z-scheduled"].action == "remove"


def test_the_newest_drilled_backup_is_never_removed() -> None:
    """trial7 finding 10: prune removed the only backup with a successful drill (a newer checksum
    verification protected another one); monitoring then had no successful drill at all."""
    drilled = BackupInfo("20261123T020000Z-pre-deploy", datetime(2026, 11, 23, 2, tzinfo=UTC), "scheduled", True, True)
    backups = [b("2026-11-24T14:00", verified=True), drilled, b("2026-11-22T02:00", "pre-deploy")]
    decisions = {d.id: d for d in plan_retention(backups, Policy(daily=1, weekly=0, monthly=0), UTC)}
    assert decisions[drilled.id].action == "keep"
    assert decisions[drilled.id].reasons == ("newest drilled backup (never removed)",)
    assert "newest verified backup (never removed)" in decisions["20261124T140000Z-scheduled"].reasons


def test_the_newest_pre_restore_backup_is_never_removed() -> None:
    """trial11 F12: the pre-restore backup an in-place restore named as its way back was removed by the
    next prune (a newer scheduled backup took its day)."""
    backups = [
        b("2026-11-25T02:00", verified=True),
        b("2026-11-24T13:00", "pre-restore"),
        b("2026-11-24T12:00", "pre-restore"),
        b("2026-11-24T02:00"),
    ]
    decisions = {d.id: d for d in plan_retention(backups, Policy(daily=1, weekly=0, monthly=0), UTC)}
    assert decisions["20261124T130000Z-pre-restore"].reasons == ("newest pre-restore backup (never removed)",)
    assert decisions["20261124T120000Z-pre-restore"].action == "remove"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_never_removes_the_newest_pre_restore(data: st.DataObject) -> None:
    backups = data.draw(backup_lists)
    policy, tz = data.draw(policies), data.draw(zones)
    pre = [x for x in backups if x.label == "pre-restore"]
    if pre:
        assert max(pre, key=lambda x: (x.created_at, x.id)).id in kept(plan_retention(backups, policy, tz))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_never_removes_the_newest_drilled(data: st.DataObject) -> None:
    backups = data.draw(backup_lists)
    policy, tz = data.draw(policies), data.draw(zones)
    drilled = [x for x in backups if x.drilled]
    if drilled:
        newest = max(drilled, key=lambda x: (x.created_at, x.id))
        assert newest.id in kept(plan_retention(backups, policy, tz))


# --- properties ---------------------------------------------------------------------------------------

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
backup_lists = st.lists(
    st.builds(
        lambda minutes, label, verified, drilled: BackupInfo(
            f"{(EPOCH + timedelta(minutes=minutes)):%Y%m%dT%H%M%SZ}-{label}",
            EPOCH + timedelta(minutes=minutes),
            label,
            verified or drilled,  # a drilled backup's verifications passed
            drilled,
        ),
        st.integers(0, 60 * 24 * 800),
        st.sampled_from(["scheduled", "manual", "pre-deploy", "pre-restore"]),
        st.booleans(),
        st.booleans(),
    ),
    max_size=60,
    unique_by=lambda x: x.id,
)
policies = st.builds(Policy, st.integers(0, 10), st.integers(0, 6), st.integers(0, 8))
zones = st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Kolkata")])


@settings(max_examples=300, deadline=None)
@given(backup_lists, policies, zones, st.randoms())
def test_deterministic_whatever_the_listing_order(backups, policy, tz, rnd: random.Random) -> None:
    shuffled = list(backups)
    rnd.shuffle(shuffled)
    assert plan_retention(backups, policy, tz) == plan_retention(shuffled, policy, tz)


@settings(max_examples=300, deadline=None)
@given(backup_lists, policies, zones)
def test_idempotent(backups, policy, tz) -> None:
    first = kept(plan_retention(backups, policy, tz))
    survivors = [x for x in backups if x.id in first]
    assert kept(plan_retention(survivors, policy, tz)) == first


@settings(max_examples=300, deadline=None)
@given(backup_lists, policies, zones)
def test_never_removes_the_newest(backups, policy, tz) -> None:
    if backups:
        newest = max(backups, key=lambda x: (x.created_at, x.id))
        assert newest.id in kept(plan_retention(backups, policy, tz))


@settings(max_examples=300, deadline=None)
@given(backup_lists, policies, zones)
def test_keeps_at_most_the_sum_of_counts(backups, policy, tz) -> None:
    if policy.empty:
        return
    assert len(kept(apply_policy(backups, policy, tz))) <= policy.daily + policy.weekly + policy.monthly
    # the never-remove rules add at most one each: the newest verified, the newest drilled, the newest
    # pre-deploy and (since session 11) the newest pre-restore backup
    assert len(kept(plan_retention(backups, policy, tz))) <= policy.daily + policy.weekly + policy.monthly + 4


@settings(max_examples=300, deadline=None)
@given(backup_lists, policies, zones)
def test_union_is_a_superset_of_each_single_rule(backups, policy, tz) -> None:
    combined = set(kept(plan_retention(backups, policy, tz)))
    for single in (Policy(policy.daily, 0, 0), Policy(0, policy.weekly, 0), Policy(0, 0, policy.monthly)):
        if not single.empty:
            assert set(kept(apply_policy(backups, single, tz))) <= combined


@settings(max_examples=200, deadline=None)
@given(backup_lists, policies, zones)
def test_every_decision_has_a_reason(backups, policy, tz) -> None:
    decisions = plan_retention(backups, policy, tz)
    assert sorted(d.id for d in decisions) == sorted(x.id for x in backups)
    assert all(d.reasons for d in decisions)

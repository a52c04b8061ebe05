"""The pure parts of serve: when a job is due (cron and @every, missed slots coalesced), the scheduler's
overlap and catch-up decisions on a controlled clock, and the status page's retention columns."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.backup.retention import Decision
from pgrunbook.config import Config
from pgrunbook.monitor.page import BackupRow, EnvironmentView, backup_rows, render_page
from pgrunbook.monitor.schedule import Job
from pgrunbook.monitor.scheduler import JobResult, Scheduler
from pgrunbook.timespec.cron import BadSchedule, Schedule, due

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
schedules = st.sampled_from(["0 2 * * *", "*/15 * * * *", "30 3 * * 0", "0 0 1 * *", "@every 7s", "@every 2h"])


@pytest.mark.parametrize("text", ["0 2 * *", "61 * * * *", "@every 0s", "@every 5x", "daily", ""])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(BadSchedule):
        Schedule(text)


@settings(max_examples=150, deadline=None)
@given(schedules, times, st.integers(min_value=0, max_value=90 * 24 * 3600))
def test_due_is_the_newest_slot_and_counts_the_rest(text: str, last: datetime, gap_s: int) -> None:
    s = Schedule(text)
    now = last + timedelta(seconds=gap_s)
    d = due(s, last, now)
    first = s.next_after(last)
    if first > now:
        assert d is None
        return
    assert d is not None
    assert last < d.fire <= now and s.next_after(d.fire) > now  # the newest slot, never a future one
    slots, t = 0, first
    while t <= now and slots < 2000:
        slots, t = slots + 1, s.next_after(t)
    assert d.missed == min(slots - 1, 1000)  # every older slot coalesced into this one run


def test_cron_is_evaluated_in_the_configured_timezone() -> None:
    berlin = Schedule("0 2 * * *", ZoneInfo("Europe/Berlin"))
    assert berlin.next_after(T0) == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 02:00 CET = 01:00 UTC
    assert Schedule("@every 30s").next_after(T0) == T0 + timedelta(seconds=30)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _scheduler(tmp_path: Path, runner, cron: str = "@every 10s", catch_up: bool = True) -> tuple[Scheduler, Clock]:  # type: ignore[no-untyped-def]
    config = Config.model_validate({"serve": {"state_path": str(tmp_path / "state.json"), "catch_up": catch_up}})
    config.root = tmp_path
    clock = Clock()
    job = Job("backup", "default", cron, ["backup", "create"])
    return Scheduler(config, runner, clock=clock, jobs=[job]), clock


def test_a_running_job_is_not_started_twice(tmp_path: Path) -> None:
    release, started = threading.Event(), []

    def slow(job: Job) -> JobResult:  # the job itself, run in the scheduler's own thread
        started.append(job.name)
        release.wait(10)
        return JobResult(True, "done", 1.0)

    sched, clock = _scheduler(tmp_path, slow)
    sched.tick()  # first sight: the schedule starts now
    clock.now += timedelta(seconds=10)
    sched.tick()
    assert started == ["backup"]
    clock.now += timedelta(seconds=10)
    sched.tick()  # still running: skipped
    assert started == ["backup"] and sched.state["default/backup"].skipped_overlap == 1
    assert [e.what for e in sched.events] == ["started", "skipped (overlap)"]
    release.set()
    assert sched.wait_idle(10)
    clock.now += timedelta(seconds=10)
    sched.tick()
    sched.wait_idle(10)
    assert started == ["backup", "backup"] and sched.state["default/backup"].runs == 2


def test_missed_slots_run_once_or_not_at_all(tmp_path: Path) -> None:
    ran: list[str] = []

    def quick(job: Job) -> JobResult:
        ran.append(job.name)
        return JobResult(False, "boom", 0.1)

    sched, clock = _scheduler(tmp_path, quick, cron="0 2 * * *")
    sched.tick()
    clock.now += timedelta(days=3)  # three 02:00 slots pass while nothing ticks
    sched.tick()
    sched.wait_idle(5)
    assert ran == ["backup"] and sched.state["default/backup"].missed == 3
    assert sched.state["default/backup"].last_outcome == "failed"
    # the state survives a restart: nothing more is due until the next slot
    again, clock2 = _scheduler(tmp_path, quick, cron="0 2 * * *")
    clock2.now = clock.now
    again.tick()
    assert ran == ["backup"] and again.state["default/backup"].failures == 1

    skip, clock3 = _scheduler(tmp_path / "b", quick, cron="0 2 * * *", catch_up=False)
    skip.tick()
    clock3.now += timedelta(days=3)
    skip.tick()
    assert ran == ["backup"] and skip.events[-1].what == "missed"


def test_page_shows_buckets_and_decisions() -> None:
    from pgrunbook.backup.manifest import Manifest

    def manifest(i: int, label: str) -> Manifest:
        at = T0 - timedelta(days=i)
        return Manifest.model_validate(
            {
                "id": f"b{i}",
                "environment": "default",
                "database": "app",
                "server_version": "15",
                "pg_dump_version": "15",
                "compression": "zstd",
                "file": "db.dump.zst",
                "size": 1_500_000 * (i + 1),
                "sha256": "0" * 64,
                "started_at": at,
                "finished_at": at,
                "duration_s": 2.5,
                "label": label,
                "migration_head": None,
                "tables": [],
                "tool_version": "x",
                "restore_command": "x",
            }
        )

    manifests = [manifest(0, "scheduled"), manifest(1, "pre-deploy"), manifest(2, "scheduled")]
    decisions = [
        Decision("b0", "keep", ("daily 2026-11-24", "weekly 2026-W48")),
        Decision("b1", "keep", ("newest pre-deploy backup (never removed)",)),
        Decision("b2", "remove", ("not needed by any rule",)),
    ]
    rows = backup_rows(manifests, decisions)
    assert rows[0].buckets == {"daily": "2026-11-24", "weekly": "2026-W48"} and rows[0].other_reasons == []
    assert rows[1].buckets == {} and rows[1].other_reasons == ["newest pre-deploy backup (never removed)"]
    assert rows[2].action == "remove" and rows[2].buckets == {}
    view = EnvironmentView("prod <&>", None, "daily 7", backups=rows)
    html = render_page("shop", "ok", [view], [], T0)
    assert "prod &lt;&amp;&gt;" in html and "<svg" in html and "<script" not in html
    assert all(f'id="backup-b{i}"' in html for i in range(3)) and "2026-W48" in html and "4.5 MB" in html


def test_timeline_of_one_backup_renders() -> None:
    from pgrunbook.monitor.page import timeline_svg

    svg = timeline_svg([BackupRow("b", T0, 10, 1.0, "manual", True, "keep", {}, [])], "one")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")


def test_every_event_reaches_the_log_though_the_page_keeps_the_recent_ones(tmp_path: Path) -> None:
    seen: list[str] = []
    sched, clock = _scheduler(tmp_path, lambda job: JobResult(False, "no", 0.0))
    sched.on_event = lambda e: seen.append(e.what)
    sched.tick()
    for _ in range(150):  # each slot: started, then failed
        clock.now += timedelta(seconds=10)
        sched.tick()
        assert sched.wait_idle(5)
    assert len(seen) == 300 and seen[-2:] == ["started", "failed"]
    assert len(sched.events) == 200 and sched.state["default/backup"].failures == 150

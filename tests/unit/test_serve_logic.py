"""The pure parts of serve: when a job is due (cron and @every, missed slots coalesced), the scheduler's
overlap and catch-up decisions on a controlled clock, and the status page's retention columns."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
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


# --- #20 Kind 2: the scheduler survives every single failure ---------------------------------------


class Mono:
    """A monotonic clock the test moves: backoff waits are measured on it, not on the wall clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    """A job that succeeds and records the scheduler's clock each time it runs."""

    def __init__(self, at: list[datetime]) -> None:
        self.at = at
        self.clock: Clock | None = None

    def __call__(self, job: Job) -> JobResult:
        assert self.clock is not None
        self.at.append(self.clock.now)
        return JobResult(True, "ok", 0.0)


def _observed(tmp_path: Path, runner, cron: str = "@every 10s", **serve: object):  # type: ignore[no-untyped-def]
    """A scheduler on controlled clocks that records every problem it reports."""
    config = Config.model_validate({"serve": {"state_path": str(tmp_path / "state" / "serve.json"), **serve}})
    config.root = tmp_path
    clock, mono, problems = Clock(), Mono(), []
    if isinstance(runner, Recorder):
        runner.clock = clock
    job = Job("backup", "default", cron, ["backup", "create"])
    sched = Scheduler(
        config,
        runner,
        clock=clock,
        jobs=[job],
        monotonic=mono,
        on_problem=lambda key, message: problems.append((key, message)),
    )
    return sched, clock, mono, problems


def _advance(sched: Scheduler, clock: Clock, mono: Mono, seconds: float) -> None:
    clock.now += timedelta(seconds=seconds)
    mono.t += seconds
    sched.tick()
    assert sched.wait_idle(10)


def test_a_failed_state_save_does_not_stop_the_schedule_and_is_retried_with_backoff(tmp_path: Path) -> None:
    """The issue's example: one failed save killed the scheduler thread for good. Here the state folder
    is replaced by a file (a real ENOTDIR from the OS on every save) while jobs keep being due."""
    ran: list[datetime] = []
    sched, clock, mono, problems = _observed(tmp_path, Recorder(ran))
    sched.tick()
    state_dir = tmp_path / "state"
    for f in state_dir.iterdir():
        f.unlink()
    state_dir.rmdir()
    state_dir.write_text("not a folder")  # every save now fails in the OS
    for _ in range(6):
        _advance(sched, clock, mono, 10)
    assert len(ran) == 6  # every slot ran although no save succeeded
    h = sched.health
    assert h.save_failing >= 2 and h.save_error and str(tmp_path / "state" / "serve.json") in h.save_error
    assert "the schedule goes on from memory" in h.save_error
    assert problems == [("state file", h.save_error)] or problems[0][0] == "state file"  # reported once
    assert len([p for p in problems if p[1] is not None]) == 1
    # backoff: one second after a failure nothing is retried; the attempts spread out
    failing = h.save_failing
    mono.t += 0.5
    sched.tick()
    assert sched.health.save_failing == failing
    # the disk is back: the next attempt after the backoff saves, and the recovery is reported
    state_dir.unlink()
    _advance(sched, clock, mono, 70)
    assert sched.health.save_failing == 0 and sched.health.save_error is None
    assert problems[-1] == ("state file", None)
    assert json.loads((state_dir / "serve.json").read_text())["default/backup"]["runs"] == 7


def test_too_many_open_files_during_a_save_is_survived(tmp_path: Path) -> None:
    """A real EMFILE: the open-files limit lowered and filled in this process, then a save."""
    import resource

    sched, clock, mono, problems = _observed(tmp_path, lambda job: JobResult(True, "ok", 0.1), cron="0 2 * * *")
    sched.tick()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        clock.now += timedelta(seconds=5)
        mono.t += 5
        sched.tick()  # the save fails with EMFILE; the tick itself completes
        assert sched.health.save_error and "Too many open files" in sched.health.save_error
        assert sched.health.ticks == 2
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    _advance(sched, clock, mono, 120)
    assert sched.health.save_error is None and problems[-1] == ("state file", None)


def test_one_job_that_cannot_be_scheduled_does_not_stop_the_others(tmp_path: Path) -> None:
    """A schedule that raises when evaluated (a stand-in for any bug or library error in one job's
    iteration) is recorded for that job and retried with backoff; the other job keeps its slots."""
    ran: list[str] = []
    config = Config.model_validate({"serve": {"state_path": str(tmp_path / "s.json")}})
    config.root = tmp_path
    clock, mono, problems = Clock(), Mono(), []
    jobs = [Job("backup", "default", "@every 10s", ["b"]), Job("prune", "default", "@every 10s", ["p"])]
    sched = Scheduler(
        config,
        lambda job: JobResult(True, "ok", 0.0) if not ran.append(job.name) else JobResult(False, "", 0),  # type: ignore[func-returns-value]
        clock=clock,
        jobs=jobs,
        monotonic=mono,
        on_problem=lambda key, message: problems.append((key, message)),
    )

    class Broken:
        def next_after(self, t: datetime) -> datetime:
            raise RuntimeError("cannot compute the next slot")

        last_at_or_before = next_after

    good = sched._schedules["default/prune"]
    sched._schedules["default/prune"] = Broken()  # type: ignore[assignment]
    sched.tick()
    for _ in range(50):  # a tick a second for 50 s
        _advance(sched, clock, mono, 1)
    assert ran.count("backup") == 5 and "prune" not in ran
    st_ = sched.state["default/prune"]
    # backoff: tried after 1, 2, 4, 8, 16 s … not 50 times
    assert st_.error and "cannot compute the next slot" in st_.error and 3 <= st_.errors <= 6
    assert [p[0] for p in problems] == ["default/prune"]
    sched._schedules["default/prune"] = good
    _advance(sched, clock, mono, 400)  # past the backoff
    _advance(sched, clock, mono, 10)
    assert "prune" in ran and sched.state["default/prune"].error is None and problems[-1] == ("default/prune", None)


def test_a_callback_that_raises_does_not_stop_the_scheduler(tmp_path: Path) -> None:
    sched, clock, mono, _ = _observed(tmp_path, lambda job: JobResult(False, "boom", 0.0))

    def broken(*args: object) -> None:
        raise OSError("notification channel exploded")

    sched.on_finish = broken
    sched.on_event = broken
    sched.tick()
    for _ in range(3):
        _advance(sched, clock, mono, 10)
    assert sched.state["default/backup"].runs == 3 and sched.health.ticks == 4


def test_run_forever_outlives_an_iteration_that_raises(tmp_path: Path) -> None:
    """Even an error outside any job (here: the clock itself raising twice) only delays the loop."""
    sched, clock, _, problems = _observed(tmp_path, lambda job: JobResult(True, "ok", 0.0))
    calls = {"n": 0}

    def flaky() -> datetime:
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise OSError("clock_gettime failed")
        return clock.now

    sched.clock = flaky
    stop = threading.Event()
    t = threading.Thread(target=sched.run_forever, args=(stop, 0.01), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while sched.health.ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(5)
    assert sched.health.ticks >= 3 and sched.health.tick_errors == 2 and not t.is_alive()
    assert any(key == "scheduler" and "clock_gettime failed" in (m or "") for key, m in problems)


def test_a_failed_job_is_retried_with_backoff_until_its_next_slot(tmp_path: Path) -> None:
    attempts: list[datetime] = []

    def failing(job: Job) -> JobResult:
        attempts.append(clock.now)
        return JobResult(False, "server closed the connection", 0.0)

    sched, clock, mono, _ = _observed(tmp_path, failing, cron="0 2 * * *", retries=3, retry_backoff_s=60)
    clock.now = datetime(2026, 11, 24, 1, 59, 55, tzinfo=UTC)
    sched.tick()
    for _ in range(60 * 20):  # twenty minutes, a tick every second
        clock.now += timedelta(seconds=1)
        mono.t += 1
        sched.tick()
        sched.wait_idle(5)
    gaps = [round((b - a).total_seconds()) for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 4 and gaps == [60, 120, 240]  # the run, then 3 retries, each wait doubled
    assert [e.what for e in sched.events].count("retry") == 3
    assert sched.state["default/backup"].retry_at is None  # retries used up: the next slot is next


def test_the_clock_stepping_back_never_leaves_a_slot_in_the_future(tmp_path: Path) -> None:
    ran: list[datetime] = []
    sched, clock, mono, _ = _observed(tmp_path, Recorder(ran))
    sched.tick()
    _advance(sched, clock, mono, 10)
    assert len(ran) == 1
    clock.now -= timedelta(days=2)  # NTP (or an operator) steps the clock two days back
    mono.t += 1
    sched.tick()
    assert sched.health.clock_steps == 1 and "stepped back" in (sched.health.last_clock_step or "")
    assert any(e.what == "clock stepped" and "in the future" in e.detail for e in sched.events)
    for _ in range(3):
        _advance(sched, clock, mono, 10)
    assert len(ran) == 4  # the schedule goes on from the new "now", not from two days ahead


def test_the_clock_stepping_forward_runs_a_missed_job_once_not_a_burst(tmp_path: Path) -> None:
    ran: list[datetime] = []
    sched, clock, mono, _ = _observed(tmp_path, Recorder(ran), cron="*/15 * * * *")
    sched.tick()
    clock.now += timedelta(days=3)  # the clock jumps three days ahead between two ticks a second apart
    mono.t += 1
    sched.tick()
    sched.wait_idle(5)
    assert len(ran) == 1 and sched.state["default/backup"].missed == 3 * 24 * 4 - 1  # 288 slots, one run
    assert sched.health.clock_steps == 1 and "stepped forward" in (sched.health.last_clock_step or "")
    # trial7 #17: the service was running; the clock stepped. The event says so.
    [caught] = [e for e in sched.events if e.what == "caught up"]
    assert "when the clock stepped forward by 259199 s" in caught.detail, caught.detail
    assert "not running" not in caught.detail
    for _ in range(5):
        _advance(sched, clock, mono, 1)
    assert len(ran) == 1


def test_slots_missed_before_the_service_started_say_it_was_not_running(tmp_path: Path) -> None:
    ran: list[datetime] = []
    sched, clock, _, _ = _observed(tmp_path, Recorder(ran), cron="*/15 * * * *")
    sched.tick()
    sched.wait_idle(5)
    again, later, _, _ = _observed(tmp_path, Recorder(ran), cron="*/15 * * * *")
    later.now = clock.now + timedelta(hours=2)  # a new service (a restart) two hours later, state kept
    again.tick()
    again.wait_idle(5)
    [caught] = [e for e in again.events if e.what == "caught up"]
    assert "while the service was not running" in caught.detail, caught.detail


def test_an_unreadable_state_file_is_named_and_the_schedule_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "state" / "serve.json"
    path.parent.mkdir()
    path.write_text('{"default/backup": {"last_slot": ')  # cut off mid-write by an old version, say
    sched, clock, mono, problems = _observed(tmp_path, lambda job: JobResult(True, "ok", 0.0))
    assert sched.health.load_error and str(path) in sched.health.load_error
    assert "starts afresh" in sched.health.load_error
    sched.tick()
    _advance(sched, clock, mono, 10)
    assert sched.state["default/backup"].runs == 1
    assert json.loads(path.read_text())["default/backup"]["runs"] == 1  # rewritten whole
    assert problems[0] == ("state file", sched.health.load_error)


@pytest.mark.parametrize("text", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *", "0 0 31 6,9,11 *", "0 12 30,31 2 *"])
def test_a_cron_expression_that_never_fires_is_refused(text: str) -> None:
    with pytest.raises(BadSchedule, match="never fires"):
        Schedule(text)


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 31), st.integers(1, 12), times)
def test_a_schedule_is_accepted_exactly_when_its_date_exists(day: int, month: int, now: datetime) -> None:
    """The kind: every day-of-month/month pair. Accepted iff the date exists in some year (29 Feb
    included), and every accepted one has a next slot from any moment."""
    import calendar

    exists = day <= max(calendar.monthrange(year, month)[1] for year in (2023, 2024))
    text = f"0 3 {day} {month} *"
    if not exists:
        with pytest.raises(BadSchedule):
            Schedule(text)
        return
    s = Schedule(text)
    nxt = s.next_after(now)
    assert now < nxt <= now + timedelta(days=366 * 8)
    assert due(s, now, nxt) is not None


def test_the_configuration_refuses_a_schedule_that_never_fires() -> None:
    from pgrunbook.config import load_config
    from pgrunbook.errors import ConfigError

    with pytest.raises(ConfigError, match=r"schedule\.backup \(from PGRUNBOOK_SCHEDULE__BACKUP\): .*never fires"):
        load_config(environ={"PGRUNBOOK_SCHEDULE__BACKUP": "0 0 31 2 *"}, cwd=Path("/"))
    with pytest.raises(
        ConfigError,
        match=r"environments\.prod\.schedule\.drill \(from PGRUNBOOK_ENVIRONMENTS__prod__SCHEDULE__DRILL\): "
        r".*never fires",
    ):
        load_config(environ={"PGRUNBOOK_ENVIRONMENTS__prod__SCHEDULE__DRILL": "0 0 30 2 *"}, cwd=Path("/"))


def test_the_page_escapes_hostile_labels_names_and_details() -> None:
    """Autoescaping on: a backup label, an event's detail and an environment name that are HTML."""
    from pgrunbook.backup.retention import Decision

    hostile = '<script>alert("x")</script>'
    row = BackupRow('b1"><img src=x onerror=alert(1)>', T0, 10, 1.0, hostile, True, "keep", {}, [hostile])
    view = EnvironmentView("prod<svg onload=alert(1)>", None, "daily 7", backups=[row])
    view.runs_error = f"journal {hostile} is unreadable"
    events = [{"at": T0.isoformat(), "job": "backup", "environment": "prod", "what": "failed", "detail": hostile}]
    html = render_page("shop<i onclick=x>", "ok", [view], events, T0, problems={"state file": hostile})
    for raw in ("<script>", "<img src=x", "<svg onload", "<i onclick"):
        assert raw not in html, raw
    assert html.count("&lt;script&gt;") >= 4 and "shop&lt;i onclick=x&gt;" in html
    assert "<svg" in html  # the timeline itself is still drawn
    del Decision


def test_the_page_says_what_it_cannot_read_instead_of_failing(tmp_path: Path) -> None:
    """A corrupt or locked journal: the runs section names the file and what to do; the rest shows."""
    import sqlite3

    from pgrunbook.monitor.page import _recent_runs

    corrupt = tmp_path / "journal.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    runs, error = _recent_runs(corrupt, "default", 5)
    assert runs == [] and error and f"journal {corrupt} is damaged" in error and "move it aside" in error

    from pgrunbook.journal import Journal

    good = tmp_path / "ok.db"
    Journal(good).close()
    locker = sqlite3.connect(good, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        runs, error = _recent_runs(good, "default", 5)
        assert time.monotonic() - t0 < 5 and error and "locked" in error and str(good) in error
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    time.sleep(0.1)
    deadline = time.monotonic() + 40  # the stuck reader gives up at the journal's own 30 s timeout
    while time.monotonic() < deadline:
        runs, error = _recent_runs(good, "default", 5)
        if error is None:
            break
        time.sleep(0.5)
    assert error is None and runs == []


def test_healthz_fails_when_the_scheduler_is_stuck_or_a_loop_has_died(tmp_path: Path) -> None:
    """An outside monitor sees a stuck scheduler: 503 once no tick completed for stuck_after_s, and
    when any of serve's threads has stopped; 200 with the heartbeat and last success otherwise."""
    from pgrunbook.monitor.serve import Service

    config = Config.model_validate(
        {"serve": {"state_path": str(tmp_path / "s.json"), "stuck_after_s": 30}, "schedule": {"backup": "@every 5s"}}
    )
    config.root = tmp_path
    service = Service(config, log=lambda e: None, secrets=[])
    service.scheduler.runner = lambda job: JobResult(True, "ok", 0.0)
    service.scheduler.tick()
    code, body = service.health()
    assert code == 200 and body["status"] == "ok" and body["scheduler"]["heartbeat"] is not None
    assert body["scheduler"]["heartbeat_age_s"] < 5 and body["scheduler"]["last_success"] is None
    service.scheduler.health.heartbeat_mono = time.monotonic() - 120  # no tick for two minutes
    code, body = service.health()
    assert code == 503 and body["status"] == "failing"
    assert any("has not completed a tick for 120 s" in f for f in body["failing"])
    service.scheduler.tick()
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    service._threads["scheduler"] = dead
    code, body = service.health()
    assert code == 503 and body["failing"] == ["the scheduler thread has stopped"] and not body["threads_alive"]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(1, 30), st.integers(-60 * 86400, 60 * 86400)),  # ticks, and steps either way
        max_size=30,
    ),
    st.sampled_from(["@every 10s", "*/5 * * * *", "0 2 * * *"]),
)
def test_no_sequence_of_clock_steps_stops_a_schedule_or_bursts_it(moves: list[int], cron: str) -> None:
    """The kind: whatever the clock does between ticks, no slot is left in the future, no tick starts
    more than one run of a job, and once the clock runs normally again the job runs at its next slot."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ran: list[datetime] = []
        sched, clock, mono, _ = _observed(Path(tmp), Recorder(ran), cron=cron)
        sched.tick()
        for move in moves:
            before = len(ran)
            clock.now += timedelta(seconds=move)
            mono.t += 1
            sched.tick()
            assert sched.wait_idle(5)
            slot = sched.state["default/backup"].last_slot
            assert slot is not None and datetime.fromisoformat(slot) <= clock.now
            assert len(ran) - before <= 1
        before = len(ran)
        nxt = Schedule(cron).next_after(clock.now)
        clock.now = nxt + timedelta(seconds=1)
        mono.t += 1
        sched.tick()
        assert sched.wait_idle(5) and len(ran) == before + 1


def test_healthz_answers_while_a_tick_hangs_inside_the_scheduler(tmp_path: Path) -> None:
    """A save hanging on a dead network mount holds the scheduler's lock: /healthz must still answer,
    and answer 503 once the heartbeat is older than stuck_after_s."""
    from pgrunbook.monitor.serve import Service

    config = Config.model_validate({"serve": {"state_path": str(tmp_path / "s.json"), "stuck_after_s": 1}})
    config.root = tmp_path
    service = Service(config, log=lambda e: None, secrets=[])
    service.scheduler.tick()
    release = threading.Event()

    def hang() -> None:
        release.wait(30)

    service.scheduler._write = hang  # type: ignore[method-assign]
    service.scheduler._save_retry_mono = 0.0
    hung = threading.Thread(target=service.scheduler.tick, daemon=True)
    hung.start()
    time.sleep(2.5)
    t0 = time.monotonic()
    code, body = service.health()
    assert time.monotonic() - t0 < 5 and code == 503 and "has not completed a tick" in body["failing"][0]
    release.set()
    hung.join(10)
    assert service.health()[0] == 200

"""The scheduler behind ``pgrunbook serve``: backup, prune and drill per environment on cron schedules.

Each job runs as its own ``pgrunbook`` process (the same command a crontab line would run), so a
crash or a hang in one job cannot take the service down, and the job's output is the CLI's JSON.

* Missed runs (the service was down, or the machine slept): the job runs once to catch up, and the
  number of coalesced slots is recorded (``catch_up = false`` skips them instead).
* Overlapping runs: a job whose previous run is still going is not started twice; the slot is
  recorded as skipped, with the time the running one started.
* State (the last slot handled per job, the last outcome) is kept in a JSON file written atomically,
  so a restart knows what it missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from pgrunbook.config import Config
from pgrunbook.monitor.schedule import Job, config_jobs
from pgrunbook.postgres.url import redact
from pgrunbook.timespec.cron import Schedule, due


@dataclass
class JobState:
    last_slot: str | None = None  # ISO time of the newest slot handled (run, or skipped)
    running_since: str | None = None
    last_started: str | None = None
    last_finished: str | None = None
    last_outcome: str | None = None  # succeeded, failed, timed out
    last_detail: str = ""
    last_duration_s: float | None = None
    runs: int = 0
    failures: int = 0
    skipped_overlap: int = 0
    missed: int = 0


@dataclass
class Event:
    at: str
    job: str
    environment: str
    what: str  # started, succeeded, failed, skipped (overlap), caught up
    detail: str = ""


@dataclass
class JobResult:
    ok: bool
    detail: str
    duration_s: float


Runner = Callable[[Job], JobResult]
LATE_S = 30.0  # a slot found this long after its time was missed, not merely reached between ticks


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _key(job: Job) -> str:
    return f"{job.environment}/{job.name}"


@dataclass
class Scheduler:
    config: Config
    runner: Runner
    on_finish: Callable[[Job, JobResult, str | None], None] = lambda job, result, previous: None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_event: Callable[[Event], None] = lambda event: None
    jobs: list[Job] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.jobs = self.jobs or config_jobs(self.config)
        self._schedules = {_key(j): Schedule(j.cron, self.config.tz) for j in self.jobs}
        self._path = self.config.resolve_path(self.config.serve.state_path)
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self.state = self._load()

    def _load(self) -> dict[str, JobState]:
        try:
            raw = json.loads(self._path.read_text())
        except (OSError, ValueError):
            raw = {}
        known = set(JobState.__dataclass_fields__)
        state = {}
        for j in self.jobs:
            entry = raw.get(_key(j)) if isinstance(raw, dict) else None
            st = JobState(**{k: v for k, v in entry.items() if k in known}) if isinstance(entry, dict) else JobState()
            st.running_since = None  # a run the previous service left behind is not running now
            state[_key(j)] = st
        return state

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".serve-state-")
        with os.fdopen(fd, "w") as f:
            json.dump({k: asdict(v) for k, v in self.state.items()}, f, indent=1)
        os.replace(tmp, self._path)

    def _event(self, job: Job, what: str, detail: str = "") -> None:
        event = Event(_iso(self.clock()), job.name, job.environment, what, detail)
        self.events.append(event)
        del self.events[:-200]  # the page shows the recent ones; the log has them all
        self.on_event(event)

    def tick(self) -> None:
        """Start whatever is due now; called about once a second by ``run_forever``."""
        now = self.clock()
        with self._lock:
            for job in self.jobs:
                self._tick_one(job, now)
            self._save()

    def _tick_one(self, job: Job, now: datetime) -> None:
        st = self.state[_key(job)]
        if st.last_slot is None:  # first sight of this job: its schedule starts now, nothing is "missed"
            st.last_slot = _iso(now)
            return
        d = due(self._schedules[_key(job)], datetime.fromisoformat(st.last_slot), now)
        if d is None:
            return
        st.last_slot = _iso(d.fire)
        late = (now - d.fire).total_seconds() > LATE_S
        missed = d.missed + (1 if late else 0)
        if missed:
            st.missed += missed
            if self.config.serve.catch_up:
                self._event(job, "caught up", f"{missed} slot(s) passed while the service was not running; one run now")
            else:
                self._event(job, "missed", f"{missed} slot(s) passed while the service was not running (catch_up off)")
                if late:
                    return
        if st.running_since is not None:
            st.skipped_overlap += 1
            self._event(job, "skipped (overlap)", f"the run started {st.running_since} is still going")
            return
        st.running_since = st.last_started = _iso(now)
        self._event(job, "started", f"slot {d.fire:%Y-%m-%d %H:%M:%S}")
        t = threading.Thread(target=self._run, args=(job,), name=f"pgrunbook-{_key(job)}", daemon=True)
        self._threads[_key(job)] = t
        t.start()

    def _run(self, job: Job) -> None:
        try:
            result = self.runner(job)
        except Exception as exc:  # the runner itself broke: record it, keep the service up
            result = JobResult(False, f"{type(exc).__name__}: {exc}", 0.0)
        with self._lock:
            st = self.state[_key(job)]
            previous = st.last_outcome
            st.running_since = None
            st.last_finished = _iso(self.clock())
            st.last_outcome = "succeeded" if result.ok else "failed"
            st.last_detail = result.detail
            st.last_duration_s = round(result.duration_s, 3)
            st.runs += 1
            st.failures += 0 if result.ok else 1
            self._event(job, st.last_outcome, result.detail)
            self._save()
        self.on_finish(job, result, previous)

    def schedule_of(self, job: Job) -> Schedule:
        return self._schedules[_key(job)]

    def snapshot(self) -> list[tuple[Job, JobState]]:
        """A consistent copy for the page and /metrics."""
        with self._lock:
            return [(j, JobState(**asdict(self.state[_key(j)]))) for j in self.jobs]

    def running(self) -> list[str]:
        return [k for k, t in self._threads.items() if t.is_alive()]

    def run_forever(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            self.tick()
            stop.wait(interval_s)

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads.values()):
            t.join(max(0.0, deadline - time.monotonic()))
        return not self.running()


def subprocess_runner(config: Config, secrets: list[str]) -> Runner:
    """Run a job as ``pgrunbook --config FILE --json ...``, the URL variables passed in the environment."""
    base = [sys.executable, "-m", "pgrunbook"]
    if config.source is not None:
        base += ["--config", str(config.source)]

    def run(job: Job) -> JobResult:
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [*base, "--json", *job.args],
                capture_output=True,
                text=True,
                timeout=config.serve.job_timeout_s,
                cwd=config.root,
            )
        except subprocess.TimeoutExpired:
            return JobResult(False, f"timed out after {config.serve.job_timeout_s:.0f} s", time.monotonic() - t0)
        elapsed = time.monotonic() - t0
        if proc.returncode == 0:
            return JobResult(True, _summary(proc.stdout), elapsed)
        return JobResult(False, redact(_failure(proc.stderr, proc.returncode), secrets), elapsed)

    return run


def _failure(stderr: str, code: int) -> str:
    """The CLI's one-line error and its hint, which together say what broke and what to do."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    error = next((ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")), None)
    hint = next((ln for ln in lines if ln.startswith("hint: ")), None)
    if error is None:
        return lines[-1] if lines else f"exit code {code}"
    return f"{error} ({hint})" if hint else error


def _summary(stdout: str) -> str:
    """One line from the job's JSON: the backup id, what prune removed, what the drill checked."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return stdout.strip().splitlines()[-1] if stdout.strip() else ""
    if isinstance(data, list):  # prune: one row per backup
        removed = sum(1 for row in data if isinstance(row, dict) and row.get("action") == "remove")
        return f"kept {len(data) - removed}, removed {removed}"
    if isinstance(data, dict) and "id" in data:
        drill = " (drill)" if any("drill" in str(v) for v in data.get("checks", [])) else ""
        return f"backup {data['id']}{drill}"
    return ""

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

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from pgrunbook.config import Config
from pgrunbook.monitor.schedule import Job, config_jobs
from pgrunbook.postgres.runner import popen_options
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
    last_success: str | None = None  # ISO time the newest successful run finished
    runs: int = 0
    failures: int = 0
    skipped_overlap: int = 0
    missed: int = 0
    retry_at: str | None = None  # a failed run is tried again then (with backoff), if no slot comes first
    retries: int = 0  # consecutive retries of the current failure
    errors: int = 0  # times the scheduler itself could not handle this job (e.g. its schedule broke)
    error: str | None = None  # the current such error, cleared once the job is handled again


@dataclass
class Event:
    at: str
    job: str
    environment: str
    what: str  # started, succeeded, failed, skipped (overlap), caught up, retry, error, clock stepped
    detail: str = ""


@dataclass
class JobResult:
    ok: bool
    detail: str
    duration_s: float


@dataclass
class Health:
    """How the scheduler itself is doing, for /healthz, /metrics and the page (not the jobs' outcomes)."""

    heartbeat: str | None = None  # wall-clock ISO time of the last completed tick
    heartbeat_mono: float | None = None  # time.monotonic() of that tick: ages immune to clock steps
    ticks: int = 0
    tick_errors: int = 0  # ticks that raised outside any one job (should stay 0)
    last_error: str | None = None
    save_failures: int = 0  # all failed saves of the state file since start
    save_failing: int = 0  # consecutive failed saves (0 = the file is current)
    save_error: str | None = None
    load_error: str | None = None  # the state file was unreadable at start: the schedule began afresh
    clock_steps: int = 0
    last_clock_step: str | None = None


Runner = Callable[[Job], JobResult]
Problem = Callable[[str, str | None], None]
LATE_S = 30.0  # a slot found this long after its time was missed, not merely reached between ticks
CLOCK_STEP_S = 60.0  # wall clock and monotonic clock disagreeing by more than this between ticks: a step
SAVE_BACKOFF_MAX_S = 60.0
ERROR_BACKOFF_MAX_S = 300.0


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _key(job: Job) -> str:
    return f"{job.environment}/{job.name}"


def backoff_s(failures: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff: base, 2·base, 4·base … capped; ``failures`` counts from 1."""
    return float(min(cap_s, base_s * 2 ** max(0, min(failures - 1, 30))))


@dataclass
class Scheduler:
    """Runs the configured jobs on their schedules; ``tick`` is one iteration, ``run_forever`` the loop.

    Every iteration is isolated: a job whose schedule cannot be evaluated, a state file that cannot be
    written (disk full, too many open files) or a callback that raises is recorded, reported through
    ``on_problem`` (key, message; message None when it clears) and retried with backoff, while every
    other job keeps its schedule. State lives in memory first; the file is a copy for restarts.
    """

    config: Config
    runner: Runner
    on_finish: Callable[[Job, JobResult, str | None], None] = lambda job, result, previous: None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_event: Callable[[Event], None] = lambda event: None
    jobs: list[Job] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    monotonic: Callable[[], float] = time.monotonic
    on_problem: Problem = lambda key, message: None

    def __post_init__(self) -> None:
        self.jobs = self.jobs or config_jobs(self.config)
        self._schedules = {_key(j): Schedule(j.cron, self.config.tz) for j in self.jobs}
        self._path = self.config.resolve_path(self.config.serve.state_path)
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._retry_mono: dict[str, float] = {}  # per job: no new attempt after an error before this
        self._save_retry_mono = 0.0
        self._last_tick: tuple[datetime, float] | None = None
        self._gap_why = "while the service was not running"  # why slots were missed, set by each tick
        self._problems: list[tuple[str, str | None]] = []
        self._load_problem_open = False
        self.health = Health()
        self.state = self._load()

    # --- state file -----------------------------------------------------------------------------
    def _load(self) -> dict[str, JobState]:
        raw: object = {}
        try:
            raw = json.loads(self._path.read_text())
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            raw = {}
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.health.load_error = (
                f"serve state {self._path} is unreadable ({why}): the schedule starts afresh from now "
                "(missed slots before this start are not caught up); the file is rewritten at the next save"
            )
            self._problems.append(("state file", self.health.load_error))
            self._load_problem_open = True
            raw = {}
        known = set(JobState.__dataclass_fields__)
        state = {}
        for j in self.jobs:
            entry = raw.get(_key(j)) if isinstance(raw, dict) else None
            try:
                st = JobState(**{k: v for k, v in entry.items() if k in known}) if isinstance(entry, dict) else None
            except TypeError:
                st = None
            st = st or JobState()
            st.running_since = None  # a run the previous service left behind is not running now
            state[_key(j)] = st
        return state

    def _write(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".serve-state-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({k: asdict(v) for k, v in self.state.items()}, f, indent=1)
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _save(self, force: bool = False) -> None:
        """Write the state file; a failure is recorded and retried with backoff, never raised."""
        mono = self.monotonic()
        if self.health.save_failing and not force and mono < self._save_retry_mono:
            return
        try:
            self._write()
        except OSError as exc:
            h = self.health
            h.save_failures += 1
            h.save_failing += 1
            delay = backoff_s(h.save_failing, 1.0, SAVE_BACKOFF_MAX_S)
            self._save_retry_mono = mono + delay
            first = h.save_error is None
            h.save_error = (
                f"cannot save serve state {self._path}: {exc.strerror or exc}; the schedule goes on from memory "
                f"(retrying in {delay:.0f} s); free disk space or file handles, or fix the folder's permissions"
            )
            if first:
                self._problems.append(("state file", h.save_error))
            return
        if self.health.save_failing or self._load_problem_open:
            self._problems.append(("state file", None))  # the file is whole and current again
        self._load_problem_open = False
        self.health.save_failing, self.health.save_error = 0, None

    # --- events and problems --------------------------------------------------------------------
    def _event(self, job: Job | None, what: str, detail: str = "") -> None:
        event = Event(_iso(self.clock()), job.name if job else "-", job.environment if job else "-", what, detail)
        self.events.append(event)
        del self.events[:-200]  # the page shows the recent ones; the log has them all
        try:
            self.on_event(event)
        except Exception:  # a broken log sink must not stop the schedule
            self.health.tick_errors += 1

    def _flush_problems(self) -> None:
        """Tell ``on_problem`` outside the lock (it may notify, which takes seconds)."""
        with self._lock:
            problems, self._problems = self._problems, []
        for key, message in problems:
            try:
                self.on_problem(key, message)
            except Exception as exc:
                self.health.last_error = f"reporting a problem failed: {type(exc).__name__}: {exc}"

    # --- one iteration --------------------------------------------------------------------------
    def tick(self) -> None:
        """Start whatever is due now; called about once a second by ``run_forever``."""
        now, mono = self.clock(), self.monotonic()
        with self._lock:
            self._clock_step(now, mono)
            for job in self.jobs:
                self._tick_guarded(job, now, mono)
            self._save()
            self.health.ticks += 1
            # the heartbeat is when the tick completed: a tick that hung for minutes is not a fresh beat
            self.health.heartbeat, self.health.heartbeat_mono = _iso(now), self.monotonic()
        self._flush_problems()

    def _clock_step(self, now: datetime, mono: float) -> None:
        last, self._last_tick = self._last_tick, (now, mono)
        self._gap_why = "while the service was not running" if last is None else "while the scheduler was held up"
        if last is None:
            return
        skew = (now - last[0]).total_seconds() - (mono - last[1])
        if abs(skew) < CLOCK_STEP_S:
            return
        direction = "forward" if skew > 0 else "back"
        if skew > 0:  # monotonic time stands still in a suspend too: either way the service was running
            self._gap_why = f"when the clock stepped forward by {skew:.0f} s (or the machine was suspended)"
        self.health.clock_steps += 1
        self.health.last_clock_step = f"{_iso(now)}: the clock stepped {direction} by {abs(skew):.0f} s"
        self._event(None, "clock stepped", self.health.last_clock_step)

    def _tick_guarded(self, job: Job, now: datetime, mono: float) -> None:
        key = _key(job)
        st = self.state[key]
        if mono < self._retry_mono.get(key, 0.0):
            return
        try:
            self._tick_one(job, now)
        except Exception as exc:  # this job only: the others keep their schedules
            st.errors += 1
            delay = backoff_s(st.errors, 1.0, ERROR_BACKOFF_MAX_S)
            self._retry_mono[key] = mono + delay
            message = f"cannot schedule {key}: {type(exc).__name__}: {exc} (trying again in {delay:.0f} s)"
            if st.error is None:
                self._problems.append((key, message))
            st.error = message
            self._event(job, "error", message)
            return
        if st.error is not None:
            self._problems.append((key, None))
            st.error = None
        self._retry_mono.pop(key, None)

    def _tick_one(self, job: Job, now: datetime) -> None:
        st = self.state[_key(job)]
        if st.last_slot is None:  # first sight of this job: its schedule starts now, nothing is "missed"
            st.last_slot = _iso(now)
            return
        last = datetime.fromisoformat(st.last_slot)
        if last > now:  # the clock stepped back past the last slot: the schedule restarts from now
            self._event(job, "clock stepped", f"last slot {st.last_slot} is in the future; schedule restarts now")
            st.last_slot = _iso(now)
            return
        d = due(self._schedules[_key(job)], last, now)
        if d is None:
            self._maybe_retry(job, st, now)
            return
        st.last_slot = _iso(d.fire)
        st.retry_at, st.retries = None, 0  # the slot's own run replaces any pending retry
        late = (now - d.fire).total_seconds() > LATE_S
        missed = d.missed + (1 if late else 0)
        if missed:
            st.missed += missed
            if self.config.serve.catch_up:
                self._event(job, "caught up", f"{missed} slot(s) passed {self._gap_why}; one run now")
            else:
                self._event(job, "missed", f"{missed} slot(s) passed {self._gap_why} (catch_up off)")
                if late:
                    return
        if st.running_since is not None:
            st.skipped_overlap += 1
            self._event(job, "skipped (overlap)", f"the run started {st.running_since} is still going")
            return
        self._start(job, st, now, f"slot {d.fire:%Y-%m-%d %H:%M:%S}")

    def _maybe_retry(self, job: Job, st: JobState, now: datetime) -> None:
        if st.retry_at is None or st.running_since is not None:
            return
        at = datetime.fromisoformat(st.retry_at)
        cap = timedelta(seconds=self.config.serve.retry_backoff_s * 2**self.config.serve.retries)
        if at > now + cap:  # the clock stepped back: a retry time that far ahead is not waited for
            at = now
        if at > now:
            return
        st.retry_at = None
        st.retries += 1
        self._event(job, "retry", f"attempt {st.retries + 1} after the failure: {st.last_detail}")
        self._start(job, st, now, f"retry {st.retries} of {self.config.serve.retries}")

    def _start(self, job: Job, st: JobState, now: datetime, why: str) -> None:
        st.running_since = st.last_started = _iso(now)
        self._event(job, "started", why)
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
            now = self.clock()
            st.running_since = None
            st.last_finished = _iso(now)
            st.last_outcome = "succeeded" if result.ok else "failed"
            st.last_detail = result.detail
            st.last_duration_s = round(result.duration_s, 3)
            st.runs += 1
            st.failures += 0 if result.ok else 1
            if result.ok:
                st.last_success, st.retry_at, st.retries = st.last_finished, None, 0
            elif st.retries < self.config.serve.retries:
                wait = backoff_s(st.retries + 1, self.config.serve.retry_backoff_s, 6 * 3600.0)
                st.retry_at = _iso(now + timedelta(seconds=wait))
            self._event(job, st.last_outcome, result.detail)
            self._save(force=True)
        self._flush_problems()
        try:
            self.on_finish(job, result, previous)
        except Exception as exc:  # e.g. a notification channel that raised: the next run still happens
            self.health.last_error = f"after {_key(job)}: {type(exc).__name__}: {exc}"

    # --- views ----------------------------------------------------------------------------------
    def schedule_of(self, job: Job) -> Schedule:
        return self._schedules[_key(job)]

    def next_run(self, job: Job, now: datetime) -> str | None:
        """The next slot's ISO time, or None when it cannot be computed (the error is on the page)."""
        try:
            return _iso(self._schedules[_key(job)].next_after(now))
        except Exception:
            return None

    @contextlib.contextmanager
    def _view(self) -> Iterator[None]:
        """The lock for a read-only view, waited for at most a second: a tick stuck inside the lock (a
        save hanging on a dead network mount) must not also hang /healthz, which is how it is seen."""
        got = self._lock.acquire(timeout=1.0)
        try:
            yield
        finally:
            if got:
                self._lock.release()

    def snapshot(self) -> list[tuple[Job, JobState]]:
        """A consistent copy for the page and /metrics (a best-effort one while a tick is stuck)."""
        with self._view():
            return [(j, JobState(**asdict(self.state[_key(j)]))) for j in self.jobs]

    def health_snapshot(self) -> Health:
        with self._view():
            return Health(**asdict(self.health))

    def running(self) -> list[str]:
        return [k for k, t in self._threads.items() if t.is_alive()]

    def run_forever(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Tick until ``stop``; an iteration that raises is recorded and the loop goes on, with backoff."""
        failing = 0
        while not stop.is_set():
            try:
                self.tick()
                failing = 0
            except Exception as exc:
                failing += 1
                self.health.tick_errors += 1
                self.health.last_error = f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    self.on_problem("scheduler", f"a scheduler iteration failed: {self.health.last_error}")
            stop.wait(interval_s if not failing else backoff_s(failing, interval_s, 60.0))

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads.values()):
            t.join(max(0.0, deadline - time.monotonic()))
        return not self.running()


class SubprocessRunner:
    """Runs a job as a child ``pgrunbook --config FILE --json ...`` (the URL variables passed in the
    environment) and keeps the live children, so that serve's stop hands each its cleanup.

    The child gets SIGTERM from the kernel when the thread that started it dies, serve killed by
    SIGKILL or the OOM killer included (``PR_SET_PDEATHSIG``, Linux): a job never runs on orphaned,
    past its time limit, holding the backup lock for the next serve. SIGTERM, not SIGKILL, so that it
    runs the same cleanup as for Ctrl-C (cli/main.py: a drill drops its scratch database)."""

    def __init__(self, config: Config, secrets: list[str]):
        self.config = config
        self.secrets = secrets
        self.base = [sys.executable, "-m", "pgrunbook"]
        if config.source is not None:
            self.base += ["--config", str(config.source)]
        self._live: dict[int, tuple[Job, subprocess.Popen[str]]] = {}
        self._lock = threading.Lock()
        self.stopping = False

    def __call__(self, job: Job) -> JobResult:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [*self.base, "--json", *job.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.config.root,
            **popen_options(death_signal=signal.SIGTERM),
        )
        with self._lock:
            self._live[proc.pid] = (job, proc)
        try:
            return self._wait(proc, t0)
        finally:
            with self._lock:
                self._live.pop(proc.pid, None)

    def _wait(self, proc: subprocess.Popen[str], t0: float) -> JobResult:
        limit = self.config.serve.job_timeout_s
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _stop_job(proc)
            return JobResult(False, f"timed out after {limit:.0f} s", time.monotonic() - t0)
        elapsed = time.monotonic() - t0
        if proc.returncode == 0:
            return JobResult(True, _summary(stdout), elapsed)
        failure = redact(_failure(stderr, proc.returncode), self.secrets)
        if self.stopping:
            failure = f"stopped because serve was stopping (SIGTERM, pid {proc.pid}): {failure}"
        return JobResult(False, failure, elapsed)

    def live(self) -> list[tuple[str, int]]:
        """The running jobs as (``environment/job``, pid)."""
        with self._lock:
            return [(_key(job), pid) for pid, (job, _) in self._live.items()]

    def stop_all(self, grace_s: float = 60.0) -> list[tuple[str, int, str]]:
        """SIGTERM to every running job, then up to ``grace_s`` seconds (in all) for their cleanup, then
        SIGKILL to what is left. Returns (``environment/job``, pid, ``"stopped"`` or ``"killed"``)."""
        self.stopping = True
        with self._lock:
            live = list(self._live.items())
        for _, (_, proc) in live:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + grace_s
        out = []
        for pid, (job, proc) in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
                out.append((_key(job), pid, "stopped"))
            except subprocess.TimeoutExpired:
                proc.kill()
                out.append((_key(job), pid, "killed"))
        return out


def subprocess_runner(config: Config, secrets: list[str]) -> SubprocessRunner:
    """The runner serve uses: each job a child process (SubprocessRunner)."""
    return SubprocessRunner(config, secrets)


# How long a timed-out job has to clean up after SIGTERM (drop its scratch database, turn maintenance
# off) before it is killed.
JOB_STOP_GRACE_S = 60.0


def _stop_job(proc: subprocess.Popen[str]) -> None:
    """SIGTERM first: the job runs its cleanup as for Ctrl-C (cli/main.py); SIGKILL after the grace."""
    proc.terminate()
    try:
        proc.communicate(timeout=JOB_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


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

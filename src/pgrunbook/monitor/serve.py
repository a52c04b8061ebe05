"""``pgrunbook serve``: the scheduler, the periodic check with notifications, /metrics, /healthz and
the status page, in one long-running process.

It binds to loopback unless told otherwise, and refuses any other address without an access token
(the page names databases, hosts and backups). /healthz stays open for liveness probes.

HTTP is served by waitress (a pure-Python WSGI server): a fixed pool of worker threads, a limit on
open connections kept below the open-files limit, and a timeout that closes idle or slow connections,
so a flood of idle connections cannot starve the scheduler of file handles or the CPU.
Each loop (scheduler, check, notifier) survives its own failures: they are recorded, retried with
backoff, shown on /healthz, /metrics and the page, and notified.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pgrunbook.config import Config
from pgrunbook.errors import EXIT_USAGE, PgRunbookError
from pgrunbook.monitor.check import CheckCollector, CheckReport, notify_changes, run_check
from pgrunbook.monitor.notify import Notice, make_notice, resolve_channels, send
from pgrunbook.monitor.page import JobView, error_page, gather, render_page
from pgrunbook.monitor.schedule import Job
from pgrunbook.monitor.scheduler import JOB_STOP_GRACE_S, JobResult, Scheduler, backoff_s, subprocess_runner
from pgrunbook.postgres.url import redact

Log = Callable[[dict[str, Any]], None]
StartResponse = Callable[..., Any]
# File handles kept free for the scheduler's jobs (pipes of child processes), state files, the journal
# and notifications, whatever the HTTP side does.
FD_RESERVE = 128


CLOCK_OFFSET_VAR = "PGRUNBOOK_SERVE_CLOCK_OFFSET_FILE"


def wall_clock(environ: dict[str, str] | None = None) -> Callable[[], datetime]:
    """The wall clock serve's scheduler reads: the system's, or, for tests, the system's plus the
    seconds written in the file that ``PGRUNBOOK_SERVE_CLOCK_OFFSET_FILE`` names. The soak test steps a
    running serve's clock through it (as NTP or an operator would step the machine's), which
    libfaketime cannot do for Python (its sleep fails under a stepped fake clock)."""
    path = (os.environ if environ is None else environ).get(CLOCK_OFFSET_VAR)
    if not path:
        return lambda: datetime.now(UTC)

    def offset_clock() -> datetime:
        try:
            with open(path) as f:
                offset = float(f.read().strip() or 0)
        except (OSError, ValueError):
            offset = 0.0
        return datetime.now(UTC) + timedelta(seconds=offset)

    return offset_clock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one (as Go's runtime and nginx do) and return it;
    sockets are cheap under waitress, and the connection limit is derived from this."""
    try:
        import resource
    except ImportError:  # Windows: no rlimits; waitress's select() caps connections itself
        return 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return int(soft)


def open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 16


def connection_limit(configured: int, nofile: int, in_use: int) -> int:
    """Open connections at most: the configured number, lowered so that the reserve stays free."""
    return max(8, min(configured, nofile - in_use - FD_RESERVE))


class Service:
    """Everything ``serve`` runs, startable and stoppable from tests and other programs."""

    def __init__(
        self, config: Config, *, log: Log, secrets: list[str], host: str | None = None, port: int | None = None
    ):
        self.config = config
        self.log = log
        self.secrets = secrets
        self.host = host if host is not None else config.serve.host
        self.port = port if port is not None else config.serve.port
        self.token = os.environ.get(config.serve.token_env) or None
        if not is_loopback(self.host) and not self.token:
            raise PgRunbookError(
                f"refusing to serve on {self.host} without an access token: the page shows databases and backups",
                hint=f"set {config.serve.token_env}, or keep the default host 127.0.0.1",
                exit_code=EXIT_USAGE,
            )
        # a malformed webhook URL or mail setting stops here, not in a thread; the channels' secrets
        # (webhook token, SMTP password) join the caller's list, which its log lines are redacted with
        secrets.extend(s for s in resolve_channels(config).secrets if s not in secrets)
        self.started_mono = time.monotonic()
        self.report: CheckReport | None = None
        self.report_at = datetime.now(UTC)
        self.check_failures = 0  # consecutive
        self.check_error: str | None = None
        self.check_heartbeat = time.monotonic()
        self.notify_errors = 0
        self.notify_error: str | None = None
        self.problems: dict[str, str] = {}  # what is wrong right now, by key; shown on /healthz and the page
        self._last_status: str | None = None
        self.stop_event = threading.Event()
        self._check_now = threading.Event()
        self._outbox: queue.Queue[tuple[float, int, list[Notice], set[str] | None]] = queue.Queue()
        self.scheduler = Scheduler(
            config,
            subprocess_runner(config, secrets),
            on_finish=self._job_finished,
            on_event=lambda e: self.log({"event": "job", **asdict(e)}),
            on_problem=self._problem,
            clock=wall_clock(),
        )
        self.registry = CollectorRegistry()
        self.registry.register(CheckCollector(lambda: (self.report, datetime.now(UTC))))  # type: ignore[arg-type]
        self.registry.register(_SchedulerCollector(self))  # type: ignore[arg-type]
        self._threads: dict[str, threading.Thread] = {}
        self.httpd: Any = None
        self.connection_limit = 0

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> str:
        from waitress.server import create_server

        nofile = raise_open_files_limit()
        self.connection_limit = connection_limit(self.config.serve.http_connection_limit, nofile, open_files())
        _route_waitress_logs(self)
        try:
            self.httpd = create_server(
                _app(self),
                host=self.host,
                port=self.port,
                threads=self.config.serve.http_threads,
                connection_limit=self.connection_limit,
                channel_timeout=self.config.serve.http_idle_timeout_s,
                cleanup_interval=max(1, int(self.config.serve.http_idle_timeout_s // 3)),
                backlog=1024,
                ident="pgrunbook",
                expose_tracebacks=False,
                asyncore_use_poll=True,  # select() cannot watch file handles numbered above 1023
            )
        except OSError as exc:
            raise PgRunbookError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="choose another --port, or stop what is using it",
                exit_code=EXIT_USAGE,
            ) from None
        host, port = _bound(self.httpd)
        url = f"http://{host}:{port}/"
        self.log(
            {
                "event": "listening",
                "url": url,
                "jobs": [f"{j.environment}/{j.name} {j.cron}" for j in self.scheduler.jobs],
                "connection_limit": self.connection_limit,
                "open_files_limit": nofile,
            }
        )
        for name, target in (
            ("http", self.httpd.run),
            ("check", self._check_loop),
            ("scheduler", self._schedule_loop),
            ("notifier", self._notify_loop),
        ):
            t = threading.Thread(target=target, daemon=True, name=f"pgrunbook-{name}")
            t.start()
            self._threads[name] = t
        return url

    def stop(self, wait_jobs_s: float = 10.0, grace_s: float = JOB_STOP_GRACE_S) -> None:
        """Stop scheduling; let running jobs finish for ``wait_jobs_s`` seconds; then SIGTERM each (its
        cleanup, as for Ctrl-C) and give them ``grace_s`` seconds in all before SIGKILL. Every job left
        running is logged (``job stopped``, with its pid and whether it stopped or was killed); the last
        event is ``stopped``. No job outlives serve."""
        self.stop_event.set()
        self._check_now.set()
        if self.httpd is not None:
            with contextlib.suppress(Exception):
                self.httpd.close()
        if not self.scheduler.wait_idle(wait_jobs_s):
            stop_all = getattr(self.scheduler.runner, "stop_all", None)
            for key, pid, outcome in stop_all(grace_s) if stop_all else []:
                self.log({"event": "job stopped", "job": key, "pid": pid, "outcome": outcome})
            self.scheduler.wait_idle(5.0)  # their threads record the outcome in the state file
        self.log({"event": "stopped", "running_jobs": self.scheduler.running()})

    def _schedule_loop(self) -> None:
        self.scheduler.run_forever(self.stop_event)

    # --- the check loop -------------------------------------------------------------------------
    def _check_loop(self) -> None:
        while not self.stop_event.is_set():
            self.check_heartbeat = time.monotonic()
            try:
                ok = self.check_once()
            except Exception as exc:  # anything: this loop must not die (isolated iteration)
                ok = False
                self._check_failed(f"{type(exc).__name__}: {exc}")
            interval = self.config.serve.check_interval_s
            wait = interval if ok else backoff_s(self.check_failures, interval, 300.0)
            self._check_now.wait(wait)
            self._check_now.clear()

    def _check_failed(self, message: str) -> None:
        self.check_failures += 1
        first = self.check_error is None
        self.check_error = redact(message, self.secrets)
        self.log({"event": "check failed", "error": self.check_error, "consecutive": self.check_failures})
        if first:
            self._problem("check", f"the periodic check failed: {self.check_error}")

    def check_once(self) -> bool:
        """Check, remember the report for /metrics and the page, and notify on a change of status;
        False when the check itself could not run (retried with backoff by the loop)."""
        try:
            report = run_check(self.config)
        except PgRunbookError as exc:
            self._check_failed(exc.message)
            return False
        if self.check_error is not None:
            self._problem("check", None)
        self.check_failures, self.check_error = 0, None
        self.report, self.report_at = report, datetime.now(UTC)
        try:
            sent, saved = notify_changes(self.config, report), True
        except PgRunbookError as exc:  # kept unsaved: the next check tries again
            self._notify_failed(exc.message)
            sent, saved = [], False
        if sent or self._last_status != report.status:  # a change, not every minute's same verdict
            self.log({"event": "check", "status": report.status, "notified": sent})
        self._last_status = report.status
        if report.notes:  # the check state file was unreadable: named once, cleared when it is whole again
            if "check state" not in self.problems:
                self._problem("check state", "; ".join(report.notes))
        elif "check state" in self.problems and saved:
            self._problem("check state", None)
        return True

    # --- notifications --------------------------------------------------------------------------
    def notify(self, notices: list[Notice], channels: set[str] | None = None, attempt: int = 0) -> None:
        """Queue notices for the notifier thread: a slow mail server never holds up the scheduler."""
        if notices:
            self._outbox.put((time.monotonic(), attempt, notices, channels))

    def _notify_loop(self) -> None:
        waiting: list[tuple[float, int, list[Notice], set[str] | None]] = []
        while not self.stop_event.is_set():
            with contextlib.suppress(queue.Empty):
                waiting.append(self._outbox.get(timeout=0.5))
            now = time.monotonic()
            due, waiting = [w for w in waiting if w[0] <= now], [w for w in waiting if w[0] > now]
            for _, attempt, notices, channels in due:
                try:
                    failed = self._deliver(notices, channels)
                except Exception as exc:  # a channel that raised instead of reporting: retried like a failure
                    self._notify_failed(f"{type(exc).__name__}: {exc}")
                    failed = channels or {"webhook", "email"}
                if failed and attempt < 4:
                    waiting.append((now + backoff_s(attempt + 1, 5.0, 120.0), attempt + 1, notices, failed))

    def _deliver(self, notices: list[Notice], channels: set[str] | None) -> set[str]:
        failed = set()
        for d in send(self.config, notices, channels):
            if d.error:
                failed.add(d.channel)
                self._notify_failed(d.error)
        return failed

    def _notify_failed(self, message: str) -> None:
        self.notify_errors += 1
        self.notify_error = redact(message, self.secrets)
        self.log({"event": "notification failed", "error": self.notify_error})

    def _problem(self, key: str, message: str | None) -> None:
        """A problem of the service itself started (message) or cleared (None): log, keep, notify."""
        if message is None:
            if self.problems.pop(key, None) is None:
                return
            self.log({"event": "recovered", "what": key})
            self.notify([make_notice(self.config, "pgrunbook serve", "ok", "RECOVERED", f"{key}: working again")])
            return
        message = redact(message, self.secrets)
        self.problems[key] = message
        self.log({"event": "problem", "what": key, "error": message})
        self.notify([make_notice(self.config, "pgrunbook serve", "critical", "PROBLEM", message)])

    def _job_finished(self, job: Job, result: JobResult, previous: str | None) -> None:
        if not result.ok:
            self.notify(
                [make_notice(self.config, job.environment, "failed", f"scheduled {job.name} FAILED", result.detail)]
            )
        elif previous == "failed":
            self.notify(
                [make_notice(self.config, job.environment, "ok", f"scheduled {job.name} RECOVERED", result.detail)]
            )
        self._check_now.set()  # a new backup changes freshness and the page at once

    # --- views ----------------------------------------------------------------------------------
    def job_views(self) -> dict[str, list[JobView]]:
        now = datetime.now(UTC)
        out: dict[str, list[JobView]] = {}
        for job, st in self.scheduler.snapshot():
            out.setdefault(job.environment, []).append(
                JobView(
                    job.name,
                    job.cron,
                    self.scheduler.next_run(job, now),
                    st.running_since,
                    st.last_outcome,
                    st.last_finished,
                    st.last_duration_s,
                    st.last_detail,
                    st.skipped_overlap,
                    st.missed,
                    st.retry_at,
                    st.error,
                )
            )
        return out

    def page(self) -> str:
        """The status page; what cannot be read (storage, journal, state) is named in its place."""
        name = page_title(self.config)
        overall = self.report.status if self.report else "unknown"
        refresh = max(5, min(60, int(self.config.serve.check_interval_s)))
        try:
            views = gather(self.config, self.report)
            jobs = self.job_views()
            for v in views:
                v.jobs = jobs.get(v.name, [])
            events = [asdict(e) for e in self.scheduler.events]
            _, health = self.health()
            problems = dict(health["problems"])
            for what in health["failing"]:
                problems.setdefault("scheduler", what)
            if health["scheduler"]["state_load_error"]:
                problems.setdefault("state file (at start)", health["scheduler"]["state_load_error"])
            return render_page(name, overall, views, events, datetime.now(UTC), refresh, problems=problems)
        except Exception as exc:  # never an empty reply: say what broke on a page of its own
            message = redact(f"{type(exc).__name__}: {exc}", self.secrets)
            return error_page(name, message, datetime.now(UTC), refresh)

    def health(self) -> tuple[int, dict[str, Any]]:
        """/healthz: 503 when the scheduler or a loop is dead or stuck, else 200 with what is degraded."""
        h = self.scheduler.health_snapshot()
        mono = time.monotonic()
        stuck_after = self.config.serve.stuck_after_s
        beat_age = mono - (h.heartbeat_mono if h.heartbeat_mono is not None else self.started_mono)
        alive = {name: t.is_alive() for name, t in self._threads.items()}
        failing: list[str] = [f"the {name} thread has stopped" for name, up in alive.items() if not up]
        if beat_age > stuck_after:
            failing.append(f"the scheduler has not completed a tick for {beat_age:.0f} s (limit {stuck_after:.0f} s)")
        check_age = mono - self.check_heartbeat
        check_limit = max(stuck_after, 2 * self.config.serve.check_interval_s + 300.0)
        if check_age > check_limit:
            failing.append(f"the check loop has not run for {check_age:.0f} s")
        problems = dict(self.problems)
        if h.save_error:
            problems["state file"] = h.save_error
        successes = [st.last_success for _, st in self.scheduler.snapshot() if st.last_success]
        status = "failing" if failing else ("degraded" if problems else "ok")
        body = {
            "status": status,
            "failing": failing,
            "problems": problems,
            "threads_alive": all(alive.values()),
            "scheduler": {
                "heartbeat": h.heartbeat,
                "heartbeat_age_s": round(beat_age, 3),
                "ticks": h.ticks,
                "last_success": max(successes) if successes else None,
                "state_save_failures": h.save_failures,
                "state_save_failing": h.save_failing,
                "state_load_error": h.load_error,
                "tick_errors": h.tick_errors,
                "clock_steps": h.clock_steps,
                "last_clock_step": h.last_clock_step,
            },
            "last_check": self.report_at.isoformat() if self.report else None,
            "check_status": self.report.status if self.report else None,
            "check_failures": self.check_failures,
            "notification_failures": self.notify_errors,
            "running_jobs": self.scheduler.running(),
        }
        return (503 if failing else 200), body


def _bound(server: Any) -> tuple[str, int]:
    """The address waitress bound (port 0 picks a free one); several for a name such as localhost."""
    if hasattr(server, "effective_port"):
        return str(server.effective_host), int(server.effective_port)
    host, port = server.effective_listen[0]
    return str(host), int(port)


def _route_waitress_logs(service: Service) -> None:
    """waitress's warnings (connection limit reached, queue depth) become the service's own log lines."""

    class ToServiceLog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with contextlib.suppress(Exception):
                service.log({"event": "http", "level": record.levelname.lower(), "message": record.getMessage()})

    logger = logging.getLogger("waitress")
    logger.handlers = [ToServiceLog(logging.WARNING)]
    logger.propagate = False


class _SchedulerCollector:
    def __init__(self, service: Service):
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["environment", "job"]
        runs = CounterMetricFamily("pgrunbook_job_runs", "scheduled job runs by outcome", labels=[*labels, "outcome"])
        skipped = CounterMetricFamily(
            "pgrunbook_job_skipped_overlap", "slots skipped: previous run still going", labels=labels
        )
        missed = CounterMetricFamily(
            "pgrunbook_job_missed", "slots that passed while the service was down", labels=labels
        )
        errors = CounterMetricFamily(
            "pgrunbook_job_schedule_errors", "times the scheduler could not handle the job", labels=labels
        )
        running = GaugeMetricFamily("pgrunbook_job_running", "1 while the job runs", labels=labels)
        duration = GaugeMetricFamily("pgrunbook_job_last_duration_seconds", "the last run's duration", labels=labels)
        last_ok = GaugeMetricFamily(
            "pgrunbook_job_last_run_ok", "1 if the last run succeeded, 0 if it failed", labels=labels
        )
        last_success = GaugeMetricFamily(
            "pgrunbook_job_last_success_timestamp_seconds", "when the job last succeeded", labels=labels
        )
        for job, st in self.service.scheduler.snapshot():
            key = [job.environment, job.name]
            runs.add_metric([*key, "succeeded"], st.runs - st.failures)
            runs.add_metric([*key, "failed"], st.failures)
            skipped.add_metric(key, st.skipped_overlap)
            missed.add_metric(key, st.missed)
            errors.add_metric(key, st.errors)
            running.add_metric(key, 1 if st.running_since else 0)
            if st.last_duration_s is not None:
                duration.add_metric(key, st.last_duration_s)
            if st.last_outcome is not None:
                last_ok.add_metric(key, 1 if st.last_outcome == "succeeded" else 0)
            if st.last_success is not None:
                last_success.add_metric(key, datetime.fromisoformat(st.last_success).timestamp())
        yield from (runs, skipped, missed, errors, running, duration, last_ok, last_success)
        yield from self._service_metrics()

    def _service_metrics(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.service
        h = s.scheduler.health_snapshot()
        notify = CounterMetricFamily("pgrunbook_notification_failures", "notifications that could not be delivered")
        notify.add_metric([], s.notify_errors)
        saves = CounterMetricFamily("pgrunbook_state_save_failures", "failed saves of serve's state file")
        saves.add_metric([], h.save_failures)
        steps = CounterMetricFamily("pgrunbook_clock_steps", "wall-clock steps seen by the scheduler")
        steps.add_metric([], h.clock_steps)
        ticks = CounterMetricFamily("pgrunbook_scheduler_tick_errors", "scheduler iterations that failed")
        ticks.add_metric([], h.tick_errors)
        beat = GaugeMetricFamily(
            "pgrunbook_scheduler_heartbeat_age_seconds", "seconds since the scheduler last completed a tick"
        )
        beat.add_metric([], time.monotonic() - (h.heartbeat_mono or s.started_mono))
        check = GaugeMetricFamily("pgrunbook_check_failing", "consecutive failures of the periodic check")
        check.add_metric([], s.check_failures)
        healthy = GaugeMetricFamily("pgrunbook_serve_up", "1 when /healthz answers 200")
        healthy.add_metric([], 1 if s.health()[0] == 200 else 0)
        yield from (notify, saves, steps, ticks, beat, check, healthy)


_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
]


def _app(service: Service) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application: /healthz open to all; /, /metrics and /api/status behind the token."""

    def reply(
        start: StartResponse, code: str, body: bytes, ctype: str, extra: list[tuple[str, str]] | None = None
    ) -> list[bytes]:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *_HEADERS, *(extra or [])]
        start(code, headers)
        return [body]

    def authorized(environ: dict[str, Any], query: dict[str, list[str]]) -> bool | str:
        token = service.token
        if token is None:
            return True
        offered = [str(environ.get("HTTP_AUTHORIZATION", "")).removeprefix("Bearer ").strip()]
        cookie = SimpleCookie(str(environ.get("HTTP_COOKIE", "")))
        if "pgrunbook_token" in cookie:
            offered.append(cookie["pgrunbook_token"].value)
        if any(o and hmac.compare_digest(o.encode(), token.encode()) for o in offered):
            return True
        from_query = query.get("token", [""])[0]
        if from_query and hmac.compare_digest(from_query.encode(), token.encode()):
            return "cookie"  # set it and redirect, so the token leaves the address bar and history
        return False

    def app(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return reply(start, "405 Method Not Allowed", b"GET only\n", "text/plain", [("Allow", "GET, HEAD")])
        if path == "/healthz":
            code, body = service.health()
            status = "200 OK" if code == 200 else "503 Service Unavailable"
            return reply(start, status, json.dumps(body).encode(), "application/json")
        auth = authorized(environ, parse_qs(environ.get("QUERY_STRING", "")))
        if auth is False:
            return reply(start, "401 Unauthorized", b"token required\n", "text/plain", [("WWW-Authenticate", "Bearer")])
        if auth == "cookie":
            cookie = f"pgrunbook_token={service.token}; HttpOnly; SameSite=Strict; Path=/"
            return reply(start, "303 See Other", b"", "text/plain", [("Location", path), ("Set-Cookie", cookie)])
        try:
            if path == "/metrics":
                return reply(start, "200 OK", generate_latest(service.registry), CONTENT_TYPE_LATEST)
            if path == "/":
                return reply(start, "200 OK", service.page().encode(), "text/html; charset=utf-8")
            if path == "/api/status":
                body = service.report.to_dict() if service.report else {"status": "unknown"}
                return reply(start, "200 OK", json.dumps(body).encode(), "application/json")
            return reply(start, "404 Not Found", b"not found\n", "text/plain")
        except Exception as exc:  # a named error, never an empty reply or a traceback
            text = redact(f"error: {type(exc).__name__}: {exc}\n", service.secrets)
            return reply(start, "500 Internal Server Error", text.encode(), "text/plain")

    return app


def page_title(config: Config) -> str:
    """What the status page is titled by: ``[project] name`` (init writes it), so several services'
    pages open side by side are told apart (trial11 F22); the folder of pgrunbook.toml without one."""
    if config.project.name:
        return config.project.name
    return config.root.name if config.source is None else config.source.parent.name

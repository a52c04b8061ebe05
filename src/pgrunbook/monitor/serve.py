"""``pgrunbook serve``: the scheduler, the periodic check with notifications, /metrics, /healthz and
the status page, in one long-running process.

It binds to loopback unless told otherwise, and refuses any other address without an access token
(the page names databases, hosts and backups). /healthz stays open for liveness probes.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pgrunbook.config import Config
from pgrunbook.errors import EXIT_USAGE, PgRunbookError
from pgrunbook.monitor.check import CheckCollector, CheckReport, notify_changes, run_check
from pgrunbook.monitor.notify import make_notice, send
from pgrunbook.monitor.page import JobView, gather, render_page
from pgrunbook.monitor.schedule import Job
from pgrunbook.monitor.scheduler import JobResult, Scheduler, subprocess_runner

Log = Callable[[dict[str, Any]], None]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Service:
    """Everything ``serve`` runs, startable and stoppable from tests and other programs."""

    def __init__(
        self, config: Config, *, log: Log, secrets: list[str], host: str | None = None, port: int | None = None
    ):
        self.config = config
        self.log = log
        self.host = host if host is not None else config.serve.host
        self.port = port if port is not None else config.serve.port
        self.token = os.environ.get(config.serve.token_env) or None
        if not is_loopback(self.host) and not self.token:
            raise PgRunbookError(
                f"refusing to serve on {self.host} without an access token: the page shows databases and backups",
                hint=f"set {config.serve.token_env}, or keep the default host 127.0.0.1",
                exit_code=EXIT_USAGE,
            )
        self.report: CheckReport | None = None
        self.report_at = datetime.now(UTC)
        self.notify_errors = 0
        self._last_status: str | None = None
        self.stop_event = threading.Event()
        self._check_now = threading.Event()
        self.scheduler = Scheduler(
            config,
            subprocess_runner(config, secrets),
            on_finish=self._job_finished,
            on_event=lambda e: self.log({"event": "job", **asdict(e)}),
        )
        self.registry = CollectorRegistry()
        self.registry.register(CheckCollector(lambda: (self.report, datetime.now(UTC))))  # type: ignore[arg-type]
        self.registry.register(_SchedulerCollector(self))  # type: ignore[arg-type]
        self._threads: list[threading.Thread] = []
        self.httpd: ThreadingHTTPServer | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> str:
        handler = _handler(self)
        try:
            self.httpd = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise PgRunbookError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="choose another --port, or stop what is using it",
                exit_code=EXIT_USAGE,
            ) from None
        self.httpd.daemon_threads = True
        host, port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])
        url = f"http://{host}:{port}/"
        self.log(
            {
                "event": "listening",
                "url": url,
                "jobs": [f"{j.environment}/{j.name} {j.cron}" for j in self.scheduler.jobs],
            }
        )
        for target in (self.httpd.serve_forever, self._check_loop, self._schedule_loop):
            t = threading.Thread(target=target, daemon=True, name=f"pgrunbook-{target.__name__}")
            t.start()
            self._threads.append(t)
        return url

    def stop(self, wait_jobs_s: float = 10.0) -> None:
        self.stop_event.set()
        self._check_now.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        self.scheduler.wait_idle(wait_jobs_s)

    def _schedule_loop(self) -> None:
        self.scheduler.run_forever(self.stop_event)

    def _check_loop(self) -> None:
        while not self.stop_event.is_set():
            self.check_once()
            self._check_now.wait(self.config.serve.check_interval_s)
            self._check_now.clear()

    def check_once(self) -> None:
        """Check, remember the report for /metrics and the page, and notify on a change of status."""
        try:
            report = run_check(self.config)
        except PgRunbookError as exc:
            self.log({"event": "check failed", "error": exc.message})
            return
        self.report, self.report_at = report, datetime.now(UTC)
        try:
            sent = notify_changes(self.config, report)
        except PgRunbookError as exc:  # kept unsaved: the next check tries again
            self.notify_errors += 1
            self.log({"event": "notification failed", "error": exc.message})
            sent = []
        if sent or self._last_status != report.status:  # a change, not every minute's same verdict
            self.log({"event": "check", "status": report.status, "notified": sent})
        self._last_status = report.status

    def _job_finished(self, job: Job, result: JobResult, previous: str | None) -> None:
        if not result.ok:
            notices = [
                make_notice(self.config, job.environment, "failed", f"scheduled {job.name} FAILED", result.detail)
            ]
        elif previous == "failed":
            notices = [
                make_notice(self.config, job.environment, "ok", f"scheduled {job.name} RECOVERED", result.detail)
            ]
        else:
            notices = []
        for d in send(self.config, notices):
            if d.error:
                self.notify_errors += 1
                self.log({"event": "notification failed", "error": d.error})
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
                    self.scheduler.schedule_of(job).next_after(now).isoformat(),
                    st.running_since,
                    st.last_outcome,
                    st.last_finished,
                    st.last_duration_s,
                    st.last_detail,
                    st.skipped_overlap,
                    st.missed,
                )
            )
        return out

    def page(self) -> str:
        views = gather(self.config, self.report)
        jobs = self.job_views()
        for v in views:
            v.jobs = jobs.get(v.name, [])
        name = self.config.root.name if self.config.source is None else self.config.source.parent.name
        overall = self.report.status if self.report else "unknown"
        refresh = max(5, min(60, int(self.config.serve.check_interval_s)))
        events = [asdict(e) for e in self.scheduler.events]
        return render_page(name, overall, views, events, datetime.now(UTC), refresh)

    def health(self) -> tuple[int, dict[str, Any]]:
        alive = all(t.is_alive() for t in self._threads)
        body = {
            "status": "ok" if alive else "failing",
            "threads_alive": alive,
            "last_check": self.report_at.isoformat() if self.report else None,
            "check_status": self.report.status if self.report else None,
            "running_jobs": self.scheduler.running(),
        }
        return (200 if alive else 503), body


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
        running = GaugeMetricFamily("pgrunbook_job_running", "1 while the job runs", labels=labels)
        duration = GaugeMetricFamily("pgrunbook_job_last_duration_seconds", "the last run's duration", labels=labels)
        last_ok = GaugeMetricFamily(
            "pgrunbook_job_last_run_ok", "1 if the last run succeeded, 0 if it failed", labels=labels
        )
        for job, st in self.service.scheduler.snapshot():
            key = [job.environment, job.name]
            runs.add_metric([*key, "succeeded"], st.runs - st.failures)
            runs.add_metric([*key, "failed"], st.failures)
            skipped.add_metric(key, st.skipped_overlap)
            missed.add_metric(key, st.missed)
            running.add_metric(key, 1 if st.running_since else 0)
            if st.last_duration_s is not None:
                duration.add_metric(key, st.last_duration_s)
            if st.last_outcome is not None:
                last_ok.add_metric(key, 1 if st.last_outcome == "succeeded" else 0)
        notify = CounterMetricFamily("pgrunbook_notification_failures", "notifications that could not be delivered")
        notify.add_metric([], self.service.notify_errors)
        yield from (runs, skipped, missed, running, duration, last_ok, notify)


def _handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pgrunbook"

        def log_message(self, *args: object) -> None:  # requests are not logged: URLs may carry the token
            return

        def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorized(self, query: dict[str, list[str]]) -> bool | str:
            token = service.token
            if token is None:
                return True
            offered = [self.headers.get("Authorization", "").removeprefix("Bearer ").strip()]
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            if "pgrunbook_token" in cookie:
                offered.append(cookie["pgrunbook_token"].value)
            if any(o and hmac.compare_digest(o.encode(), token.encode()) for o in offered):
                return True
            from_query = query.get("token", [""])[0]
            if from_query and hmac.compare_digest(from_query.encode(), token.encode()):
                return "cookie"  # set it and redirect, so the token leaves the address bar and history
            return False

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/healthz":
                code, body = service.health()
                self._send(code, json.dumps(body).encode(), "application/json")
                return
            auth = self._authorized(parse_qs(parts.query))
            if auth is False:
                self._send(401, b"token required\n", "text/plain", {"WWW-Authenticate": "Bearer"})
                return
            if auth == "cookie":
                cookie = f"pgrunbook_token={service.token}; HttpOnly; SameSite=Strict; Path=/"
                self._send(303, b"", "text/plain", {"Location": parts.path or "/", "Set-Cookie": cookie})
                return
            try:
                if parts.path == "/metrics":
                    self._send(200, generate_latest(service.registry), CONTENT_TYPE_LATEST)
                elif parts.path == "/":
                    self._send(200, service.page().encode(), "text/html; charset=utf-8")
                elif parts.path == "/api/status":
                    body = service.report.to_dict() if service.report else {"status": "unknown"}
                    self._send(200, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")
            except PgRunbookError as exc:
                self._send(500, f"error: {exc.message}\n".encode(), "text/plain")

    return Handler

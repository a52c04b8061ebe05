"""The read-only status page of ``pgrunbook serve``: server-rendered HTML that works without JavaScript.

Per environment: the check's verdict, a timeline of backups (size and duration over time, drawn by
matplotlib as inline SVG), retention's decision for every backup with the daily/weekly/monthly bucket
that keeps it, migration status, the scheduler's jobs and the last runs with their steps.
Gathering (I/O) is separate from rendering (pure), so the page can be tested on fixed data.
Rendering goes through Jinja2 templates (templates/) with autoescaping on: every label, name, detail
and error is escaped; only the timeline's SVG, drawn by matplotlib (which escapes its own text), is
inserted as markup. What cannot be read (storage, the journal, state files) is named in its place.
"""

from __future__ import annotations

import io
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment as Templates
from jinja2 import PackageLoader, StrictUndefined

from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.prune import backup_infos, policy_of
from pgrunbook.backup.retention import Decision, plan_retention
from pgrunbook.config import Config
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError
from pgrunbook.journal import Journal, journal_path
from pgrunbook.monitor.check import CheckReport, EnvironmentCheck
from pgrunbook.prisma.engine import migration_status

BUCKETS = ("daily", "weekly", "monthly")


@dataclass
class BackupRow:
    id: str
    finished_at: datetime
    size: int
    duration_s: float
    label: str
    verified: bool
    action: str
    buckets: dict[str, str]  # rule -> period that keeps it ("2026-11-24", "2026-W48", "2026-11")
    other_reasons: list[str]


@dataclass
class JobView:
    job: str
    schedule: str
    next_run: str | None
    running_since: str | None
    last_outcome: str | None
    last_finished: str | None
    last_duration_s: float | None
    last_detail: str
    skipped_overlap: int
    missed: int
    retry_at: str | None = None
    error: str | None = None


@dataclass
class EnvironmentView:
    name: str
    check: EnvironmentCheck | None
    policy: str
    backups: list[BackupRow] = field(default_factory=list)
    storage_error: str | None = None
    migrations: dict[str, object] | None = None
    migrations_error: str | None = None
    jobs: list[JobView] = field(default_factory=list)
    runs: list[dict[str, object]] = field(default_factory=list)
    runs_error: str | None = None
    timeline: str = ""  # the SVG, drawn at render time


def backup_rows(manifests: list[Manifest], decisions: list[Decision]) -> list[BackupRow]:
    """Join manifests with retention's decisions; split the reasons into bucket columns."""
    by_id = {d.id: d for d in decisions}
    rows = []
    for m in manifests:
        d = by_id.get(m.id)
        buckets: dict[str, str] = {}
        others: list[str] = []
        for reason in d.reasons if d else ():
            rule, _, period = reason.partition(" ")
            if rule in BUCKETS and d is not None and d.action == "keep":
                buckets[rule] = period
            elif d is not None and d.action == "keep":
                others.append(reason)
        rows.append(
            BackupRow(
                m.id,
                m.finished_at,
                m.size,
                m.duration_s,
                m.label,
                m.verified,
                d.action if d else "keep",
                buckets,
                others,
            )
        )
    return rows


def gather(config: Config, report: CheckReport | None, runs_limit: int = 8) -> list[EnvironmentView]:
    checks = {e.environment: e for e in (report.environments if report else [])}
    views = []
    for name in config.environment_names():
        env = Environment.resolve(config, name)
        r = config.backup.retention
        view = EnvironmentView(
            name,
            checks.get(name),
            f"daily {r.daily}, weekly {r.weekly}, monthly {r.monthly} ({config.backup.timezone})",
        )
        try:
            manifests = env.repository.list_backups()
            decisions = plan_retention(backup_infos(manifests), policy_of(env), config.tz) if manifests else []
            view.backups = backup_rows(manifests, decisions)
        except PgRunbookError as exc:
            view.storage_error = exc.message
        try:
            view.migrations = migration_status(env).to_dict()
        except PgRunbookError as exc:
            view.migrations_error = exc.message
        view.runs, view.runs_error = _recent_runs(journal_path(config), name, runs_limit)
        views.append(view)
    return views


JOURNAL_WAIT_S = 2.0
_journal_reader = threading.Lock()  # at most one read stuck behind a locked journal at a time


def _recent_runs(path: Path, environment: str, limit: int) -> tuple[list[dict[str, object]], str | None]:
    """The journal's last runs, or a named error: a corrupt or locked journal never blanks the page.

    The read runs in a helper thread and is waited for at most ``JOURNAL_WAIT_S`` (the journal's own
    busy timeout is 30 s, meant for procedures that must not give up)."""
    if not path.exists():
        return [], None
    if not _journal_reader.acquire(blocking=False):
        return [], f"journal {path} is still locked by another process; the last runs are shown once it is free"
    result: dict[str, Any] = {}

    def read() -> None:
        try:
            journal = Journal(path)
            try:
                result["runs"] = [rec.to_dict() for rec in journal.runs(limit=limit, environment=environment)]
            finally:
                journal.close()
        except (PgRunbookError, sqlite3.Error, OSError, ValueError, TypeError) as exc:
            result["error"] = exc
        finally:
            _journal_reader.release()

    t = threading.Thread(target=read, daemon=True, name="pgrunbook-journal-read")
    t.start()
    t.join(JOURNAL_WAIT_S)
    if t.is_alive():
        return [], (
            f"journal {path} is locked by another process (a deploy or restore writing to it?); "
            "the last runs are shown once it is free"
        )
    if isinstance(result.get("error"), PgRunbookError):  # the journal's own named error, with its hint
        err = result["error"]
        return [], f"{err}; {err.hint}. The last runs cannot be shown" if err.hint else str(err)
    if "error" in result:
        exc = result["error"]
        return [], (
            f"journal {path} is unreadable ({type(exc).__name__}: {exc}); the last runs cannot be shown. "
            "Move the file aside (pgrunbook starts a new one) and keep it for the record"
        )
    return result.get("runs", []), None


def timeline_svg(rows: list[BackupRow], title: str) -> str:
    """Backup size (stems, kept green / to be removed grey) and duration (line) over time, as SVG."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 2.8), dpi=96)
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    ordered = sorted(rows, key=lambda r: r.finished_at)
    xs = [float(date2num(r.finished_at)) for r in ordered]
    sizes = [r.size / 1e6 for r in ordered]
    colours = ["#2e7d32" if r.action == "keep" else "#9e9e9e" for r in ordered]
    ax.vlines(xs, 0, sizes, colors=colours, linewidth=3)
    ax.scatter(xs, sizes, c=colours, s=24, zorder=3, label="size (MB)")
    ax.set_ylabel("size (MB)")
    ax.set_ylim(bottom=0, top=max(sizes, default=1) * 1.25 or 1)
    ax2 = ax.twinx()
    ax2.plot(xs, [r.duration_s for r in ordered], color="#1565c0", marker="o", markersize=3, linewidth=1)
    ax2.set_ylabel("duration (s)", color="#1565c0")
    ax2.set_ylim(bottom=0, top=max((r.duration_s for r in ordered), default=1) * 1.25 or 1)
    ax.set_title(title, fontsize=10)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if len(xs) == 1:  # one point: give the axis a day around it
        ax.set_xlim(xs[0] - 0.5, xs[0] + 0.5)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def _when(iso: str | datetime | None) -> str:
    if iso is None:
        return "—"
    t = iso if isinstance(iso, datetime) else datetime.fromisoformat(iso)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mb(n: int) -> str:
    if n < 1e6:
        return f"{n / 1e3:,.1f} kB"
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;max-width:1200px}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;width:100%} td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top} th{background:#f4f4f4} code{font-size:.95em}
.ok{color:#1b5e20}.warning{color:#8a5a00}.critical,.failed,.remove,.error{color:#b71c1c}
.badge{display:inline-block;padding:0 .5rem;border-radius:.3rem;font-weight:600;border:1px solid currentColor}
.muted{color:#666} figure{margin:.5rem 0} figure svg{max-width:100%;height:auto}
"""


@cache
def templates() -> Templates:
    """The page's Jinja2 environment: autoescaping on for everything, undefined names an error."""
    env = Templates(
        loader=PackageLoader("pgrunbook.monitor", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["mb"] = _mb
    return env


def render_page(
    project: str,
    overall: str,
    views: list[EnvironmentView],
    events: list[dict[str, str]],
    now: datetime,
    refresh_s: int = 60,
    problems: dict[str, str] | None = None,
) -> str:
    """The whole page as HTML (pure: the same inputs give the same page)."""
    for v in views:
        if v.backups and not v.storage_error:
            v.timeline = timeline_svg(
                v.backups, f"{v.name}: size (stems; grey = retention removes it) and duration (line)"
            )
    return (
        templates()
        .get_template("status.html")
        .render(
            project=project,
            overall=overall,
            views=views,
            events=list(reversed(events[-30:])),
            now=now,
            refresh_s=refresh_s,
            problems=problems or {},
            buckets=BUCKETS,
            css=CSS,
        )
    )


def error_page(project: str, message: str, now: datetime, refresh_s: int = 60) -> str:
    """What the page shows when it cannot be drawn at all: the error, named, instead of an empty reply."""
    return (
        templates()
        .get_template("error.html")
        .render(project=project, message=message, now=now, refresh_s=refresh_s, css=CSS)
    )

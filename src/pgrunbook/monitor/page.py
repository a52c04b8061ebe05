"""The read-only status page of ``pgrunbook serve``: server-rendered HTML that works without JavaScript.

Per environment: the check's verdict, a timeline of backups (size and duration over time, drawn by
matplotlib as inline SVG), retention's decision for every backup with the daily/weekly/monthly bucket
that keeps it, migration status, the scheduler's jobs and the last runs with their steps.
Gathering (I/O) is separate from rendering (pure), so the page can be tested on fixed data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.prune import backup_infos, policy_of
from pgrunbook.backup.retention import Decision, plan_retention
from pgrunbook.config import Config
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError
from pgrunbook.monitor.check import CheckReport, EnvironmentCheck

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
    next_run: str
    running_since: str | None
    last_outcome: str | None
    last_finished: str | None
    last_duration_s: float | None
    last_detail: str
    skipped_overlap: int
    missed: int


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
    from pgrunbook.prisma.engine import migration_status
    from pgrunbook.procedures.journal import Journal, journal_path

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
        path = journal_path(config)
        if path.exists():
            journal = Journal(path)
            try:
                view.runs = [rec.to_dict() for rec in journal.runs(limit=runs_limit, environment=name)]
            finally:
                journal.close()
        views.append(view)
    return views


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
.ok{color:#1b5e20}.warning{color:#8a5a00}.critical,.failed,.remove{color:#b71c1c}
.badge{display:inline-block;padding:0 .5rem;border-radius:.3rem;font-weight:600;border:1px solid currentColor}
.muted{color:#666} figure{margin:.5rem 0} figure svg{max-width:100%;height:auto}
"""


def render_page(
    project: str,
    overall: str,
    views: list[EnvironmentView],
    events: list[dict[str, str]],
    now: datetime,
    refresh_s: int = 60,
) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{refresh_s}">',
        f"<title>pgrunbook — {escape(project)}</title><style>{CSS}</style></head><body>",
        f"<h1>pgrunbook — {escape(project)}</h1>",
        f'<p>Overall: <span class="badge {escape(overall)}" id="overall">{escape(overall.upper())}</span> '
        f'<span class="muted">as of {_when(now)}; this page refreshes every {refresh_s} s</span></p>',
    ]
    for v in views:
        parts.append(_environment(v))
    if events:
        parts.append("<h2>Scheduler events</h2><table><tr><th>time</th><th>environment</th><th>job</th>")
        parts.append("<th>event</th><th>detail</th></tr>")
        for e in reversed(events[-30:]):
            parts.append(
                f"<tr><td>{_when(e['at'])}</td><td>{escape(e['environment'])}</td><td>{escape(e['job'])}</td>"
                f'<td class="{escape(e["what"].split()[0])}">{escape(e["what"])}</td>'
                f"<td>{escape(e['detail'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _environment(v: EnvironmentView) -> str:
    status = v.check.status if v.check else "unknown"
    out = [
        f'<section id="env-{escape(v.name)}"><h2>{escape(v.name)} '
        f'<span class="badge {escape(status)}">{escape(status.upper())}</span></h2>'
    ]
    if v.check:
        out.append("<ul>")
        for f in v.check.findings:
            out.append(f'<li class="{escape(f.status)}"><b>{escape(f.name)}</b>: {escape(f.detail)}</li>')
        out.append("</ul>")
    out.append(_jobs(v))
    out.append(_backups(v))
    out.append(_migrations(v))
    out.append(_runs(v))
    out.append("</section>")
    return "\n".join(out)


def _jobs(v: EnvironmentView) -> str:
    if not v.jobs:
        return ""
    out = ["<h3>Schedule</h3><table><tr><th>job</th><th>schedule</th><th>next run</th><th>last run</th>"]
    out.append("<th>outcome</th><th>duration</th><th>detail</th><th>overlaps skipped</th><th>missed</th></tr>")
    for j in v.jobs:
        outcome = "running since " + _when(j.running_since) if j.running_since else (j.last_outcome or "not yet run")
        dur = f"{j.last_duration_s:.1f} s" if j.last_duration_s is not None else "—"
        out.append(
            f"<tr><td>{escape(j.job)}</td><td><code>{escape(j.schedule)}</code></td><td>{_when(j.next_run)}</td>"
            f'<td>{_when(j.last_finished)}</td><td class="{escape((j.last_outcome or "").split(" ")[0])}">'
            f"{escape(outcome)}</td><td>{dur}</td><td>{escape(j.last_detail)}</td><td>{j.skipped_overlap}</td>"
            f"<td>{j.missed}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _backups(v: EnvironmentView) -> str:
    if v.storage_error:
        return f'<h3>Backups</h3><p class="critical">storage unreadable: {escape(v.storage_error)}</p>'
    if not v.backups:
        return '<h3>Backups</h3><p class="critical">no backup yet</p>'
    out = [
        "<h3>Backups over time</h3>",
        f'<figure id="timeline-{escape(v.name)}" role="img" aria-label="backup size and duration over time">',
        timeline_svg(v.backups, f"{v.name}: size (stems; grey = retention removes it) and duration (line)"),
        "</figure>",
        f"<h3>Retention</h3><p>Policy: {escape(v.policy)}. A backup is kept while a rule still has a period "
        "for it; the newest verified and the newest pre-deploy backup are never removed.</p>",
        "<table><tr><th>backup</th><th>finished</th><th>size</th><th>duration</th><th>label</th><th>verified</th>",
        "<th>daily</th><th>weekly</th><th>monthly</th><th>also kept because</th><th>decision</th></tr>",
    ]
    for b in v.backups:
        cells = "".join(f"<td>{escape(b.buckets.get(rule, ''))}</td>" for rule in BUCKETS)
        out.append(
            f'<tr class="backup" id="backup-{escape(b.id)}"><td><code>{escape(b.id)}</code></td>'
            f"<td>{_when(b.finished_at)}</td><td>{_mb(b.size)}</td><td>{b.duration_s:.1f} s</td>"
            f"<td>{escape(b.label)}</td><td>{'yes' if b.verified else 'no'}</td>{cells}"
            f"<td>{escape('; '.join(b.other_reasons))}</td>"
            f'<td class="{escape(b.action)}">{escape(b.action)}</td></tr>'
        )
    out.append("</table>")
    return "\n".join(out)


def _migrations(v: EnvironmentView) -> str:
    if v.migrations_error:
        return f'<h3>Migrations</h3><p class="critical">{escape(v.migrations_error)}</p>'
    m = v.migrations or {}
    out = ["<h3>Migrations</h3><table>"]
    for key in ("applied", "pending", "failed", "modified", "missing_locally"):
        names = m.get(key) or []
        assert isinstance(names, list)
        shown = ", ".join(str(n) for n in names[-5:]) + (" …" if len(names) > 5 else "")
        cls = "critical" if key in ("failed", "modified", "missing_locally") and names else ""
        out.append(
            f'<tr><th>{key.replace("_", " ")}</th><td class="{cls}">{len(names)}</td><td>{escape(shown)}</td></tr>'
        )
    out.append("</table>")
    return "\n".join(out)


def _runs(v: EnvironmentView) -> str:
    if not v.runs:
        return ""
    out = ["<h3>Last runs</h3>"]
    for r in v.runs:
        steps = r.get("steps") or []
        assert isinstance(steps, list)
        out.append(
            f'<details><summary><span class="{escape(str(r["outcome"]))}">{escape(str(r["outcome"]))}</span> '
            f"{escape(str(r['kind']))} <code>{escape(str(r['run_id']))}</code> {_when(str(r['started_at']))} "
            f"by {escape(str(r['user']))}@{escape(str(r['host']))}</summary><table>"
            "<tr><th>step</th><th>status</th><th>duration</th><th>detail</th></tr>"
        )
        for s in steps:
            dur = f"{s['duration_s']:.2f} s" if s.get("duration_s") is not None else "—"
            out.append(
                f'<tr><td>{escape(str(s["name"]))}</td><td class="{escape(str(s["status"]))}">'
                f"{escape(str(s['status']))}</td><td>{dur}</td><td>{escape(str(s['detail']))}</td></tr>"
            )
        out.append("</table></details>")
    return "\n".join(out)

"""``pgrunbook check``: observe each environment, evaluate, write Prometheus metrics, notify on change.

Exit 0 ok, 1 warning, 2 critical. Notifications go out when the status changes (a failure, and the
recovery after it), to a Slack-compatible webhook whose URL stays in an environment variable.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgrunbook.backup.prune import backup_infos, policy_of
from pgrunbook.backup.retention import plan_retention
from pgrunbook.config import Config
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError
from pgrunbook.monitor.evaluate import Finding, Limits, Observed, Status, evaluate, overall
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.url import redact
from pgrunbook.prisma.history import History

STATUS_VALUE = {"ok": 0, "warning": 1, "critical": 2}


@dataclass
class EnvironmentCheck:
    environment: str
    status: Status
    findings: list[Finding]
    observed: Observed

    def to_dict(self) -> dict[str, object]:
        return {"environment": self.environment, "status": self.status, "checks": [f.to_dict() for f in self.findings]}


@dataclass
class CheckReport:
    status: Status
    environments: list[EnvironmentCheck] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        checks = [{**f.to_dict(), "environment": e.environment} for e in self.environments for f in e.findings]
        return {
            "status": self.status,
            "checks": checks,
            "environments": [e.to_dict() for e in self.environments],
            "notified": self.notified,
        }


def observe(env: Environment) -> Observed:
    try:
        manifests = env.repository.list_backups()
    except PgRunbookError as exc:
        return Observed(None, None, 0, 0, storage_error=exc.message)
    newest = manifests[0].finished_at if manifests else None
    drills = [v.at for m in manifests for v in m.verifications if v.ok and v.kind == "drill"]
    decisions = plan_retention(backup_infos(manifests), policy_of(env), env.config.tz) if manifests else []
    failed: list[str] = []
    db_error = None
    try:
        with connect(env.target(), purpose="check", var=env.url_var(direct=False), connect_timeout=5) as conn:
            history = History(conn, env.target().schema)
            if history.exists():
                failed = sorted({r.migration_name for r in history.rows() if r.failed})
    except PgRunbookError as exc:
        db_error = exc.message
    return Observed(
        newest,
        max(drills) if drills else None,
        len(manifests),
        sum(1 for d in decisions if d.action == "remove"),
        failed,
        None,
        db_error,
    )


def limits_of(config: Config) -> Limits:
    m = config.monitor
    return Limits(timedelta(hours=m.max_age_h), timedelta(hours=m.critical_age_h), timedelta(days=m.drill_max_age_d))


def run_check(config: Config, env_names: list[str] | None = None, now: datetime | None = None) -> CheckReport:
    now = now or datetime.now(UTC)
    results = []
    for name in env_names or config.environment_names():
        env = Environment.resolve(config, name)
        seen = observe(env)
        findings = evaluate(now, seen, limits_of(config))
        results.append(EnvironmentCheck(name, overall(findings), findings, seen))
    worst = max((STATUS_VALUE[r.status] for r in results), default=0)
    return CheckReport(("ok", "warning", "critical")[worst], results)  # type: ignore[arg-type]


def prometheus_text(report: CheckReport, now: datetime) -> str:
    """The textfile-collector format for node_exporter; every name starts with pgrunbook_."""
    lines = [
        "# HELP pgrunbook_check_status 0 ok, 1 warning, 2 critical",
        "# TYPE pgrunbook_check_status gauge",
    ]
    for e in report.environments:
        lines.append(f'pgrunbook_check_status{{environment="{e.environment}"}} {STATUS_VALUE[e.status]}')
    metrics = [
        (
            "pgrunbook_backup_last_success_timestamp_seconds",
            "finish time of the newest complete backup",
            lambda o: o.newest_backup_at.timestamp() if o.newest_backup_at else None,
        ),
        (
            "pgrunbook_backup_age_seconds",
            "age of the newest complete backup",
            lambda o: (now - o.newest_backup_at).total_seconds() if o.newest_backup_at else None,
        ),
        ("pgrunbook_backups", "complete backups in storage", lambda o: o.backups),
        (
            "pgrunbook_drill_last_success_timestamp_seconds",
            "time of the newest successful restore drill",
            lambda o: o.newest_drill_at.timestamp() if o.newest_drill_at else None,
        ),
        ("pgrunbook_backups_past_retention", "backups prune would remove", lambda o: o.prune_would_remove),
        ("pgrunbook_failed_migrations", "unresolved failed migrations", lambda o: len(o.failed_migrations)),
    ]
    for metric, help_text, get in metrics:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for e in report.environments:
            value = get(e.observed)
            if value is not None:
                lines.append(f'{metric}{{environment="{e.environment}"}} {float(value):.3f}')
    return "\n".join(lines) + "\n"


def write_prometheus(path: Path, text: str) -> None:
    """Atomic (temp + rename), so node_exporter never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pgrunbook-", suffix=".prom.tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def notify_changes(config: Config, report: CheckReport) -> list[str]:
    """Post to the webhook when an environment's status changed since the last check."""
    state_path = config.resolve_path(config.monitor.state_path)
    try:
        previous = json.loads(state_path.read_text())
    except (OSError, ValueError):
        previous = {}
    current = {e.environment: e.status for e in report.environments}
    changed = [e for e in report.environments if previous.get(e.environment, "ok") != e.status]
    sent: list[str] = []
    var = config.monitor.webhook_url_env
    url = os.environ.get(var) if var else None
    if changed and url:
        import httpx

        for e in changed:
            bad = [f for f in e.findings if f.status != "ok"]
            what = "; ".join(f"{f.name}: {f.detail}" for f in bad) or "all checks pass again"
            verb = "RECOVERED" if e.status == "ok" else e.status.upper()
            owner = f" (owner: {config.project.owner})" if config.project.owner else ""
            text = f"pgrunbook {verb} for {e.environment} on {socket.gethostname()}{owner}: {what}"
            try:
                httpx.post(
                    url, json={"text": text, "environment": e.environment, "status": e.status}, timeout=10
                ).raise_for_status()
            except httpx.HTTPError as exc:
                raise PgRunbookError(
                    f"could not post the {verb} notification to the webhook: {redact(str(exc), [url])}".replace(
                        url, "<webhook>"
                    ),
                    hint=f"check {var}",
                ) from None
            sent.append(e.environment)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps(current))
    return sent

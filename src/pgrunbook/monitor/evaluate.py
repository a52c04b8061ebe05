"""Is the backup schedule healthy? A pure function of what storage and the database say.

The most common way to lose data is a backup job that silently stopped weeks ago; this turns "how old
is the newest good backup, and the newest drill" into ok / warning / critical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Status = Literal["ok", "warning", "critical"]
ORDER: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Limits:
    max_age: timedelta = timedelta(hours=26)
    critical_age: timedelta = timedelta(hours=48)
    drill_max_age: timedelta = timedelta(days=8)


@dataclass(frozen=True)
class Observed:
    """What the I/O side found for one environment."""

    newest_backup_at: datetime | None
    newest_drill_at: datetime | None
    backups: int
    prune_would_remove: int
    failed_migrations: list[str] = field(default_factory=list)
    storage_error: str | None = None
    database_error: str | None = None
    # the newest drill, when it could not run for a reason outside the backup (its cause's message);
    # a problem of the drill server or the database's definition: a warning, never a critical
    drill_problem: str | None = None


@dataclass(frozen=True)
class Finding:
    name: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def evaluate(now: datetime, seen: Observed, limits: Limits) -> list[Finding]:
    out: list[Finding] = []
    if seen.storage_error:
        out.append(Finding("storage", "critical", seen.storage_error))
    else:
        out.append(Finding("storage", "ok", f"reachable; {seen.backups} backup(s)"))
    if seen.newest_backup_at is None:
        out.append(Finding("backup freshness", "critical", "no backup at all"))
    else:
        age = now - seen.newest_backup_at
        status: Status = "ok" if age <= limits.max_age else ("warning" if age <= limits.critical_age else "critical")
        out.append(
            Finding(
                "backup freshness",
                status,
                f"newest backup {_age(age)} old (limit {_age(limits.max_age)}, "
                f"critical after {_age(limits.critical_age)})",
            )
        )
    if seen.drill_problem is not None:
        out.append(
            Finding(
                "restore drill",
                "warning",
                f"the last drill could not run, a problem of the drill server or the database's definition, "
                f"not of the backup (its own checks passed): {seen.drill_problem}",
            )
        )
    elif seen.newest_drill_at is None:
        out.append(Finding("restore drill", "warning", "no successful verify --drill yet"))
    else:
        age = now - seen.newest_drill_at
        out.append(
            Finding(
                "restore drill",
                "ok" if age <= limits.drill_max_age else "warning",
                f"last successful drill {_age(age)} ago (limit {_age(limits.drill_max_age)})",
            )
        )
    out.append(
        Finding(
            "retention",
            "ok" if seen.prune_would_remove == 0 else "warning",
            "retention satisfied"
            if seen.prune_would_remove == 0
            else f"{seen.prune_would_remove} backup(s) past retention: run pgrunbook backup prune",
        )
    )
    if seen.database_error:
        out.append(Finding("migrations", "warning", f"not checked: {seen.database_error}"))
    elif seen.failed_migrations:
        out.append(
            Finding("migrations", "critical", f"unresolved failed migration(s): {', '.join(seen.failed_migrations)}")
        )
    else:
        out.append(Finding("migrations", "ok", "no failed migration"))
    return out


def overall(findings: list[Finding]) -> Status:
    worst = max((ORDER[f.status] for f in findings), default=0)
    return ("ok", "warning", "critical")[worst]  # type: ignore[return-value]

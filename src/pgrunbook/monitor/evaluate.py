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


# How far ahead of this host's clock a backup's or drill's time may be and still count: NTP keeps hosts
# within milliseconds; minutes ahead means a clock that is wrong somewhere.
CLOCK_SKEW_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class Observed:
    """What the I/O side found for one environment: times as recorded, whatever the clocks said."""

    backup_times: tuple[datetime, ...]  # finish time of every complete backup
    drill_times: tuple[datetime, ...]  # time of every successful restore drill
    backups: int
    prune_would_remove: int
    failed_migrations: list[str] = field(default_factory=list)
    storage_error: str | None = None
    database_error: str | None = None
    # the newest drill, when it could not run for a reason outside the backup (its cause's message);
    # a problem of the drill server or the database's definition: a warning, never a critical
    drill_problem: str | None = None
    # runs of this environment killed before they finished that no later run of their kind settled
    # (journal.unsettled): "<kind> <run id> at step <step>" (or "before its first step"), newest first
    interrupted_runs: list[str] = field(default_factory=list)
    # a journaled run moved the app to another database and pgrunbook's URL still names the old one
    # (monitor/moved.py): what happened, and what to do
    app_moved: str | None = None
    # of ``prune_would_remove``, those past retention for longer than the prune schedule allows (a
    # scheduled prune should have removed them: monitor/check.py past_retention); None: not known, all count
    prune_overdue: int | None = None
    # when the backups past retention but not yet overdue become overdue (the next prune slot + grace)
    prune_due: datetime | None = None
    # the server answered that the environment's own database does not exist (dropped, lost): what it
    # said and the command that recreates it; critical, unlike a database that cannot be reached
    database_missing: str | None = None


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


def newest_trusted(times: tuple[datetime, ...] | list[datetime], now: datetime) -> datetime | None:
    """The newest time not ahead of ``now`` (beyond the tolerance): a time in the future proves nothing."""
    return max((t for t in times if t <= now + CLOCK_SKEW_TOLERANCE), default=None)


def ahead_of(times: tuple[datetime, ...] | list[datetime], now: datetime) -> list[datetime]:
    """The times dated in the future of ``now`` (beyond the tolerance), newest first."""
    return sorted((t for t in times if t > now + CLOCK_SKEW_TOLERANCE), reverse=True)


def evaluate(now: datetime, seen: Observed, limits: Limits) -> list[Finding]:
    """The findings for one environment, in a fixed order: storage, freshness, (clock), drill, retention,
    migrations. Backups and drills dated in the future do not count as fresh; they are flagged."""
    out: list[Finding] = []
    if seen.storage_error:
        out.append(Finding("storage", "critical", seen.storage_error))
    else:
        out.append(Finding("storage", "ok", f"reachable; {seen.backups} backup(s)"))
    newest = newest_trusted(seen.backup_times, now)
    if newest is None:
        ahead = " dated at or before now (see clock)" if seen.backup_times else " at all"
        out.append(Finding("backup freshness", "critical", f"no backup{ahead}"))
    else:
        age = max(now - newest, timedelta(0))
        status: Status = "ok" if age <= limits.max_age else ("warning" if age <= limits.critical_age else "critical")
        out.append(
            Finding(
                "backup freshness",
                status,
                f"newest backup {_age(age)} old (limit {_age(limits.max_age)}, "
                f"critical after {_age(limits.critical_age)})",
            )
        )
    out += _clock(now, seen)
    drill = newest_trusted(seen.drill_times, now)
    if seen.drill_problem is not None:
        out.append(
            Finding(
                "restore drill",
                "warning",
                f"the last drill could not run, a problem of the drill server or the database's definition, "
                f"not of the backup (its own checks passed): {seen.drill_problem}",
            )
        )
    elif drill is None:
        out.append(Finding("restore drill", "warning", "no successful verify --drill yet"))
    else:
        age = max(now - drill, timedelta(0))
        out.append(
            Finding(
                "restore drill",
                "ok" if age <= limits.drill_max_age else "warning",
                f"last successful drill {_age(age)} ago (limit {_age(limits.drill_max_age)})",
            )
        )
    out.append(_retention(seen))
    if seen.database_missing:
        out.append(Finding("database", "critical", seen.database_missing))
    elif seen.database_error:
        out.append(Finding("migrations", "warning", f"not checked: {seen.database_error}"))
    elif seen.failed_migrations:
        out.append(
            Finding("migrations", "critical", f"unresolved failed migration(s): {', '.join(seen.failed_migrations)}")
        )
    else:
        out.append(Finding("migrations", "ok", "no failed migration"))
    if seen.interrupted_runs:  # maintenance may still be on, a staging database left: a task, not history
        out.append(
            Finding(
                "interrupted runs",
                "warning",
                f"{len(seen.interrupted_runs)} run(s) killed before they finished: "
                f"{'; '.join(seen.interrupted_runs)}; pgrunbook runs shows each one's recovery note "
                "(a deploy resumes with pgrunbook deploy --resume RUN_ID)",
            )
        )
    if seen.app_moved:  # backups and checks watch a database the app left: everything else here misleads
        out.append(Finding("app database", "warning", seen.app_moved))
    return out


def _retention(seen: Observed) -> Finding:
    """Backups past retention are a warning only once a scheduled prune should have removed them: right
    after a deploy's pre-deploy backup the morning's scheduled one is past retention at once, and
    the next prune removes it; warning until then paged after every deploy (trial11 F19)."""
    n = seen.prune_would_remove
    if n == 0:
        return Finding("retention", "ok", "retention satisfied")
    overdue = n if seen.prune_overdue is None else seen.prune_overdue
    if overdue == 0:
        # the slot plus its grace: said as when check starts warning, not as the prune's own time (newuser14)
        when = f" (a warning if still there at {seen.prune_due:%Y-%m-%d %H:%M} UTC)" if seen.prune_due else ""
        return Finding(
            "retention",
            "ok",
            f"{n} backup(s) past retention since a newer backup; the next scheduled prune removes them{when}",
        )
    return Finding(
        "retention",
        "warning",
        f"{overdue} backup(s) past retention for longer than the prune schedule allows"
        + (f" ({n} in all)" if n != overdue else "")
        + ": is the prune job running? run pgrunbook backup prune",
    )


def _clock(now: datetime, seen: Observed) -> list[Finding]:
    """A warning when backups or drills are dated in the future: a clock was wrong when they were taken
    (or is wrong here), so their age means nothing and they are left out of freshness."""
    backups, drills = ahead_of(seen.backup_times, now), ahead_of(seen.drill_times, now)
    if not backups and not drills:
        return []
    parts = []
    if backups:
        parts.append(f"{len(backups)} backup(s) dated up to {_age(backups[0] - now)} in the future")
    if drills:
        parts.append(f"{len(drills)} drill(s) dated up to {_age(drills[0] - now)} in the future")
    detail = (
        " and ".join(parts) + ": a clock is wrong (the host that took them, or this one); "
        "they do not count as fresh. Check NTP (timedatectl) on both hosts"
    )
    return [Finding("clock", "warning", detail)]


def overall(findings: list[Finding]) -> Status:
    worst = max((ORDER[f.status] for f in findings), default=0)
    return ("ok", "warning", "critical")[worst]  # type: ignore[return-value]

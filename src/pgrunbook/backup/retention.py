"""Retention as a pure function: restic's keep-daily/weekly/monthly, plus pgrunbook's never-remove rules.

Semantics follow restic's ``ApplyPolicy`` (internal/restic/snapshot_policy.go): backups newest first;
each rule keeps the newest backup of each period (calendar day, ISO week, month) until its count is
spent, counting only periods that have backups; while a rule still has count left when it reaches the
oldest backup, that one is kept too; -1 means every period. The kept set is the union of the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal


@dataclass(frozen=True)
class BackupInfo:
    id: str
    created_at: datetime
    label: str = "manual"
    verified: bool = False
    #: a restore drill of it passed (the proof a restore works; monitoring's "last successful drill")
    drilled: bool = False


@dataclass(frozen=True)
class Policy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 6

    @property
    def empty(self) -> bool:
        return self.daily == 0 and self.weekly == 0 and self.monthly == 0


@dataclass(frozen=True)
class Decision:
    id: str
    action: Literal["keep", "remove"]
    reasons: tuple[str, ...]


def _day(d: datetime) -> int:
    return d.year * 10000 + d.month * 100 + d.day


def _week(d: datetime) -> int:
    year, week, _ = d.isocalendar()
    return year * 100 + week


def _month(d: datetime) -> int:
    return d.year * 100 + d.month


RULES: tuple[tuple[str, Callable[[datetime], int]], ...] = (
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
)


def newest_first(backups: Sequence[BackupInfo]) -> list[BackupInfo]:
    """Total order (time, then id) so the outcome never depends on the order storage listed them."""
    return sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)


def apply_policy(backups: Sequence[BackupInfo], policy: Policy, tz: tzinfo) -> list[Decision]:
    """restic's rules alone, newest first."""
    ordered = newest_first(backups)
    if policy.empty:
        return [Decision(b.id, "keep", ("policy is empty: keeps everything",)) for b in ordered]
    counts = {"daily": policy.daily, "weekly": policy.weekly, "monthly": policy.monthly}
    last: dict[str, int | None] = {name: None for name, _ in RULES}
    out = []
    for nr, b in enumerate(ordered):
        local = b.created_at.astimezone(tz)
        reasons = []
        for name, bucket in RULES:
            if counts[name] == 0:
                continue
            period = bucket(local)
            new_period = period != last[name]
            if new_period or nr == len(ordered) - 1:
                last[name] = period
                if counts[name] > 0:
                    counts[name] -= 1
                reasons.append(
                    f"{name} {_label(name, local)}"
                    + ("" if new_period else " (oldest backup, the rule still had count left)")
                )
        out.append(Decision(b.id, "keep" if reasons else "remove", tuple(reasons) or ("not needed by any rule",)))
    return out


def _label(name: str, d: datetime) -> str:
    if name == "daily":
        return d.strftime("%Y-%m-%d")
    if name == "weekly":
        year, week, _ = d.isocalendar()
        return f"{year}-W{week:02d}"
    return d.strftime("%Y-%m")


def plan_retention(backups: Sequence[BackupInfo], policy: Policy, tz: tzinfo) -> list[Decision]:
    """restic's policy, then the never-remove rules: the newest pre-deploy, the newest pre-restore, the
    newest verified and the newest drilled backup (a successful restore drill is the proof restores work;
    like a backup that pgBackRest's or restic's policy protects, it is not thrown away for a newer,
    undrilled one). The newest pre-restore backup is the way back from the last in-place restore, which
    its output named (trial11 F12: the next night's prune removed it)."""
    decisions = apply_policy(backups, policy, tz)
    ordered = newest_first(backups)
    protected: dict[str, list[str]] = {}
    rules = (
        (lambda b: b.label == "pre-deploy", "newest pre-deploy backup (never removed)"),
        (lambda b: b.label == "pre-restore", "newest pre-restore backup (never removed)"),
        (lambda b: b.verified, "newest verified backup (never removed)"),
        (lambda b: b.drilled, "newest drilled backup (never removed)"),
    )
    for wanted, reason in rules:
        newest = next((b for b in ordered if wanted(b)), None)
        if newest is not None:
            protected.setdefault(newest.id, []).append(reason)
    out = []
    for d in decisions:
        if d.id in protected:
            reasons = tuple(r for r in d.reasons if d.action == "keep") + tuple(protected[d.id])
            out.append(Decision(d.id, "keep", reasons))
        else:
            out.append(d)
    if out and all(d.action == "remove" for d in out):  # cannot happen with a non-empty policy; a guard
        raise ValueError("retention would remove every backup")
    return out

"""``backup prune``: execute retention's decisions and clear what killed runs left behind."""

from __future__ import annotations

from dataclasses import dataclass, field

from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.repository import Leftover
from pgrunbook.backup.retention import BackupInfo, Decision, Policy, plan_retention
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError


@dataclass
class PruneReport:
    decisions: list[Decision]
    leftovers: list[Leftover] = field(default_factory=list)
    dry_run: bool = False

    def to_list(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = [
            {"id": d.id, "action": d.action, "reasons": list(d.reasons)} for d in self.decisions
        ]
        for lo in self.leftovers:
            rows.append(
                {
                    "id": lo.backup_id,
                    "action": "keep" if lo.active else "remove",
                    "reasons": [f"leftover: {lo.reason}"],
                    "leftover": True,
                    "size": lo.size,
                }
            )
        return rows


def backup_infos(manifests: list[Manifest]) -> list[BackupInfo]:
    return [BackupInfo(m.id, m.started_at, m.label, m.verified) for m in manifests]


def policy_of(env: Environment) -> Policy:
    r = env.config.backup.retention
    return Policy(daily=r.daily, weekly=r.weekly, monthly=r.monthly)


def _dead_uploads(env: Environment, active: set[str]) -> list[tuple[str, str]]:
    """Multipart uploads a killed run left in an object store (invisible to listing, but billed)."""
    return [
        (key, uid)
        for key, uid in env.storage.incomplete_uploads(env.name + "/")
        if len(key.split("/")) >= 3 and key.split("/")[1] not in active
    ]


def prune(env: Environment, *, dry_run: bool = False) -> PruneReport:
    """Decide first, then delete (manifest first, so an interrupted prune only leaves leftovers)."""
    repo = env.repository
    manifests = repo.list_backups()
    try:
        decisions = plan_retention(backup_infos(manifests), policy_of(env), env.config.tz)
    except ValueError as exc:
        raise PgRunbookError(f"prune refused: {exc}", hint="check [backup] retention") from None
    leftovers = repo.leftovers()
    report = PruneReport(decisions, leftovers, dry_run)
    active = {lo.backup_id for lo in leftovers if lo.active}
    uploads = _dead_uploads(env, active)
    report.leftovers.extend(
        Leftover(key.split("/")[1], (key,), 0, False, "incomplete multipart upload") for key, _ in uploads
    )
    if dry_run:
        return report
    for key, upload_id in uploads:
        env.storage.abort_upload(key, upload_id)
    for d in decisions:
        if d.action == "remove":
            repo.delete_backup(d.id)
    for lo in leftovers:
        if not lo.active:
            for key in lo.keys:
                env.storage.delete(key)
    return report

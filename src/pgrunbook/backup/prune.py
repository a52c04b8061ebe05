"""``backup prune``: execute retention's decisions and clear what killed runs left behind.

Only this project's and database's backups are decided on (backup/identity.py), and only files
pgrunbook writes are deleted: a storage folder that holds anything else is refused before anything
is removed, and another project's backups in a shared folder are counted, never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgrunbook.backup.identity import is_backup_id, own_file_name
from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.repository import DATABASE_UNREACHABLE, BackupRepository, Leftover
from pgrunbook.backup.retention import BackupInfo, Decision, Policy, plan_retention
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError


@dataclass
class PruneReport:
    decisions: list[Decision]
    leftovers: list[Leftover] = field(default_factory=list)
    dry_run: bool = False
    #: backups of other projects or databases in the same folder: never decided on, never removed
    foreign: list[tuple[str, str]] = field(default_factory=list)
    foreign_note: str | None = None

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
    return [BackupInfo(m.id, m.started_at, m.label, m.verified, m.drilled) for m in manifests]


def policy_of(env: Environment) -> Policy:
    r = env.config.backup.retention
    return Policy(daily=r.daily, weekly=r.weekly, monthly=r.monthly)


def _dead_uploads(env: Environment, active: set[str], ours: set[str], sole: bool) -> list[tuple[str, str]]:
    """Multipart uploads a killed run left in an object store (invisible to listing, but billed): only
    under this project's backup ids, or under any id of pgrunbook's when no other project writes here."""
    out = []
    for key, uid in env.storage.incomplete_uploads(env.name + "/"):
        parts = key.split("/")
        if len(parts) != 3 or not is_backup_id(parts[1]) or not own_file_name(parts[2]) or parts[1] in active:
            continue
        if parts[1] in ours or sole:
            out.append((key, uid))
    return out


def _refuse_presumed(env: Environment, removals: list[Decision]) -> None:
    """Delete only what is proven this project's and database's (repository.ownership_doubt): a
    project without ``[project] id`` whose database never wrote a backup from this server may be
    looking at another project's backups of a database with the same name (trial7 finding 23)."""
    if not removals:
        return
    doubt = env.repository.ownership_doubt()
    if doubt is None:
        return
    where = f"{env.storage.display}/{env.name}"
    down = doubt.startswith(DATABASE_UNREACHABLE)
    n = len(removals)
    raise PgRunbookError(
        f"prune removed nothing: retention would remove {n} backup{'s' if n != 1 else ''} in {where} "
        f"(first {removals[0].id}) that may not be database {env.owner.database}'s: {doubt}",
        hint=("run prune again once the database is reachable (pgrunbook doctor says why it is not); " if down else "")
        + "if several projects share this folder, give each its own [project] id in pgrunbook.toml "
        "(docs/backups.md; backups taken before stay, never pruned); if this database moved to this server, "
        "take a backup here first (pgrunbook backup create): the older server's are then listed apart, never pruned",
    )


def _unless_another_database_lives(
    env: Environment, manifests: list[Manifest], decisions: list[Decision]
) -> list[Decision]:
    """A backup of another database name that counts as this one's history (a restored copy's source up
    to the backup it came from) is never removed by this database's prune. While that database exists,
    it may need the backup and its own prune decides (breaker13b N4: a copy's prune deleted its live
    source's newest backup). Once the name is gone it may have been dropped, or renamed outside
    pgrunbook, and then the backup may be the live database's only one (breaker14 F5); a rename cannot
    be told from a drop, so nothing is removed on that guess: it goes by hand, or by the prune of a
    database under that name."""
    own = env.owner.database
    other = {m.id: m.database for m in manifests if own is not None and m.database != own}
    removing = [d for d in decisions if d.action == "remove" and d.id in other]
    if not removing:
        return decisions
    there = env.owner.databases_of() if env.owner.databases_of is not None else None
    out = []
    for d in decisions:
        name = other.get(d.id)
        if d.action == "remove" and name is not None:
            if there is None:
                why = "which may still exist (the server could not be asked): its own prune decides"
            elif name in there:
                why = "which still exists: its own prune decides"
            else:
                why = (
                    "which is no longer on the server under that name (dropped, or renamed outside pgrunbook: "
                    "then this may be its only backup): never removed on that guess; delete it by hand once sure"
                )
            d = Decision(d.id, "keep", (f"a backup of database {name}, {why}",))
        out.append(d)
    return out


def _unless_in_use(repo: BackupRepository, d: Decision) -> Decision:
    """A backup a running verify, drill, restore or copy reads (its in-use marker) is kept this time
    (break11 #9): removing it would fail that reader mid-way, or leave it restoring a backup that no
    longer exists. The next prune decides again."""
    if d.action != "remove":
        return d
    holder = repo.in_use(d.id)
    if holder is None:
        return d
    return Decision(d.id, "keep", (f"in use by {holder}: kept this time (a later prune decides again)",))


def _refuse_without_database(env: Environment, manifests: list[Manifest]) -> None:
    """Without the environment's database URL, prune cannot tell its database's backups from another's:
    over backups of several databases (a restored copy's, a project id two databases share) retention
    would keep one database's newest and remove all of another's (breaker14b B1, data loss). Refused
    then, before anything is written; with backups of one database only, nothing is mixed up."""
    names = sorted({m.database or "?" for m in manifests})
    if len(names) <= 1:
        return
    var = env.settings.database_url_env
    raise PgRunbookError(
        f"prune refused: {var} is not set, so which database's backups are this environment's is not known, "
        f"and {env.storage.display}/{env.name} holds backups of {len(names)} databases ({', '.join(names[:4])}); "
        "nothing was removed",
        hint=f"set {var} to the environment's database URL, as for backup create, and run prune again",
    )


def prune(env: Environment, *, dry_run: bool = False) -> PruneReport:
    """Decide first, then delete (manifest first, so an interrupted prune only leaves leftovers)."""
    repo = env.repository
    if env.owner.database is None:
        _refuse_without_database(env, repo.scan().ours)
    if not dry_run:  # the first write: refuses a folder that is not pgrunbook's, adopts older backups
        # with the database's lineage, as a backup claims it: a restored copy never backed up yet keeps
        # the history it continues (newuser14: the marker written here had none, and list showed nothing)
        lineage_of = env.owner.restored_from_of
        repo.claim(env.owner.database, None, lineage_of() if lineage_of is not None else None)
    scan = repo.scan()
    manifests = scan.ours
    try:
        decisions = plan_retention(backup_infos(manifests), policy_of(env), env.config.tz)
    except ValueError as exc:
        raise PgRunbookError(f"prune refused: {exc}", hint="check [backup] retention") from None
    _refuse_presumed(env, [d for d in decisions if d.action == "remove"])
    decisions = _unless_another_database_lives(env, manifests, decisions)
    decisions = [_unless_in_use(repo, d) for d in decisions]
    leftovers = repo.leftovers()
    report = PruneReport(decisions, leftovers, dry_run, scan.foreign, scan.foreign_note())
    active = {lo.backup_id for lo in leftovers if lo.active}
    ours = {m.id for m in manifests} | {lo.backup_id for lo in leftovers}
    sole = all(m.matches(env.owner) for m in repo.markers())
    uploads = _dead_uploads(env, active, ours, sole)
    report.leftovers.extend(
        Leftover(key.split("/")[1], (key,), 0, False, "incomplete multipart upload") for key, _ in uploads
    )
    if dry_run:
        return report
    for key, upload_id in uploads:
        env.storage.abort_upload(key, upload_id)
    for i, d in enumerate(decisions):
        if d.action == "remove":
            kept = _unless_in_use(repo, d)  # asked again right before: a reader may have started meanwhile
            if kept is not d:
                report.decisions[i] = kept
                continue
            repo.delete_backup(d.id)
    for lo in leftovers:
        if not lo.active:
            for key in lo.keys:
                env.storage.delete(key)
    return report

"""Migration status as a pure function of the local folder and the history rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pgrunbook.prisma.checksum import checksum_matches
from pgrunbook.prisma.history import HistoryRow


@dataclass(frozen=True)
class LocalScript:
    """What status needs of a local migration: its name and bytes (None when migration.sql is missing)."""

    name: str
    script: bytes | None


@dataclass
class MigrationStatus:
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: started, unfinished, and Prisma's advisory lock held by another session: being applied right now
    running: list[str] = field(default_factory=list)
    #: who runs it (pid, application_name, since), filled in by the engine from pg_stat_activity
    running_by: dict[str, object] | None = None
    modified: list[str] = field(default_factory=list)
    missing_locally: list[str] = field(default_factory=list)
    without_script: list[str] = field(default_factory=list)
    history_table: bool = True
    #: failed names whose row has no logs: the run applying it ended without recording an outcome
    outcome_unknown: list[str] = field(default_factory=list)
    #: failed name → the database error its newest row's logs record (code, message, detail, hint), if
    #: any: filled in by the engine (prisma.logs.logs_error)
    errors: dict[str, str] = field(default_factory=dict)
    #: (index, the statement that cleans it): left INVALID by a failed CREATE INDEX CONCURRENTLY
    invalid_indexes: list[tuple[str, str]] = field(default_factory=list)
    #: no history table in the target schema, but these schemas of the same database hold one
    history_elsewhere: list[str] = field(default_factory=list)

    @property
    def inconsistent(self) -> bool:
        return bool(self.failed or self.modified or self.missing_locally or self.without_script)

    @property
    def exit_code(self) -> int:
        """SPEC: 0 up to date, 1 pending, 2 failed or inconsistent; a running migration counts as pending
        (not up to date, nothing to resolve)."""
        if self.inconsistent:
            return 2
        return 1 if self.pending or self.running else 0

    def to_dict(self) -> dict[str, object]:
        return {
            "applied": self.applied,
            "pending": self.pending,
            "failed": self.failed,
            "errors": self.errors,
            "outcome_unknown": self.outcome_unknown,
            "running": [{"name": n, **(self.running_by or {})} for n in self.running],
            "modified": self.modified,
            "missing_locally": self.missing_locally,
            "without_script": self.without_script,
            "history_table": self.history_table,
            "history_elsewhere": self.history_elsewhere,
            "invalid_indexes": [{"index": i, "fix": fix} for i, fix in self.invalid_indexes],
            "up_to_date": self.exit_code == 0,
        }


def running_row(rows: Sequence[HistoryRow], lock_held: bool) -> HistoryRow | None:
    """The row being applied right now, if any: while another session holds Prisma's advisory lock, the
    newest started row with neither finished_at, rolled_back_at nor logs (a failure writes its logs; a
    lost connection leaves none, but then nobody holds the lock). Prisma's own status has no such state:
    it calls that row failed, and resolving it then records a history the running script contradicts."""
    if not lock_held:
        return None
    unfinished = [r for r in rows if r.failed]
    last = max(unfinished, key=lambda r: r.started_at, default=None)
    return last if last is not None and last.logs is None else None


def resolve_hint(name: str, *, outcome_unknown: bool) -> str:
    """What to do about failed migration ``name``. A row without logs was not failed by an error (a
    failing statement writes its logs): the run applying it was killed or lost its connection, and the
    server may have finished the script after that. Resolving it --rolled-back on the word "failed"
    then records a history the schema contradicts (a trial's finding), so such a row gets its own hint."""
    if outcome_unknown:
        return (
            f"{name} has no logs: the run applying it ended without recording an outcome, so its statements may "
            f"be applied in full, in part or not at all; compare the schema with it (pgrunbook drift), then "
            f"pgrunbook migrate resolve --applied {name} if all of it is there, or undo what is and "
            f"--rolled-back {name}"
        )
    # true for every Prisma: before 7.4 a script without its own COMMIT leaves nothing, from 7.4 on the
    # statements before the failing one stay applied (trial11 F15: "nothing applied" was said of both)
    return (
        f"fix the cause and undo what of {name} stayed applied (with Prisma 7.4+ the statements before the "
        f"failing one do; pgrunbook drift shows them), then pgrunbook migrate resolve --rolled-back {name}, "
        f"or finish it by hand and --applied {name}"
    )


def elsewhere_warning(schema: str, others: Sequence[str], variable: str) -> str | None:
    """What to say when schema ``schema`` has no migration history but schemas ``others`` of the same
    database have one (None when ``others`` is empty). Prisma takes the schema from the URL's
    ``?schema=`` (default public) and would apply every migration again into the new schema, which is
    right for a new tenant and wrong for a typo: said, not refused."""
    if not others:
        return None
    shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    return (
        f"schema {schema} has no migration history, but {shown} in the same database "
        f"{'has' if len(others) == 1 else 'have'} one: if the app's tables are there, ?schema= in {variable} "
        f"names the wrong schema (Prisma uses ?schema=, public when it is left out)"
    )


def compute_status(
    local: Sequence[LocalScript], rows: Sequence[HistoryRow], history_table: bool = True, *, lock_held: bool = False
) -> MigrationStatus:
    """Prisma's rules: applied = a row finished and not rolled back; failed = a row neither; rolled-back
    rows are ignored (the migration is pending again); a local file whose checksum no longer matches its
    applied row is modified; an applied or failed name with no local folder is missing locally.
    ``lock_held``: another session holds the migration advisory lock, so the newest unfinished row is
    running (running_row), not failed."""
    st = MigrationStatus(history_table=history_table)
    local_names = {m.name for m in local}
    applied_rows: dict[str, HistoryRow] = {}
    failed_names: list[str] = []
    running = running_row(rows, lock_held)
    for row in rows:  # ordered by started_at
        if row.applied:
            applied_rows.setdefault(row.migration_name, row)
        elif row is running:
            st.running.append(row.migration_name)
        elif row.failed and row.migration_name not in failed_names:
            failed_names.append(row.migration_name)
    for m in local:
        if m.script is None:
            st.without_script.append(m.name)
            continue
        applied_row = applied_rows.get(m.name)
        if applied_row is not None:
            st.applied.append(m.name)
            if not checksum_matches(m.script, applied_row.checksum):
                st.modified.append(m.name)
        elif m.name not in failed_names and m.name not in st.running:
            st.pending.append(m.name)
    st.failed = failed_names
    latest_failed = {r.migration_name: r for r in rows if r.failed and r is not running}  # rows by started_at
    st.outcome_unknown = [n for n in failed_names if latest_failed[n].logs is None]
    seen: set[str] = set()
    for row in rows:
        if (row.applied or row.failed) and row.migration_name not in local_names and row.migration_name not in seen:
            seen.add(row.migration_name)
            st.missing_locally.append(row.migration_name)
    return st

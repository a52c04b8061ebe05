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
    modified: list[str] = field(default_factory=list)
    missing_locally: list[str] = field(default_factory=list)
    without_script: list[str] = field(default_factory=list)
    history_table: bool = True
    #: (index, the statement that cleans it): left INVALID by a failed CREATE INDEX CONCURRENTLY
    invalid_indexes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def inconsistent(self) -> bool:
        return bool(self.failed or self.modified or self.missing_locally or self.without_script)

    @property
    def exit_code(self) -> int:
        """SPEC: 0 up to date, 1 pending, 2 failed or inconsistent."""
        if self.inconsistent:
            return 2
        return 1 if self.pending else 0

    def to_dict(self) -> dict[str, object]:
        return {
            "applied": self.applied,
            "pending": self.pending,
            "failed": self.failed,
            "modified": self.modified,
            "missing_locally": self.missing_locally,
            "without_script": self.without_script,
            "history_table": self.history_table,
            "invalid_indexes": [{"index": i, "fix": fix} for i, fix in self.invalid_indexes],
            "up_to_date": self.exit_code == 0,
        }


def compute_status(
    local: Sequence[LocalScript], rows: Sequence[HistoryRow], history_table: bool = True
) -> MigrationStatus:
    """Prisma's rules: applied = a row finished and not rolled back; failed = a row neither; rolled-back
    rows are ignored (the migration is pending again); a local file whose checksum no longer matches its
    applied row is modified; an applied or failed name with no local folder is missing locally."""
    st = MigrationStatus(history_table=history_table)
    local_names = {m.name for m in local}
    applied_rows: dict[str, HistoryRow] = {}
    failed_names: list[str] = []
    for row in rows:  # ordered by started_at
        if row.applied:
            applied_rows.setdefault(row.migration_name, row)
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
        elif m.name not in failed_names:
            st.pending.append(m.name)
    st.failed = failed_names
    seen: set[str] = set()
    for row in rows:
        if (row.applied or row.failed) and row.migration_name not in local_names and row.migration_name not in seen:
            seen.add(row.migration_name)
            st.missing_locally.append(row.migration_name)
    return st

"""The manifest: the only proof that a backup is complete, and the recipe to restore it by hand.

It is written last, atomically, and rewritten atomically when a verification is recorded; a folder
without a readable manifest is a leftover, never a backup.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pgrunbook.backup.naming import IN_PROGRESS_NAME as IN_PROGRESS_NAME
from pgrunbook.backup.naming import LABEL_PATTERN as LABEL_PATTERN
from pgrunbook.backup.naming import MANIFEST_NAME as MANIFEST_NAME
from pgrunbook.backup.naming import STANDARD_LABELS as STANDARD_LABELS
from pgrunbook.backup.naming import backup_id as backup_id
from pgrunbook.backup.naming import validate_label as validate_label
from pgrunbook.backup.privileges import Privileges
from pgrunbook.errors import VerificationFailed, printable

FORMAT_VERSION = 1


class TableCount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: str = Field(alias="schema")
    name: str
    rows: int

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.name}"


def _one_line(value: object) -> object:
    """A one-line field read from storage, its control characters shown as escapes: a hostile or
    damaged manifest must not clear the screen or fake output lines (names are validated on write)."""
    return printable(value, one_line=True) if isinstance(value, str) else value


class MigrationHead(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None
    count: int

    _printable = field_validator("name", mode="before")(_one_line)


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    ok: bool
    detail: str = ""


class Verification(BaseModel):
    """``ok``: the backup itself is sound (its own checks passed). A drill that could not restore for a
    reason outside the backup (the target server, the database's definition) keeps ``ok`` and carries
    that ``cause`` (kind, where, message, hint): it is a problem to fix, not a damaged backup."""

    model_config = ConfigDict(extra="forbid")
    at: datetime
    kind: Literal["checksum", "drill"]
    ok: bool
    checks: list[Check]
    tool_version: str
    cause: dict[str, str] | None = None

    @property
    def drill_passed(self) -> bool:
        return self.kind == "drill" and self.ok and self.cause is None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format_version: int = FORMAT_VERSION
    id: str
    environment: str
    database: str
    # who wrote it (backup/identity.py); None in manifests from before repository markers
    project_id: str | None = None
    project_name: str | None = None
    system_identifier: str | None = None  # pg_control_system() of the server dumped, when readable
    server_version: str
    pg_dump_version: str
    format: Literal["custom"] = "custom"
    compression: Literal["zstd", "gzip"]
    encryption: Literal["age"] | None = None
    recipients: list[str] = Field(default_factory=list)
    file: str
    size: int
    archive_size: int | None = None  # the pg_dump archive's size before compression (restore planning)
    # zstd: (stored size, archive size) of each frame, in order; empty for backups written as one frame
    frames: list[tuple[int, int]] = Field(default_factory=list)
    sha256: str
    started_at: datetime
    finished_at: datetime
    duration_s: float
    label: str
    migration_head: MigrationHead | None
    tables: list[TableCount]
    tool_version: str
    restore_command: str
    verifications: list[Verification] = Field(default_factory=list)
    # owners and privileges at backup time (None in manifests written before pgrunbook recorded them)
    privileges: Privileges | None = None

    @property
    def created_at(self) -> datetime:
        return self.started_at

    @property
    def verified(self) -> bool:
        """Verified when the latest verification passed: a later failure revokes trust."""
        return bool(self.verifications) and self.verifications[-1].ok

    @property
    def drilled(self) -> bool:
        return any(v.drill_passed for v in self.verifications)

    @property
    def drill_problem(self) -> Verification | None:
        """The newest drill, when it could not run for a reason outside the backup."""
        drills = [v for v in self.verifications if v.kind == "drill"]
        return drills[-1] if drills and drills[-1].cause is not None else None

    _printable = field_validator(
        "id",
        "environment",
        "database",
        "project_id",
        "project_name",
        "system_identifier",
        "server_version",
        "pg_dump_version",
        "label",
        "tool_version",
        "file",
        "sha256",
        mode="before",
    )(_one_line)

    def row_counts(self) -> dict[tuple[str, str], int]:
        return {(t.schema_, t.name): t.rows for t in self.tables}

    def to_json(self) -> bytes:
        return (self.model_dump_json(by_alias=True, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            return cls.model_validate(json.loads(data))
        except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise VerificationFailed(
                f"manifest {where} is unreadable: {first}",
                hint="the backup cannot be trusted and prune leaves it alone (whose it is cannot be told); "
                "take a new backup, then move that folder aside by hand (pgrunbook doctor lists them)",
            ) from None

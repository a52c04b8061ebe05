"""A backup's id, its label and the names of the files in its folder: what a backup decides before
pg_dump starts, without the manifest's validation models (backup/manifest.py re-exports all of it).
Kept apart so that loading those models, ~25 ms, happens while pg_dump reads the catalog."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pgrunbook.errors import ConfigError

MANIFEST_NAME = "manifest.json"
ARCHIVE_MAGIC = b"PGDMP"  # the first bytes of every custom-format archive (pg_backup_archiver.c, WriteHead)
IN_PROGRESS_NAME = ".in-progress.json"
LABEL_PATTERN = r"[a-z0-9][a-z0-9._-]{0,39}"
STANDARD_LABELS = ("scheduled", "pre-deploy", "manual", "pre-restore")


def validate_label(label: str) -> str:
    if not re.fullmatch(LABEL_PATTERN, label):
        raise ConfigError(
            f"invalid label {label!r}",
            hint="a label is 1-40 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return label


def backup_id(started: datetime, label: str) -> str:
    return f"{started.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{label}"

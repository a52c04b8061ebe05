"""Backup storage: the interface and its registry (`base`), and the backends shipped with pgrunbook,
which register themselves when imported here. Callers import from this package; a backend module
imports `pgrunbook.backup.storage.base` (so the package and its backends import each other in one
direction only: no import cycle, no import at the end of a file)."""

from __future__ import annotations

from pgrunbook.backup.storage import local, s3  # noqa: F401 (registers the shipped backends)
from pgrunbook.backup.storage.base import (
    AtomicWriter,
    Backend,
    ObjectInfo,
    Storage,
    backend_for,
    backends,
    open_storage,
    parse_options,
    register,
)

__all__ = [
    "AtomicWriter",
    "Backend",
    "ObjectInfo",
    "Storage",
    "backend_for",
    "backends",
    "open_storage",
    "parse_options",
    "register",
]

"""The storage interface: list, write atomically, read ranges, delete. Nothing more.

Every backend (local folder or NAS, S3) passes the same tests; callers never know which one they
hold. Atomicity lives in the writer: bytes become visible under their key only on ``commit``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pgrunbook.errors import ConfigError, StorageError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class AtomicWriter(ABC):
    """Bytes written here are invisible under ``key`` until ``commit``; ``abort`` leaves nothing."""

    key: str
    written: int = 0

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


class Storage(ABC):
    display: str
    #: a key whose last part starts with this is a writer's temporary object, never a backup file
    TEMP_MARK = ".tmp-"

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]: ...

    @abstractmethod
    def writer(self, key: str) -> AtomicWriter: ...

    @abstractmethod
    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def probe(self) -> None:
        """Prove the storage is writable: write, read back and delete a small object."""
        key = ".pgrunbook-probe"
        self.write_bytes(key, b"ok")
        try:
            if self.read_bytes(key) != b"ok":
                raise StorageError(f"storage {self.display} returned other bytes than written")
        finally:
            self.delete(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        w = self.writer(key)
        try:
            w.write(data)
            w.commit()
        except BaseException:
            w.abort()
            raise

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.read(key))

    def free_bytes(self) -> int | None:
        """Free space where known (local disks); None where it has no meaning (object stores)."""
        return None


def open_storage(location: str, root: Path, **s3_options: Any) -> Storage:
    """``file:///path``, a plain path (relative to the config's folder), or ``s3://bucket/prefix``."""
    from pgrunbook.backup.storage.local import LocalStorage

    if location.startswith("s3://"):
        from pgrunbook.backup.storage.s3 import S3Storage

        return S3Storage(location, **s3_options)
    if location.startswith("file://"):
        return LocalStorage(Path(location[len("file://") :]))
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise ConfigError(
            f"storage scheme {scheme}:// is not supported yet",
            hint="use a path, file:///path or s3://bucket/prefix for [backup] storage",
        )
    path = Path(location).expanduser()
    return LocalStorage(path if path.is_absolute() else root / path)

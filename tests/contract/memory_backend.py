"""A toy third storage backend, ``mem://name``: objects in a dict of this process. It exists to prove
that a backend is one file plus its registration: importing this module is all it takes for
``open_storage("mem://x", …)`` to work and for the storage contract suite to run against it."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pgrunbook.backup.storage.base import AtomicWriter, Backend, ObjectInfo, Storage, register
from pgrunbook.errors import ObjectMissing, StorageError

_stores: dict[str, dict[str, tuple[bytes, datetime]]] = {}
_lock = threading.Lock()


class MemoryWriter(AtomicWriter):
    def __init__(self, storage: MemoryStorage, key: str):
        storage.check(key)
        self.storage, self.key, self.parts, self.written = storage, key, [bytearray()], 0

    def write(self, data: bytes | memoryview) -> None:
        self.parts[0] += data
        self.written += len(data)

    def commit(self) -> None:
        with _lock:
            self.storage.objects[self.key] = (bytes(self.parts[0]), datetime.now(UTC))

    def abort(self) -> None:
        self.parts = [bytearray()]


class MemoryStorage(Storage):
    def __init__(self, name: str):
        self.display = f"mem://{name}"
        with _lock:
            self.objects = _stores.setdefault(name, {})

    def check(self, key: str) -> None:
        if any(p in (".", "..") for p in key.split("/")):
            raise StorageError(f"invalid storage key {key!r}")

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        with _lock:
            items = [(k, v) for k, v in self.objects.items() if k.startswith(prefix)]
        return sorted((ObjectInfo(k, len(data), at) for k, (data, at) in items), key=lambda o: o.key)

    def writer(self, key: str) -> MemoryWriter:
        return MemoryWriter(self, key)

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        self.check(key)
        with _lock:
            found = self.objects.get(key)
        if found is None:
            raise ObjectMissing(f"{key} is missing from storage {self.display}")
        data = found[0][start:] if length is None else found[0][start : start + length]
        return iter([data] if data else [])

    def delete(self, key: str) -> None:
        with _lock:
            self.objects.pop(key, None)


def _open(location: str, _root: Path, _options: None) -> MemoryStorage:
    return MemoryStorage(location.split("://", 1)[1])


register(Backend("memory", ("mem",), _open, example="mem://name"))

"""The storage interface: list, write atomically, read ranges, delete. Nothing more.

Every backend (local folder or NAS, S3, and whatever registers itself here) passes the same contract
tests (tests/contract/); callers never know which one they hold. Atomicity lives in the writer: bytes
become visible under their key only on ``commit``.

Backends register themselves: a :class:`Backend` names its URL schemes, its options table
(``[backup.<name>]``) and how to open a location. ``open_storage`` picks one by the location's scheme;
adding a backend (Azure Blob, GCS) is one module importing this one plus its import in the package's
``__init__`` — or a call to :func:`register` from anywhere, as the tests' in-memory backend does.
(Backend modules load their client libraries, such as boto3, only when a storage is opened.)
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pgrunbook.config import BackupConfig, describe_problems
from pgrunbook.errors import ConfigError, StorageError


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing: ``key`` relative to the storage root, ``size`` in bytes, ``modified``
    (UTC). ``link``: a symbolic link on local storage, listed so that a folder holding one is never taken
    for something it is not (a manifest that is a link is an unreadable manifest, not a missing one), but
    never read, written or deleted through."""

    key: str
    size: int
    modified: datetime
    link: bool = False


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
    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (committed ones only), sorted by key."""

    @abstractmethod
    def writer(self, key: str) -> AtomicWriter:
        """A writer whose bytes appear under ``key`` only on ``commit`` (replacing what was there)."""

    @abstractmethod
    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The object's bytes from ``start`` (``length`` of them, or to the end), in order.

        Raises ObjectMissing (a StorageError: "… is missing from storage …") when the key does not exist,
        at the latest when the first bytes are asked for."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a key that is already gone is not an error."""

    def incomplete_uploads(self, prefix: str = "") -> builtins.list[tuple[str, str]]:
        """(key, upload id) of uploads a killed writer left behind, invisible to ``list`` but kept by the
        store (S3's multipart uploads); none for stores whose writers leave only temporary objects."""
        return []

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Discard one of :meth:`incomplete_uploads`."""
        raise StorageError(f"storage {self.display} keeps no incomplete uploads ({key})")

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


# --- the registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One kind of storage.

    ``name`` is also its options table, ``[backup.<name>]``, validated by ``options`` (a pydantic
    model; None: the backend takes no options). ``schemes`` are the location prefixes it answers to
    (``"s3"`` for ``s3://…``); the empty scheme means a plain path. ``open(location, root, options)``
    returns the storage: ``root`` is the config file's folder (for relative paths), ``options`` an
    instance of the ``options`` model (or None). It raises ConfigError for a location it cannot parse."""

    name: str
    schemes: tuple[str, ...]
    open: Callable[[str, Path, Any], Storage]
    options: type[BaseModel] | None = None
    example: str = field(default="")


_backends: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Make a backend available to ``open_storage``; a later registration of a name replaces it."""
    for other in builtins.list(_backends.values()):
        if other.name != backend.name and set(other.schemes) & set(backend.schemes):
            raise ValueError(f"storage scheme(s) {set(other.schemes) & set(backend.schemes)} already taken")
    _backends[backend.name] = backend
    return backend


def backends() -> dict[str, Backend]:
    """Every registered backend by name."""
    return dict(_backends)


def _scheme(location: str) -> str:
    return location.split("://", 1)[0].lower() if "://" in location else ""


def backend_for(location: str) -> Backend:
    """The backend of a location, by its scheme; ConfigError names the schemes there are."""
    scheme = _scheme(location)
    known = backends()
    for backend in known.values():
        if scheme in backend.schemes:
            return backend
    examples = ", ".join(b.example for b in known.values() if b.example)
    raise ConfigError(
        f"storage scheme {scheme}:// is not supported",
        hint=f"use one of: {examples} for [backup] storage",
    )


def parse_options(
    tables: Mapping[str, Any], origin_of: Callable[[str], str | None] | None = None, source: Path | None = None
) -> dict[str, Any]:
    """Validate every backend's options table (``[backup.<name>]``) by that backend's own model.

    ``tables`` maps a backend name to its raw table; ``origin_of(name)`` names the override variable that
    set a table (``PGRUNBOOK_BACKUP__S3__SSE``), or None when it is the file's. Returns the name ->
    validated model instance. Raises ConfigError for a table no backend owns (a [backup] key misspelt,
    most often) or a value its backend refuses, in one line naming the variable when one set it, else
    ``source`` (the config file) when given."""
    known = backends()
    out: dict[str, Any] = {}
    for name, raw in tables.items():
        backend = known.get(name)
        var = origin_of(name) if origin_of is not None else None
        where = f" (from {var})" if var else ""
        if backend is None or backend.options is None:
            owners = ", ".join(sorted(n for n, b in known.items() if b.options is not None))
            keys = ", ".join(n for n in BackupConfig.model_fields if n != "other_storage_options")
            raise ConfigError(
                f"{source}: " * bool(source and not var)
                + f"unknown key backup.{name}{where}: neither a [backup] key nor a storage backend's options table",
                hint=f"keys of [backup]: {keys}; storage backends with options: {owners}"
                + (f"; fix or unset {var}" if var else ""),
            )
        try:
            out[name] = backend.options.model_validate(raw or {})
        except ValidationError as exc:
            overrides = {f"backup.{name}": var} if var else {}
            problems, hints = describe_problems(exc, backend.options, overrides=overrides, prefix=("backup", name))
            raise ConfigError(
                f"{source}: {problems}" if source and not var else problems,
                hint="; ".join(
                    [
                        *hints,
                        *([f"fix or unset {var}"] if var else []),
                        "docs/offsite.md describes [backup.s3]" if name == "s3" else "see docs/configuration.md",
                    ]
                ),
            ) from None
    return out


def open_storage(
    location: str,
    root: Path,
    options: Mapping[str, Any] | None = None,
    origin_of: Callable[[str], str | None] | None = None,
    source: Path | None = None,
) -> Storage:
    """The storage at ``location``: a plain path (relative to ``root``, the config's folder),
    ``file:///path``, ``s3://bucket/prefix`` or any registered backend's scheme.

    ``options`` maps backend names to their raw options tables (``[backup.s3]`` …); all of them are
    validated, not only the one this location uses, so a mistake shows before the day a copy needs it;
    ``origin_of``, ``source``: see parse_options."""
    parsed = parse_options(options or {}, origin_of, source)
    backend = backend_for(location)
    chosen = parsed.get(backend.name)
    if chosen is None and backend.options is not None:
        chosen = backend.options()
    return backend.open(location, root, chosen)

"""Local folder or NAS mount: temp name, fsync, rename, fsync the folder. Files 0600, folders 0700.

A large file is flushed to the device while it is still being written (`LocalWriter`): the kernel keeps
a backup's bytes in memory until told otherwise, so the one fsync at the end used to write all of it
while the command waited (0.14 s of a 7 s backup of 212 MB, measured); now that fsync finds little left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pgrunbook.backup.storage.base import AtomicWriter, Backend, ObjectInfo, Storage, register
from pgrunbook.errors import ObjectMissing, StorageError

CHUNK = 1 << 20
#: a background fdatasync starts each time this many bytes were written since the last one began
SYNC_EVERY = 32 << 20


def _storage_error(exc: OSError, what: str, where: Path, written: int = 0) -> StorageError:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return StorageError(
            f"storage full: no space left on the device of {where} after writing {written / 1e6:.1f} MB",
            hint="free space there or point [backup] storage at a larger volume; nothing of this backup was kept",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(
            f"storage not writable: cannot {what} {where} ({exc.strerror})",
            hint="check the folder's permissions and mount, or point [backup] storage elsewhere",
        )
    return StorageError(f"storage error: cannot {what} {where}: {exc.strerror or exc}")


def _refuse_special(fd: int, path: Path) -> None:
    """Close ``fd`` and raise StorageError unless it is a regular file: pgrunbook writes only files, and
    a named pipe, device or socket with a backup's name would block a read (breaker trial 11 #16)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return
    os.close(fd)
    kind = "folder" if stat.S_ISDIR(mode) else "named pipe" if stat.S_ISFIFO(mode) else "special file"
    raise StorageError(
        f"storage path {path} is a {kind}, not a file; pgrunbook reads only the files it wrote, so it was not read",
        hint=f"move {path} out of the storage folder: it is not a backup file pgrunbook wrote",
    )


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter(AtomicWriter):
    """Writes a temp file, then fsync, rename, fsync of the folder (`commit`). Every `SYNC_EVERY` bytes
    a background thread flushes what was written so far (fdatasync), one flush at a time, so the
    writing never waits for the device and the final fsync has only the last bytes left. ``synced``:
    how many bytes a background flush has made durable. A failed flush fails the next write (or the
    commit): the file is removed and the error says why (a full device: "storage full")."""

    def __init__(self, storage: LocalStorage, key: str):
        self.key = key
        self.final = storage.path_of(key)
        self.temp = self.final.with_name(f".{self.final.name}{Storage.TEMP_MARK}{uuid.uuid4().hex[:12]}")
        self.written = 0
        self.synced = 0
        self._sync_started = 0  # bytes written when the last background flush began
        self._syncer: threading.Thread | None = None
        self._sync_error: OSError | None = None
        self._done = False
        try:
            storage.make_dirs(self.final.parent)
            self._fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as exc:
            raise _storage_error(exc, "create a file in", self.final.parent) from None

    def write(self, data: bytes | memoryview) -> None:
        if self._done:
            return  # aborted: late writes (a compressor flushing on its way out) must not mask the first error
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.written += n
        except OSError as exc:
            self.abort()
            raise _storage_error(exc, "write", self.final, self.written) from None
        failed = self._sync_error
        if failed is not None:  # a background flush found the device full (NFS, thin volumes): stop now,
            self.abort()  # not after writing the rest of the archive for nothing
            raise _storage_error(failed, "write", self.final, self.written) from None
        if self.written - self._sync_started >= SYNC_EVERY and not (self._syncer and self._syncer.is_alive()):
            self._sync_started = self.written
            self._syncer = threading.Thread(target=self._sync, args=(self.written,), name="storage flush", daemon=True)
            self._syncer.start()

    def _sync(self, upto: int) -> None:
        try:
            (getattr(os, "fdatasync", None) or os.fsync)(self._fd)
            self.synced = upto
        except OSError as exc:  # told at commit
            self._sync_error = exc

    def _wait_for_sync(self) -> None:
        """The background flush must end before the descriptor is closed (or reused)."""
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None

    def commit(self) -> None:
        try:
            self._wait_for_sync()
            if self._sync_error is not None:
                raise self._sync_error
            os.fsync(self._fd)
            os.close(self._fd)
            self._done = True
            os.replace(self.temp, self.final)
            _fsync_dir(self.final.parent)
        except OSError as exc:
            self.abort()
            raise _storage_error(exc, "finish", self.final, self.written) from None

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._wait_for_sync()
            with contextlib.suppress(OSError):
                os.close(self._fd)
        with contextlib.suppress(OSError):
            self.temp.unlink()


class LocalStorage(Storage):
    def __init__(self, root: Path):
        self.root = root
        self.display = str(root)

    def path_of(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise StorageError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def _refuse_links(self, path: Path) -> None:
        """Never through a symbolic link below the root: a link there could lead a delete (prune) or a
        write out of the repository. The root itself may be a link (a mount point's alias)."""
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            if current.is_symlink():
                raise StorageError(
                    f"storage path {current} is a symbolic link (to {os.readlink(current)}); pgrunbook does not "
                    "follow links inside its storage, so nothing there was read, written or deleted",
                    hint=f"point [backup] storage at the real folder, or replace the link {current} with it",
                )

    def make_dirs(self, folder: Path) -> None:
        self._refuse_links(folder)
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(d, 0o700)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with ``prefix``, as an object store lists them."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.path_of(folder) if folder else self.root
        self._refuse_links(base)
        if not base.is_dir():
            return []
        out = []
        try:
            for dirpath, _dirs, files in os.walk(base):  # does not descend into linked folders
                for name in files:
                    path = Path(dirpath) / name
                    key = path.relative_to(self.root).as_posix()
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = path.lstat()  # a link is listed as itself (never pgrunbook's: it writes files)
                    except FileNotFoundError:
                        continue
                    link = stat.S_ISLNK(st.st_mode)
                    out.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), link))
        except OSError as exc:
            raise _storage_error(exc, "list", base) from None
        return sorted(out, key=lambda o: o.key)

    def writer(self, key: str) -> LocalWriter:
        return LocalWriter(self, key)

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        path = self.path_of(key)
        self._refuse_links(path)
        try:
            # O_NONBLOCK: opening a named pipe would otherwise wait for a writer forever, deaf to a stop
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from storage {self.display}") from None
        except OSError as exc:
            raise _storage_error(exc, "read", path) from None
        _refuse_special(fd, path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return self._chunks(os.fdopen(fd, "rb"), start, length)

    @staticmethod
    def _chunks(f: object, start: int, length: int | None) -> Iterator[bytes]:
        import io

        assert isinstance(f, io.BufferedReader)
        with f:
            f.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        path = self.path_of(key)
        self._refuse_links(path)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _storage_error(exc, "delete", path) from None
        # empty folders left by a removed backup go too, up to the storage root
        folder = path.parent
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    def free_bytes(self) -> int | None:
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            return None


def _open(location: str, root: Path, _options: None) -> LocalStorage:
    """``file:///abs/path`` or a plain path, relative to the config file's folder."""
    if location.lower().startswith("file://"):
        return LocalStorage(Path(location[len("file://") :]))
    path = Path(location).expanduser()
    return LocalStorage(path if path.is_absolute() else root / path)


register(Backend("local", ("", "file"), _open, example="a folder, file:///path"))

"""The local backend flushes a large file to the device while it is still being written, so a backup's
final fsync (which the command waits for) has only the last bytes left. Real files, real fdatasync."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from pgrunbook.backup.storage import Storage, open_storage
from pgrunbook.backup.storage.local import SYNC_EVERY, LocalWriter
from pgrunbook.errors import StorageError

CHUNK = 1 << 20


def _write(writer: LocalWriter, total: int) -> str:
    sha = hashlib.sha256()
    block = os.urandom(CHUNK)
    for i in range(total // CHUNK):
        data = block[i % 251 :] + block[: i % 251]  # every chunk differs a little
        writer.write(data)
        sha.update(data)
    return sha.hexdigest()


def test_a_large_file_is_flushed_while_it_is_written(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path / "store"), tmp_path)
    writer = store.writer("b/db.dump.zst")
    assert isinstance(writer, LocalWriter)
    digest = _write(writer, 3 * SYNC_EVERY + 5 * CHUNK)
    writer._wait_for_sync()  # the flush under way, if any, ends
    # at least the flush that began after SYNC_EVERY bytes made those bytes durable before the commit
    assert writer.synced >= SYNC_EVERY, writer.synced
    writer.commit()
    final = tmp_path / "store" / "b" / "db.dump.zst"
    assert hashlib.sha256(final.read_bytes()).hexdigest() == digest
    assert [p.name for p in final.parent.iterdir()] == ["db.dump.zst"]


def test_a_small_file_starts_no_flush(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path / "store"), tmp_path)
    writer = store.writer("m.json")
    assert isinstance(writer, LocalWriter)
    writer.write(b"{}")
    assert writer._syncer is None and writer.synced == 0
    writer.commit()
    assert (tmp_path / "store" / "m.json").read_bytes() == b"{}"


def test_an_abort_during_a_flush_leaves_nothing(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path / "store"), tmp_path)
    writer = store.writer("b/db.dump.zst")
    assert isinstance(writer, LocalWriter)
    _write(writer, SYNC_EVERY + CHUNK)  # a flush has just begun
    writer.abort()  # waits for it before closing the file, then removes the temp file
    assert writer._syncer is None
    left = [p.name for p in (tmp_path / "store" / "b").iterdir()]
    assert left == [], left
    assert not any(Storage.TEMP_MARK in name for name in left)


def test_a_flush_that_finds_the_device_full_stops_the_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trial #4: a background flush failing with ENOSPC (a device that accepts writes into the page cache
    and runs out of room only when they reach it: NFS, thin-provisioned volumes) stops the backup at the
    next write, as a write that fails does, instead of writing the rest of the archive and failing at the
    commit. The flush's failure is simulated (fdatasync replaced): the disk-full tests on a real tmpfs
    (tests/reliability/test_bad_input.py) cannot make it happen, as tmpfs's fdatasync never fails."""

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdatasync", full, raising=False)
    monkeypatch.setattr(os, "fsync", full)
    store = open_storage(str(tmp_path / "store"), tmp_path)
    writer = store.writer("b/db.dump.zst")
    assert isinstance(writer, LocalWriter)
    block = os.urandom(CHUNK)
    with pytest.raises(StorageError) as caught:
        for _ in range(4 * SYNC_EVERY // CHUNK):
            writer.write(block)
            if writer._syncer is not None:
                writer._syncer.join()  # the flush (and its failure) comes before the next write
    assert writer.written <= SYNC_EVERY + CHUNK, writer.written  # stopped at the write after the flush
    assert caught.value.message.startswith(f"storage full: no space left on the device of {writer.final}")
    assert "nothing of this backup was kept" in (caught.value.hint or "")
    assert list((tmp_path / "store" / "b").iterdir()) == []

"""Reading a stored backup back: the stored bytes hashed, decrypted, decoded to the pg_dump archive, and
its table of contents read by ``pg_restore --list`` — the first half of every verify, drill and restore.

Checksum and table of contents are read in one streaming pass over storage (the pre-deploy backup is
verified inside the maintenance window).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from typing import IO

import psycopg
import zstandard

from pgrunbook.backup.codec import CodecStack, for_reading
from pgrunbook.backup.frames import ManifestMismatch, frame_table_problem
from pgrunbook.backup.manifest import Check, Manifest
from pgrunbook.backup.naming import ARCHIVE_MAGIC
from pgrunbook.environment import Environment
from pgrunbook.errors import ManifestInconsistent, PgRunbookError, VerificationFailed
from pgrunbook.postgres import runner
from pgrunbook.postgres.connect import connect, server_version
from pgrunbook.postgres.tool_errors import read_failure
from pgrunbook.postgres.tools import ClientTools, archive_format, restore_tools, version_of
from pgrunbook.postgres.url import DatabaseTarget
from pgrunbook.progress import ProgressFn, counted, no_progress

_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA ")


def tools_for_archive(env: Environment, manifest: Manifest) -> ClientTools:
    """pg_restore able to read this archive (its table of contents): see tools.restore_tools."""
    return restore_tools(_dump_version(manifest), None, None, env.config.postgres.bin_dir)


def tools_to_restore(
    env: Environment, manifest: Manifest, target: DatabaseTarget, conn: psycopg.Connection | None = None
) -> ClientTools:
    """pg_restore able to read this archive and restore it into ``target``'s server (asked its version,
    on ``conn`` when given); raises ToolError, naming what to install, when none here can."""
    if conn is not None:
        major, _, text = server_version(conn)
    else:
        with connect(target, purpose="restore") as conn:
            major, _, text = server_version(conn)
    return restore_tools(_dump_version(manifest), major, text, env.config.postgres.bin_dir)


def _dump_version(manifest: Manifest) -> str:
    try:
        version_of(manifest.pg_dump_version)
    except ValueError:
        raise PgRunbookError(f"manifest of {manifest.id} names an unknown pg_dump version") from None
    return manifest.pg_dump_version


#: custom-format archive versions (the 3 bytes after "PGDMP": major, minor, revision; pg_backup_archiver.h
#: K_VERS_1_x) and the PostgreSQL major whose pg_dump first wrote each, hence the oldest pg_restore that
#: reads it (pg_restore refuses a newer one: "unsupported version (1.16) in file header"):
#: K_VERS_1_14 (table access methods) PostgreSQL 12; K_VERS_1_15 (compression algorithm in the header)
#: 16; K_VERS_1_16 (large-object metadata entries, relkind) 17, still written by 18. K_VERS_1_13 came
#: with the 2018 search_path fix in minor releases of 9.3-10; every pg_restore pgrunbook supports reads
#: it and anything older. Same table as postgres/tools.py archive_format() and min_restore_major().
ARCHIVE_SINCE = {(1, 14): 12, (1, 15): 16, (1, 16): 17}


def header_version(head: bytes) -> tuple[int, int] | None:
    """The archive format version (major, minor) from an archive's first bytes; None when they are not
    a custom-format header (pg_restore --list then says what is wrong)."""
    if len(head) < 8 or not head.startswith(ARCHIVE_MAGIC):
        return None
    return head[5], head[6]


def _writers(v: tuple[int, int]) -> tuple[str, str]:
    """Which pg_dump writes archive format ``v``, and which pg_restore reads it."""
    newest = max(ARCHIVE_SINCE)
    if v > newest:
        return "a pg_dump newer than this pgrunbook knows", f"a pg_restore newer than {ARCHIVE_SINCE[newest]}"
    if v in ARCHIVE_SINCE:
        since = ARCHIVE_SINCE[v]
        later = [m for k, m in ARCHIVE_SINCE.items() if k > v]
        until = min(later) - 1 if later else None
        dump = f"pg_dump {since}" + ("" if until == since else f" to {until}" if until else " or newer")
        return dump, f"pg_restore {since} or newer"
    return "pg_dump 11 or older", "any pg_restore"


def header_problem(manifest: Manifest, head: bytes) -> ManifestMismatch | None:
    """The archive's own header against the manifest's pg_dump_version (break11 #2): a manifest that
    names another pg_dump than the one whose format the archive has is inconsistent with the stored
    file, never the file damaged; the pg_restore it needs follows from the header itself."""
    v = header_version(head)
    if v is None:
        return None
    try:
        dump_major = version_of(manifest.pg_dump_version).major
    except ValueError:
        return None
    expected = archive_format(dump_major)
    actual = f"{v[0]}.{v[1]}"
    if (v <= (1, 13)) if expected.endswith("or older") else actual == expected:
        return None
    dump, restore = _writers(v)
    return ManifestMismatch(
        "pg_dump_version",
        f"the archive's header says format {actual} (written by {dump}), the manifest says pg_dump "
        f"{manifest.pg_dump_version} (format {expected}); reading the archive needs {restore}",
    )


class _Head:
    """The archive's first bytes, kept as the stream passes (header_problem)."""

    def __init__(self) -> None:
        self.data = b""

    def keep(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if len(self.data) < 8:
                self.data += chunk[: 8 - len(self.data)]
            yield chunk


def stored_bytes(env: Environment, manifest: Manifest) -> Iterator[bytes]:
    """The backup's file as stored, in chunks."""
    return env.storage.read(env.repository.dump_key(manifest))


def codecs(env: Environment, manifest: Manifest) -> CodecStack:
    """The codecs the backup was written with, able to read it back with this machine's keys."""
    return for_reading(manifest, env.config.backup, env.config.root)


def plaintext(env: Environment, manifest: Manifest, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The stored bytes with every layer over the compression undone (decrypted): still compressed."""
    return codecs(env, manifest).unwrap(chunks)


def archive_bytes(env: Environment, manifest: Manifest, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The pg_dump archive from stored bytes, through every codec of its stack; raises
    zstandard.ZstdError or VerificationFailed on damage."""
    return codecs(env, manifest).read(chunks, manifest.frames)


class HashTap:
    """Hashes and counts stored bytes as they stream past; then says whether they are the ones written."""

    def __init__(self, chunks: Iterator[bytes], progress: ProgressFn, total: int, stage: str = "verify"):
        self.chunks = chunks
        self.sha = hashlib.sha256()
        self.size = 0
        self.progress = progress
        self.total = total
        self.stage = stage

    def __iter__(self) -> Iterator[bytes]:
        for chunk in counted(self.chunks, self.progress, self.stage, self.total):
            self.sha.update(chunk)
            self.size += len(chunk)
            yield chunk

    def checks(self, manifest: Manifest) -> list[Check]:
        digest = self.sha.hexdigest()
        return [
            Check(
                name="size",
                ok=self.size == manifest.size,
                detail=f"{self.size} bytes stored, manifest says {manifest.size}",
            ),
            Check(
                name="checksum",
                ok=digest == manifest.sha256,
                detail="sha256 matches the manifest"
                if digest == manifest.sha256
                else f"sha256 {digest[:16]}… differs from the manifest's {manifest.sha256[:16]}…",
            ),
        ]


def check_stored(
    env: Environment,
    manifest: Manifest,
    tools: ClientTools,
    progress: ProgressFn = no_progress,
    *,
    listing_out: list[str] | None = None,
) -> list[Check]:
    """Checksum, size, compression frame and pg_restore --list, in one pass over storage; the table of
    contents is appended to ``listing_out`` when given (the restore's pre-flight reads it)."""
    tap = HashTap(stored_bytes(env, manifest), progress, manifest.size)
    stack = codecs(env, manifest)
    unreadable = stack.unreadable()
    if unreadable:
        return _check_stored_bytes_only(manifest, tap, unreadable)
    frame_error, failure = "", None
    mismatch = table_problem(manifest, stack)
    if mismatch is not None:  # nothing to decode by: the stored bytes are still hashed for the report
        for _ in tap:
            pass
        return read_checks(tap.checks(manifest), stack, mismatch)
    size = _Size()
    with (
        runner.start(tools.pg_restore, ["--list"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as lister,
        DataBlocks(tools) if stack.blocks_in_archive else contextlib.nullcontext() as blocks,
    ):
        listing: list[bytes] = []
        reader = _read_all_in_thread(lister.stdout, listing)
        head = _Head()
        archive = head.keep(size.count(stack.read(iter(tap), manifest.frames)))
        try:
            runner.feed(lister, blocks.tee(archive) if blocks is not None else archive)
        except (zstandard.ZstdError, VerificationFailed) as exc:
            if isinstance(exc, ManifestMismatch):
                mismatch = exc
            frame_error, failure = str(exc), exc
            with contextlib.suppress(OSError):
                lister.stdin.close()
            for _ in tap:  # finish hashing for an exact report
                pass
        rc = lister.wait()
        reader.join()
        stderr = lister.lines()
        block_check = blocks.check() if blocks is not None else None
    if mismatch is None and not frame_error and manifest.archive_size not in (None, size.bytes):
        mismatch = ManifestMismatch(
            "archive_size", f"the manifest says {manifest.archive_size} bytes, the archive is {size.bytes}"
        )
    if mismatch is None and not frame_error:
        mismatch = header_problem(manifest, head.data)
    if mismatch is not None:
        return read_checks(tap.checks(manifest), stack, mismatch)
    checks = tap.checks(manifest)
    checks += stack.checks(frame_error, ok_detail="zstd frames complete, checksums ok", failure=failure)
    if block_check is not None:  # a read that broke off before the archive's end: that is the cause
        checks.append(Check(name="compression", ok=False, detail=frame_error) if frame_error else block_check)
    text = b"".join(listing).decode(errors="replace")
    checks.append(toc_check(manifest, rc, text, stderr))
    if listing_out is not None:
        listing_out.append(text)
    return checks


class DataBlocks:
    """Every data block of a pg_dump-compressed (gzip) archive read as it streams past: a second
    ``pg_restore --file=/dev/null`` (no database) decompresses each table's block, zlib checking its
    adler32, as a restore would (trial8 #3: the table of contents alone left damage in the data to be
    found by the restore). Its ``--verbose`` names the table it was reading when it failed."""

    def __init__(self, tools: ClientTools):
        self.tool = runner.start(tools.pg_restore, ["--verbose", f"--file={os.devnull}"], stdin=subprocess.PIPE)
        self.open = True

    def tee(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """``chunks`` unchanged, each also written to the reader until it stops (it failed)."""
        for chunk in chunks:
            if self.open:
                try:
                    self.tool.stdin.write(chunk)
                except OSError:  # BrokenPipeError: it ended on an error, said by check()
                    self.open = False
            yield chunk
        self.finish()

    def finish(self) -> None:
        if self.open:
            self.open = False
            with contextlib.suppress(OSError):
                self.tool.stdin.close()

    def check(self) -> Check:
        """The "compression" check of a gzip archive: every data block decompressed, or the table whose
        block did not and pg_restore's reason."""
        self.finish()
        rc = self.tool.wait()
        if rc == 0:
            return Check(name="compression", ok=True, detail="every data block decompresses (gzip, adler32 ok)")
        lines = self.tool.lines()
        failure = read_failure("pg_restore", lines, exit_code=rc)
        reason = failure.error or failure.last
        place = next((ln.split(": ", 1)[-1] for ln in reversed(lines) if ": processing " in ln), "")
        where = place.replace("processing data for table", "data of table") if place else "before the first data"
        return Check(name="compression", ok=False, detail=f"{where}: {reason}")

    def __enter__(self) -> DataBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
        self.tool.__exit__(*exc)  # type: ignore[arg-type]


class _Size:
    """Counts the archive's bytes as they stream past (compared with the manifest's archive_size)."""

    def __init__(self) -> None:
        self.bytes = 0

    def count(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes += len(chunk)
            yield chunk


def table_problem(manifest: Manifest, stack: CodecStack) -> ManifestMismatch | None:
    """The manifest's frame table against its own totals (frames.frame_table_problem); the stored
    file's size is the compressed stream's only when no layer (encryption) changes it."""
    return frame_table_problem(manifest.frames, manifest.archive_size, None if stack.layers else manifest.size)


def read_checks(own: list[Check], stack: CodecStack, mismatch: ManifestMismatch) -> list[Check]:
    """The checks of a read-back whose stream does not match the manifest's ``mismatch.field``. When the
    stored bytes are the ones hashed (size and sha256 pass), the manifest is inconsistent with the file
    (the "manifest" check, trial8 #9), not the file damaged; otherwise the file's own checks say damage."""
    if all(c.ok for c in own):
        return [*own, Check(name="manifest", ok=False, detail=f"{INCONSISTENT}: {mismatch}")]
    return [*own, *stack.checks(str(mismatch), ok_detail="")]


INCONSISTENT = "inconsistent with the stored file"

#: what to do when the manifest does not describe the stored file but the file's own bytes check out
MANIFEST_HINT = (
    "the stored file's size and sha256 match the manifest, so its bytes may be fine: put back the "
    "backup's manifest.json from a copy (a second storage, your own copy) and verify again, or restore "
    "the file by hand (the manifest's restore_command); do not edit manifest.json"
)


def manifest_problem(checks: list[Check]) -> Check | None:
    """The failed "manifest" check when it is the only failure: the backup's own checks passed."""
    bad = [c for c in checks if not c.ok]
    return bad[0] if len(bad) == 1 and bad[0].name == "manifest" else None


def _read_all_in_thread(stream: IO[bytes], out: list[bytes]) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(stream.read()), daemon=True)
    t.start()
    return t


def _check_stored_bytes_only(manifest: Manifest, tap: HashTap, why: str) -> list[Check]:
    """When a layer cannot be read back here (``why``: an encrypted backup without the identity) only
    the stored bytes can be checked: size and sha256."""
    for _ in tap:
        pass
    return [*tap.checks(manifest), Check(name="archive", ok=True, detail=f"not read: {why}")]


def toc_check(manifest: Manifest, rc: int, listing: str, stderr: list[str]) -> Check:
    """The "archive" check: pg_restore --list succeeded and lists data for every table of the manifest."""
    if rc != 0:  # the first error, not the last line (postgres/tool_errors.py)
        failure = read_failure("pg_restore", stderr, exit_code=rc)
        first = failure.error or failure.last
        return Check(name="archive", ok=False, detail=f"pg_restore --list failed: {first}")
    data = [ln for ln in listing.splitlines() if _TABLE_DATA.match(ln)]
    missing = [
        t.qualified for t in manifest.tables if not any(f" TABLE DATA {t.schema_} {t.name} " in ln for ln in data)
    ]
    entries = sum(1 for ln in listing.splitlines() if re.match(r"^\d+;", ln))
    if missing:
        return Check(name="archive", ok=False, detail=f"table of contents lacks data for {', '.join(missing[:5])}")
    return Check(
        name="archive", ok=True, detail=f"table of contents readable: {entries} entries, data for {len(data)} tables"
    )


def require_intact(manifest: Manifest, checks: list[Check]) -> list[Check]:
    """The stored file must be the one written: raises VerificationFailed before any database is
    created or changed when one check failed."""
    wrong = manifest_problem(checks)
    if wrong is not None:
        raise ManifestInconsistent(
            f"backup {manifest.id}: its manifest is {wrong.detail}; no database was created or changed",
            hint=MANIFEST_HINT,
        )
    bad = [c for c in checks if not c.ok]
    if bad:
        raise VerificationFailed(
            f"backup {manifest.id} failed its integrity check ({bad[0].name}: {bad[0].detail}); "
            "no database was created or changed",
            hint="choose another backup: pgrunbook backup list",
        )
    return checks

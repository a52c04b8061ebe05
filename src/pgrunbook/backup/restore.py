"""Restores into a new database: the logical dump's restore engine, shared by ``restore --into``, the
rollback's restore and the drill (``backup verify --drill`` restores into a scratch database, then
drops it, on this same code).

A backup is checked (size, sha256, archive readable) before any database is created or changed, and
a restore is verified (exact row counts equal to the manifest, the read query) before anyone is told
it worked. Replacing the live database (restore in place) is a procedure: procedures/restore_in_place.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
import zstandard
from psycopg import sql

from pgrunbook.backup import restore_checks
from pgrunbook.backup.archive import (
    HashTap,
    archive_bytes,
    check_stored,
    plaintext,
    require_intact,
    stored_bytes,
    toc_check,
    tools_to_restore,
)
from pgrunbook.backup.codec import codec
from pgrunbook.backup.manifest import Check, Manifest
from pgrunbook.backup.preflight import Preflight, RestoreOptions
from pgrunbook.backup.restore_counts import EarlyCounts, LoadProgress, data_items, read_verbose
from pgrunbook.backup.targets import refuse_restore_target, refuse_template
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import ConfigError, DatabaseError, PgRunbookError, VerificationFailed
from pgrunbook.postgres import runner
from pgrunbook.postgres.catalog import count_tables, run_read_query, user_tables
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.names import quote_ident, valid_dbname
from pgrunbook.postgres.tools import ClientTools
from pgrunbook.postgres.url import DatabaseTarget, redact


class Steps(Protocol):
    """Where a restore records its steps ("check backup", "create database", "restore", "verify
    restore"): the procedures' journal run satisfies it; the engine knows nothing more of the journal."""

    def step(self, name: str) -> AbstractContextManager[dict[str, Any]]: ...


@dataclass
class RestoreReport:
    backup_id: str
    database: str
    duration_s: float = 0.0
    verified: bool = False
    method: str = ""
    checks: list[Check] = field(default_factory=list)
    replaced_database: str | None = None
    pre_restore_backup: str | None = None
    cleared_unfinished: str | None = None  # the marker of an interrupted restore this one replaced
    skipped: list[str] = field(default_factory=list)  # entries left out on an explicit flag
    options: list[str] = field(default_factory=list)  # --owner / --skip-… as given
    carried_over: str | None = None  # in place: what of the live database's own settings was carried over
    next_step: str | None = None  # after the app was pointed here: pgrunbook's own URL to set

    def to_dict(self) -> dict[str, object]:
        return {
            "backup_id": self.backup_id,
            "database": self.database,
            "duration_s": self.duration_s,
            "verified": self.verified,
            "method": self.method,
            "checks": [c.model_dump() for c in self.checks],
            "replaced_database": self.replaced_database,
            "pre_restore_backup": self.pre_restore_backup,
            "cleared_unfinished": self.cleared_unfinished,
            "skipped": self.skipped,
            "options": self.options,
            "carried_over": self.carried_over,
            "next_step": self.next_step,
        }


def validate_dbname(name: str) -> str:
    """Any name PostgreSQL takes (every statement quotes it): 1 to 63 bytes, no NUL. Raises ConfigError."""
    if not valid_dbname(name):
        raise ConfigError(
            f"invalid database name {name!r} ({len(name.encode())} bytes)",
            hint="a PostgreSQL database name is 1 to 63 bytes (UTF-8) without NUL characters",
        )
    return name


def _source_dbname(env: Environment) -> str | None:
    try:
        return env.target(direct=True).dbname
    except PgRunbookError:
        return None


def check_backup(
    env: Environment, manifest: Manifest, tools: ClientTools, progress: ProgressFn, listing: list[str] | None = None
) -> list[Check]:
    """The stored file must be the one written: checked before any database is created or changed;
    raises VerificationFailed otherwise. ``listing`` receives the table of contents."""
    return require_intact(manifest, check_stored(env, manifest, tools, progress, listing_out=listing))


def _read_ahead(chunks: Iterator[bytes], depth: int = 8) -> Iterator[bytes]:
    """Read and hash storage in a thread while this one decompresses and writes: the stages overlap."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)

    def produce() -> None:
        try:
            for chunk in chunks:
                q.put(chunk)
            q.put(None)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def _sweep_stale_temp_dirs() -> None:
    """Remove the decompressed archives of restores that were killed (their pid is gone): each is as
    large as the database's dump, and nothing else would ever delete it."""
    import glob

    for path in glob.glob(os.path.join(tempfile.gettempdir(), "pgrunbook-restore-*-*")):
        m = re.match(r"pgrunbook-restore-(\d+)-", os.path.basename(path))
        if not m or int(m.group(1)) == os.getpid():
            continue
        if not runner.pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _temp_write_error(exc: OSError, folder: str, manifest: Manifest) -> PgRunbookError:
    need = f"{(manifest.archive_size or manifest.size * 3) / 1e6:,.0f} MB"
    if exc.errno == errno.ENOSPC:
        return PgRunbookError(
            f"no space left in {folder} for the decompressed archive (about {need}); nothing was restored",
            hint='set TMPDIR to a folder with room, or [restore] method = "stream" (no temporary file)',
        )
    return PgRunbookError(
        f"cannot write the decompressed archive in {folder}: {exc.strerror or exc}; nothing was restored",
        hint="set TMPDIR to a writable folder",
    )


class CheckedArchive:
    """The archive decompressed to a private temporary file while its stored bytes are hashed: the
    integrity check and the decompression share one pass over storage, and a backup written as several
    zstd frames is decompressed by `workers` threads at once (bench/restore_bench.py measured both).

    The file is anonymous memory (memfd, Linux only) when it fits comfortably: nothing is written to
    disk, and the kernel frees it whenever pgrunbook ends, even killed. Otherwise (and on every other
    platform) a 0600 file in the temp folder. pg_restore reads either by path; for memory,
    /proc/self/fd/N of the descriptor it inherits.
    """

    def __init__(
        self,
        env: Environment,
        manifest: Manifest,
        tools: ClientTools,
        progress: ProgressFn,
        workers: int = 1,
        in_memory: bool = False,
    ):
        self.dir: str | None = None
        self.fd: int | None = None
        self.listing = ""
        self.inherit_fds: tuple[int, ...] = ()
        try:
            fd = self._open(manifest, in_memory and runner.has_memfd())
            tap = HashTap(stored_bytes(env, manifest), progress, manifest.size, "check")
            try:
                frame_error = self._decompress(fd, env, manifest, tap, workers)
            finally:
                if self.fd is None:
                    os.close(fd)
            checks = [*tap.checks(manifest)]
            checks += codec(manifest.compression).checks(frame_error, ok_detail="zstd frames complete")
            if all(c.ok for c in checks):
                rc, self.listing, stderr = runner.run(
                    tools.pg_restore, ["--list", self.path], inherit_fds=self.inherit_fds
                )
                checks.append(toc_check(manifest, rc, self.listing, stderr))
            self.checks = require_intact(manifest, checks)
        except BaseException:
            self.cleanup()
            raise

    def _open(self, manifest: Manifest, in_memory: bool) -> int:
        if in_memory:
            self.fd = os.memfd_create(f"pgrunbook-restore-{manifest.id}", 0)  # inheritable: pg_restore reads it
            self.path = f"/proc/self/fd/{self.fd}"
            self.inherit_fds = (self.fd,)
            return self.fd
        _sweep_stale_temp_dirs()
        try:
            self.dir = tempfile.mkdtemp(prefix=f"pgrunbook-restore-{os.getpid()}-")
        except OSError as exc:
            raise _temp_write_error(exc, tempfile.gettempdir(), manifest) from None
        self.path = os.path.join(self.dir, "archive.dump")
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as exc:
            raise _temp_write_error(exc, os.path.dirname(self.dir), manifest) from None

    def _decompress(self, fd: int, env: Environment, manifest: Manifest, tap: HashTap, workers: int) -> str:
        """Fill the file; '' when the stored stream decompressed cleanly, else what was wrong."""
        try:
            _preallocate(fd, manifest.archive_size)
            ahead = _read_ahead(iter(tap))
            stored = plaintext(env, manifest, ahead)
            try:
                codec(manifest.compression).read_into(fd, stored, manifest.frames, workers)
            except (zstandard.ZstdError, VerificationFailed) as exc:
                for _ in ahead:  # the size and checksum are still reported exactly
                    pass
                return str(exc)
        except OSError as exc:
            if self.fd is not None:
                raise PgRunbookError(
                    f"cannot hold the decompressed archive in memory: {exc.strerror or exc}; nothing was restored",
                    hint='set [restore] temp = "disk"',
                ) from None
            raise _temp_write_error(exc, os.path.dirname(self.dir or self.path), manifest) from None
        return ""

    def cleanup(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def _preallocate(fd: int, size: int | None) -> None:
    """Reserve the archive's room before decompressing: a full disk is found at once, not after minutes of
    work, and the writes then only fill blocks already allocated. (POSIX only; elsewhere the writes
    allocate.)"""
    if not size or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # the file system cannot: the writes allocate
            return
        raise


UNFINISHED = "pgrunbook: unfinished restore"


def _marker(backup_id: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{UNFINISHED} of {backup_id} by pid {os.getpid()} on {socket.gethostname()} since {now}"


def _marker_alive(comment: str) -> bool:
    """Is the restore that wrote this marker still running? Only this host's processes can be seen;
    a marker from another host counts as alive (it may be)."""
    m = re.search(r" by pid (\d+) on (\S+) since", comment)
    if not m or m.group(2) != socket.gethostname():
        return True
    return runner.pid_alive(int(m.group(1)))


def drop_dead_leftovers(admin: psycopg.Connection, prefix: str) -> list[str]:
    """Drop the databases named ``prefix``* that a killed restore left (SIGKILL, a lost machine): their
    comment is the unfinished-restore marker and the process that wrote it is gone from this host.
    Returns ``name (marker)`` for each dropped. Others (alive, another host's, no marker) stay."""
    rows = admin.execute(
        "SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
        "WHERE starts_with(datname, %s)",
        (prefix,),
    ).fetchall()
    dropped = []
    for name, comment in rows:
        if comment.startswith(UNFINISHED) and not _marker_alive(comment):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            dropped.append(f"{name} ({comment.removeprefix('pgrunbook: ')})")
    return dropped


def _database_state(admin: psycopg.Connection, target: DatabaseTarget, name: str) -> tuple[str, str]:
    """('missing' | 'empty' | 'non-empty' | 'unfinished', its comment).

    'unfinished' is a database pgrunbook created for a restore that was killed before it finished: its
    comment says so, and the process that wrote it is gone. It was never put into use.
    """
    row = admin.execute(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if row is None:
        return "missing", ""
    comment = str(row[0])
    if comment.startswith(UNFINISHED):
        if _marker_alive(comment):
            raise DatabaseError(
                f"database {name!r} is being restored right now ({comment.removeprefix('pgrunbook: ')}); "
                "nothing was changed",
                hint="wait for that restore, or choose another name for --into",
            )
        return "unfinished", comment
    with connect(target.with_dbname(name), purpose="restore") as conn:
        count = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
        ).fetchone()
    return ("empty" if count and count[0] == 0 else "non-empty"), comment


def choose_method(env: Environment, manifest: Manifest) -> tuple[str, int, bool]:
    """(method, jobs, archive in memory). Parallel (-j) from a temporary file when there is room for it
    and more than one core; else streaming. The choices are measured in bench/restore_bench.py."""
    cfg = env.config.restore
    jobs = cfg.jobs or (os.cpu_count() or 1)
    need = (manifest.archive_size or manifest.size * 5) * 1.1
    if cfg.temp == "memory" and not runner.has_memfd():
        raise ConfigError('[restore] temp = "memory" needs Linux (memfd)', hint='use "auto" or "disk"')
    memory = runner.has_memfd() and (cfg.temp == "memory" or (cfg.temp == "auto" and need <= available_memory() / 4))
    if cfg.method != "auto":
        return cfg.method, jobs, memory and cfg.method == "parallel"
    if jobs > 1 and (memory or shutil.disk_usage(tempfile.gettempdir()).free > need):
        return "parallel", jobs, memory
    return "stream", 1, False


def available_memory() -> int:
    """Bytes this process may still take: MemAvailable, or less under a cgroup (container) limit.
    0 when unknown, so that nothing is kept in memory on a guess."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return 0
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                avail = min(avail, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    return max(avail, 0)


def restore_settings(env: Environment, *, owned: bool) -> dict[str, str | int]:
    """The settings of pg_restore's sessions (bench/restore_bench.py measured each).

    `owned`: pgrunbook created the database for this restore and nothing uses it until it is verified,
    so its commits need not wait for the disk; the synchronous commit of the "verified" marker flushes
    the write-ahead log past all of them before anyone is told the restore worked.
    """
    settings: dict[str, str | int] = {"max_parallel_maintenance_workers": env.config.restore.maintenance_workers}
    if owned:
        settings["synchronous_commit"] = "off"
    return settings


def _restore_data(
    env: Environment,
    manifest: Manifest,
    tools: ClientTools,
    target: DatabaseTarget,
    jobs: int,
    archive: CheckedArchive | None,
    *,
    owned: bool,
    progress: ProgressFn = no_progress,
    plan: restore_checks.Plan | None = None,
) -> dict[tuple[str, str], int]:
    """Run pg_restore (owners and privileges as the plan says); returns the row counts already taken
    while it ran (restore_counts). Raises RestoreFailed with the first error's cause."""
    settings = restore_settings(env, owned=owned)
    plan = plan or restore_checks.Plan(RestoreOptions(), Preflight(), [])
    if archive is None:
        stream = archive_bytes(env, manifest, stored_bytes(env, manifest))
        _restore_stream(tools, target, _fed(stream, progress, manifest.archive_size), settings, plan)
        return {}
    items = data_items(archive.listing, manifest)
    counts = EarlyCounts(target, items, jobs)
    load = LoadProgress(items, manifest.row_counts(), progress)
    try:
        with (
            plan.use_list() as extra,
            runner.start(
                tools.pg_restore,
                # --verbose: "finished item N" for the counts, "from TOC entry N" for a failure's cause;
                # the error flags are those for the server the tools were chosen for (tools.restore_flags)
                [*extra, *tools.restore_flags(), "--verbose", f"--jobs={jobs}", archive.path],
                target=target,
                settings=settings,
                collect_stderr=False,
                text=True,
                inherit_fds=archive.inherit_fds,
            ) as restoring,
        ):
            every_error: list[str] = []  # all of them: one unexpected error anywhere fails the restore
            kept = read_verbose(restoring.stderr, counts, load, errors=every_error)
            for line in kept:
                restoring.note(line)
            rc = restoring.wait()
            if tools.restore_failed(rc, [*every_error, *kept]) is not None:
                _raise_if_failed(rc or 1, kept, tools, target, plan)
        load.done()
    except BaseException:
        counts.abandon()
        raise
    return counts.finish()


def _restore_stream(
    tools: ClientTools,
    target: DatabaseTarget,
    data: Iterator[bytes],
    settings: dict[str, str | int],
    plan: restore_checks.Plan,
) -> None:
    """pg_restore from a stream into ``target`` (owners and privileges as the plan says); raises
    RestoreFailed with the first error's cause. The only error ever let through is pg_restore >= 17's
    on a server <= 16 (ClientTools.restore_failed), and it is never taken for the cause."""
    with (
        plan.use_list() as extra,
        runner.start(
            tools.pg_restore,
            [*extra, *tools.restore_flags(), "--verbose"],  # --verbose: "from TOC entry N" for a failure's cause
            target=target,
            settings=settings,
            stdin=subprocess.PIPE,
        ) as restoring,
    ):
        runner.feed(restoring, data)
        rc = restoring.wait()
        lines = restoring.lines()
        failed = tools.restore_failed(rc, [*restoring.errors, *lines])
    if failed is not None:
        _raise_if_failed(rc or 1, lines, tools, target, plan)


def _fed(chunks: Iterator[bytes], progress: ProgressFn, total: int | None) -> Iterator[bytes]:
    """The archive's bytes as they go to a streaming pg_restore, counted for the terminal's bar."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        progress("restore", done, total)
        yield chunk


class RestoreFailed(PgRunbookError):
    """pg_restore failed; ``cause`` (postgres/tool_errors.py) says why and where the fault lies."""


class CannotCreate(DatabaseError):
    """The database to restore into could not be created (no CREATEDB, or the server refused);
    ``reason``: the server's reason, redacted."""

    def __init__(self, message: str, reason: str, hint: str | None = None):
        super().__init__(message, hint=hint, cause={"kind": "target", "where": "target", "message": message})
        self.reason = reason


def _raise_if_failed(
    rc: int, lines: list[str], tools: ClientTools, target: DatabaseTarget, plan: restore_checks.Plan
) -> None:
    """The first error of pg_restore's stderr and the entry it concerns, explained (tool_errors); the
    error tolerated for this server (ClientTools.tolerated_errors) is never taken for the cause."""
    if rc != 0:
        cause = restore_checks.cause_of_restore(lines, rc, target, plan, ignorable=tools.tolerated_errors())
        raise RestoreFailed(
            redact(cause.message, target.secrets()), hint=redact(cause.hint, target.secrets()), cause=cause.to_dict()
        )


# --- verifying a restored database --------------------------------------------------------------------


def parallel_row_counts(
    target: DatabaseTarget, manifest: Manifest, known: dict[tuple[str, str], int] | None = None
) -> dict[tuple[str, str], int]:
    """Exact counts of a restored copy, biggest tables spread over one connection per core: nothing
    writes to it, so no shared snapshot is needed, and verification costs less of the restore's time.
    `known`: tables already counted once their data was restored (restore_counts), not counted again."""
    known = known or {}
    with connect(target, purpose="verify") as conn:
        every = user_tables(conn)
    tables = [t for t in every if t not in known]
    size = {(t.schema_, t.name): t.rows for t in manifest.tables}
    jobs = max(1, min(os.cpu_count() or 1, 4, len(tables)))
    groups: list[list[tuple[str, str]]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for table in sorted(tables, key=lambda t: size.get(t, 0), reverse=True):
        i = loads.index(min(loads))
        groups[i].append(table)
        loads[i] += size.get(table, 0) + 1

    def count(group: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        with connect(target, purpose="verify") as c:
            return count_tables(c, group)

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(count, [g for g in groups if g]))
    return {**{t: n for t, n in known.items() if t in every}, **{k: v for r in results for k, v in r.items()}}


def difference_hint(bad: Check) -> str:
    """What to do when a restored copy fails one of its checks: each check has its own cause."""
    if bad.name == "read query":
        return (
            "the read query failed on the restored copy, run with search_path set to the URL's ?schema=: "
            "check [environments] read_query with pgrunbook health against the live database"
        )
    if bad.name == "row counts":
        return "the archive does not hold what its manifest says; take a new backup"
    return (
        "the restore did not reproduce the backup's owners or privileges: check the target server's roles "
        "(--owner ROLE / --skip-missing-roles restore onto a server without them)"
    )


def app_schema(env: Environment, target: DatabaseTarget) -> str:
    """The schema the application reads (its URL's ``?schema=``, as ``health`` uses it): a restored
    copy, a drill server's scratch database or a rollback database is read the way the app will read it.
    The restore target's own schema when the environment has no URL set."""
    try:
        return env.target(direct=False).schema
    except PgRunbookError:
        return target.schema


def verify_restored(
    env: Environment,
    manifest: Manifest,
    target: DatabaseTarget,
    known: dict[tuple[str, str], int] | None = None,
) -> list[Check]:
    """The "row counts" (exact, equal to the manifest) and "read query" checks of a restored database."""
    counts = parallel_row_counts(target, manifest, known)
    early = f" ({len(known)} counted while pg_restore built indexes)" if known else ""
    with connect(target, purpose="drill") as conn:
        expected = manifest.row_counts()
        diffs = [
            f"{s}.{n}: {counts.get((s, n), 'missing')} vs {rows}"
            for (s, n), rows in expected.items()
            if counts.get((s, n)) != rows
        ]
        extra = sorted(set(counts) - set(expected))
        ok = not diffs and not extra
        detail = (
            f"{len(expected)} tables, {sum(expected.values())} rows, all equal to the manifest{early}"
            if ok
            else "differ: " + "; ".join(diffs[:5] + [f"{s}.{n}: not in manifest" for s, n in extra[:5]])
        )
        checks = [Check(name="row counts", ok=ok, detail=detail)]
        try:
            run_read_query(conn, env.settings.read_query, app_schema(env, target))
            checks.append(Check(name="read query", ok=True, detail=env.settings.read_query))
        except Exception as exc:
            checks.append(
                Check(name="read query", ok=False, detail=f"{env.settings.read_query}: " + str(exc).splitlines()[0])
            )
    return checks


# --- restoring into a new database ---------------------------------------------------------------------


def restore_into_new_database(
    env: Environment,
    backup_id: str,
    dbname: str,
    *,
    progress: ProgressFn = no_progress,
    run: Steps | None = None,
    options: RestoreOptions | None = None,
) -> RestoreReport:
    """Check the backup, pre-flight the target, create the database (refused if it exists and is not
    empty), restore with owners and privileges, verify (rows, owners, privileges)."""
    t0 = time.monotonic()
    validate_dbname(dbname)
    options = options or RestoreOptions()
    refuse_restore_target(dbname, _source_dbname(env))
    manifest = env.repository.get(backup_id)
    tools = tools_to_restore(env, manifest, env.target(direct=True))
    report = RestoreReport(manifest.id, dbname, options=options.describe())
    method, jobs, in_memory = choose_method(env, manifest)
    where = "memory" if in_memory and runner.has_memfd() else "a temp file"
    report.method = f"{method} (-j {jobs}, archive in {where})" if method == "parallel" else method
    archive: CheckedArchive | None = None
    listing: list[str] = []
    with _maybe_step(run, "check backup"):
        if method == "parallel":
            archive = CheckedArchive(env, manifest, tools, progress, workers=jobs, in_memory=in_memory)
            report.checks.extend(archive.checks)
            listing.append(archive.listing)
        else:
            report.checks.extend(check_backup(env, manifest, tools, progress, listing))
    try:
        server = env.target(direct=True)
        source = (
            restore_checks.Source(path=archive.path, pass_fds=archive.inherit_fds)
            if archive is not None
            else restore_checks.Source(stream=lambda: archive_bytes(env, manifest, stored_bytes(env, manifest)))
        )
        report.checks.extend(
            restore_into(
                env,
                manifest,
                tools,
                server,
                dbname,
                report,
                jobs,
                archive,
                run,
                progress,
                options=options,
                listing="".join(listing),
                source=source,
            )
        )
    finally:
        if archive is not None:
            archive.cleanup()
    report.verified = True
    report.duration_s = round(time.monotonic() - t0, 3)
    return report


def restore_into(
    env: Environment,
    manifest: Manifest,
    tools: ClientTools,
    server: DatabaseTarget,
    dbname: str,
    report: RestoreReport,
    jobs: int = 1,
    archive: CheckedArchive | None = None,
    run: Steps | None = None,
    progress: ProgressFn = no_progress,
    *,
    verify_strictly: bool = True,
    options: RestoreOptions | None = None,
    listing: str = "",
    source: restore_checks.Source | None = None,
    give_owner: bool = True,
) -> list[Check]:
    """Restore a checked backup into database ``dbname`` of ``server`` (hints name
    ``server.variable``) and verify it; returns the verification's checks. The database is created (marked
    unfinished until verified) unless it exists empty; a database this call created is dropped again if
    anything fails. Raises DatabaseError for an existing non-empty database (nothing changed),
    CannotCreate when the database cannot be created, RestoreFailed when pg_restore fails,
    VerificationFailed when the copy differs from the manifest (unless not ``verify_strictly``: the
    drill reports a difference as failed checks). ``archive``: the decompressed archive for a parallel
    restore, or None to stream from storage. ``options``/``listing``/``source``: the pre-flight's (see
    backup/restore_checks.py), which raises PreflightFailed before anything is created; ``give_owner``:
    the new database gets the backed-up database's owner (not for a drill's scratch database)."""
    created = False
    source = source or restore_checks.Source(stream=lambda: archive_bytes(env, manifest, stored_bytes(env, manifest)))
    with connect(server, purpose=f"restore {env.name}") as admin:
        refuse_template(admin, dbname)
        state, comment = _database_state(admin, server, dbname)
        if state == "non-empty":
            raise DatabaseError(
                f"database {dbname!r} already exists and is not empty; nothing was changed",
                hint="choose a new name for --into, or drop that database yourself",
            )
        with _maybe_step(run, "preflight") as info:  # nothing is created before it passes
            plan = restore_checks.preflight(
                admin, tools, manifest, listing, options or RestoreOptions(), source, dbname=dbname,
                creates=state != "empty",
            )  # fmt: skip
            report.skipped = list(plan.preflight.skipped)
            if info is not None:
                info["detail"] = plan.summary()
        if state == "unfinished":  # a killed restore's database, never used: replaced, and said so
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
            report.cleared_unfinished = comment
            state = "missing"
        if state == "missing":
            with _maybe_step(run, "create database"):
                _create_database(admin, server, dbname)
                _comment(admin, dbname, _marker(manifest.id))
            created = True
        if created and give_owner:
            restore_checks.give_database(admin, dbname, plan)
        else:
            plan.database_owner = None  # a scratch database, or one made beforehand, keeps its owner
        new_target = server.with_dbname(dbname)
        try:
            with _maybe_step(run, "restore") as info:
                early = _restore_data(
                    env, manifest, tools, new_target, jobs, archive,
                    owned=created, progress=progress, plan=plan,
                )  # fmt: skip
                restore_checks.apply_deferred(new_target, plan)
                if info is not None:
                    info["detail"] = f"{report.method} into {dbname}"
            with _maybe_step(run, "verify restore"):
                checks = verify_restored(env, manifest, new_target, known=early)
                checks.extend(restore_checks.compare_privileges(manifest, new_target, plan))
                bad = [c for c in checks if not c.ok]
                if bad and verify_strictly:
                    raise VerificationFailed(
                        f"restored database {dbname} differs from the backup: {bad[0].name}: {bad[0].detail}",
                        hint=difference_hint(bad[0]),
                    )
            if created:
                verified_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                admin.execute("SET synchronous_commit = on")  # durable: see restore_settings
                _comment(admin, dbname, f"pgrunbook: restored from backup {manifest.id}, verified {verified_at}")
        except BaseException as exc:
            if created:
                why = _drop_partial(admin, server, dbname)
                if why is not None:
                    if not isinstance(exc, PgRunbookError):
                        raise DatabaseError(
                            f"restore into {dbname!r} broke off: {redact(str(exc), server.secrets())}".splitlines()[0],
                            hint=_leftover_hint(dbname, why),
                        ) from None
                    exc.hint = _leftover_hint(dbname, why)
                elif isinstance(exc, PgRunbookError):
                    exc.message += f"; {dbname} was dropped again, nothing was kept"
            elif isinstance(exc, PgRunbookError):
                exc.message += f"; {dbname} holds a partial restore and was not put into use"
            raise
    return checks


def _drop_partial(admin: psycopg.Connection, target: DatabaseTarget, dbname: str) -> str | None:
    """Drop the half-restored database; None when gone, else why not.

    The server may have just restarted (that may be why the restore failed): the admin connection is
    then dead, so a fresh one is tried for a few seconds while the server comes back.
    """
    stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
    try:
        admin.execute(stmt)
        return None
    except psycopg.Error:
        pass
    deadline, why = time.monotonic() + 15, "the server did not answer"
    while time.monotonic() < deadline:
        try:
            with connect(target, purpose="drop a partial restore", connect_timeout=3) as conn:
                conn.execute(stmt)
            return None
        except (PgRunbookError, psycopg.Error) as exc:
            why = exc.message if isinstance(exc, PgRunbookError) else str(exc).splitlines()[0]
            time.sleep(0.5)
    return redact(why, target.secrets())


def _leftover_hint(dbname: str, why: str) -> str:
    return (
        f"the partial database {dbname!r} could not be dropped ({why}); it was not put into use — "
        f"drop it when the server is back: DROP DATABASE {quote_ident(dbname)}"
    )


def _comment(admin: psycopg.Connection, dbname: str, text: str) -> None:
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname), sql.Literal(text)))


def _create_database(admin: psycopg.Connection, server: DatabaseTarget, dbname: str) -> None:
    try:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname)))
    except psycopg.Error as exc:
        cause = redact(str(exc).splitlines()[0], server.secrets())
        raise CannotCreate(
            f"cannot create database {dbname!r} on {server.display}: {cause}",
            cause,
            hint="grant CREATEDB to the URL's user, or create the empty database yourself",
        ) from None


@contextlib.contextmanager
def _no_step() -> Iterator[None]:
    yield None


def _maybe_step(run: Steps | None, name: str) -> AbstractContextManager[dict[str, Any] | None]:
    return run.step(name) if run is not None else _no_step()

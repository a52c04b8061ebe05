"""Running pg_restore: the method (parallel from a checked archive, or streamed from storage), the
settings of its sessions, and its failure explained (restore_checks.cause_of_restore)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from pgrunbook.backup import restore_checks
from pgrunbook.backup.archive import archive_bytes, stored_bytes
from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.preflight import Preflight, RestoreOptions
from pgrunbook.backup.restore_archive import CheckedArchive
from pgrunbook.backup.restore_counts import DataRead, EarlyCounts, LoadProgress, data_items, read_verbose
from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError, PgRunbookError
from pgrunbook.postgres import runner
from pgrunbook.postgres.tools import ClientTools
from pgrunbook.postgres.url import DatabaseTarget, redact
from pgrunbook.progress import ProgressFn, no_progress


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


#: from this server major on, GIN indexes are built in parallel too (PostgreSQL 18 release notes)
PARALLEL_GIN_SINCE = 18


def restore_settings(env: Environment, *, owned: bool, server_major: int | None = None) -> dict[str, str | int]:
    """The settings of pg_restore's sessions (bench/restore_bench.py measured each).

    `owned`: pgrunbook created the database for this restore and nothing uses it until it is verified,
    so its commits need not wait for the disk; the synchronous commit of the "verified" marker flushes
    the write-ahead log past all of them before anyone is told the restore worked.

    `max_parallel_maintenance_workers`: ``[restore] maintenance_workers`` when set; else 0 on servers
    up to 17, where pg_restore's own jobs keep the cores busy building indexes and a parallel build
    only competes with them. From 18 on (`server_major`) the server's own setting is kept, as plain
    pg_restore has it: a GIN index, often the last build left running alone while the other jobs are
    idle, is then built on the idle cores too (bench/RESULTS.md, session 11).
    """
    workers = env.config.restore.maintenance_workers
    if workers is None and (server_major is None or server_major < PARALLEL_GIN_SINCE):
        workers = 0
    settings: dict[str, str | int] = {} if workers is None else {"max_parallel_maintenance_workers": workers}
    if owned:
        settings["synchronous_commit"] = "off"
    return settings


def restore_data(
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
    settings = restore_settings(env, owned=owned, server_major=tools.target_major)
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
            data_read = DataRead(archive.listing, archive.release_data)  # the file, emptied once read
            kept = read_verbose(restoring.stderr, counts, load, data_read, errors=every_error)
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

"""Restores: into a new database (the preferred path), or in place (the risky one).

A backup is checked (size, sha256, archive readable) before any database is created or changed, and
a restore is verified (exact row counts equal to the manifest, the read query) before anyone is told
it worked. In place never overwrites the live database: the backup goes into a new database, which
then takes the live one's name; the replaced database is kept under another name.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

import psycopg
from psycopg import sql

from pgrunbook.backup.create import child_env, create_backup
from pgrunbook.backup.manifest import Check, Manifest
from pgrunbook.backup.verify import HashTap, _compare, archive_bytes, check_stored, restore_stream, verify_backup
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import ConfigError, DatabaseError, PgRunbookError, VerificationFailed
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.tools import ClientTools, die_with_parent, find_client_tools, parse_tool_version
from pgrunbook.postgres.url import DatabaseTarget, redact
from pgrunbook.procedures.hooks import env_hook
from pgrunbook.procedures.journal import Run
from pgrunbook.restore_counts import EarlyCounts, LoadProgress, data_items, read_verbose

DBNAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_$-]{0,62}"


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
    database_url: str | None = field(default=None, repr=False)

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
        }


def url_with_dbname(url: str, dbname: str) -> str:
    """The same URL (user, password, host, parameters such as ?schema=) for another database."""
    m = re.fullmatch(r"(postgres(?:ql)?://[^/?#]*)(/[^?#]*)?(\?[^#]*)?(#.*)?", url.strip())
    if not m:
        raise ConfigError("cannot derive the restored database's URL from a URL that is not postgresql://")
    return f"{m.group(1)}/{quote(dbname, safe='')}{m.group(3) or ''}"


def validate_dbname(name: str) -> str:
    if not re.fullmatch(DBNAME_PATTERN, name):
        raise ConfigError(
            f"invalid database name {name!r}",
            hint="use letters, digits, '_', '$' or '-', starting with a letter or '_' (at most 63)",
        )
    return name


def _tools(env: Environment, manifest: Manifest) -> ClientTools:
    v = parse_tool_version(f"(PostgreSQL) {manifest.pg_dump_version}")
    return find_client_tools(v.major, manifest.pg_dump_version, env.config.postgres.bin_dir)


def require_intact(env: Environment, manifest: Manifest, tools: ClientTools, progress: ProgressFn) -> list[Check]:
    """The stored file must be the one written: checked before any database is created or changed."""
    return _all_ok(manifest, check_stored(env, manifest, tools, progress))


def _all_ok(manifest: Manifest, checks: list[Check]) -> list[Check]:
    bad = [c for c in checks if not c.ok]
    if bad:
        raise VerificationFailed(
            f"backup {manifest.id} failed its integrity check ({bad[0].name}: {bad[0].detail}); "
            "no database was created or changed",
            hint="choose another backup: pgrunbook backup list",
        )
    return checks


def _read_ahead(chunks: Iterator[bytes], depth: int = 8) -> Iterator[bytes]:
    """Read and hash storage in a thread while this one decompresses and writes: the stages overlap."""
    import queue
    import threading

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
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


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


class _CheckedArchive:
    """The archive decompressed to a private temporary file while its stored bytes are hashed: the
    integrity check and the decompression share one pass over storage, and a backup written as several
    zstd frames is decompressed by `workers` threads at once (bench/restore_bench.py measured both).

    The file is anonymous memory (memfd) when it fits comfortably: nothing is written to disk, and the
    kernel frees it whenever pgrunbook ends, even killed. Otherwise a 0600 file in the temp folder.
    pg_restore reads either by path; for memory, /proc/self/fd/N of the descriptor it inherits.
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
        from pgrunbook.backup.verify import _toc_check

        self.dir: str | None = None
        self.fd: int | None = None
        self.listing = ""
        self.pass_fds: tuple[int, ...] = ()
        try:
            fd = self._open(manifest, in_memory)
            frame_error = ""
            tap = HashTap(env.storage.read(env.repository.dump_key(manifest)), progress, manifest.size, "check")
            try:
                frame_error = self._decompress(fd, env, manifest, tap, workers)
            finally:
                if self.fd is None:
                    os.close(fd)
            checks = [*tap.checks(manifest)]
            if manifest.compression == "zstd":
                checks.append(
                    Check(name="compression", ok=not frame_error, detail=frame_error or "zstd frames complete")
                )
            if all(c.ok for c in checks):
                proc = subprocess.run(
                    [str(tools.pg_restore), "--list", self.path],
                    capture_output=True,
                    text=True,
                    pass_fds=self.pass_fds,
                )
                checks.append(_toc_check(manifest, proc.returncode, proc.stdout, proc.stderr))
                self.listing = proc.stdout
            self.checks = _all_ok(manifest, checks)
        except BaseException:
            self.cleanup()
            raise

    def _open(self, manifest: Manifest, in_memory: bool) -> int:
        if in_memory:
            self.fd = os.memfd_create(f"pgrunbook-restore-{manifest.id}", 0)  # inheritable: pg_restore reads it
            self.path = f"/proc/self/fd/{self.fd}"
            self.pass_fds = (self.fd,)
            return self.fd
        _sweep_stale_temp_dirs()
        try:
            self.dir = tempfile.mkdtemp(prefix=f"pgrunbook-restore-{os.getpid()}-")
        except OSError as exc:
            raise _temp_write_error(exc, tempfile.gettempdir(), manifest) from None
        self.path = os.path.join(self.dir, "archive.dump")
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise _temp_write_error(exc, os.path.dirname(self.dir), manifest) from None

    def _decompress(self, fd: int, env: Environment, manifest: Manifest, tap: HashTap, workers: int) -> str:
        """Fill the file; '' when the stored stream decompressed cleanly, else what was wrong."""
        import zstandard

        from pgrunbook.backup.frames import decompress_parallel_to
        from pgrunbook.backup.verify import decompressed, plaintext

        try:
            _preallocate(fd, manifest.archive_size)
            ahead = _read_ahead(iter(tap))
            stored = plaintext(env, manifest, ahead)
            try:
                if manifest.compression == "zstd" and len(manifest.frames) > 1 and workers > 1:
                    decompress_parallel_to(fd, stored, manifest.frames, workers)
                else:
                    for chunk in decompressed(manifest, stored):
                        _write_all(fd, chunk)
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
    work, and the writes then only fill blocks already allocated."""
    if not size:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # the file system cannot: the writes allocate
            return
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _database_state(admin: psycopg.Connection, target: DatabaseTarget, name: str, var: str) -> tuple[str, str]:
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
    with connect(target.with_dbname(name), purpose="restore", var=var) as conn:
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
    if cfg.temp == "memory" and not hasattr(os, "memfd_create"):
        raise ConfigError('[restore] temp = "memory" needs Linux (memfd)', hint='use "auto" or "disk"')
    memory = hasattr(os, "memfd_create") and (
        cfg.temp == "memory" or (cfg.temp == "auto" and need <= available_memory() / 4)
    )
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
    archive: _CheckedArchive | None,
    *,
    owned: bool,
    var: str,
    progress: ProgressFn = no_progress,
) -> dict[tuple[str, str], int]:
    """Run pg_restore; returns the row counts already taken while it ran (restore_counts)."""
    settings = restore_settings(env, owned=owned)
    if archive is None:
        stream = archive_bytes(env, manifest, env.storage.read(env.repository.dump_key(manifest)))
        rc, last = restore_stream(tools, target, _fed(stream, progress, manifest.archive_size), settings)
        _raise_if_failed(rc, last)
        return {}
    items = data_items(archive.listing, manifest)
    counts = EarlyCounts(target, var, items, jobs)
    load = LoadProgress(items, manifest.row_counts(), progress)
    proc = subprocess.Popen(
        [
            str(tools.pg_restore),
            "--no-owner",
            "--exit-on-error",
            "--no-password",
            "--verbose",  # "finished item N TABLE DATA": when each table can be counted
            f"--jobs={jobs}",
            f"--dbname={target.conninfo()}",
            archive.path,
        ],
        pass_fds=archive.pass_fds,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=child_env(target, settings),
        preexec_fn=die_with_parent,
    )
    try:
        assert proc.stderr is not None
        tail = read_verbose(proc.stderr, counts, load)
        rc = proc.wait()
        errors = [ln for ln in tail if ln.startswith(("pg_restore: error:", "error:"))]  # see read_verbose
        _raise_if_failed(rc, redact((errors or list(tail) or [""])[-1], target.secrets()))
        load.done()
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        counts.abandon()
        raise
    return counts.finish()


def _fed(chunks: Iterator[bytes], progress: ProgressFn, total: int | None) -> Iterator[bytes]:
    """The archive's bytes as they go to a streaming pg_restore, counted for the terminal's bar."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        progress("restore", done, total)
        yield chunk


def _raise_if_failed(rc: int, last: str) -> None:
    if rc != 0:
        raise PgRunbookError(
            f"pg_restore failed: {last or f'exit code {rc}'}",
            hint="the target database holds a partial restore; it was not put into use",
        )


def restore_into_new_database(
    env: Environment, backup_id: str, dbname: str, *, progress: ProgressFn = no_progress, run: Run | None = None
) -> RestoreReport:
    """Check the backup, create the database (refused if it exists and is not empty), restore, verify."""
    t0 = time.monotonic()
    validate_dbname(dbname)
    manifest = env.repository.get(backup_id)
    tools = _tools(env, manifest)
    report = RestoreReport(manifest.id, dbname)
    method, jobs, in_memory = choose_method(env, manifest)
    where = "memory" if in_memory else "a temp file"
    report.method = f"{method} (-j {jobs}, archive in {where})" if method == "parallel" else method
    archive: _CheckedArchive | None = None
    with _maybe_step(run, "check backup"):
        if method == "parallel":
            archive = _CheckedArchive(env, manifest, tools, progress, workers=jobs, in_memory=in_memory)
            report.checks.extend(archive.checks)
        else:
            report.checks.extend(require_intact(env, manifest, tools, progress))
    try:
        return _restore_checked(env, manifest, tools, dbname, report, jobs, archive, run, t0, progress)
    finally:
        if archive is not None:
            archive.cleanup()


def _restore_checked(
    env: Environment,
    manifest: Manifest,
    tools: ClientTools,
    dbname: str,
    report: RestoreReport,
    jobs: int,
    archive: _CheckedArchive | None,
    run: Run | None,
    t0: float,
    progress: ProgressFn = no_progress,
) -> RestoreReport:
    target = env.target(direct=True)
    var = env.url_var()
    created = False
    with connect(target, purpose=f"restore {env.name}", var=var) as admin:
        state, comment = _database_state(admin, target, dbname, var)
        if state == "unfinished":  # a killed restore's database, never used: replaced, and said so
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
            report.cleared_unfinished = comment
            state = "missing"
        if state == "non-empty":
            raise DatabaseError(
                f"database {dbname!r} already exists and is not empty; nothing was changed",
                hint="choose a new name for --into, or drop that database yourself",
            )
        if state == "missing":
            with _maybe_step(run, "create database"):
                _create_database(admin, dbname, target.params.get("user"))
                _comment(admin, dbname, _marker(manifest.id))
            created = True
        new_target = target.with_dbname(dbname)
        try:
            with _maybe_step(run, "restore") as info:
                early = _restore_data(
                    env, manifest, tools, new_target, jobs, archive, owned=created, var=var, progress=progress
                )
                if info is not None:
                    info["detail"] = f"{report.method} into {dbname}"
            with _maybe_step(run, "verify restore") as info:
                checks = _compare(env, manifest, new_target, var, known=early)
                report.checks.extend(checks)
                bad = [c for c in checks if not c.ok]
                if bad:
                    raise VerificationFailed(
                        f"restored database {dbname} differs from the backup: {bad[0].name}: {bad[0].detail}",
                        hint="it was not put into use; inspect it, then drop it",
                    )
            if created:
                verified_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                admin.execute("SET synchronous_commit = on")  # durable: see restore_settings
                _comment(admin, dbname, f"pgrunbook: restored from backup {manifest.id}, verified {verified_at}")
        except BaseException as exc:
            if created:
                why = _drop_partial(admin, target, var, dbname)
                if why is not None:
                    if not isinstance(exc, PgRunbookError):
                        raise DatabaseError(
                            f"restore into {dbname!r} broke off: {redact(str(exc), target.secrets())}".splitlines()[0],
                            hint=_leftover_hint(dbname, why),
                        ) from None
                    exc.hint = _leftover_hint(dbname, why)
            raise
    report.verified = True
    report.database_url = url_with_dbname(os.environ[env.url_var(direct=False)], dbname)
    report.duration_s = round(time.monotonic() - t0, 3)
    return report


def _drop_partial(admin: psycopg.Connection, target: DatabaseTarget, var: str, dbname: str) -> str | None:
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
            with connect(target, purpose="drop a partial restore", var=var, connect_timeout=3) as conn:
                conn.execute(stmt)
            return None
        except (PgRunbookError, psycopg.Error) as exc:
            why = exc.message if isinstance(exc, PgRunbookError) else str(exc).splitlines()[0]
            time.sleep(0.5)
    return redact(why, target.secrets())


def _leftover_hint(dbname: str, why: str) -> str:
    return (
        f"the partial database {dbname!r} could not be dropped ({why}); it was not put into use — "
        f'drop it when the server is back: DROP DATABASE "{dbname}"'  # names are [A-Za-z0-9_$-]
    )


def _comment(admin: psycopg.Connection, dbname: str, text: str) -> None:
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname), sql.Literal(text)))


def _create_database(admin: psycopg.Connection, dbname: str, owner: str | None) -> None:
    admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname)))


class _NullStep:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_step(run: Run | None, name: str):  # type: ignore[no-untyped-def]
    return run.step(name) if run is not None else _NullStep()


def point_app(env: Environment, report: RestoreReport, run_id: str) -> None:
    """Run the point_app hook with the restored database's URL; refused when no hook is configured."""
    if "point_app" not in env.settings.hooks:
        raise ConfigError(
            f"environment {env.name!r} has no point_app hook",
            hint='add [environments.<name>.hooks] point_app = "..." to pgrunbook.toml',
        )
    assert report.database_url is not None
    env_hook(env, "point_app", run_id, extra_env={"PGRUNBOOK_DATABASE_URL": report.database_url})


# --- in place ----------------------------------------------------------------------------------------


def restore_in_place(
    env: Environment,
    backup_id: str,
    *,
    confirm: str | None,
    run: Run,
    progress: ProgressFn = no_progress,
    keep_maintenance_on_failure: bool = False,
) -> RestoreReport:
    """Maintenance on, verified pre-restore backup, restore into a fresh database, swap names, verify,
    maintenance off. Until the swap the live database is untouched; after it, the replaced one is kept."""
    target = env.target(direct=True)
    live = target.dbname
    if confirm != live:
        raise ConfigError(
            f"in-place restore replaces database {live!r}: pass --confirm {live}"
            + (f" (you gave {confirm!r})" if confirm else ""),
            hint=f"or restore into a new database: pgrunbook restore {backup_id} --into {live}_restored",
        )
    manifest = env.repository.get(backup_id)
    tools = _tools(env, manifest)
    with run.step("check backup"):
        require_intact(env, manifest, tools, progress)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    staging, replaced = f"{live[:40]}_restore_{stamp}", f"{live[:40]}_replaced_{stamp}"
    run.set_recovery(f"database {live} is untouched; nothing to undo")
    ok = False
    report: RestoreReport | None = None
    try:
        with run.step("maintenance on"):
            env_hook(env, "maintenance_on", run.id)
        with run.step("pre-restore backup") as info:
            safety = create_backup(env, label="pre-restore", progress=progress)
            result = verify_backup(env, safety.id)
            if not result.ok:
                raise VerificationFailed(f"the pre-restore backup {safety.id} failed verification; stopped")
            info["detail"] = safety.id
        run.set_recovery(f"database {live} is untouched; a pre-restore backup {safety.id} exists")
        report = restore_into_new_database(env, backup_id, staging, progress=progress, run=run)
        report.pre_restore_backup = safety.id
        with run.step("swap databases") as info:
            run.set_recovery(
                f'if {live} is missing, rename it back: ALTER DATABASE "{replaced}" RENAME TO "{live}"; '
                f"the pre-restore backup is {safety.id}"
            )
            _swap(target, env.url_var(), live, staging, replaced)
            info["detail"] = f"{staging} -> {live}; the previous {live} is now {replaced}"
        run.set_recovery(
            f'to go back to the state before the restore: ALTER DATABASE "{live}" RENAME TO "{staging}"; '
            f'ALTER DATABASE "{replaced}" RENAME TO "{live}" (or restore the pre-restore backup {safety.id})'
        )
        report.database, report.replaced_database = live, replaced
        report.database_url = url_with_dbname(os.environ[env.url_var(direct=False)], live)
        with run.step("verify live database"):
            checks = _compare(env, manifest, target, env.url_var())
            if not all(c.ok for c in checks):
                raise VerificationFailed(f"database {live} after the swap differs from the backup")
        ok = True
        return report
    finally:
        if ok or not keep_maintenance_on_failure:
            with run.step("maintenance off"):
                env_hook(env, "maintenance_off", run.id)
        else:
            run.skip("maintenance off", "kept on after a failure, as asked")


def _swap(target: DatabaseTarget, var: str, live: str, staging: str, replaced: str) -> None:
    """Rename live -> replaced and staging -> live from a connection to another database; clients of the
    live database are disconnected (the app is in maintenance). Owner and database settings follow."""
    maint = "postgres" if live != "postgres" else "template1"
    with connect(target.with_dbname(maint), purpose="restore swap", var=var) as admin:
        row = admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (live,)).fetchone()
        if row:
            admin.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(staging), sql.Identifier(row[0]))
            )
        for (setting,) in admin.execute(
            "SELECT unnest(setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = %s AND s.setrole = 0",
            (live,),
        ).fetchall():
            key, _, value = setting.partition("=")
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(staging), sql.Identifier(key), sql.Literal(value)
                )
            )
        last: Exception | None = None
        for _ in range(10):
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (live,),
            )
            try:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(live), sql.Identifier(replaced))
                )
                break
            except psycopg.errors.ObjectInUse as exc:
                last = exc
                time.sleep(0.3)
        else:
            raise DatabaseError(
                f"could not take {live} out of use to swap it: {last}",
                hint="is the app really in maintenance? nothing was swapped",
            )
        admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(live)))

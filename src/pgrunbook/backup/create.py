"""``backup create``: one streaming pass pg_dump -> zstd -> sha256 -> storage, manifest last.

Row counts and the migration head are read in the very snapshot pg_dump dumps (pg_export_snapshot +
pg_dump --snapshot), while the dump runs, so the manifest describes exactly the bytes in the file
even while the application writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Generic, TypeVar, cast

import psycopg
from psycopg import sql

from pgrunbook import __version__
from pgrunbook.backup.codec import CodecStack, for_writing
from pgrunbook.backup.identity import restored_from
from pgrunbook.backup.naming import ARCHIVE_MAGIC, backup_id, validate_label
from pgrunbook.backup.storage import AtomicWriter
from pgrunbook.environment import Environment
from pgrunbook.errors import DatabaseError, PgRunbookError, StorageError, ToolError, printable
from pgrunbook.postgres import runner
from pgrunbook.postgres.catalog import (
    Head,
    database_comment,
    exact_row_counts,
    prisma_head,
    system_identifier,
    try_session_lock,
    unreadable_tables,
)
from pgrunbook.postgres.connect import connect, server_version
from pgrunbook.postgres.names import quote_ident
from pgrunbook.postgres.tool_errors import explain, lock_wait_table
from pgrunbook.postgres.tools import (
    ClientTools,
    find_client_tools,
    min_restore_major,
    path_pg_restore,
    probe_first_batch,
    restore_error_flags,
    version_of,
)
from pgrunbook.postgres.url import DatabaseTarget, redact
from pgrunbook.progress import ProgressFn, draws, no_progress, with_estimate

if TYPE_CHECKING:
    from pgrunbook.backup.manifest import Manifest
    from pgrunbook.backup.privileges import Privileges

T = TypeVar("T")


class _Beside(Generic[T]):
    """``fn()`` run in a thread beside the dump, its result (or its exception) taken with `result`:
    for work the manifest needs that waits on something else than the dump (a tool's ``--version``)
    and would otherwise run after the stream, delaying the end of every backup."""

    def __init__(self, fn: Callable[[], T], name: str):
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class _Head:
    """pg_dump's output passed on unchanged, its first bytes kept: a "pg_dump" that exits 0 but writes
    no archive (a wrapper that swallowed the real one's failure, a script, junk) is refused (break11 #4)."""

    def __init__(self, src: IO[bytes]):
        self.src = src
        self.data = b""

    def read(self, n: int = -1) -> bytes:
        chunk = self.src.read(n)
        if len(self.data) < 16:
            self.data += chunk[: 16 - len(self.data)]
        return chunk


def _no_archive(tools: ClientTools, head: bytes) -> PgRunbookError:
    seen = printable(head.decode("latin-1"), one_line=True)
    return PgRunbookError(
        f"pg_dump at {tools.pg_dump} wrote no archive (its output does not start with PGDMP"
        + (f": it starts with {seen!r}" if head else ": it wrote nothing")
        + "); nothing of this backup was kept",
        hint="point [postgres] bin_dir (or PATH) at PostgreSQL's own pg_dump, or make the wrapper pass pg_dump's "
        "output and exit status through unchanged",
    )


class _HashingSink:
    """What the compressor writes to: hashes and counts the stored bytes on their way out."""

    def __init__(self, writer: AtomicWriter):
        self.writer = writer
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.writer.write(data)
        self.size += len(data)
        return len(data)


@dataclass
class _Snapshot:
    counts: dict[tuple[str, str], int]
    head: Head | None
    error: BaseException | None = None
    privileges: Privileges | None = None


def dump_args(codecs: CodecStack, snapshot: str | None, lock_wait_ms: int = 0) -> list[str]:
    """pg_dump's arguments before the connection (the runner adds it, without secrets); ``lock_wait_ms``:
    --lock-wait-timeout in milliseconds, 0 for none (pg_dump then waits without limit)."""
    args = ["--format=custom", *codecs.dump_args()]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    if lock_wait_ms:
        args.append(f"--lock-wait-timeout={lock_wait_ms}")
    return args


def by_hand_pg_restore(tools: ClientTools) -> str:
    """How the manifest's by-hand command calls pg_restore: plainly when the one first on this machine's
    PATH reads archives of this pg_dump, else by the absolute path of the one beside that pg_dump."""
    import shlex

    on_path = path_pg_restore()
    if on_path is not None and on_path.major >= min_restore_major(tools.major):
        return "pg_restore"
    return shlex.quote(str(tools.pg_restore))


def create_backup(env: Environment, *, label: str = "manual", progress: ProgressFn = no_progress) -> Manifest:
    """Take a backup of ``env`` and return its manifest; nothing is listed unless all of it succeeded."""
    validate_label(label)
    target = env.target(direct=True)
    bin_dir = env.config.postgres.bin_dir
    # pg_dump --version (a process start, ~20-40 ms) asked while the connection is made, not after it
    probed = _Beside(lambda: probe_first_batch(bin_dir), "backup tools probe")
    conn = connect(
        target,
        autocommit=True,
        purpose=f"backup {env.name}",
        connect_timeout=env.config.postgres.connect_timeout,
    )
    try:
        major, _minor, version_text = server_version(conn)
        tools = find_client_tools(major, version_text, bin_dir, first=probed.result())
        try_session_lock(conn, f"backup:{env.name}", f"backup of environment {env.name!r}")
        sysid = system_identifier(conn)
        env.repository.claim(target.dbname, sysid, restored_from(database_comment(conn)))
        return _run(env, conn, target, tools, version_text, label, _with_estimate(env, progress), sysid)
    finally:
        conn.close()


def _refuse_unreadable(conn: psycopg.Connection, target: DatabaseTarget) -> None:
    """Before pg_dump starts: every table it must dump is readable by this role, or one ``error:`` naming
    the tables and the GRANT that fixes it (trial11 F20: a table created by a superuser without a grant
    failed the backup as "could not import the requested snapshot" with a restore-side hint). Raises
    DatabaseError (exit 2); nothing is written."""
    tables = unreadable_tables(conn)
    if not tables:
        return
    role = str(target.params.get("user") or conn.info.user)
    shown = tables[:5]
    names = ", ".join(f"{quote_ident(t.schema)}.{quote_ident(t.table)}" for t in shown)
    more = f" and {len(tables) - len(shown)} more" if len(tables) > len(shown) else ""
    fix = shown[0]
    statement = (
        f"GRANT USAGE ON SCHEMA {quote_ident(fix.schema)} TO {quote_ident(role)}"
        if fix.no_usage
        else f"GRANT SELECT ON {quote_ident(fix.schema)}.{quote_ident(fix.table)} TO {quote_ident(role)}"
    )
    raise DatabaseError(
        f"the backup's role {role} cannot read {len(tables)} table(s) pg_dump must dump: {names}{more} "
        f"(owned by {fix.owner}; no {'USAGE on the schema' if fix.no_usage else 'SELECT'}); nothing was dumped",
        hint=f"as {fix.owner} (or a superuser) run {statement}, or give the table to the app's role "
        "(ALTER TABLE … OWNER TO …), or take backups as a role that reads every table (a superuser, or a member "
        "of pg_read_all_data on PostgreSQL 14+)",
    )


def _orphan_check(conn: psycopg.Connection) -> dict[str, str | int]:
    """``client_connection_check_interval`` (PostgreSQL 14+, where the server's platform supports it)
    for this connection and pg_dump's: if pgrunbook dies (pg_dump is killed with it, runner.py), a
    session waiting for a lock or running a long query notices its client is gone within seconds
    instead of holding its snapshot and lock request until the wait ends. Tried here first: a server
    that refuses it gets nothing."""
    if conn.info.server_version < 140000:
        return {}
    try:
        conn.execute("SET client_connection_check_interval = '2s'")
    except psycopg.Error:
        return {}
    return {"client_connection_check_interval": "2s"}


def _with_estimate(env: Environment, progress: ProgressFn) -> ProgressFn:
    """pg_dump cannot say how much it will write; the last backup's archive size is a good guess (a
    database grows slowly), so a terminal's bar shows how far along the dump is instead of a count of
    bytes alone. Asked only when something is drawn: a scheduled backup reads no extra manifest."""
    if not draws(progress):
        return progress
    try:
        last = env.repository.newest()
    except Exception:  # an estimate is never worth failing a backup for
        last = None
    return with_estimate(progress, "dump", last.archive_size if last else None, "of about the last backup's size")


def _new_id(env: Environment, started: datetime, label: str) -> str:
    base = backup_id(started, label)
    candidate, n = base, 1
    while env.repository.exists(candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _run(
    env: Environment,
    conn: psycopg.Connection,
    target: DatabaseTarget,
    tools: ClientTools,
    version_text: str,
    label: str,
    progress: ProgressFn,
    sysid: str | None = None,
) -> Manifest:
    cfg = env.config.backup
    repo = env.repository
    started = datetime.now(UTC)
    t0 = time.monotonic()
    bid = _new_id(env, started, label)
    codecs = for_writing(cfg)
    file = codecs.file_name

    settings = _orphan_check(conn)
    _refuse_unreadable(conn, target)
    lock_wait_ms = round(cfg.lock_wait_timeout_s * 1000)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    # the row counts read in the snapshot wait for the same locks as pg_dump: no longer than it
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_wait_ms)))
    snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]

    repo.mark_in_progress(bid, started)
    writer = env.storage.writer(repo.key(bid, file))
    watch: _LockWatch | None = None
    try:
        with runner.start(
            tools.pg_dump,
            dump_args(codecs, snapshot_id, lock_wait_ms),
            target=target,
            stdout=subprocess.PIPE,
            settings=settings,
        ) as dump:
            snap = _Snapshot({}, None)
            snap_thread = threading.Thread(target=_read_snapshot, args=(conn, target.schema, snap), daemon=True)
            snap_thread.start()
            # the by-hand command's pg_restore (PATH's, often a wrapper script: ~50-100 ms) is asked now,
            # while pg_dump reads the catalog, not after the stream
            by_hand = _Beside(lambda: by_hand_pg_restore(tools), "backup by-hand pg_restore")
            # the manifest's models load now, while pg_dump reads the catalog (backup/naming.py)
            from pgrunbook.backup.manifest import Manifest, MigrationHead, TableCount

            progress("dump", 0, None)  # pg_dump runs: a bar shows now (and the CLI readies its output)

            watch = _LockWatch(env, target, conn.info.backend_pid, cfg.lock_wait_timeout_s)
            sink = _HashingSink(writer)
            head = _Head(dump.stdout)
            raw, frames = codecs.write(cast("IO[bytes]", head), sink, cfg, lambda done: progress("dump", done, None))
            dump.wait()
            snap_thread.join()
            failure = dump.failure()
        table = lock_wait_table(failure) if failure is not None else None
        if failure is not None and table is not None:
            raise _lock_wait_error(target, cfg.lock_wait_timeout_s, table or None, env.config.postgres.connect_timeout)
        if failure is not None:  # the first error and its context, explained (tool_errors), not the last line
            cause = explain(failure, role=str(target.params.get("user") or ""))
            raise ToolError(
                redact(cause.message, target.secrets()),
                hint=redact(f"{cause.hint}; nothing of this backup was kept", target.secrets()),
                cause=cause.to_dict(),
            )
        if not head.data.startswith(ARCHIVE_MAGIC):
            raise _no_archive(tools, head.data)
        if isinstance(snap.error, psycopg.errors.LockNotAvailable):
            raise _lock_wait_error(target, cfg.lock_wait_timeout_s, None, env.config.postgres.connect_timeout)
        if snap.error is not None:
            raise PgRunbookError(f"reading row counts failed: {redact(str(snap.error), target.secrets())}")
        writer.commit()
        conn.execute("COMMIT")
    except BaseException:
        writer.abort()
        with contextlib.suppress(StorageError):  # what cannot be removed now, prune cleans later
            repo.delete_backup(bid)
        raise
    finally:
        if watch is not None:
            watch.stop()
    finished = datetime.now(UTC)
    needs = min_restore_major(tools.major)
    manifest = Manifest(
        id=bid,
        environment=env.name,
        database=target.dbname,
        project_id=env.config.project.id,
        project_name=env.config.project.name or env.config.project.id,
        system_identifier=sysid,
        server_version=version_text,
        pg_dump_version=tools.version.text,
        **codecs.manifest_fields(),  # compression, encryption, recipients
        file=file,
        size=sink.size,
        archive_size=raw,
        frames=frames,
        sha256=sink.sha.hexdigest(),
        started_at=started,
        finished_at=finished,
        duration_s=round(time.monotonic() - t0, 3),
        label=label,
        migration_head=MigrationHead(name=snap.head.name, count=snap.head.count) if snap.head else None,
        tables=[TableCount(schema=s, name=n, rows=c) for (s, n), c in sorted(snap.counts.items())],
        tool_version=__version__,
        restore_command=codecs.restore_command(
            pg_restore=by_hand.result(),
            needs=needs,
            flags=restore_error_flags(tools.major, version_of(version_text).major),
        ),
        privileges=snap.privileges,
    )
    repo.write_manifest(manifest)
    repo.clear_in_progress(bid)
    return manifest


class _LockWatch:
    """Says at once, in one notice per holder, when the backup waits behind another session's lock
    (trial7 #29): pg_dump's LOCK TABLE, or the row counts read in the same snapshot, blocked by a
    session holding a conflicting lock. Silent until then: the first look comes after
    ``_LOCK_LOOK_AFTER_S`` (a lock granted at once needs no words, and a small backup opens no extra
    connection); then one look a second, from its own connection, until the dump ends.

    The backup's sessions are found by the snapshot they share: the row counts' connection
    (``snapshot_pid``) and pg_dump's, which imported its snapshot (same ``backend_xmin``) and is
    running LOCK TABLE. Any failure to look is silent: a notice is never worth failing a backup for."""

    def __init__(self, env: Environment, target: DatabaseTarget, snapshot_pid: int, wait_s: float):
        self._env, self._target, self._pid, self._wait_s = env, target, snapshot_pid, wait_s
        self._done = threading.Event()
        self._told: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="backup lock watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=1)  # a look under way ends by itself; never hold up the backup

    def _run(self) -> None:
        if self._done.wait(_LOCK_LOOK_AFTER_S):
            return
        with contextlib.suppress(Exception), self._connect() as look:
            while not self._done.is_set():
                for row in look.execute(_BLOCKERS_SQL, {"snap": self._pid}).fetchall():
                    self._tell(*row)
                if self._done.wait(1.0):
                    return

    def _connect(self) -> psycopg.Connection:
        timeout = self._env.config.postgres.connect_timeout
        return connect(self._target, autocommit=True, purpose="backup lock watch", connect_timeout=timeout)

    def _tell(self, table: str, pid: int, app: str, client: str, since: object, mode: str) -> None:
        if pid in self._told:
            return
        self._told.add(pid)
        mode = ", ".join(_MODE_WORDS.sub(r" \1", m.removesuffix("Lock")).strip().upper() for m in mode.split(", ") if m)
        when = since.strftime("%H:%M:%S %Z") if isinstance(since, datetime) else "an unknown time"
        limit = (
            f"it gives up after {self._wait_s:g}s"
            if self._wait_s
            else "it waits without limit (lock_wait_timeout_s = 0)"
        )
        # no granted mode: that session waits itself, ahead in the queue, for a lock that conflicts
        how = f"holds {mode}" if mode else "is ahead of it in the lock queue, waiting for a conflicting lock"
        message = (
            f"the backup is waiting for a lock on {table}: pid {pid} ({app or 'no application_name'}) from "
            f"{client} {how}, its query started at {when}; {limit} "
            "([backup] lock_wait_timeout_s); to go on now, end that session: "
            f"SELECT pg_terminate_backend({pid})"
        )
        fields = {
            "table": table,
            "holder_pid": pid,
            "holder_application": app,
            "holder_client": client,
            "holder_query_start": since,
            "lock_wait_timeout_s": self._wait_s,
        }
        self._env.notice("lock_wait", redact(message, self._target.secrets()), fields)


_LOCK_LOOK_AFTER_S = 1.0
_MODE_WORDS = re.compile(r"([A-Z])")  # pg_locks' "AccessExclusiveLock" -> "ACCESS EXCLUSIVE", as LOCK TABLE says

# the backup's waiting sessions (see _LockWatch), the relation each waits for, and who blocks it
_BLOCKERS_SQL = """
SELECT DISTINCT ON (b.pid)
       coalesce(wl.relation::regclass::text, 'a table'), b.pid, coalesce(b.application_name, ''),
       coalesce(host(b.client_addr), 'local socket'), b.query_start,
       coalesce((SELECT string_agg(DISTINCT bl.mode, ', ') FROM pg_locks bl
                 WHERE bl.pid = b.pid AND bl.granted AND bl.relation = wl.relation), '')
FROM pg_stat_activity w
JOIN pg_locks wl ON wl.pid = w.pid AND NOT wl.granted AND wl.locktype = 'relation'
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
JOIN pg_stat_activity b ON b.pid = bp.pid AND b.pid <> %(snap)s
WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
  AND (w.pid = %(snap)s
       OR (w.query ILIKE 'LOCK TABLE%%'
           AND w.backend_xmin = (SELECT backend_xmin FROM pg_stat_activity WHERE pid = %(snap)s)))
ORDER BY b.pid
"""


def _lock_wait_error(target: DatabaseTarget, wait_s: float, table: str | None, connect_timeout: int) -> PgRunbookError:
    """The backup gave up waiting for a lock on ``table`` (None: not known): who holds it (pg_locks), so
    the operator can wait for that session or end it. Nothing of the backup is kept (the caller aborts)."""
    holders: list[tuple[int, str, str, object, str, str]] = []
    with (
        contextlib.suppress(psycopg.Error, PgRunbookError),
        connect(target, purpose="backup lock check", connect_timeout=connect_timeout) as look,
    ):
        holders = look.execute(  # type: ignore[assignment]
            """SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),
                      a.xact_start, coalesce(a.query, ''), l.relation::regclass::text
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'AccessExclusiveLock'
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND l.pid <> pg_backend_pid()
                 AND (%s::text IS NULL OR l.relation = to_regclass(%s::text))
               ORDER BY a.xact_start NULLS LAST LIMIT 3""",
            (table, table),
        ).fetchall()
    what = table or (holders[0][5] if holders else "a table")
    tail = "; [backup] lock_wait_timeout_s sets how long a backup waits (0: without limit)"
    if not holders:
        return PgRunbookError(
            f"the backup waited {wait_s:g}s for a lock on {what} and gave up; the session holding it has since "
            "ended; nothing of this backup was kept",
            hint="run the backup again" + tail,
        )
    pid, app, client, since, query, rel = holders[0]
    when = since.strftime("%Y-%m-%d %H:%M:%S %Z") if isinstance(since, datetime) else "unknown time"
    return PgRunbookError(
        redact(
            f"the backup waited {wait_s:g}s for a lock on {table or rel} and gave up: pid {pid} "
            f"({app or 'no application_name'}) from {client} holds it (ACCESS EXCLUSIVE) in a transaction since "
            f"{when}, last query {query[:160]!r}; nothing of this backup was kept",
            target.secrets(),
        ),
        hint=f"wait for that session to finish, or end it: SELECT pg_terminate_backend({pid})" + tail,
    )


def _read_snapshot(conn: psycopg.Connection, schema: str, out: _Snapshot) -> None:
    try:
        out.counts = exact_row_counts(conn)
        out.head = prisma_head(conn, schema)
        from pgrunbook.backup.privileges import read_privileges  # loaded by the manifest's models already

        out.privileges = read_privileges(conn)  # owners and grants, for the restore's comparison
    except BaseException as exc:  # reported by the main thread
        out.error = exc

"""``backup verify``: are the stored bytes the ones written, and do they restore?

Checksum and table of contents are read in one streaming pass over storage (the pre-deploy backup is
verified inside the maintenance window); ``--drill`` restores into a scratch database that is always
dropped, then compares row counts with the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import zstandard
from psycopg import sql

from pgrunbook import __version__
from pgrunbook.backup.create import child_env
from pgrunbook.backup.frames import decompress_frames
from pgrunbook.backup.manifest import Check, Manifest, Verification
from pgrunbook.config import database_target
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import DatabaseError, PgRunbookError, VerificationFailed
from pgrunbook.postgres.connect import connect, server_version
from pgrunbook.postgres.tools import ClientTools, find_client_tools
from pgrunbook.postgres.url import DatabaseTarget, redact


@dataclass
class VerifyResult:
    id: str
    ok: bool
    checks: list[Check] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "ok": self.ok,
            "checks": [c.model_dump() for c in self.checks],
            "duration_s": self.duration_s,
        }


def archive_bytes(env: Environment, manifest: Manifest, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The pg_dump archive from stored bytes: decrypted (age) if needed, then decompressed."""
    return decompressed(manifest, plaintext(env, manifest, chunks))


def plaintext(env: Environment, manifest: Manifest, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The stored bytes decrypted (age) when the backup is encrypted: still compressed."""
    if not manifest.encryption:
        return chunks
    from pgrunbook.backup.encryption import decrypted, identities

    return decrypted(chunks, identities(env.config.backup.encryption.identity_file, env.config.root))


def decompressed(manifest: Manifest, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The archive's bytes from the stored ones; raises zstandard.ZstdError on damage."""
    if manifest.compression != "zstd":
        yield from chunks
        return
    yield from decompress_frames(chunks, manifest.frames)


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
        for chunk in self.chunks:
            self.sha.update(chunk)
            self.size += len(chunk)
            self.progress(self.stage, self.size, self.total)
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


def _feed(proc: subprocess.Popen[bytes], data: Iterator[bytes]) -> None:
    """Write to a child's stdin until it stops reading; keep consuming so the hash sees every byte."""
    assert proc.stdin is not None
    open_ = True
    for chunk in data:
        if open_:
            try:
                proc.stdin.write(chunk)
            except (BrokenPipeError, OSError):
                open_ = False
    if open_:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()


def _collect(stream: object, out: list[bytes]) -> None:
    out.append(stream.read())  # type: ignore[attr-defined]


def check_stored(
    env: Environment, manifest: Manifest, tools: ClientTools, progress: ProgressFn = no_progress
) -> list[Check]:
    """Checksum, size, compression frame and pg_restore --list, in one pass over storage."""
    repo = env.repository
    tap = HashTap(env.storage.read(repo.dump_key(manifest)), progress, manifest.size)
    if manifest.encryption and not env.config.backup.encryption.identity_file:
        return _check_ciphertext_only(manifest, tap)
    proc = subprocess.Popen(
        [str(tools.pg_restore), "--list"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=_collect, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_collect, args=(proc.stderr, err), daemon=True),
    ]
    for t in readers:
        t.start()
    frame_error = ""
    try:
        _feed(proc, archive_bytes(env, manifest, iter(tap)))
    except (zstandard.ZstdError, VerificationFailed) as exc:
        frame_error = str(exc)
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for _ in tap:  # finish hashing for an exact report
            pass
    rc = proc.wait()
    for t in readers:
        t.join()
    checks = tap.checks(manifest)
    if manifest.compression == "zstd":
        checks.append(
            Check(name="compression", ok=not frame_error, detail=frame_error or "zstd frames complete, checksums ok")
        )
    checks.append(
        _toc_check(manifest, rc, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))
    )
    return checks


def _check_ciphertext_only(manifest: Manifest, tap: HashTap) -> list[Check]:
    """Without the identity only the stored ciphertext can be checked: size and sha256."""
    for _ in tap:
        pass
    return [
        *tap.checks(manifest),
        Check(
            name="archive",
            ok=True,
            detail="not read: the backup is age-encrypted and no identity_file is set "
            "here (drills and restores need it)",
        ),
    ]


def _toc_check(manifest: Manifest, rc: int, listing: str, stderr: str) -> Check:
    if rc != 0:
        last = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), f"exit code {rc}")
        return Check(name="archive", ok=False, detail=f"pg_restore --list failed: {last.strip()}")
    data = [ln for ln in listing.splitlines() if re.match(r"^\d+; \d+ \d+ TABLE DATA ", ln)]
    missing = [
        t.qualified for t in manifest.tables if not any(f" TABLE DATA {t.schema_} {t.name} " in ln for ln in data)
    ]
    entries = sum(1 for ln in listing.splitlines() if re.match(r"^\d+;", ln))
    if missing:
        return Check(name="archive", ok=False, detail=f"table of contents lacks data for {', '.join(missing[:5])}")
    return Check(
        name="archive", ok=True, detail=f"table of contents readable: {entries} entries, data for {len(data)} tables"
    )


def drill_target(env: Environment) -> tuple[DatabaseTarget, str]:
    """Where drills restore: a dedicated server if configured, else the environment's own server."""
    var = env.config.backup.drill_database_url_env
    if var:
        return database_target(
            env.name, env.settings.model_copy(update={"database_url_env": var, "direct_url_env": None})
        ), var
    return env.target(direct=True), env.url_var()


def restore_stream(
    tools: ClientTools, target: DatabaseTarget, data: Iterator[bytes], settings: Mapping[str, str | int] | None = None
) -> tuple[int, str]:
    """pg_restore --no-owner from a stream into ``target``; returns (exit code, last error line)."""
    cmd = [str(tools.pg_restore), "--no-owner", "--exit-on-error", "--no-password", f"--dbname={target.conninfo()}"]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(target, settings),
    )
    errors: deque[str] = deque(maxlen=20)

    def drain() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            errors.append(raw.decode(errors="replace").rstrip())

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        _feed(proc, data)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    rc = proc.wait()
    t.join()
    last = next((e for e in reversed(errors) if e.strip()), "")
    return rc, redact(last, target.secrets())


def drill(env: Environment, manifest: Manifest, tools: ClientTools, progress: ProgressFn = no_progress) -> list[Check]:
    """Restore into a scratch database, compare exact row counts, run the read query, drop it."""
    target, var = drill_target(env)
    scratch = f"pgrunbook_drill_{secrets.token_hex(4)}"
    admin = connect(target, purpose="drill", var=var)
    checks: list[Check] = []
    try:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch)))
        except Exception as exc:
            raise DatabaseError(
                f"cannot create the drill's scratch database on {target.display}: "
                f"{redact(str(exc).splitlines()[0], target.secrets())}",
                hint="grant CREATEDB, or set [backup] drill_database_url_env to a server where it may",
            ) from None
        try:
            scratch_target = target.with_dbname(scratch)
            t0 = time.monotonic()
            stream = archive_bytes(env, manifest, env.storage.read(env.repository.dump_key(manifest)))
            rc, last = restore_stream(tools, scratch_target, stream, {"synchronous_commit": "off"})  # dropped after
            checks.append(
                Check(
                    name="drill restore",
                    ok=rc == 0,
                    detail=f"restored in {time.monotonic() - t0:.1f}s" if rc == 0 else f"pg_restore failed: {last}",
                )
            )
            if rc == 0:
                checks.extend(_compare(env, manifest, scratch_target, var))
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    finally:
        admin.close()
    return checks


def parallel_row_counts(
    target: DatabaseTarget, var: str, manifest: Manifest, known: dict[tuple[str, str], int] | None = None
) -> dict[tuple[str, str], int]:
    """Exact counts of a restored copy, biggest tables spread over one connection per core: nothing
    writes to it, so no shared snapshot is needed, and verification costs less of the restore's time.
    `known`: tables already counted once their data was restored (restore_counts), not counted again."""
    known = known or {}
    from concurrent.futures import ThreadPoolExecutor

    from pgrunbook.postgres.catalog import count_tables, user_tables

    with connect(target, purpose="verify", var=var) as conn:
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
        with connect(target, purpose="verify", var=var) as c:
            return count_tables(c, group)

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(count, [g for g in groups if g]))
    return {**{t: n for t, n in known.items() if t in every}, **{k: v for r in results for k, v in r.items()}}


def _compare(
    env: Environment,
    manifest: Manifest,
    target: DatabaseTarget,
    var: str,
    known: dict[tuple[str, str], int] | None = None,
) -> list[Check]:
    counts = parallel_row_counts(target, var, manifest, known)
    early = f" ({len(known)} counted while pg_restore built indexes)" if known else ""
    with connect(target, purpose="drill", var=var) as conn:
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
            conn.execute(env.settings.read_query).fetchall()
            checks.append(Check(name="read query", ok=True, detail=env.settings.read_query))
        except Exception as exc:
            checks.append(
                Check(name="read query", ok=False, detail=f"{env.settings.read_query}: " + str(exc).splitlines()[0])
            )
    return checks


def verify_backup(
    env: Environment,
    backup_id: str,
    *,
    drill_restore: bool = False,
    progress: ProgressFn = no_progress,
    record: bool = True,
) -> VerifyResult:
    """All checks; the result is recorded in the manifest (rewritten atomically) unless ``record`` is off."""
    t0 = time.monotonic()
    manifest = env.repository.get(backup_id)
    tools = _tools_for(env, manifest)
    checks = check_stored(env, manifest, tools, progress)
    if drill_restore:
        if all(c.ok for c in checks):
            checks.extend(drill(env, manifest, tools, progress))
        else:
            checks.append(Check(name="drill restore", ok=False, detail="skipped: the stored file failed its checks"))
    ok = all(c.ok for c in checks)
    if record:
        manifest.verifications.append(
            Verification(
                at=datetime.now(UTC),
                kind="drill" if drill_restore else "checksum",
                ok=ok,
                checks=checks,
                tool_version=__version__,
            )
        )
        env.repository.write_manifest(manifest)
    return VerifyResult(manifest.id, ok, checks, round(time.monotonic() - t0, 3))


def _tools_for(env: Environment, manifest: Manifest) -> ClientTools:
    """pg_restore able to read this archive: at least the version of the pg_dump that wrote it."""
    from pgrunbook.postgres.tools import parse_tool_version

    try:
        v = parse_tool_version(f"(PostgreSQL) {manifest.pg_dump_version}")
    except ValueError:
        raise PgRunbookError(f"manifest of {manifest.id} names an unknown pg_dump version") from None
    return find_client_tools(v.major, manifest.pg_dump_version, env.config.postgres.bin_dir)


__all__ = ["VerifyResult", "check_stored", "drill", "restore_stream", "server_version", "verify_backup"]

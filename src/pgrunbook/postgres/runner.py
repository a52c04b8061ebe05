"""The one runner of PostgreSQL's client tools (pg_dump, pg_restore): every start goes through `start`.

What it guarantees, whoever calls it (backup create, verify, drill, restore):

- argv holds no secret: ``--dbname`` gets the target's conninfo without ``password`` and
  ``sslpassword``. The password travels in ``PGPASSWORD``; libpq has no variable for the other
  secret keywords, so they go into a private service file (``PGSERVICEFILE``, a section named in the
  conninfo's ``service=``): anonymous memory on Linux (gone with the process, even killed), a 0600
  file elsewhere, removed when the tool is done.
- the child's environment: the parent's, minus any inherited ``PGPASSWORD*``, plus ``PGAPPNAME`` and
  the sessions' settings (``PGOPTIONS``). The password is the one pgrunbook's own connections log in
  with: the URL's, else the ``PGPASSWORD`` pgrunbook inherited (break11 #8: stripped, every pg_dump
  failed with "no password supplied" while pgrunbook itself connected); a ``.pgpass`` file
  (``PGPASSFILE``) the tool reads by itself.
- stderr captured (or handed to the caller, for pg_restore's ``--verbose`` progress) and every report
  from it redacted; its first ``ERROR:`` and the archive entry it concerns are read by
  `pgrunbook.postgres.tool_errors`, the one reader of the tools' stderr (`ToolProcess.failure`).
- cancellation: leaving a `ToolProcess` block by an exception kills the tool; on Linux every tool gets
  the parent-death signal (``PR_SET_PDEATHSIG``): the kernel kills it when pgrunbook dies, even by
  SIGKILL, so no pg_dump keeps a snapshot and a connection open, and no pg_restore keeps writing into
  a database nobody will verify. The signal follows the *thread* that started the tool: start and wait
  in the same thread (every caller does).
- per platform: ``preexec_fn`` and ``pass_fds`` are POSIX-only in `subprocess`, ``memfd_create`` is
  Linux-only; on Windows only portable arguments are used (`PLATFORM` is the one switch).

Choosing which pg_dump/pg_restore to run is `pgrunbook.postgres.tools`' job (`ClientTools`); a caller
passes the binary it chose, so a later choice per server major or archive version changes no caller.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

from pgrunbook.errors import ConfigError
from pgrunbook.postgres.tool_errors import Entry, Failure, error_message, read_failure
from pgrunbook.postgres.url import SECRET_KEYWORDS, DatabaseTarget

# The platform switch: every per-platform choice of this module (and of the temporary archive of a
# restore) reads it, so a test can take the platform as Windows.
PLATFORM = sys.platform

SERVICE = "pgrunbook"  # the private service file's one section
_HEAD_LINES = 400  # stderr lines kept from the start (the first ERROR and its entry are there)
_TAIL_LINES = 50  # and from the end
_ERROR_LINES = 10_000  # error lines kept wherever they fall


def is_windows() -> bool:
    return PLATFORM == "win32"


def is_linux() -> bool:
    return PLATFORM.startswith("linux")


def has_memfd() -> bool:
    """Anonymous memory files (Linux only): a temporary archive or a secret that disappears with us."""
    return is_linux() and hasattr(os, "memfd_create")


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` (on this machine) still running? Unknown counts as alive.

    On Windows ``os.kill(pid, 0)`` does not probe: it terminates the process, so nothing is asked there.
    """
    if is_windows():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def popen_options(
    *, inherit_fds: Sequence[int] = (), die_with_parent: bool = True, death_signal: int = signal.SIGKILL
) -> dict[str, Any]:
    """The platform-dependent keyword arguments of `subprocess.Popen`: none at all on Windows; on Linux
    the parent-death signal (``death_signal``, SIGKILL unless the child has a cleanup to run) unless
    ``die_with_parent`` is False."""
    if is_windows():
        if inherit_fds:
            raise RuntimeError("inheriting descriptors is not available on Windows")  # callers check has_memfd
        return {}
    options: dict[str, Any] = {}
    if inherit_fds:
        options["pass_fds"] = tuple(inherit_fds)
    if die_with_parent and (preexec := parent_death_preexec(death_signal)) is not None:
        options["preexec_fn"] = preexec
    return options


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the parent (never in a forked child: loading a library there can
    deadlock on a lock another thread held at fork time). None when it cannot be found."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def parent_death_preexec(signum: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` (Linux) that asks the kernel to send ``signum`` to the child when pgrunbook dies
    (strictly: when the thread that started it ends, so the starting thread must wait for the child).

    Python's documentation calls ``preexec_fn`` unsafe in a threaded program because the child runs
    Python between fork and exec while other threads' locks are frozen. This one takes no lock: the
    prctl function was resolved in the parent (`_prctl`), and the child only makes two system calls
    (prctl, getppid) with small integers. If pgrunbook died between fork and prctl, the child has been
    re-parented already and would never get the signal: it exits instead of running the tool."""
    prctl = _prctl() if is_linux() else None
    if prctl is None:
        return None
    parent = os.getpid()
    signum = int(signum)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:
            os._exit(70)

    return preexec


# --- secrets and environment --------------------------------------------------------------------------


@dataclass
class Connection:
    """How a tool reaches a database without a secret in argv: the ``--dbname`` value, the variables to
    add to its environment, and the descriptors it must inherit. `close` removes the service file."""

    conninfo: str
    env: dict[str, str]
    inherit_fds: tuple[int, ...] = ()
    _cleanup: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        while self._cleanup:
            with contextlib.suppress(OSError):
                self._cleanup.pop()()


def connection(target: DatabaseTarget) -> Connection:
    """The conninfo (no secret in it), ``PGPASSWORD`` (the URL's, else the inherited one pgrunbook's own
    connections use: `DatabaseTarget.inherited_password`) and, for other secret keywords, a private service
    file. Raises ConfigError when the URL itself names a ``service`` and holds such a secret (libpq
    reads one service per connection; put the secret into that service's file instead)."""
    env = {"PGAPPNAME": target.params.get("application_name", "pgrunbook")}
    password = target.password if target.password is not None else target.inherited_password()
    if password is not None:
        env["PGPASSWORD"] = password
    extra = {k: v for k in sorted(SECRET_KEYWORDS - {"password"}) if (v := target.params.get(k))}
    conninfo = target.conninfo()
    if not extra:
        return Connection(conninfo, env)
    if "service" in target.params:
        raise ConfigError(
            f"the database URL names service={target.params['service']} and holds {', '.join(extra)}: "
            "pgrunbook cannot pass both to pg_dump/pg_restore without putting the secret in their arguments",
            hint=f"put {', '.join(extra)} into that service's entry of the service file, not into the URL",
        )
    for key, value in extra.items():
        if "\n" in value or "\r" in value or value != value.strip():
            raise ConfigError(
                f"the database URL's {key} has a line break or surrounding spaces, which a service file cannot hold",
                hint="use a passphrase without them",
            )
    text = f"[{SERVICE}]\n" + "".join(f"{k}={v}\n" for k, v in extra.items())
    conn = Connection(f"{conninfo} service={SERVICE}", env)
    path = _service_file(text.encode(), conn)
    env["PGSERVICEFILE"] = path
    return conn


def _service_file(data: bytes, conn: Connection) -> str:
    if has_memfd():  # nothing on disk, and nothing left behind even when pgrunbook is killed
        fd = os.memfd_create("pgrunbook-service", 0)  # inheritable: the tool opens it by path
        conn._cleanup.append(lambda: os.close(fd))
        os.write(fd, data)
        conn.inherit_fds = (fd,)
        return f"/proc/self/fd/{fd}"
    fd, path = tempfile.mkstemp(prefix="pgrunbook-service-", suffix=".conf")  # 0600, this user only
    conn._cleanup.append(lambda: os.unlink(path))
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def child_env(extra: Mapping[str, str], settings: Mapping[str, str | int] | None = None) -> dict[str, str]:
    """The parent's environment without inherited passwords, plus ``extra``; `settings` become the
    tool's sessions' settings (``PGOPTIONS``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGPASSWORD")}
    env.update(extra)
    env["LC_MESSAGES"] = "C"  # the tools' own messages in English: postgres.tool_errors reads them
    if "LC_ALL" in env:
        env["LC_ALL"] = "C"
    if settings:
        options = " ".join(f"-c {name}={value}" for name, value in settings.items())
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {options}".strip()
    return env


# --- running ------------------------------------------------------------------------------------------


class ToolProcess:
    """A running client tool. Use as a context manager: leaving the block by an exception kills the
    tool (cancellation), and the block's end always removes its service file.

    ``stdin``/``stdout``: the Popen streams when asked for with ``subprocess.PIPE``. ``stderr``: the
    stream itself when the caller reads it (``collect_stderr=False``); otherwise a thread collects it.
    """

    def __init__(
        self,
        proc: subprocess.Popen[Any],
        tool: str,
        conn: Connection | None,
        secrets: Sequence[str],
        collect_stderr: bool,
    ):
        self.proc = proc
        self.tool = tool
        self._conn = conn
        self._secrets = list(secrets)
        self._head: list[str] = []
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        # every error line (up to _ERROR_LINES), wherever it falls: a caller that tolerates one known
        # error must see all the others (ClientTools.restore_failed)
        self.errors: list[str] = []
        self._seen = 0
        self._reader: threading.Thread | None = None
        if collect_stderr and proc.stderr is not None:
            self._reader = threading.Thread(target=self._collect, name=f"{tool}-stderr", daemon=True)
            self._reader.start()

    @property
    def stdin(self) -> IO[Any]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> IO[Any]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stderr(self) -> IO[Any]:
        assert self.proc.stderr is not None and self._reader is None
        return self.proc.stderr

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.note(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)

    def note(self, line: str) -> None:
        """Keep one stderr line (for callers that read stderr themselves, e.g. for progress)."""
        line = line.rstrip("\r\n")
        if error_message(line) is not None and len(self.errors) < _ERROR_LINES:
            self.errors.append(line)
        if self._seen < _HEAD_LINES:
            self._head.append(line)
        else:
            self._tail.append(line)
        self._seen += 1

    def lines(self) -> list[str]:
        """The stderr lines kept: the first few hundred and the last fifty (not redacted)."""
        return [*self._head, *self._tail]

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return rc

    def failure(
        self, toc: Mapping[int, Entry] | None = None, ignorable: Sequence[re.Pattern[str]] = ()
    ) -> Failure | None:
        """After `wait`: None when the tool succeeded, else its first error as `tool_errors.read_failure`
        reads it from the kept stderr lines (redacted); `tool_errors.explain` gives its cause."""
        rc = self.proc.returncode
        if rc == 0:
            return None
        rc = rc if rc is not None else -1
        return read_failure(self.tool, self.lines(), toc, exit_code=rc, ignorable=ignorable, secrets=self._secrets)

    def cancel(self) -> None:
        """Kill the tool if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> ToolProcess:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is not None:
                self.cancel()
        finally:
            self.close()


def start(
    binary: Path,
    args: Sequence[str],
    *,
    target: DatabaseTarget | None = None,
    settings: Mapping[str, str | int] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.DEVNULL,
    collect_stderr: bool = True,
    text: bool = False,
    inherit_fds: Sequence[int] = (),
    die_with_parent: bool = True,
) -> ToolProcess:
    """Start ``binary`` with ``args``; with a ``target``, ``--no-password --dbname=<conninfo>`` are added
    (secrets in the environment or the service file, see the module's docstring).

    ``stdin``/``stdout``: ``subprocess.PIPE``, ``DEVNULL`` or a descriptor. ``text``: decode the pipes
    (errors replaced). ``inherit_fds``: descriptors the tool opens by /proc path (Linux; see `has_memfd`).
    ``die_with_parent`` (default on; Linux): the kernel kills the tool when pgrunbook dies.
    Raises OSError when the binary cannot be started, ConfigError for secrets that cannot be passed.
    """
    conn = connection(target) if target is not None else None
    argv = [str(binary), *args]
    if conn is not None:
        argv += ["--no-password", f"--dbname={conn.conninfo}"]
    fds = (*inherit_fds, *(conn.inherit_fds if conn else ()))
    text_options: dict[str, Any] = {"text": True, "errors": "replace"} if text else {}
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=child_env(conn.env if conn else {}, settings),
            **text_options,
            **popen_options(inherit_fds=fds, die_with_parent=die_with_parent),
        )
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    secrets = target.secrets() if target is not None else []
    return ToolProcess(proc, Path(binary).stem, conn, secrets, collect_stderr)


def feed(tool: ToolProcess, data: Iterator[bytes]) -> None:
    """Write ``data`` to the tool's stdin until it stops reading, then close it; the iterator is always
    consumed to its end (a hash computed over it then sees every byte)."""
    open_ = True
    for chunk in data:
        if open_:
            try:
                tool.stdin.write(chunk)
            except (BrokenPipeError, OSError):
                open_ = False
    if open_:
        with contextlib.suppress(BrokenPipeError, OSError):
            tool.stdin.close()


def run(binary: Path, args: Sequence[str], *, inherit_fds: Sequence[int] = ()) -> tuple[int, str, list[str]]:
    """Run a tool that needs no connection (``pg_restore --list FILE``) to its end: (exit code, stdout,
    stderr lines)."""
    with start(binary, args, stdout=subprocess.PIPE, text=True, inherit_fds=inherit_fds) as tool:
        out = tool.stdout.read()
        rc = tool.wait()
        return rc, out, tool.lines()


# A schema no database has: pg_dump looks its name up right after logging in and stops ("no matching
# schemas were found"), before reading any catalog beyond that one query.
_LOGIN_CHECK_SCHEMA = "pgrunbook_login_check_no_such_schema"
_LOGIN_CHECK_OK = "no matching schemas were found"


def login_check(binary: Path, target: DatabaseTarget, timeout: float = 30) -> Failure | None:
    """Whether ``binary`` (a pg_dump) logs in to ``target`` the way a backup's will (same environment,
    password, service file): None when it does, else its failure (doctor; break11 #8). It reads nothing
    of the database: it asks for a schema that does not exist and stops there."""
    args = ["--schema-only", f"--schema={_LOGIN_CHECK_SCHEMA}"]
    with start(binary, args, target=target) as tool:
        try:
            tool.wait(timeout)
        except subprocess.TimeoutExpired:
            tool.cancel()
            return Failure(tool.tool, f"did not log in within {timeout:g} s", exit_code=-1)
        failure = tool.failure()
    if failure is None or _LOGIN_CHECK_OK in failure.error:
        return None
    return failure

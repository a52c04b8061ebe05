"""Finding PostgreSQL's own client tools, and choosing (or refusing) the ones that fit, before anything
is touched.

Rules (PostgreSQL's documentation and ../shared/PG-MAJORS.md, checked on every major 13-18):
- pg_dump refuses a server newer than itself, so pg_dump must be of the server's major or newer.
- pg_restore reads archives up to its own archive format: 1.14 (pg_dump 12-15), 1.15 (16),
  1.16 (17, 18). pg_restore 15 cannot read pg_dump 16's archives; 16 cannot read 17's.
- pg_restore >= 17 always sends ``SET transaction_timeout = 0`` on each of its connections, which
  servers <= 16 reject; nothing else of the restore depends on it (see ``tolerated_restore_errors``).
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from pgrunbook.errors import ToolError
from pgrunbook.postgres.tool_errors import error_message, errors_ignored, reports_errors_ignored

EXE = ".exe" if sys.platform == "win32" else ""
BIN_DIR_VAR = "PGRUNBOOK_POSTGRES__BIN_DIR"

# Where distributions put versioned PostgreSQL binaries; PATH comes last since on Debian it holds
# pg_wrapper, which picks a version by itself.
_VERSIONED_DIRS = [
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu (apt.postgresql.org too)
    "/usr/pgsql-*/bin",  # RHEL and friends (PGDG)
    "/usr/libexec/postgresql*",  # Alpine (postgresqlN-client)
    "/opt/homebrew/opt/postgresql@*/bin",  # Homebrew, Apple silicon
    "/usr/local/opt/postgresql@*/bin",  # Homebrew, Intel
    "/opt/homebrew/opt/libpq/bin",
    "/usr/local/opt/libpq/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
    "C:/Program Files/PostgreSQL/*/bin",
]

# pg_restore >= 17 opens every connection with this; servers <= 16 reject it (PG-MAJORS.md).
TRANSACTION_TIMEOUT_SINCE = 17
TRANSACTION_TIMEOUT_ERROR = re.compile(r'unrecognized configuration parameter "transaction_timeout"')


@dataclass(frozen=True)
class ToolVersion:
    major: int
    minor: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ClientTools:
    """pg_dump and pg_restore of one folder. ``version`` is the version of the tool the entry serves:
    each tool is asked its own (break11 #3: a folder of symbolic links or a half-upgraded package can
    hold pg_dump 15 beside pg_restore 18), and a folder whose two tools differ in major, or that holds one
    of them only, gives one entry per tool that runs (``dump_ok``/``restore_ok``: what it may be chosen
    for)."""

    pg_dump: Path
    pg_restore: Path
    version: ToolVersion
    # the major of the server this pg_restore was chosen to restore into (restore_tools); None: not chosen
    # for a server, so no error is tolerated
    target_major: int | None = None
    dump_ok: bool = True
    restore_ok: bool = True

    @property
    def folder(self) -> Path:
        return self.pg_restore.parent

    @property
    def major(self) -> int:
        return self.version.major

    def describe(self) -> str:
        return f"{self.version} ({self.folder})"

    def restore_flags(self) -> list[str]:
        """pg_restore's error handling for the server it was chosen for (restore_error_flags)."""
        return restore_error_flags(self.major, self.target_major if self.target_major is not None else self.major)

    def unexpected_errors(self, stderr_lines: Iterable[str]) -> list[str]:
        """pg_restore's errors other than the one tolerated for this server (unexpected_restore_errors)."""
        server = self.target_major if self.target_major is not None else self.major
        return unexpected_restore_errors(stderr_lines, self.major, server)

    def tolerated_errors(self) -> tuple[re.Pattern[str], ...]:
        """The errors this pg_restore may report into the server it was chosen for, as patterns for
        `tool_errors.read_failure`'s ``ignorable``: a failure's cause is then read from the first error
        that matters, never from the transaction_timeout one."""
        server = self.target_major if self.target_major is not None else self.major
        return (TRANSACTION_TIMEOUT_ERROR,) if needs_timeout_tolerance(self.major, server) else ()

    def restore_failed(self, rc: int, stderr_lines: Iterable[str]) -> str | None:
        """None when pg_restore's run may be trusted (row counts then prove the data); else its first
        unexpected error, or its exit code. With the tolerance, pg_restore exits 1 and says 'errors ignored
        on restore: N' even when the only errors were the tolerated one."""
        lines = list(stderr_lines)
        unexpected = self.unexpected_errors(lines)
        if unexpected and self._only_tolerated(rc, lines):
            return None  # parallel jobs' lines interleaved: a context line read as an error of its own
        if unexpected:
            return unexpected[0]
        if rc == 0:
            return None
        if rc == 1 and reports_errors_ignored(lines) and "--exit-on-error" not in self.restore_flags():
            return None
        return f"exit code {rc}"

    def _only_tolerated(self, rc: int, lines: list[str]) -> bool:
        """Every error pg_restore counted ("errors ignored on restore: N") is a tolerated one: N equals
        the tolerated messages found anywhere in its output. Its parallel jobs share one stderr and
        write a message's prefix and text apart, so a line can read ``error: from TOC entry …`` with the
        tolerated message on another line (a CI run's finding); the count does not interleave."""
        if rc != 1 or not self.tolerated_errors():
            return False
        counted = errors_ignored(lines)
        tolerated = sum(len(p.findall(line)) for p in self.tolerated_errors() for line in lines)
        return counted is not None and counted == tolerated


def parse_tool_version(output: str) -> ToolVersion:
    """'pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)' -> 15.18; 9.6.x keeps 9.6 as the major."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?", output)
    if not m:
        raise ValueError(f"unrecognised version output: {output.strip()[:80]!r}")
    first, second = int(m.group(1)), int(m.group(2) or 0)
    text = m.group(0).split()[-1]
    if first < 10:  # 9.6.24: the major version is 9.6, encoded as 906 to keep ordering right
        return ToolVersion(first * 100 + second, int(m.group(3) or 0), text)
    return ToolVersion(first, second, text)


def version_of(text: str) -> ToolVersion:
    """A bare version such as a manifest's '18.6' or '15.18 (Debian 15.18-0+deb12u1)'."""
    return parse_tool_version(f"(PostgreSQL) {text}")


def tool_version(path: Path) -> ToolVersion:
    """What ``path --version`` says; ToolError naming the tool when it does not run or says no version."""
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"{path} does not run ({path.name} --version: {exc})") from None
    if done.returncode != 0:
        said = next((ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()), "")
        raise ToolError(
            f"{path} does not run: {path.name} --version failed (exit code {done.returncode}"
            + (f": {said[:200]})" if said else ")")
        )
    try:
        return parse_tool_version(done.stdout)
    except ValueError as exc:
        raise ToolError(f"{path} does not run as {path.name}: --version said {exc}") from None


# --- what fits --------------------------------------------------------------------------------------


def archive_format(dump_major: int) -> str:
    """The custom-format archive version pg_dump of this major writes (pg_backup_archiver.h K_VERS_*)."""
    if dump_major >= 17:
        return "1.16"
    if dump_major == 16:
        return "1.15"
    return "1.14" if dump_major >= 12 else "1.13 or older"


def min_restore_major(dump_major: int) -> int:
    """The oldest pg_restore major that reads an archive written by pg_dump of ``dump_major``.
    Majors newer than this table know (19+) are assumed to need their own major."""
    if dump_major <= 11:
        return dump_major
    if dump_major <= 15:
        return 12
    if dump_major == 16:
        return 16
    if dump_major <= 18:
        return 17
    return dump_major


def needs_timeout_tolerance(restore_major: int, server_major: int) -> bool:
    """pg_restore >= 17 into a server <= 16: its `SET transaction_timeout` fails on every connection."""
    return restore_major >= TRANSACTION_TIMEOUT_SINCE > server_major


def restore_error_flags(restore_major: int, server_major: int) -> list[str]:
    """pg_restore's error handling: stop at the first error, except where one known harmless error must
    be let through (then every error is judged afterwards by ``unexpected_restore_errors``)."""
    return [] if needs_timeout_tolerance(restore_major, server_major) else ["--exit-on-error"]


def unexpected_restore_errors(stderr_lines: Iterable[str], restore_major: int, server_major: int) -> list[str]:
    """pg_restore's reported errors other than the one tolerated; [] when the restore may be trusted
    (row counts then prove the data). Each error is a ``pg_restore: error: ...`` line; a failed statement
    is reported as 'could not execute query: ERROR: ...' followed by a 'Command was:' line."""
    tolerate = needs_timeout_tolerance(restore_major, server_major)
    out = []
    for line in stderr_lines:
        message = error_message(line)  # the one reader of the tools' lines (postgres/tool_errors.py)
        if message is None or (tolerate and TRANSACTION_TIMEOUT_ERROR.search(message)):
            continue
        out.append(f"error: {message}")
    return out


# --- discovery -------------------------------------------------------------------------------------


def candidate_dirs(bin_dir: str | None = None) -> list[Path]:
    """An explicit ``bin_dir`` is the only place looked at: the operator chose it."""
    return [d for batch in _candidate_batches(bin_dir) for d in batch]


def _candidate_batches(bin_dir: str | None) -> list[list[Path]]:
    """The folders to look in, as two batches: the versioned folders, then PATH. PATH's pg_dump is
    often Debian's pg_wrapper (a Perl script, ~0.1 s to ask), only worth asking when no versioned
    folder has what is needed."""
    if bin_dir:
        return [[Path(bin_dir).expanduser()]]
    versioned: list[Path] = []
    for pattern in _VERSIONED_DIRS:
        found = [Path(p) for p in glob.glob(pattern)]
        versioned.extend(sorted(found, key=_dir_version, reverse=True))
    path = [Path(entry) for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    seen: set[Path] = set()
    batches: list[list[Path]] = [[], []]
    for batch, folders in zip(batches, (versioned, path), strict=True):
        for folder in folders:
            if folder not in seen:
                seen.add(folder)
                batch.append(folder)
    return batches


def _dir_version(path: Path) -> tuple[int, ...]:
    nums = re.findall(r"\d+", str(path))
    return tuple(int(n) for n in nums[-2:]) if nums else (0,)


def installed_tools(bin_dir: str | None = None) -> list[ClientTools]:
    """Every pair of pg_dump/pg_restore found, one per major (the first folder of a major wins), newest
    major first. With ``bin_dir`` only that folder."""
    _check_bin_dir(bin_dir)
    by_major: dict[int, ClientTools] = {}
    for batch in _candidate_batches(bin_dir):
        for tools in _probe(batch)[0]:
            if tools.dump_ok and tools.restore_ok:
                by_major.setdefault(tools.major, tools)
    return sorted(by_major.values(), key=lambda t: (t.major, t.version.minor), reverse=True)


Probed = tuple[list[ClientTools], list[tuple[Path, str]]]


def probe_first_batch(bin_dir: str | None = None) -> Probed:
    """The tools of the first folders `find_client_tools` looks in (``bin_dir``, else the versioned
    folders), asked their versions (`_probe`: what runs, and what is present but does not): a caller can
    start this before it knows the server's version (a process start per tool, beside its connection)
    and hand the result to `find_client_tools`. An explicit ``bin_dir`` that is not a folder gives
    nothing here; `find_client_tools` then says so."""
    folder = Path(bin_dir).expanduser() if bin_dir else None
    if folder is not None and not folder.is_dir():
        return [], []
    return _probe(_candidate_batches(bin_dir)[0])


def _check_bin_dir(bin_dir: str | None) -> None:
    """An explicit bin_dir that is not a folder is a typo to fix, not a client to install."""
    if not bin_dir:
        return
    folder = Path(bin_dir).expanduser()
    if folder.is_dir():
        return
    what = "is not a folder" if folder.exists() else "does not exist"
    raise ToolError(
        f"[postgres] bin_dir {folder} {what}",
        hint=f"set [postgres] bin_dir (or {BIN_DIR_VAR}) to the folder holding pg_dump and pg_restore, "
        "e.g. /usr/lib/postgresql/17/bin, or remove it to let pgrunbook look in the usual folders and PATH",
    )


@dataclass
class _Seen:
    """Every tool found while choosing: the entries that run, and the tools that do not (their error)."""

    tools: list[ClientTools]
    broken: list[tuple[Path, str]]  # a tool present that does not run, and why

    def for_tool(self, tool: str) -> list[ClientTools]:
        return [t for t in self.tools if (t.dump_ok if tool == "pg_dump" else t.restore_ok)]


def _choose(
    bin_dir: str | None,
    tool: str,
    fits: Callable[[ClientTools], bool],
    rank: Callable[[ClientTools], tuple[int, ...]],
    first: Probed | None = None,
) -> tuple[ClientTools | None, _Seen]:
    """The best fitting entry for ``tool`` (highest rank), and everything found. A versioned folder of
    rank's best kind ends the search before PATH is asked. ``first``: the first batch already probed
    (`probe_first_batch`)."""
    _check_bin_dir(bin_dir)
    seen = _Seen([], [])

    def fitting() -> list[ClientTools]:
        return [t for t in seen.for_tool(tool) if fits(t)]

    for i, batch in enumerate(_candidate_batches(bin_dir)):
        found, broken = first if i == 0 and first is not None else _probe(batch)
        seen.tools.extend(found)
        seen.broken.extend(broken)
        if fitting() and rank(max(fitting(), key=rank))[0] == 2:
            break
    return (max(fitting(), key=rank) if fitting() else None), seen


def _not_found(tool: str, bin_dir: str | None, seen: _Seen, why: str, hint: str) -> ToolError:
    """No ``tool`` at all: which one is missing, and what was found instead (the other tool, one that
    does not run)."""
    broken = [why_not for path, why_not in seen.broken if path.name == f"{tool}{EXE}"]
    if broken:
        return ToolError(
            f"{broken[0]}; {why}",
            hint=f"reinstall it or point [postgres] bin_dir (or {BIN_DIR_VAR}) at a folder whose {tool} runs; " + hint,
        )
    other = "pg_restore" if tool == "pg_dump" else "pg_dump"
    others = seen.for_tool(other)
    if others:
        found = ", ".join(f"{other} {t.version} at {t.pg_dump if other == 'pg_dump' else t.pg_restore}" for t in others)
        return ToolError(f"{tool} not found in {_where(bin_dir)} (only {found}); {why}", hint=hint)
    return ToolError(f"pg_dump and pg_restore not found in {_where(bin_dir)}; {why}", hint=hint)


def find_client_tools(
    server_major: int, server_version: str, bin_dir: str | None = None, *, first: Probed | None = None
) -> ClientTools:
    """The pg_dump (and its pg_restore) for a backup of this server: its major, else the newest newer.
    ``first``: `probe_first_batch`'s answer for the same ``bin_dir``, when the caller asked it already."""
    best, seen = _choose(
        bin_dir,
        "pg_dump",
        lambda t: t.major >= server_major,
        lambda t: (2 if t.major == server_major else 1, t.major, t.version.minor),
        first,
    )
    if best is not None:
        return best
    need = f"pg_dump {_major_text(server_major)} or newer"
    dumps = seen.for_tool("pg_dump")
    if dumps:
        newest = max(dumps, key=lambda t: (t.major, t.version.minor))
        raise ToolError(
            f"pg_dump {newest.version} ({newest.pg_dump}) is older than the server (PostgreSQL {server_version}); "
            f"a backup needs {need}",
            hint=install_hint(server_major),
        )
    raise _not_found("pg_dump", bin_dir, seen, f"a backup needs {need}", install_hint(server_major))


dump_tools = find_client_tools


def restore_tools(
    dump_version: str, server_major: int | None, server_version: str | None, bin_dir: str | None = None
) -> ClientTools:
    """The pg_restore for an archive written by pg_dump ``dump_version``, to restore into a server of
    ``server_major`` (None: only reading the archive, e.g. its table of contents). It must read the
    archive's format; preferred: one that needs no tolerated error for this server, then the server's
    own major, then the newest."""
    need = min_restore_major(version_of(dump_version).major)

    def rank(t: ClientTools) -> tuple[int, ...]:
        clean = server_major is None or not needs_timeout_tolerance(t.major, server_major)
        same = server_major is not None and t.major == server_major
        return (2 if clean and (same or server_major is None) else 1, int(clean), int(same), t.major, t.version.minor)

    best, seen = _choose(bin_dir, "pg_restore", lambda t: t.major >= need, rank)
    if best is not None:
        return replace(best, target_major=server_major)
    why = (
        f"this backup's archive was written by pg_dump {dump_version} (archive format "
        f"{archive_format(version_of(dump_version).major)}), which pg_restore {_major_text(need)} or newer reads"
    )
    if server_version:
        why += f"; the target server is PostgreSQL {server_version}"
    # advise the client of the archive's own major (or the server's, when newer): it reads the archive
    # and restores without tolerated errors; the oldest reader (``need``) would work but is a poor pick
    want = max(need, version_of(dump_version).major, server_major or 0)
    restores = seen.for_tool("pg_restore")
    if restores:
        newest = max(restores, key=lambda t: (t.major, t.version.minor))
        raise ToolError(
            f"pg_restore {newest.version} ({newest.pg_restore}) cannot read this backup: {why}",
            hint=install_hint(want),
        )
    raise _not_found("pg_restore", bin_dir, seen, why, install_hint(want))


def path_pg_restore() -> ClientTools | None:
    """The pg_restore a shell finds first on PATH (as typed by hand), with its version; None if none."""
    found = shutil.which("pg_restore")
    if not found:
        return None
    try:
        v = tool_version(Path(found))
    except ToolError:
        return None
    return ClientTools(Path(found).with_name(f"pg_dump{EXE}"), Path(found), v, dump_ok=False)


def _major_text(major: int) -> str:
    return f"{major // 100}.{major % 100}" if major >= 900 else str(major)


def _where(bin_dir: str | None) -> str:
    return f"{Path(bin_dir).expanduser()} ([postgres] bin_dir)" if bin_dir else "PATH and the usual PostgreSQL folders"


def install_hint(major: int, system: str | None = None, os_release: str | None = None) -> str:
    """How to get PostgreSQL ``major``'s client tools on this machine, then how to point pgrunbook at them.
    ``system``/``os_release`` default to this machine's (platform.system(), /etc/os-release)."""
    system = system or platform.system()
    if os_release is None:
        try:
            os_release = Path("/etc/os-release").read_text()
        except OSError:
            os_release = ""
    ids = set(re.findall(r'^(?:ID|ID_LIKE)="?([^"\n]+)"?', os_release, re.M))
    words = {w for entry in ids for w in entry.split()}
    point = (
        f"then point pgrunbook at that folder: set [postgres] bin_dir (or {BIN_DIR_VAR}) to it, or put it first on PATH"
    )
    if system == "Darwin":
        get = (
            f"macOS: brew install postgresql@{major} (it installs into $(brew --prefix)/opt/postgresql@{major}/bin), "
            "or brew install libpq for the newest client only"
        )
    elif words & {"debian", "ubuntu"}:
        get = (
            "Debian/Ubuntu: add the PostgreSQL apt repository first (sudo apt-get install postgresql-common && "
            f"sudo /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y), then sudo apt-get install "
            f"postgresql-client-{major} (it installs into /usr/lib/postgresql/{major}/bin)"
        )
    elif words & {"rhel", "fedora", "centos", "rocky", "almalinux"}:
        get = (
            "RHEL/Fedora: add the PGDG repository (https://www.postgresql.org/download/linux/redhat/), then "
            f"sudo dnf install postgresql{major} (it installs into /usr/pgsql-{major}/bin)"
        )
    elif "alpine" in words:
        get = f"Alpine: apk add postgresql{major}-client (it installs into /usr/libexec/postgresql{major})"
    else:
        get = (
            f"install the PostgreSQL {major} client tools (https://www.postgresql.org/download/; containers: an "
            f"image such as postgres:{major} carries them)"
        )
    return f"{get}; {point}"


def _probe(folders: list[Path]) -> tuple[list[ClientTools], list[tuple[Path, str]]]:
    """Every folder's pg_dump and pg_restore, each asked its own version, all at once, in folder order:
    each call is a process start, paid by every command that runs pg_dump or pg_restore. A folder whose
    two tools are of one major is one entry; otherwise one entry per tool that runs (``dump_ok``,
    ``restore_ok``). Also returned: why each tool present but not running was left out."""
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(f / f"pg_dump{EXE}", f / f"pg_restore{EXE}") for f in folders]
    paths = [p for d, r in pairs for p in (d, r) if p.is_file()]
    if not paths:
        return [], []

    def version(path: Path) -> ToolVersion | str:
        try:
            return tool_version(path)
        except ToolError as exc:
            return exc.message

    with ThreadPoolExecutor(max_workers=min(len(paths), 8)) as pool:
        asked = dict(zip(paths, pool.map(version, paths), strict=True))
    found: list[ClientTools] = []
    broken = [(p, v) for p, v in asked.items() if isinstance(v, str)]
    for d, r in pairs:
        dv, rv = asked.get(d), asked.get(r)
        dv = dv if isinstance(dv, ToolVersion) else None
        rv = rv if isinstance(rv, ToolVersion) else None
        if dv is not None and rv is not None and dv.major == rv.major:
            found.append(ClientTools(d, r, dv))
            continue
        if dv is not None:
            found.append(ClientTools(d, r, dv, restore_ok=False))
        if rv is not None:
            found.append(ClientTools(d, r, rv, dump_ok=False))
    return found, broken


def find_server_bin(bin_dir: str | None = None) -> Path:
    """The folder with initdb/pg_ctl/postgres, for throwaway local clusters (demo, tests)."""
    explicit = bin_dir or os.environ.get("PGRUNBOOK_PG_BIN")
    dirs = [Path(explicit)] if explicit else candidate_dirs()
    for folder in dirs:
        if (folder / f"initdb{EXE}").is_file() and (folder / f"pg_ctl{EXE}").is_file():
            return folder
    which = shutil.which("initdb")
    if which and not explicit:
        return Path(which).parent
    raise ToolError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found",
        hint="install the server (Debian/Ubuntu: apt-get install postgresql) or set PGRUNBOOK_PG_BIN",
    )

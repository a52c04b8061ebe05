"""Finding PostgreSQL's own client tools, and refusing ones too old for the server.

pg_dump refuses (or worse, silently mis-dumps) a server newer than itself, so the check happens before
any dump starts, with a message that says what was found and what to install.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pgrunbook.errors import ToolError

EXE = ".exe" if sys.platform == "win32" else ""

# Where distributions put versioned PostgreSQL binaries; PATH comes last since on Debian it holds
# pg_wrapper, which picks a version by itself.
_VERSIONED_DIRS = [
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
    "C:/Program Files/PostgreSQL/*/bin",
]


@dataclass(frozen=True)
class ToolVersion:
    major: int
    minor: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ClientTools:
    pg_dump: Path
    pg_restore: Path
    version: ToolVersion


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


def tool_version(path: Path) -> ToolVersion:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"{path} does not run: {exc}") from None
    try:
        return parse_tool_version(out)
    except ValueError as exc:
        raise ToolError(f"{path}: {exc}") from None


def candidate_dirs(bin_dir: str | None = None) -> list[Path]:
    """An explicit ``bin_dir`` is the only place looked at: the operator chose it."""
    return [d for batch in _candidate_batches(bin_dir) for d in batch]


def _candidate_batches(bin_dir: str | None) -> list[list[Path]]:
    """The folders to look in, as two batches: the versioned folders, then PATH. PATH's pg_dump is
    often Debian's pg_wrapper (a Perl script, ~0.1 s to ask), only worth asking when no versioned
    folder has the server's version."""
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


def find_client_tools(server_major: int, server_version: str, bin_dir: str | None = None) -> ClientTools:
    """pg_dump and pg_restore from one folder, of the server's major version or newer."""
    found: list[ClientTools] = []
    too_old: list[ClientTools] = []
    for batch in _candidate_batches(bin_dir):  # the first folder of the server's version wins
        for tools in _probe(batch):
            (found if tools.version.major >= server_major else too_old).append(tools)
        same = [t for t in found if t.version.major == server_major]
        if same:
            return same[0]
    if found:
        return max(found, key=lambda t: (t.version.major, t.version.minor))
    install = (
        f"install the PostgreSQL {server_major} client (Debian/Ubuntu: apt-get install "
        f"postgresql-client-{server_major}; others: https://www.postgresql.org/download/) "
        "or point [postgres] bin_dir at it"
    )
    if too_old:
        newest = max(too_old, key=lambda t: (t.version.major, t.version.minor))
        raise ToolError(
            f"pg_dump {newest.version} ({newest.pg_dump}) is older than the server "
            f"(PostgreSQL {server_version}); pg_dump must be version {server_major} or newer",
            hint=install,
        )
    where = str(candidate_dirs(bin_dir)[0]) if bin_dir else "PATH and the usual PostgreSQL folders"
    raise ToolError(f"pg_dump and pg_restore not found in {where}", hint=install)


def _probe(folders: list[Path]) -> list[ClientTools]:
    """Every folder's pg_dump asked its version at once, in folder order: each call is a process start,
    paid by every command that runs pg_dump or pg_restore."""
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(f / f"pg_dump{EXE}", f / f"pg_restore{EXE}") for f in folders]
    pairs = [(d, r) for d, r in pairs if d.is_file() and r.is_file()]

    def version(path: Path) -> ToolVersion | None:
        try:
            return tool_version(path)
        except ToolError:
            return None

    if not pairs:
        return []
    with ThreadPoolExecutor(max_workers=min(len(pairs), 8)) as pool:
        versions = list(pool.map(version, [d for d, _ in pairs]))
    return [ClientTools(d, r, v) for (d, r), v in zip(pairs, versions, strict=True) if v is not None]


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

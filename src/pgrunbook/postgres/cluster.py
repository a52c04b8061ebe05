"""Throwaway local PostgreSQL clusters for ``pgrunbook demo``, the tests and the benchmarks.

initdb refuses to run as root, so as root the cluster is owned and run by the ``postgres`` user;
its folder lives in the system temp dir so that user can reach it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from pgrunbook.errors import ToolError
from pgrunbook.postgres.tools import EXE, find_server_bin


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class LocalCluster:
    """initdb + pg_ctl on a free port in a temp dir; password auth over TCP, like a real server."""

    def __init__(
        self,
        *,
        bin_dir: str | None = None,
        password: str | None = None,
        fast: bool = True,
        settings: dict[str, str] | None = None,
        name: str = "pgrunbook-cluster",
    ):
        self.bin = find_server_bin(bin_dir)
        self.password = password or secrets.token_urlsafe(12)
        self.fast = fast
        self.settings = settings or {}
        self.port = 0
        self.name = name
        self.base: Path | None = None
        self._user = "postgres" if _running_as_root() else None

    @property
    def data(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        from urllib.parse import quote

        pw = quote(self.password if password is None else password, safe="")
        return f"postgresql://postgres:{pw}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def _run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        kw: dict[str, object] = {"capture_output": True, "text": True, "cwd": self.base}
        if self._user:
            kw.update(user=self._user, group=self._user, extra_groups=[])
        kw.update(kwargs)
        return subprocess.run(args, **kw)  # type: ignore[call-overload, no-any-return]

    def start(self) -> LocalCluster:
        tmp_root = tempfile.gettempdir() if not self._user else "/tmp"
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=tmp_root))
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if self._user:
            shutil.chown(self.base, self._user, self._user)
            shutil.chown(pwfile, self._user, self._user)
        os.chmod(pwfile, 0o600)
        r = self._run(
            [
                str(self.bin / f"initdb{EXE}"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if r.returncode != 0:
            self.cleanup()
            raise ToolError(f"initdb failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "max_connections": "50",
            "log_min_messages": "warning",
        }
        if self.fast:
            conf.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        conf.update(self.settings)
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        for _attempt in range(5):
            self.port = free_port()
            r = self._run(
                [
                    str(self.bin / f"pg_ctl{EXE}"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.base / "log"),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
            if r.returncode == 0:
                return self
        log = (self.base / "log").read_text(errors="replace")[-500:] if (self.base / "log").exists() else ""
        self.cleanup()
        raise ToolError(f"could not start a local PostgreSQL cluster: {log.strip() or r.stderr.strip()}")

    def stop(self) -> None:
        if self.base and (self.data / "postmaster.pid").exists():
            self._run([str(self.bin / f"pg_ctl{EXE}"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def restart(self) -> None:
        self.stop()
        self._run(
            [
                str(self.bin / f"pg_ctl{EXE}"),
                "-D",
                str(self.data),
                "-l",
                str(self.base / "log"),  # type: ignore[operator]
                "-o",
                f"-p {self.port}",
                "-w",
                "start",
            ],
            check=True,
        )

    def cleanup(self) -> None:
        self.stop()
        if self.base and self.base.exists():
            shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()


if __name__ == "__main__":  # manual use: python -m pgrunbook.postgres.cluster
    with LocalCluster() as c:
        print(c.url())
        sys.stdin.readline()

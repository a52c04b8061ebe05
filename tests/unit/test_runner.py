"""The client tools' runner, its pure parts: how a connection is handed to a tool without a secret in
its argv. How a tool's failure is read from its stderr: tests/unit/test_tool_errors.py."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pgrunbook.errors import ConfigError
from pgrunbook.postgres import runner
from pgrunbook.postgres.runner import child_env, connection
from pgrunbook.postgres.url import parse_database_url

SECRET_URLS = [
    "postgresql://app:Pw-1@db.internal:5432/app?sslpassword=Key-2&sslmode=require",
    "postgresql://app@db.internal/app?password=Pw-1&sslpassword=Key-2",
    "postgresql://app:Pw-1@db.internal/app?sslpassword=Key%202%3D%27x",  # spaces, '=', quotes
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_secrets_reach_the_tool_beside_its_argv_never_in_it(url: str) -> None:
    target = parse_database_url(url)
    conn = connection(target)
    try:
        assert target.password == "Pw-1"
        assert "Pw-1" not in conn.conninfo and "Key" not in conn.conninfo and "password" not in conn.conninfo
        assert conn.env["PGPASSWORD"] == "Pw-1"
        assert conn.conninfo.endswith(f" service={runner.SERVICE}")
        with open(conn.env["PGSERVICEFILE"]) as f:  # /proc/self/fd/N on Linux: this process's own memfd
            text = f.read()
        assert text == f"[{runner.SERVICE}]\nsslpassword={target.params['sslpassword']}\n"
    finally:
        conn.close()


def test_without_a_secret_keyword_no_service_file_is_made() -> None:
    conn = connection(parse_database_url("postgresql://app:Pw-1@db.internal/app?sslmode=require"))
    assert "PGSERVICEFILE" not in conn.env and "service=" not in conn.conninfo and conn.inherit_fds == ()


def test_a_service_file_on_other_platforms_is_private_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without memfd (macOS, Windows) the secret is in a 0600 file, removed when the tool is done."""
    monkeypatch.setattr(runner, "PLATFORM", "darwin")
    conn = connection(parse_database_url(SECRET_URLS[0]))
    path = conn.env["PGSERVICEFILE"]
    assert not path.startswith("/proc/") and conn.inherit_fds == ()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    conn.close()
    assert not os.path.exists(path)


def test_a_url_naming_a_service_and_holding_sslpassword_is_refused() -> None:
    with pytest.raises(ConfigError, match="service=prod") as err:
        connection(parse_database_url("postgresql://app@/app?service=prod&sslpassword=Key-2"))
    assert "Key-2" not in str(err.value) and "Key-2" not in (err.value.hint or "")


def test_the_child_environment_drops_inherited_passwords_and_adds_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "inherited")
    monkeypatch.setenv("PGPASSWORDX", "inherited")
    env = child_env({"PGAPPNAME": "pgrunbook"}, {"synchronous_commit": "off"})
    assert "PGPASSWORD" not in env and "PGPASSWORDX" not in env
    assert env["PGAPPNAME"] == "pgrunbook" and env["PGOPTIONS"].endswith("-c synchronous_commit=off")


def test_the_tool_gets_the_password_pgrunbook_itself_logs_in_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """break11 #8: a URL without a password logs in with PGPASSWORD (libpq reads it in pgrunbook's own
    connections); the tools got it stripped. The URL's password, when there is one, wins, as in libpq;
    the inherited one is a secret like the URL's (redacted everywhere)."""
    monkeypatch.setenv("PGPASSWORD", "Inherited-pw-9")
    bare = parse_database_url("postgresql://app@db.internal/app")
    assert connection(bare).env["PGPASSWORD"] == "Inherited-pw-9" and "Inherited" not in connection(bare).conninfo
    assert bare.secrets() == ["Inherited-pw-9"]
    assert connection(parse_database_url("postgresql://app:Pw-1@db.internal/app")).env["PGPASSWORD"] == "Pw-1"
    empty = parse_database_url("postgresql://app@db.internal/app?password=")  # libpq: .pgpass, not PGPASSWORD
    assert connection(empty).env["PGPASSWORD"] == ""
    monkeypatch.delenv("PGPASSWORD")
    assert "PGPASSWORD" not in connection(bare).env and bare.secrets() == []


@pytest.mark.parametrize("platform", ["win32", "linux", "darwin"])
def test_popen_options_per_platform(platform: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "PLATFORM", platform)
    options = runner.popen_options(inherit_fds=(), die_with_parent=True)
    if platform == "win32":
        assert options == {}
        with pytest.raises(RuntimeError):
            runner.popen_options(inherit_fds=(5,))
        assert not runner.has_memfd()
        assert runner.pid_alive(os.getpid() + 10**7)  # never probed with os.kill (it would terminate)
    elif platform == "linux":
        assert set(options) == {"preexec_fn"}
    else:
        assert options == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_every_tool_gets_the_parent_death_signal() -> None:
    """A tool started through the runner asks prctl(PR_GET_PDEATHSIG) and finds SIGKILL (9): pgrunbook
    killed takes it along. Python stands in for pg_dump here: any binary gets the same preexec."""
    code = (
        "import ctypes; v = ctypes.c_int(); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(v)); print(v.value)"  # 2 = PR_GET_PDEATHSIG
    )
    with runner.start(Path(sys.executable), ["-c", code], stdout=subprocess.PIPE, text=True) as tool:
        out = tool.stdout.read()
        assert tool.wait() == 0
    assert out.strip() == str(int(signal.SIGKILL))
    with runner.start(
        Path(sys.executable), ["-c", code], stdout=subprocess.PIPE, text=True, die_with_parent=False
    ) as tool:
        assert tool.stdout.read().strip() == "0" and tool.wait() == 0

"""Fixtures: one real throwaway PostgreSQL cluster per session, a fresh database per test.

Nothing here is mocked: pgrunbook talks to the cluster through psycopg and the real pg_dump/pg_restore.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import settings
from psycopg import sql

from pgrunbook.config import load_config
from pgrunbook.environment import Environment
from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.connect import server_version
from pgrunbook.postgres.tools import ClientTools, find_client_tools
from tests import evidence

# The suite shares 2 cores with PostgreSQL clusters: a property test's per-example deadline (200 ms by
# default) fails on load, not on a wrong answer. The properties are what is checked.
settings.register_profile("pgrunbook", deadline=None)
settings.load_profile("pgrunbook")

# A distinctive password: tests grep every output for it.
PASSWORD = "Pw-s3cr3t-Zq9!"

# The PostgreSQL under test (scripts/test-majors sets them per combination; unset: what is installed).
# SERVER_BIN: initdb/pg_ctl/postgres of the suite's cluster. TOOLS_BIN: the client tools pgrunbook is
# pointed at ([postgres] bin_dir through its environment variable), as a user would.
SERVER_BIN = os.environ.get("PGRUNBOOK_TEST_SERVER_BIN") or None
TOOLS_BIN = os.environ.get("PGRUNBOOK_TEST_TOOLS_BIN") or None
SERVER: dict[str, Any] = {}  # the running cluster's {"major": 15, "version": "15.18"}, asked once it runs


def pytest_configure(config: pytest.Config) -> None:
    """A suite stopped by SIGTERM or SIGHUP (a CI timeout, `kill`, a closed terminal) stops its clusters too.

    pytest tears its fixtures down only on KeyboardInterrupt; the default SIGTERM action ends the process
    at once and leaves the session cluster's postmaster running forever (found by a trial)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, signal.default_int_handler)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(bin_dir=SERVER_BIN, password=PASSWORD, name="pgrunbook-test") as c:
        with psycopg.connect(c.url()) as conn:
            major, _, text = server_version(conn)
        SERVER.update(major=major, version=text)
        yield c


def suite_tools() -> ClientTools:
    """The client tools under test: TOOLS_BIN's, else the installed ones that fit the suite's server."""
    assert SERVER, "the cluster fixture has not started"
    if TOOLS_BIN:
        from pgrunbook.postgres.tools import installed_tools

        return installed_tools(TOOLS_BIN)[0]
    return find_client_tools(SERVER["major"], SERVER["version"])


@pytest.fixture
def tools(cluster: LocalCluster) -> ClientTools:
    return suite_tools()


@pytest.fixture
def db(cluster: LocalCluster) -> Iterator[str]:
    """A fresh empty database; its URL (with the password) is returned."""
    name = f"t_{secrets.token_hex(4)}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield cluster.url(name)
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


SEED = '''
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SCHEMA billing;
CREATE TABLE account (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, mood mood, profile jsonb,
                      avatar bytea, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE billing.invoice (id serial PRIMARY KEY, account_id bigint REFERENCES account(id),
                              amount numeric(12,2) NOT NULL, note text);
CREATE TABLE "odd name ""quoted""" (id int PRIMARY KEY, "ünïcode" text);
CREATE TABLE empty_table (id int);
CREATE INDEX invoice_account_idx ON billing.invoice(account_id);
INSERT INTO account (email, mood, profile, avatar)
SELECT 'u' || g || '@example.com', (ARRAY['sad','ok','happy']::mood[])[1 + g % 3],
       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', md5(g::text))), decode(md5(g::text), 'hex')
FROM generate_series(1, {accounts}) g;
INSERT INTO billing.invoice (account_id, amount, note)
SELECT 1 + g % {accounts}, (g * 1.37)::numeric(12,2), CASE WHEN g % 3 = 0 THEN 'ünï ' || md5(g::text) END
FROM generate_series(1, {invoices}) g;
INSERT INTO "odd name ""quoted""" VALUES (1, 'ä'), (2, '😀'), (3, NULL);
'''


def seed(url: str, accounts: int = 500, invoices: int = 2000) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED.format(accounts=accounts, invoices=invoices))  # type: ignore[arg-type]


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Per table: row count and md5 of all rows in a stable order — equal means identical contents."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        out = {}
        for schema, name in tables:
            q = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} t")
            row = conn.execute(q.format(sql.Identifier(schema, name))).fetchone()
            assert row is not None
            out[f"{schema}.{name}"] = (row[0], row[1])
        return out


@dataclass
class Project:
    """A project folder with pgrunbook.toml, its storage, and DATABASE_URL pointing at a test database."""

    root: Path
    url: str
    environ: dict[str, str]

    @property
    def storage(self) -> Path:
        return self.root / "backups"

    def env(self) -> Environment:
        return Environment.resolve(load_config(cwd=self.root, environ=self.environ))

    def write_config(self, text: str) -> None:
        (self.root / "pgrunbook.toml").write_text(text)

    def cli(
        self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the real command line in a child process, as a user would."""
        env = {**self.environ, **(extra_env or {})}
        return subprocess.run(
            [sys.executable, "-m", "pgrunbook", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


BASE_CONFIG = """
[backup]
storage = "backups"
"""


@pytest.fixture
def project(tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PGRUNBOOK_", "PG"))}
    environ["DATABASE_URL"] = db
    if TOOLS_BIN:  # the tools under test, given the way a user gives them
        environ["PGRUNBOOK_POSTGRES__BIN_DIR"] = TOOLS_BIN
        monkeypatch.setenv("PGRUNBOOK_POSTGRES__BIN_DIR", TOOLS_BIN)
    (tmp_path / "pgrunbook.toml").write_text(BASE_CONFIG)
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path, db, environ)


@pytest.fixture
def seeded(project: Project) -> Project:
    seed(project.url)
    return project


def wait_for(cond: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    """Poll ``cond`` until it is true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s")
        time.sleep(0.01)


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Bad input: the expected exit code, an ``error:`` first line, no traceback, no password."""
    text = result.stderr + result.stdout
    evidence.output_checked(
        text, traceback="Traceback" in text, secret=PASSWORD in text or quote(PASSWORD, safe="") in text
    )
    evidence.bad_input(os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0].split("[")[0])
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len([ln for ln in lines if ln.startswith("error: ")]) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for secret in (PASSWORD, quote(PASSWORD, safe="")):
        assert secret not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After a full, passing run, docs/RELIABILITY.md is rewritten from what the tests counted."""
    if (
        exitstatus != 0
        or session.testscollected < 150
        or session.config.option.keyword
        or session.config.option.collectonly
        or os.environ.get("PGRUNBOOK_WRITE_EVIDENCE") == "0"
    ):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else session.testscollected
    evidence.write(Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md", passed, session.testsfailed)


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server standing in for Slack: records every JSON body posted to it."""
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            return

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hooks/T000/B000/secret-token", got
    srv.shutdown()


@pytest.fixture
def mailbox() -> Iterator[tuple[int, list[EmailMessage]]]:
    """A real SMTP server (aiosmtpd) on loopback: records every message delivered to it."""
    from aiosmtpd.controller import Controller

    got: list[EmailMessage] = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            got.append(message_from_bytes(envelope.content, _class=EmailMessage, policy=default_policy))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, got
    controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def age_backups(project: Project, hours: float) -> None:
    """Make the newest backup look ``hours`` old, as if the schedule had stopped that long ago, and every
    other one as much older as it was: all shifted by one amount, so their order stays the real one (a
    time taken per file made it the order of the folder listing)."""
    paths = list(project.storage.rglob("manifest.json"))
    manifests = [json.loads(p.read_text()) for p in paths]
    if not manifests:
        return
    newest = max(datetime.fromisoformat(m["started_at"]) for m in manifests)
    shift = datetime.now(UTC) - timedelta(hours=hours) - newest
    for path, data in zip(paths, manifests, strict=True):
        data["started_at"] = (datetime.fromisoformat(data["started_at"]) + shift).isoformat()
        data["finished_at"] = (datetime.fromisoformat(data["finished_at"]) + shift).isoformat()
        path.write_text(json.dumps(data))


def on_terminal(project: Project, *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run the command line on a real pseudo-terminal; (exit code, everything it drew, escapes removed)."""
    import pty
    import re
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", *args],
        cwd=project.root,
        env={**project.environ, "COLUMNS": "120"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    rc = proc.wait(timeout=30)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.decode(errors="replace")).replace("\r", "\n")
    return rc, text


def drawn_in_order(text: str, *prefixes: str) -> tuple[list[str], list[int]]:
    """The non-blank lines a terminal drew, and where the first line starting with each prefix is;
    asserts the prefixes appear in that order (a procedure's steps as they started and ended)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    found = []
    for want in prefixes:
        index = next((i for i, ln in enumerate(lines) if ln.startswith(want)), None)
        assert index is not None, f"no line starting {want!r} in:\n" + "\n".join(lines)
        found.append(index)
    assert found == sorted(found), lines
    return lines, found

"""The client tools' runner against the real pg_dump/pg_restore: no secret in any tool's argv through
backup, drill and restore; the arguments Windows would get; pg_restore's own failure read back."""

from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from pgrunbook.backup.create import create_backup
from pgrunbook.backup.restore import restore_into_new_database
from pgrunbook.backup.verify import verify_backup
from pgrunbook.postgres import runner
from pgrunbook.postgres.tool_errors import explain
from pgrunbook.postgres.url import parse_database_url
from tests.conftest import PASSWORD, Project, fingerprint, suite_tools

SSL_KEY = "Ssl-k3y-Vq7!"  # distinctive, like the password: every logged argv is searched for it


def _with_sslpassword(url: str) -> str:
    return f"{url}?sslpassword={quote(SSL_KEY, safe='')}"


def _wrappers(folder: Path, log: Path) -> Path:
    """pg_dump and pg_restore wrappers that log their argv (one line per call), whether PGPASSWORD
    reached them, and a copy of the service file they were given, then run the real tool."""
    real = suite_tools()
    folder.mkdir()
    for name, binary in (("pg_dump", real.pg_dump), ("pg_restore", real.pg_restore)):
        script = folder / name
        script.write_text(
            "#!/bin/sh\n"
            f'printf "%s " "$0" "$@" >> "{log}"; echo >> "{log}"\n'
            f'[ -n "$PGPASSWORD" ] && echo "env PGPASSWORD set" >> "{log}"\n'
            f'[ -n "$PGSERVICEFILE" ] && cat "$PGSERVICEFILE" > "{log.parent}/service-seen-$$"\n'
            f'exec "{binary}" "$@"\n'
        )
        script.chmod(0o755)
    return folder


def test_no_secret_in_any_client_tools_argv_through_backup_drill_and_restore(seeded: Project, tmp_path: Path) -> None:
    """A URL with a password and sslpassword (ignored by this non-SSL server, yet a secret); every
    pg_dump/pg_restore call is logged by a wrapper in [postgres] bin_dir. Before the runner,
    sslpassword went into --dbname=... for everyone on the machine to see in `ps`."""
    log = tmp_path / "argv.log"
    bin_dir = _wrappers(tmp_path / "bin", log)
    seeded.write_config(f'[backup]\nstorage = "backups"\n[postgres]\nbin_dir = "{bin_dir}"\n')
    env = {"DATABASE_URL": _with_sslpassword(seeded.url)}
    created = seeded.cli("backup", "create", "--json", extra_env=env)
    assert created.returncode == 0, created.stderr
    backup_id = json.loads(created.stdout)["id"]
    drilled = seeded.cli("backup", "verify", backup_id, "--drill", "--json", extra_env=env)
    assert drilled.returncode == 0, drilled.stderr
    for method in ("stream", "parallel"):
        seeded.write_config(
            f'[backup]\nstorage = "backups"\n[postgres]\nbin_dir = "{bin_dir}"\n[restore]\nmethod = "{method}"\n'
        )
        restored = seeded.cli("restore", backup_id, "--into", f"argv_{method}", "--json", extra_env=env)
        assert restored.returncode == 0, restored.stderr
    calls = [ln for ln in log.read_text().splitlines() if ln.startswith(str(bin_dir))]
    connected = [c for c in calls if "--dbname=" in c]
    # pg_dump; the drill's pg_restore; both restores' pg_restore
    assert sum("pg_dump " in c for c in connected) == 1 and sum("pg_restore " in c for c in connected) == 3
    for secret in (PASSWORD, SSL_KEY):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            assert not any(form in c for c in calls), form
    assert all(f"service={runner.SERVICE}" in c for c in connected)
    # ... and the secrets did reach the tools, beside their argv
    assert log.read_text().count("env PGPASSWORD set") >= len(connected)
    seen = [p.read_text() for p in tmp_path.glob("service-seen-*")]
    assert len(seen) >= len(connected) and all(s == f"[{runner.SERVICE}]\nsslpassword={SSL_KEY}\n" for s in seen)


_WINDOWS_POPEN_ARGS = {  # the Popen keywords Windows supports (Python's subprocess documentation)
    "bufsize",
    "executable",
    "stdin",
    "stdout",
    "stderr",
    "close_fds",
    "shell",
    "cwd",
    "env",
    "universal_newlines",
    "startupinfo",
    "creationflags",
    "text",
    "encoding",
    "errors",
}


@pytest.mark.parametrize("method", ["stream", "parallel"])
def test_on_windows_the_runner_uses_only_arguments_windows_supports(
    seeded: Project, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows cannot run here. What can be checked: with the runner's platform switch taken as
    Windows, every call to subprocess (backup, verify, drill, restore) uses only keywords Windows
    supports (no preexec_fn, pass_fds, start_new_session), no temporary archive or secret depends on
    memfd_create (it fails if called), and the work still succeeds with the real tools on this machine."""
    seeded.write_config(f'[backup]\nstorage = "backups"\n[restore]\nmethod = "{method}"\njobs = 2\ntemp = "auto"\n')
    for key, value in seeded.environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DATABASE_URL", _with_sslpassword(seeded.url))
    monkeypatch.setattr(runner, "PLATFORM", "win32")
    calls: list[dict[str, Any]] = []
    real_popen = subprocess.Popen

    class WindowsPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, args: Any, **kwargs: Any) -> None:
            calls.append(kwargs)
            unsupported = set(kwargs) - _WINDOWS_POPEN_ARGS
            assert not unsupported, f"{args[0]}: {unsupported} is not available on Windows"
            super().__init__(args, **kwargs)

    def no_memfd(*args: object) -> int:
        raise AssertionError("memfd_create does not exist on Windows")

    monkeypatch.setattr(subprocess, "Popen", WindowsPopen)
    monkeypatch.setattr(os, "memfd_create", no_memfd)
    services_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "pgrunbook-service-*")))

    env = seeded.env()
    m = create_backup(env)
    assert verify_backup(env, m.id, drill_restore=True).ok
    report = restore_into_new_database(env, m.id, f"win_{method}")
    assert report.verified and report.method.startswith(method)
    if method == "parallel":
        assert report.method.endswith("archive in a temp file)")
    assert len(calls) >= 5  # versions, pg_dump, --list, the drill's pg_restore, the restore
    services_after = set(glob.glob(os.path.join(tempfile.gettempdir(), "pgrunbook-service-*")))
    assert services_after == services_before  # the 0600 service files were removed
    monkeypatch.undo()
    url = seeded.url.rsplit("/", 1)[0] + f"/win_{method}"
    assert fingerprint(url) == fingerprint(seeded.url)


def test_the_service_file_outside_linux_is_private_while_the_tool_runs(
    seeded: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PLATFORM", "darwin")
    target = parse_database_url(_with_sslpassword(seeded.url))
    tools = suite_tools()
    with runner.start(tools.pg_dump, ["--schema-only"], target=target, stdout=subprocess.PIPE) as dump:
        assert dump._conn is not None
        path = dump._conn.env["PGSERVICEFILE"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert b"CREATE TABLE" in dump.stdout.read()
        assert dump.wait() == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("verbose", [False, True])
def test_pg_restores_first_error_is_read_with_its_archive_entry(seeded: Project, tmp_path: Path, verbose: bool) -> None:
    """Restoring over the database itself: every object already exists. The first error and its
    command are pg_restore's own words, not the last line ("errors ignored on restore"). The TOC entry
    is printed at info level since PostgreSQL 12, so only with --verbose (as the parallel restore runs)."""
    tools = suite_tools()
    target = parse_database_url(seeded.url)
    archive = tmp_path / "archive.dump"
    with runner.start(tools.pg_dump, ["--format=custom", f"--file={archive}"], target=target) as dump:
        assert dump.wait() == 0
    args = ["--no-owner", *(["--verbose"] if verbose else []), str(archive)]
    with runner.start(tools.pg_restore, args, target=target) as restore:
        restore.wait()
        failure = restore.failure()
    assert failure is not None and failure.exit_code == 1
    assert "already exists" in failure.error and failure.server and "ERROR:" in failure.line
    assert failure.command.startswith("CREATE "), restore.lines()
    if verbose:
        assert failure.entry is not None and failure.entry.dump_id > 0
        assert failure.entry_line.startswith(f"{failure.entry.dump_id}; ")
        assert failure.command.split()[1] in failure.entry.type  # "CREATE TABLE …" ↔ an entry of type TABLE
    else:
        assert failure.entry is None and failure.entry_line == ""
    assert "errors ignored on restore" in failure.last
    cause = explain(failure, role="app")  # the same reader's cause: the target's fault, not the archive's
    assert cause.where == "definition" and "already exists" in cause.message
    with psycopg.connect(seeded.url) as conn:  # nothing was harmed: every statement was refused
        assert conn.execute("SELECT count(*) FROM account").fetchone() == (500,)

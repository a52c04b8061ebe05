"""The client tools' runner against the real pg_dump/pg_restore: no secret in any tool's argv through
backup, drill and restore; the arguments Windows would get; pg_restore's own failure read back."""

from __future__ import annotations

import glob
import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from pgrunbook.backup.create import create_backup
from pgrunbook.backup.restore import restore_into_new_database
from pgrunbook.backup.verify import verify_backup
from pgrunbook.postgres import runner
from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.tool_errors import explain
from pgrunbook.postgres.tools import BIN_DIR_VAR
from pgrunbook.postgres.url import parse_database_url
from tests.conftest import PASSWORD, SERVER, Project, assert_clean_error, fingerprint, suite_tools

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


def _without_password(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1@", url)


def _no_secret(*texts: str) -> None:
    for text in texts:
        for form in (PASSWORD, quote(PASSWORD, safe="")):
            assert form not in text


def test_a_password_in_pgpassword_reaches_the_tools_as_it_reaches_pgrunbook(seeded: Project) -> None:
    """break11 #8: DATABASE_URL without a password, the password in PGPASSWORD. pgrunbook's own
    connections log in with it; the runner stripped it from pg_dump's and pg_restore's environment, so
    every backup, drill and restore failed as "pg_dump lost the server" while doctor said ok."""
    env = {"DATABASE_URL": _without_password(seeded.url), "PGPASSWORD": PASSWORD}
    doctor = seeded.cli("doctor", extra_env=env)
    assert re.search(r"ok +client tools: backup: pg_dump .*; it logs in", doctor.stdout), doctor.stdout
    created = seeded.cli("--json", "backup", "create", extra_env=env)
    assert created.returncode == 0, created.stderr
    bid = json.loads(created.stdout)["id"]
    drilled = seeded.cli("backup", "verify", bid, "--drill", extra_env=env)
    assert drilled.returncode == 0, drilled.stderr
    restored = seeded.cli("restore", bid, "--into", "from_pgpassword", extra_env=env)
    assert restored.returncode == 0, restored.stderr
    _no_secret(*(r.stdout + r.stderr for r in (doctor, created, drilled, restored)))
    assert fingerprint(seeded.url.rsplit("/", 1)[0] + "/from_pgpassword") == fingerprint(seeded.url)


def test_a_tool_that_cannot_log_in_is_a_login_failure_never_lost_the_server(
    seeded: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real pg_dump's login failures (no password; a wrong one) are read as such, with a hint about
    the password, never as "lost the server … check that the server is up". And doctor runs pg_dump's
    login as a backup would: a bin_dir wrapper that drops the environment (a docker exec or sudo
    wrapper) is caught there, not at the first backup."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    tools = suite_tools()
    for url, words in (
        (_without_password(seeded.url), "no password supplied"),
        (seeded.url.replace(quote(PASSWORD, safe=""), "Wrong-pw-1"), "password authentication failed"),
    ):
        failure = runner.login_check(tools.pg_dump, parse_database_url(url))
        assert failure is not None and words in failure.error, failure
        cause = explain(failure, role="postgres")
        assert cause.kind == "login" and "lost the server" not in cause.message, cause
        assert "could not log in" in cause.message and "password" in cause.hint, cause
    assert runner.login_check(tools.pg_dump, parse_database_url(seeded.url)) is None

    bin_dir = tmp_path / "wrapped"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").write_text(f'#!/bin/sh\nunset PGPASSWORD\nexec "{tools.pg_dump}" "$@"\n')
    (bin_dir / "pg_dump").chmod(0o755)
    (bin_dir / "pg_restore").symlink_to(tools.pg_restore)
    env = {"DATABASE_URL": _without_password(seeded.url), "PGPASSWORD": PASSWORD, BIN_DIR_VAR: str(bin_dir)}
    doctor = seeded.cli("doctor", extra_env=env)
    assert doctor.returncode == 2, doctor.stdout
    line = next(ln for ln in doctor.stdout.splitlines() if "client tools" in ln)
    assert "FAIL" in line and "could not log in" in line and "no password supplied" in line, doctor.stdout
    created = seeded.cli("backup", "create", extra_env=env)
    assert_clean_error(created, 2, "pg_dump could not log in", "no password supplied")
    assert "lost the server" not in created.stderr and "hint: the tool was given no password" in created.stderr
    _no_secret(doctor.stdout + doctor.stderr, created.stdout + created.stderr)


MAJORS = Path(__file__).resolve().parents[2] / ".cache" / "pg-majors"  # scripts/pg-majors' downloads


def _other_major_pg_restore(server_major: int) -> Path | None:
    """A real pg_restore of another major than the suite's tools (scripts/pg-majors), or None."""
    for major in (18, 17, 16):
        found = MAJORS / f"tools-{major}" / "bin" / "pg_restore"
        if major != server_major and found.is_file():
            return found
    return None


def test_each_tool_of_a_bin_dir_is_asked_its_own_version(seeded: Project, tmp_path: Path) -> None:
    """break11 #3: a bin_dir of symbolic links with pg_dump of the server's major and pg_restore 18
    (a ~/bin of links, a half-upgraded package). Only pg_dump was asked, so pg_restore 18 was called
    "pg_restore 15.18", refused a backup it reads, and the drill ran without the one tolerated error."""
    tools = suite_tools()
    other = _other_major_pg_restore(tools.major)
    if other is None:
        pytest.skip("no pg_restore of another major here (scripts/pg-majors fetches them)")
    other_version = runner.run(other, ["--version"])[1].split()[-1]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "pg_dump").symlink_to(tools.pg_dump)
    (mixed / "pg_restore").symlink_to(other)
    env = {BIN_DIR_VAR: str(mixed)}
    doctor = seeded.cli("doctor", extra_env=env)
    assert re.search(
        rf"ok +client tools: backup: pg_dump {re.escape(str(tools.version))} at {mixed}/pg_dump", doctor.stdout
    )
    assert re.search(
        rf"ok +restore tools: .*pg_restore {re.escape(other_version)} at {mixed}/pg_restore", doctor.stdout
    )
    created = seeded.cli("--json", "backup", "create", extra_env=env)
    assert created.returncode == 0, created.stderr
    bid = json.loads(created.stdout)["id"]
    drilled = seeded.cli("backup", "verify", bid, "--drill", extra_env=env)
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    restored = seeded.cli("restore", bid, "--into", "from_mixed", extra_env=env)
    assert restored.returncode == 0, restored.stderr
    assert fingerprint(seeded.url.rsplit("/", 1)[0] + "/from_mixed") == fingerprint(seeded.url)


def test_a_bin_dir_missing_a_tool_or_not_a_folder_says_which(seeded: Project, tmp_path: Path) -> None:
    """break11 #3: a folder with pg_dump only was "pg_dump and pg_restore not found"; a bin_dir that does
    not exist or is a file got an install hint (the fix is the typo); a pg_dump failing --version was
    "not found" too."""
    tools = suite_tools()
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    only_dump = tmp_path / "only-dump"
    only_dump.mkdir()
    (only_dump / "pg_dump").symlink_to(tools.pg_dump)
    r = seeded.cli("restore", bid, "--into", "nope", extra_env={BIN_DIR_VAR: str(only_dump)})
    assert_clean_error(r, 2, f"pg_restore not found in {only_dump}", f"only pg_dump {tools.version}")
    only_restore = tmp_path / "only-restore"
    only_restore.mkdir()
    (only_restore / "pg_restore").symlink_to(tools.pg_restore)
    r = seeded.cli("backup", "create", extra_env={BIN_DIR_VAR: str(only_restore)})
    assert_clean_error(r, 2, f"pg_dump not found in {only_restore}", f"only pg_restore {tools.version}")
    for where, words in ((tmp_path / "typo", "does not exist"), (Path("/etc/passwd"), "is not a folder")):
        r = seeded.cli("backup", "create", extra_env={BIN_DIR_VAR: str(where)})
        assert_clean_error(r, 2, f"[postgres] bin_dir {where} {words}")
        assert "apt-get install" not in r.stderr and "hint: set [postgres] bin_dir" in r.stderr
        doctor = seeded.cli("doctor", extra_env={BIN_DIR_VAR: str(where)})
        assert f"bin_dir {where} {words}" in doctor.stdout, doctor.stdout
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pg_dump").write_text("#!/bin/sh\necho 'libpq.so.5: cannot open shared object file' >&2\nexit 127\n")
    (broken / "pg_dump").chmod(0o755)
    (broken / "pg_restore").symlink_to(tools.pg_restore)
    r = seeded.cli("backup", "create", extra_env={BIN_DIR_VAR: str(broken)})
    assert_clean_error(r, 2, f"{broken}/pg_dump does not run: pg_dump --version failed (exit code 127: libpq.so.5")


@pytest.fixture(scope="module")
def newer_server(cluster: LocalCluster) -> Iterator[tuple[LocalCluster, Path]]:
    """A server of a newer major than the suite's (scripts/pg-majors), and client tools that back it up."""
    assert SERVER
    for major in (16, 17, 18):
        server_bin = MAJORS / f"server-{major}" / "package" / "native" / "bin"
        found = [MAJORS / f"tools-{t}" / "bin" for t in (major, 18)]
        tools_bin = next((folder for folder in found if folder.is_dir()), None)
        if major > SERVER["major"] and (server_bin / "initdb").is_file() and tools_bin is not None:
            with LocalCluster(bin_dir=str(server_bin), password=PASSWORD, name=f"pgrunbook-test-{major}") as c:
                yield c, tools_bin
            return
    pytest.skip("no server of a newer major than the suite's here (scripts/pg-majors fetches them)")


def test_a_backup_of_a_newer_major_into_an_older_server_is_named_as_such(
    seeded: Project, newer_server: tuple[LocalCluster, Path]
) -> None:
    """break11 #7: a backup of PostgreSQL 16+ drilled or restored into the suite's older server. PostgreSQL
    does not support loading a newer major's dump into an older server; a view using any_value() (16+)
    fails there. The warning comes before anything is created, and the failure's hint names the
    downgrade instead of "fix the definition in the source"."""
    newer, tools_bin = newer_server
    with psycopg.connect(newer.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS newer_app")
        conn.execute("CREATE DATABASE newer_app")
        newer_version = conn.execute("SHOW server_version").fetchone()[0].split()[0]  # type: ignore[index]
    with psycopg.connect(newer.url("newer_app"), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('a'), ('b')")
    with psycopg.connect(seeded.url) as conn:
        older_version = conn.execute("SHOW server_version").fetchone()[0].split()[0]  # type: ignore[index]
    seeded.write_config('[project]\nid = "shop"\n[backup]\nstorage = "backups"\ndrill_database_url_env = "DRILL_URL"\n')
    env = {"DATABASE_URL": newer.url("newer_app"), "DRILL_URL": seeded.url, BIN_DIR_VAR: str(tools_bin)}
    warning = (
        f"warning: backup of PostgreSQL {newer_version} into PostgreSQL {older_version} (an older major): "
        "PostgreSQL does not support this; objects using newer features will fail"
    )
    doctor = seeded.cli("doctor", extra_env=env)  # the drill server is a major behind: said before any drill
    line = next(ln for ln in doctor.stdout.splitlines() if "drill tools" in ln)
    assert line.lstrip().startswith("warn") and f"PostgreSQL {older_version} (an older major)" in line, line
    assert "drill_database_url_env (DRILL_URL) at a server of PostgreSQL" in doctor.stdout
    plain = json.loads(seeded.cli("--json", "backup", "create", "--label", "plain", extra_env=env).stdout)["id"]
    r = seeded.cli("restore", plain, "--into", "plain_on_older", extra_env={**env, "DATABASE_URL": seeded.url})
    assert r.returncode == 0 and warning in r.stderr, r.stderr  # restored, and said

    with psycopg.connect(newer.url("newer_app"), autocommit=True) as conn:
        conn.execute("CREATE VIEW v_new AS SELECT any_value(v) AS av FROM t")  # PostgreSQL 16+
    bid = json.loads(seeded.cli("--json", "backup", "create", "--label", "newer", extra_env=env).stdout)["id"]
    r = seeded.cli("restore", bid, "--into", "newer_on_older", extra_env={**env, "DATABASE_URL": seeded.url})
    assert r.returncode == 2 and r.stderr.startswith(warning + "\n"), r.stderr  # before the error, not after
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "any_value" in errors[0] and "Traceback" not in r.stderr, r.stderr
    _no_secret(r.stdout + r.stderr)
    hint = next(ln for ln in r.stderr.splitlines() if ln.startswith("hint: "))
    assert "an older major, which PostgreSQL does not support" in hint and "fix the definition" not in hint, hint
    drill = seeded.cli("backup", "verify", bid, "--drill", extra_env=env)
    assert drill.returncode != 0 and "fix the definition" not in drill.stdout + drill.stderr
    said = drill.stdout + drill.stderr
    assert "an older major, which PostgreSQL does not support" in said and warning in said, said

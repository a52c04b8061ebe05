"""health against a real HTTP server started by the test, one test per failure kind; rollback with the
sample application, real hooks and a real journal."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from pgrunbook import sampleapp
from pgrunbook.backup.create import create_backup
from pgrunbook.postgres.cluster import free_port
from tests.conftest import Project, assert_clean_error, drawn_in_order, fingerprint, on_terminal

pytestmark = pytest.mark.integration


class Behaviour:
    mode = "ok"


def _server(behaviour: Behaviour) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            mode = behaviour.mode
            if mode == "slow":
                time.sleep(1.0)
            code, body = {
                "ok": (200, b'{"status": "ok"}'),
                "slow": (200, b'{"status": "ok"}'),
                "500": (500, b'{"status": "error"}'),
                "html": (200, b"<html>hi</html>"),
                "degraded": (200, b'{"status": "degraded"}'),
            }[mode]
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/api/health"
    srv.shutdown()


@pytest.fixture
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture
def health_url(behaviour: Behaviour) -> Iterator[str]:
    yield from _server(behaviour)


def _configure(project: Project, url: str, deadline_s: float = 1.0) -> None:
    project.write_config(
        f'[backup]\nstorage = "backups"\n[environments.default]\nhealth_url = "{url}"\n'
        f"health_deadline_s = {deadline_s}\nhealth_timeout_s = 0.3\nhealth_interval_s = 0.1\n"
    )


def test_healthy(project: Project, health_url: str) -> None:
    _configure(project, health_url)
    r = project.cli("--json", "health")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True and [c["name"] for c in data["checks"]] == ["http", "database"]


@pytest.mark.parametrize(
    ("mode", "kind", "text"),
    [
        ("500", "non-2xx", "HTTP 500"),
        ("html", "not JSON", "body is not JSON"),
        ("degraded", "status not ok", "status is 'degraded', not 'ok'"),
        ("slow", "timeout", "no answer within 0.3s"),
    ],
)
def test_each_http_failure_is_named(
    project: Project, health_url: str, behaviour: Behaviour, mode: str, kind: str, text: str
) -> None:
    behaviour.mode = mode
    _configure(project, health_url, deadline_s=3.0)  # room for a retry on a loaded machine
    r = project.cli("--json", "health")
    assert r.returncode == 2
    data = json.loads(r.stdout)
    http = data["checks"][0]
    assert (http["ok"], http["kind"]) == (False, kind) and text in http["detail"]
    assert data["attempts"] >= 2  # retried until the deadline
    plain = project.cli("health")
    assert_clean_error(plain, 2, "unhealthy after", text)


def test_connection_refused(project: Project) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        _configure(project, f"http://127.0.0.1:{port}/api/health")
        data = json.loads(project.cli("--json", "health").stdout)
    assert data["checks"][0]["kind"] == "connection refused"


def test_database_unreachable_and_read_query_failing(project: Project, health_url: str) -> None:
    _configure(project, health_url)
    dead = project.url.replace(project.url.split("@")[1].split("/")[0], f"127.0.0.1:{free_port()}")
    data = json.loads(project.cli("--json", "health", extra_env={"DATABASE_URL": dead}).stdout)
    assert data["checks"][0]["ok"] is True
    assert (data["checks"][1]["ok"], data["checks"][1]["kind"]) == (False, "database unreachable")
    (project.root / "pgrunbook.toml").write_text(
        (project.root / "pgrunbook.toml").read_text() + 'read_query = "SELECT * FROM no_such_table"\n'
    )
    data = json.loads(project.cli("--json", "health").stdout)
    assert data["checks"][1]["kind"] == "read query failed"


# --- rollback with the sample application ------------------------------------------------------------


@pytest.fixture
def app(project: Project) -> Iterator[tuple[str, Path]]:
    """The sample app on a free port, reading its database URL from a file that point_app rewrites."""
    url_file = project.root / "app.url"
    url_file.write_text(project.url)
    proc, health = sampleapp.start(url_file, "SELECT count(*) FROM account")
    yield health, url_file
    proc.terminate()
    proc.wait()


def _rollback_config(
    project: Project, health: str, url_file: Path, extra_hooks: str = "", point_app: str | None = None
) -> None:
    marker = project.root / "app_rollback.log"
    point_app = point_app or f'printf %s "$PGRUNBOOK_DATABASE_URL" > {url_file}'
    project.write_config(
        f'[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        'app_url_env = "DATABASE_URL"\n'  # the sample app connects as the test cluster's superuser
        f'health_url = "{health}"\nhealth_deadline_s = 5\nhealth_interval_s = 0.2\n'
        'read_query = "SELECT count(*) FROM account"\n'
        "[environments.production.hooks]\n"
        f"point_app = '{point_app}'\n"
        f"app_rollback = 'echo \"rolled back by $PGRUNBOOK_RUN_ID\" >> {marker}'\n" + extra_hooks
    )


def test_rollback_with_db_points_the_app_at_an_exact_copy(seeded: Project, app: tuple[str, Path]) -> None:
    health, url_file = app
    _rollback_config(seeded, health, url_file)
    good = create_backup(seeded.env(), label="pre-deploy")
    assert seeded.cli("backup", "verify", good.id).returncode == 0
    good_state = fingerprint(seeded.url)
    with psycopg.connect(seeded.url, autocommit=True) as conn:  # the deploy that went wrong
        conn.execute(
            "DELETE FROM billing.invoice WHERE account_id > 100; DELETE FROM account WHERE id > 100; "
            "ALTER TABLE billing.invoice DROP COLUMN note"
        )
    broken_state = fingerprint(seeded.url)
    r = seeded.cli("--json", "rollback", "--with-db")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["outcome"] == "rolled_back" and out["backup_id"] == good.id
    new_url = url_file.read_text()
    assert new_url.rsplit("/", 1)[1] == out["database"] != seeded.url.rsplit("/", 1)[1]
    assert fingerprint(new_url) == good_state
    assert fingerprint(seeded.url) == broken_state  # the replaced database is kept, untouched
    assert f"rolled back by {out['run_id']}" in (seeded.root / "app_rollback.log").read_text()
    assert [s["name"] for s in out["steps"]][-5:] == [
        "verify restore",
        "point app",
        "app rollback",
        "health",
        "maintenance off",  # trial11 F4: under maintenance, as deploy's automatic rollback
    ]
    assert all(s["status"] == "succeeded" for s in out["steps"])
    runs = json.loads(seeded.cli("--json", "runs").stdout)
    assert runs[0]["run_id"] == out["run_id"] and runs[0]["kind"] == "rollback" and runs[0]["user"]
    assert seeded.url.split(":")[2].split("@")[0] not in json.dumps(runs)  # no password in the journal
    # trial7 finding 9: pgrunbook's own variable must follow the app, said with the password masked
    masked = f"{seeded.url.rsplit('@', 1)[0].rsplit(':', 1)[0]}:***@{seeded.url.rsplit('@', 1)[1].rsplit('/', 1)[0]}"
    said = f"set DATABASE_URL={masked}/{out['database']} for pgrunbook too"
    assert said in out["next_step"] and said in runs[0]["detail"]


def test_rollback_app_only_and_without_a_terminal(seeded: Project, app: tuple[str, Path]) -> None:
    health, url_file = app
    _rollback_config(seeded, health, url_file)
    r = seeded.cli("rollback")
    assert_clean_error(r, 3, "needs --with-db or --app-only")
    assert "pgrunbook rollback --with-db --env production" in r.stderr
    assert "pgrunbook rollback --app-only --env production" in r.stderr
    r = seeded.cli("--json", "rollback", "--app-only")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [s["name"] for s in out["steps"]] == ["app rollback", "health"]
    assert (seeded.root / "app_rollback.log").read_text().count("rolled back") == 1
    assert url_file.read_text() == seeded.url  # the app's database was not touched


def test_a_lost_database_ends_health_at_once_and_refuses_an_app_only_rollback(
    seeded: Project, app: tuple[str, Path]
) -> None:
    """The environment's database dropped: health says so on its first attempt instead of retrying
    to its deadline, and rollback --app-only refuses before the app_rollback hook runs, naming the
    command that recreates the database (breaker13 N9: it ran a 58 s health loop)."""
    health, url_file = app
    _rollback_config(seeded, health, url_file)
    text = (seeded.root / "pgrunbook.toml").read_text().replace("health_deadline_s = 5", "health_deadline_s = 60")
    (seeded.root / "pgrunbook.toml").write_text(text)
    live = seeded.url.rsplit("/", 1)[1]
    with psycopg.connect(seeded.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{live}" WITH (FORCE)'.encode())
    started = time.monotonic()
    data = json.loads(seeded.cli("--json", "health").stdout)
    assert time.monotonic() - started < 30  # not the 60 s deadline
    assert data["attempts"] == 1 and data["checks"][-1]["kind"] == "database does not exist"
    r = seeded.cli("rollback", "--app-only")
    assert_clean_error(r, 2, "does not exist")
    assert f"pgrunbook restore latest --into {live} --env production recreates it" in r.stderr.split("hint: ")[1]
    assert not (seeded.root / "app_rollback.log").exists()  # the release was not touched


def test_a_rollback_whose_last_health_check_fails_says_where_the_app_is_now(
    seeded: Project, app: tuple[str, Path]
) -> None:
    """newuser14 W2: the app was pointed at the restored database, then health failed: the error said only
    "health check failed", with neither the database the app is now on, nor what stays behind in the
    old one, nor the URL pgrunbook itself must now use (its `health` still checked the old database)."""
    _, url_file = app
    _rollback_config(seeded, f"http://127.0.0.1:{free_port()}/api/health", url_file)
    good = create_backup(seeded.env(), label="pre-deploy")
    assert seeded.cli("backup", "verify", good.id).returncode == 0
    r = seeded.cli("rollback", "--with-db")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    [error] = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert error.startswith("error: health check failed after the rollback: http: "), error
    new = url_file.read_text().rsplit("/", 1)[1]
    live = seeded.url.rsplit("/", 1)[1]
    assert f"the app is on {new} (backup {good.id}, restored and verified), {live} is kept as it was" in r.stderr
    hint = r.stderr.split("hint: ", 1)[1]
    assert "set DATABASE_URL=" in hint and f"/{new} for pgrunbook too" in hint
    assert f"what the app wrote to {live} after backup {good.id} was taken" in hint


def test_rollback_with_db_without_a_known_good_backup(seeded: Project, app: tuple[str, Path]) -> None:
    health, url_file = app
    _rollback_config(seeded, health, url_file)
    r = seeded.cli("rollback", "--with-db")
    assert_clean_error(r, 2, "no verified pre-deploy backup")
    assert url_file.read_text() == seeded.url


def test_a_refused_rollback_never_shows_an_earlier_runs_steps_or_recovery(seeded: Project) -> None:
    """Found by a trial: a rollback refused before it started printed the previous run's steps and its
    recovery SQL as if they were its own; running that SQL swaps the live database back."""
    from pgrunbook.journal import Journal

    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
        "[environments.production.hooks]\napp_rollback = 'true'\n"
    )
    journal = Journal(seeded.root / ".pgrunbook" / "journal.db")
    earlier = journal.start("restore", "production", {})
    with earlier.step("swap database names"):
        pass
    earlier.set_recovery('ALTER DATABASE "app" RENAME TO "app_restore_x"')
    earlier.finish("failed", "killed")
    journal.close()
    r = seeded.cli("rollback", "--with-db")
    assert_clean_error(r, 3, "point_app")
    assert "ALTER DATABASE" not in r.stdout + r.stderr
    assert "swap database names" not in r.stdout + r.stderr


def _read_until(fd: int, needle: str, timeout: float = 30) -> str:
    import os
    import select

    buf = ""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        assert time.monotonic() < deadline, buf
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                buf += os.read(fd, 4096).decode(errors="replace")
            except OSError:  # the child closed the terminal
                break
    return buf


def test_rollback_asks_the_runbooks_two_questions_on_a_terminal(seeded: Project, app: tuple[str, Path]) -> None:
    """A real pseudo-terminal: the operator answers 'no' (migration fine), then 'yes' (app-only regression)."""
    import os
    import pty

    health, url_file = app
    _rollback_config(seeded, health, url_file)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrunbook", "rollback"],
        cwd=seeded.root,
        env=seeded.environ,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        _read_until(master, "Did the migration fail, or does the data look wrong?")
        os.write(master, b"n\n")
        _read_until(master, "Is it an app-only regression, with no schema change?")
        os.write(master, b"y\n")
        rest = _read_until(master, "rollback ", timeout=60)
        assert proc.wait(timeout=60) == 0, rest
    finally:
        os.close(master)
    assert (seeded.root / "app_rollback.log").read_text().count("rolled back") == 1
    assert url_file.read_text() == seeded.url


def test_rollback_on_a_terminal_shows_each_step_as_it_runs(seeded: Project, app: tuple[str, Path]) -> None:
    """At 2 a.m. the operator sees every step start and end while the rollback runs, with the restore's
    bar (rows loaded) between, instead of a silent wait and a table at the end; no step is shown twice."""
    health, url_file = app
    _rollback_config(seeded, health, url_file)
    good = create_backup(seeded.env(), label="pre-deploy")
    assert seeded.cli("backup", "verify", good.id).returncode == 0
    rc, text = on_terminal(seeded, "rollback", "--with-db")
    assert rc == 0, text
    lines, found = drawn_in_order(
        text,
        "…  choose backup",
        "ok  choose backup",
        "…  restore",
        "ok  restore",
        "…  point app",
        "ok  point app",
        "…  app rollback",
        "ok  app rollback",
        "…  health",
        "ok  health",
    )
    assert f"{good.id} (taken " in lines[found[1]]  # the line that ends a step carries its detail (and age)
    assert any(" rows" in ln and "restore" in ln for ln in lines), "no bar of rows during the restore"
    assert sum(ln.startswith("ok  health") for ln in lines) == 1  # not printed again at the end
    assert lines[-1].startswith("rollback ") and lines[-1].endswith("rolled_back")


def test_a_procedure_without_a_terminal_draws_no_live_steps(seeded: Project, app: tuple[str, Path]) -> None:
    health, url_file = app
    _rollback_config(seeded, health, url_file)
    r = seeded.cli("rollback", "--app-only")
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stderr and "\r" not in r.stderr  # quiet narration for logs and scripts
    assert [ln.split()[0] for ln in r.stdout.splitlines()[:2]] == ["ok", "ok"]  # the steps, once, at the end


def test_rollback_with_db_runs_under_maintenance_and_says_what_stays_behind(
    seeded: Project, app: tuple[str, Path]
) -> None:
    """trial11 F4: the live app kept writing to the database being replaced during the whole restore,
    and those writes were silently absent from the new one. Now maintenance_on runs before the restore
    and maintenance_off at the end (also after a failure), and a warning names what stays behind: what
    was written after the backup, with the backup's age."""
    health, url_file = app
    log = seeded.root / "hooks.log"
    on = f"maintenance_on = 'echo on >> {log}'\n"
    off = f"maintenance_off = 'echo off >> {log}'\n"
    _rollback_config(seeded, health, url_file, on + off)
    good = create_backup(seeded.env(), label="pre-deploy")
    assert seeded.cli("backup", "verify", good.id).returncode == 0
    r = seeded.cli("rollback", "--with-db")
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == ["on", "off"]
    runs = json.loads(seeded.cli("--json", "runs", "--limit", "1").stdout)
    names = [s["name"] for s in runs[0]["steps"]]
    assert names[0] == "choose backup" and names[1] == "maintenance on", names
    assert names.index("maintenance on") < names.index("restore") < names.index("point app"), names
    assert names[-1] == "maintenance off", names
    assert "taken 20" in runs[0]["steps"][0]["detail"] and " ago)" in runs[0]["steps"][0]["detail"]
    live = seeded.url.rsplit("/", 1)[1]
    warning = next(ln for ln in r.stdout.splitlines() if ln.startswith("warning: "))
    assert f"what the app wrote to {live} after backup {good.id} was taken" in warning, warning
    assert "ago)" in warning and f"it stays in {live}, which is kept" in warning, warning
    assert "maintenance window: " in r.stdout
    assert "kept untouched" not in r.stdout
    out = json.loads(seeded.cli("--json", "rollback", "--with-db").stdout)
    assert out["maintenance_window_s"] is not None and out["warnings"], out

    # a rollback that fails after maintenance began still ends it
    log.unlink()
    _rollback_config(seeded, health, url_file, on + off, point_app="exit 5")
    r = seeded.cli("rollback", "--with-db")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert log.read_text().split() == ["on", "off"], r.stderr


def test_doctor_and_check_warn_while_pgrunbooks_url_names_the_database_a_rollback_left(
    seeded: Project, app: tuple[str, Path]
) -> None:
    """trial11 F10: after rollback --with-db the app is on <db>_rollback_<ts>, but DATABASE_URL (serve,
    cron, check) still named the old database; doctor and check stayed green while backups went to the
    abandoned one. They warn, naming the run and both databases, until the URL follows the app."""
    health, url_file = app
    _rollback_config(seeded, health, url_file)
    good = create_backup(seeded.env(), label="pre-deploy")
    assert seeded.cli("backup", "verify", good.id, "--drill").returncode == 0  # check: a drill, a fresh backup
    assert seeded.cli("backup", "create").returncode == 0  # check: fresh backup, nothing else to warn about
    old = seeded.url.rsplit("/", 1)[1]

    def warnings(*extra: str, env: dict[str, str] | None = None) -> tuple[dict, dict]:
        doc = json.loads(seeded.cli("--json", "doctor", "--env", "production", extra_env=env).stdout)
        chk = json.loads(seeded.cli("--json", "check", extra_env=env).stdout)
        line = next(c for c in doc["checks"] if c["name"] == "app database")
        found = next((c for c in chk["checks"] if c["name"] == "app database"), None)
        return line, found or {}

    line, found = warnings()
    assert line["status"] == "ok" and not found  # no journaled move yet
    out = json.loads(seeded.cli("--json", "rollback", "--with-db").stdout)
    assert out["outcome"] == "rolled_back", out
    line, found = warnings()
    said = f"rollback run {out['run_id']} moved the app to {out['database']} at "
    assert line["status"] == "warning" and said in line["detail"], line
    assert f"; DATABASE_URL still names {old}" in line["detail"]
    assert f"point DATABASE_URL at {out['database']}" in line["hint"] and "abandoned" in line["hint"]
    assert found["status"] == "warning" and said in found["detail"] and "point DATABASE_URL at" in found["detail"]
    assert seeded.cli("check").returncode == 1
    # the URL followed the app: no warning any more
    line, found = warnings(env={"DATABASE_URL": url_file.read_text()})
    assert line["status"] == "ok" and not found, (line, found)
    # newuser14 U2: the abandoned database then dropped: the recovery offered is pointing the URL at the
    # app's database, not recreating the one it left
    with psycopg.connect(seeded.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{old}" WITH (FORCE)'.encode())
    doc = json.loads(seeded.cli("--json", "doctor", "--env", "production").stdout)
    connection = next(c for c in doc["checks"] if c["name"] == "connection")
    assert connection["status"] == "failed" and f"the app is not on it: {said}" in connection["hint"], connection
    assert "restore latest" not in connection["hint"]
    chk = json.loads(seeded.cli("--json", "check").stdout)
    database = next(c for c in chk["checks"] if c["name"] == "database")
    assert database["status"] == "critical" and f"point DATABASE_URL at {out['database']}" in database["detail"]
    r = seeded.cli("backup", "create")
    assert r.returncode == 2 and f"the app is not on it: {said}" in r.stderr, r.stderr

"""pgrunbook check: exit codes as the newest backup ages, Prometheus textfile, webhook on failure and recovery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pgrunbook.journal import Journal, Run
from tests.conftest import PASSWORD, Project, age_backups, assert_clean_error
from tests.evidence import fault

pytestmark = pytest.mark.integration


def test_check_ages_notifies_and_writes_metrics(seeded: Project, receiver: tuple[str, list[dict]]) -> None:
    url, got = receiver
    seeded.environ["SLACK_WEBHOOK"] = url
    seeded.write_config(
        '[project]\nowner = "ops@example.com"\n[backup]\nstorage = "backups"\n'
        '[monitor]\nwebhook_url_env = "SLACK_WEBHOOK"\n'
    )
    prom = seeded.root / "metrics" / "pgrunbook.prom"
    r = seeded.cli("--json", "check", "--prometheus", str(prom))
    assert r.returncode == 2
    data = json.loads(r.stdout)
    assert data["status"] == "critical"
    assert any(c["name"] == "backup freshness" and c["detail"] == "no backup at all" for c in data["checks"])
    assert len(got) == 1 and "CRITICAL for default" in got[0]["text"] and "ops@example.com" in got[0]["text"]
    assert 'pgrunbook_check_status{environment="default"} 2' in prom.read_text()

    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    assert seeded.cli("backup", "verify", bid, "--drill").returncode == 0
    r = seeded.cli("check", "--prometheus", str(prom))
    assert r.returncode == 0, r.stdout
    assert len(got) == 2 and "RECOVERED for default" in got[1]["text"]
    text = prom.read_text()
    assert 'pgrunbook_backups{environment="default"} 1.0' in text
    assert 'pgrunbook_backup_age_seconds{environment="default"}' in text
    assert all(ln.startswith(("# ", "pgrunbook_")) for ln in text.splitlines())
    assert seeded.cli("check").returncode == 0 and len(got) == 2  # no change, no message

    age_backups(seeded, 30)
    assert seeded.cli("check").returncode == 1 and "WARNING" in got[-1]["text"]
    age_backups(seeded, 60)
    r = seeded.cli("check")
    assert r.returncode == 2 and "newest backup 2.5 days old" in r.stdout
    assert "secret-token" not in r.stdout + r.stderr


def test_schedule_print_and_verify_latest(seeded: Project) -> None:
    seeded.write_config('[backup]\nstorage = "backups"\n[schedule]\nbackup = "15 1 * * *"\n')
    r = seeded.cli("schedule", "--print", "cron")
    assert r.returncode == 0, r.stderr
    assert "15 1 * * * " in r.stdout and f"--config {seeded.root / 'pgrunbook.toml'} backup create" in r.stdout
    assert seeded.cli("schedule", "--print", "systemd").stdout.count("OnCalendar=") == 3
    assert_none = seeded.cli("backup", "verify", "latest")
    assert assert_none.returncode == 2 and "no backup in environment 'default'" in assert_none.stderr
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    r = seeded.cli("--json", "backup", "verify", "latest", "--drill")
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == bid
    text = seeded.cli("backup", "verify", "latest")  # newuser14: the text named "latest" only
    assert text.returncode == 0 and f"latest ({bid}): verified" in text.stdout, text.stdout
    seeded.write_config('[backup]\nstorage = "backups"\n[schedule]\nbackup = "0 2 L * *"\n')
    bad = seeded.cli("schedule", "--print", "systemd")
    assert bad.returncode == 3 and bad.stderr.startswith("error: ")


def test_schedule_for_one_environment_and_as_json(seeded: Project) -> None:
    """trial11 F13: schedule had neither --env nor --json, unlike every other command."""
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[schedule]\nbackup = "15 1 * * *"\ndrill = "off"\n'
        '[environments.staging]\ndatabase_url_env = "DATABASE_URL"\n'
        '[environments.production]\ndatabase_url_env = "DATABASE_URL"\n'
    )
    every = seeded.cli("schedule", "--print", "cron")
    assert "--env staging" in every.stdout and "--env production" in every.stdout
    one = seeded.cli("schedule", "--print", "cron", "--env", "production")
    assert one.returncode == 0 and "--env production" in one.stdout and "--env staging" not in one.stdout
    doc = json.loads(seeded.cli("schedule", "--print", "systemd", "--env", "staging", "--json").stdout)
    assert doc["platform"] == "systemd" and doc["text"].count("OnCalendar=") == 2
    assert [(j["environment"], j["job"], j["cron"]) for j in doc["jobs"]] == [
        ("staging", "backup", "15 1 * * *"),
        ("staging", "prune", doc["jobs"][1]["cron"]),
    ]
    assert doc["jobs"][0]["command"][-6:] == ["backup", "create", "--label", "scheduled", "--env", "staging"]
    assert_clean_error(seeded.cli("schedule", "--print", "cron", "--env", "prod"), 3, "prod")


def test_check_takes_a_webhook_secret_made_with_echo_and_refuses_a_malformed_one(
    seeded: Project, receiver: tuple[str, list[dict]]
) -> None:
    """#20 Kind 2: a trailing newline ended `check` in an internal error. Now the newline is stripped
    (the URL is delivered to), and a URL malformed inside is one error naming the variable."""
    url, got = receiver
    seeded.write_config('[backup]\nstorage = "backups"\n[monitor]\nwebhook_url_env = "SLACK_WEBHOOK"\n')
    r = seeded.cli("--json", "check", extra_env={"SLACK_WEBHOOK": url + "\n"})
    assert r.returncode == 2 and len(got) == 1 and "CRITICAL for default" in got[0]["text"], r.stderr
    assert got[0]["environment"] == "default" and got[0]["status"] == "critical"
    for bad in (url.replace("/hooks/", "/ho oks/"), url.replace("http://", "htp://"), "http://:99999/x" + url[-20:]):
        r = seeded.cli("check", extra_env={"SLACK_WEBHOOK": bad})
        assert_clean_error(r, 3, "SLACK_WEBHOOK (the webhook URL named by [monitor] webhook_url_env) is not a valid")
        assert "secret-token" not in r.stdout + r.stderr
    assert len(got) == 1  # nothing half-sent


def test_check_state_that_is_corrupt_is_named_and_replaced(seeded: Project, receiver: tuple[str, list[dict]]) -> None:
    url, got = receiver
    seeded.environ["SLACK_WEBHOOK"] = url
    seeded.write_config('[backup]\nstorage = "backups"\n[monitor]\nwebhook_url_env = "SLACK_WEBHOOK"\n')
    state = seeded.root / ".pgrunbook" / "check-state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text('{"default": "ok", ')  # cut off by a crash mid-write
    r = seeded.cli("--json", "check")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    notes = json.loads(r.stdout)["notes"]
    assert str(state) in notes[0] and "unreadable" in notes[0] and "notified again" in notes[0]
    assert len(got) == 1  # the problem is notified (again) rather than missed
    assert json.loads(state.read_text()) == {"default": "critical"}  # rewritten whole
    fault("check state corrupt")
    r = seeded.cli("--json", "check")
    assert "notes" not in json.loads(r.stdout) and len(got) == 1


def test_the_check_hint_names_the_variable_it_connected_with(seeded: Project) -> None:
    """check reads the migration history through the direct URL when one is set: a failure there must
    name that variable, not the pooled one (it named APP_POOLED_URL while using APP_DIRECT_URL)."""
    from tests.conftest import free_port

    seeded.environ["APP_POOLED_URL"] = seeded.url
    seeded.environ["APP_DIRECT_URL"] = f"postgresql://nobody:pw@127.0.0.1:{free_port()}/shop"
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.default]\n'
        'database_url_env = "APP_POOLED_URL"\ndirect_url_env = "APP_DIRECT_URL"\n'
    )
    r = seeded.cli("--json", "check")
    data = json.loads(r.stdout)
    [migrations] = [c for c in data["checks"] if c["name"] == "migrations"]
    assert migrations["status"] == "warning"
    assert "connection refused" in migrations["detail"] and "APP_DIRECT_URL" in migrations["detail"], migrations
    assert "APP_POOLED_URL" not in migrations["detail"]


def test_a_lost_database_is_critical_and_check_names_the_recovery(seeded: Project) -> None:
    """The environment's database dropped (the disaster restore --into recovers from): check exits 2
    with the command that recreates it, not a warning that migrations were not checked."""
    import psycopg

    assert seeded.cli("backup", "create").returncode == 0
    live = seeded.url.rsplit("/", 1)[1]
    with psycopg.connect(seeded.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{live}" WITH (FORCE)'.encode())
    r = seeded.cli("--json", "check")
    assert r.returncode == 2, (r.stdout, r.stderr)
    [database] = [c for c in json.loads(r.stdout)["checks"] if c["name"] == "database"]
    assert database["status"] == "critical"
    assert "does not exist" in database["detail"]
    assert f"pgrunbook restore latest --into {live} --env default recreates it" in database["detail"]
    assert PASSWORD not in r.stdout + r.stderr


@pytest.mark.parametrize("where", ["in /proc", "under a file", "read-only folder"])
def test_check_prometheus_to_an_impossible_path_is_a_named_error_after_the_results(seeded: Project, where: str) -> None:
    """trial7 #28: was ``internal error: OSError ... x.prom.25080.1397...`` (the temp name)."""
    import os
    from pathlib import Path

    blocker = seeded.root / "blocker"
    if where == "in /proc":
        prom = Path("/proc/nope.prom")
    elif where == "under a file":
        blocker.write_text("a file")
        prom = blocker / "x.prom"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a mode 0555 folder")
        blocker.mkdir(mode=0o555)
        prom = blocker / "x.prom"
    fault(f"--prometheus {where}")
    r = seeded.cli("check", "--prometheus", str(prom))
    assert_clean_error(r, 2, f"cannot write the metrics textfile {prom}")
    assert "internal error" not in r.stderr and ".prom." not in r.stderr.replace(str(prom), "")
    assert "hint: point --prometheus at a file in a folder this user may write" in r.stderr
    assert "backup freshness" in r.stdout and "check: critical" in r.stdout  # the checks ran and are shown


def test_prune_keeps_the_newest_drilled_backup_and_check_reports_the_newest_drill(seeded: Project) -> None:
    """trial7 finding 10: prune removed the only backup with a successful drill (a newer one was
    "newest verified"), and check then reported an older drill that could not run as "the last drill".
    Retention now never removes the newest drilled backup, and the drill log in storage keeps each
    drill's outcome after its backup is gone, so check reports the newest drill."""
    config = (
        '[backup]\nstorage = "backups"\nretention = { daily = 1, weekly = 0, monthly = 0 }\n'
        '[environments.default]\ndatabase_url_env = "DATABASE_URL"\nread_query = "SELECT count(*) FROM {table}"\n'
    )
    seeded.write_config(config.replace("{table}", "no_such_table"))
    first = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    failed = seeded.cli("backup", "verify", first, "--drill")  # could not run: the read query fails there
    assert failed.returncode != 0
    seeded.write_config(config.replace("{table}", "account"))
    drilled = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    assert seeded.cli("backup", "verify", drilled, "--drill").returncode == 0
    newer = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    assert seeded.cli("backup", "verify", newer).returncode == 0  # checksum only: the newest verified
    pruned = json.loads(seeded.cli("--json", "backup", "prune").stdout)
    actions = {row["id"]: (row["action"], row["reasons"]) for row in pruned}
    assert actions[drilled] == ("keep", ["newest drilled backup (never removed)"])
    assert actions[first][0] == "remove"
    r = seeded.cli("--json", "check")
    drill = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "restore drill")
    assert drill["status"] == "ok" and "last successful drill" in drill["detail"], drill
    # the drilled backup removed by other means (an older pgrunbook's prune, by hand): the drill log
    # still knows the newest drill passed, and the older one that could not run stays in the past
    shutil.rmtree(seeded.storage / "default" / drilled)
    r = seeded.cli("--json", "check", "--prometheus", str(seeded.root / "m.prom"))
    drill = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "restore drill")
    assert drill["status"] == "ok" and "last successful drill" in drill["detail"], drill
    assert (
        'pgrunbook_drill_last_success_timestamp_seconds{environment="default"}' in (seeded.root / "m.prom").read_text()
    )


def test_check_warns_of_a_killed_run_until_a_later_run_of_its_kind_finished(seeded: Project) -> None:
    """A re-trial's finding: a killed in-place restore (maintenance still on, a staging database left)
    was reported by doctor and runs only; check, which serve, /metrics and the notifications use, said
    nothing. The journal row is the one a SIGKILL leaves: running, its process gone."""
    seeded.write_config('[backup]\nstorage = "backups"\n')
    journal_file = seeded.root / ".pgrunbook" / "journal.db"
    killed = _killed_run(journal_file, "restore")
    checks = {c["name"]: c for c in json.loads(seeded.cli("--json", "check").stdout)["checks"]}
    assert checks["interrupted runs"]["status"] == "warning"
    assert f"restore {killed.id} at step restore" in checks["interrupted runs"]["detail"]
    journal = Journal(journal_file)
    later = journal.start("restore", "default", {})
    later.finish("succeeded")
    journal.close()
    checks = {c["name"]: c for c in json.loads(seeded.cli("--json", "check").stdout)["checks"]}
    assert "interrupted runs" not in checks


def test_a_backup_that_failed_verification_is_not_fresh(seeded: Project) -> None:
    """trial8 #4: the only backup, damaged and found so by `verify`, must not keep `check`'s freshness
    ok: it is no restore point."""
    seeded.write_config('[project]\nowner = "ops@example.com"\n[backup]\nstorage = "backups"\n')
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    before = json.loads(seeded.cli("--json", "check").stdout)["checks"]
    assert next(c for c in before if c["name"] == "backup freshness")["status"] == "ok"
    stored = next((seeded.storage / "default" / bid).glob("db.dump*"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert seeded.cli("backup", "verify", bid).returncode != 0
    r = seeded.cli("--json", "check")
    fresh = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "backup freshness")
    assert fresh["status"] == "critical", fresh


def test_a_run_killed_before_its_first_step_is_said_so_not_at_step_question_mark(seeded: Project) -> None:
    """A run killed before it recorded a step was shown as "restore <id> at step ?" by check and
    doctor; both now say "before its first step"."""

    killed = _killed_run(seeded.root / ".pgrunbook" / "journal.db", None)
    checks = {c["name"]: c for c in json.loads(seeded.cli("--json", "check").stdout)["checks"]}
    assert f"restore {killed.id} before its first step" in checks["interrupted runs"]["detail"], checks
    doctor = {c["name"]: c for c in json.loads(seeded.cli("--json", "doctor").stdout)["checks"]}
    detail = doctor["interrupted runs"]["detail"]
    assert f"restore {killed.id} before its first step" in detail and "step ?" not in detail, detail


def _killed_run(journal_file: Path, step: str | None) -> Run:
    """The journal row a SIGKILL leaves: a restore run still "running" (after ``step``, or before any),
    its process gone."""
    import sqlite3
    import subprocess

    journal = Journal(journal_file)
    killed = journal.start("restore", "default", {})
    if step is not None:
        with killed.step(step):
            pass
    journal.close()
    gone = subprocess.Popen(["true"])
    gone.wait()
    with sqlite3.connect(journal_file) as db:
        db.execute("UPDATE runs SET pid = ? WHERE id = ?", (gone.pid, killed.id))
    return killed


def test_backups_past_retention_warn_only_once_a_scheduled_prune_should_have_removed_them(seeded: Project) -> None:
    """trial11 F19: a deploy's pre-deploy backup makes the morning's scheduled one past retention at
    once, and check went to WARNING until the 03:30 prune, after every deploy. Now it is ok (saying the
    next scheduled prune removes it) until the prune slot after that moment, plus an hour, has passed."""
    seeded.write_config(
        '[backup]\nstorage = "backups"\nretention = { daily = 1, weekly = 0, monthly = 0 }\n'
        '[schedule]\nprune = "30 3 * * *"\n'
    )
    scheduled = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    r = seeded.cli("--json", "backup", "create", "--label", "pre-deploy")
    assert r.returncode == 0, r.stderr
    newer = json.loads(r.stdout)["id"]
    assert seeded.cli("backup", "verify", newer, "--drill").returncode == 0
    r = seeded.cli("--json", "check", "--prometheus", str(seeded.root / "m.prom"))
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["retention"]["status"] == "ok" and r.returncode == 0, checks
    assert (
        "1 backup(s) past retention since a newer backup; the next scheduled prune removes them (a warning if "
        in (checks["retention"]["detail"])
    )
    assert 'pgrunbook_backups_past_retention{environment="default"} 1.0' in (seeded.root / "m.prom").read_text()
    pruned = {
        row["id"]: row["action"] for row in json.loads(seeded.cli("--json", "backup", "prune", "--dry-run").stdout)
    }
    assert pruned[scheduled] == "remove"
    age_backups(seeded, 30)  # the 03:30 prune came and went without removing it: the prune job is not running
    checks = {c["name"]: c for c in json.loads(seeded.cli("--json", "check").stdout)["checks"]}
    assert checks["retention"]["status"] == "warning", checks
    assert "1 backup(s) past retention for longer than the prune schedule allows" in checks["retention"]["detail"]
    assert "run pgrunbook backup prune" in checks["retention"]["detail"]

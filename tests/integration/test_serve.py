"""pgrunbook serve: the real command in a child process, its scheduler on fast schedules, notifications
received by a real HTTP server and a real SMTP server, /metrics, /healthz, the token, and the status
page rendered by headless Chromium (Debian's package) with a screenshot kept as a test artifact."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import Project, age_backups, assert_clean_error, wait_for
from tests.evidence import fault

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Served:
    """A running ``pgrunbook serve``: its URL and the JSON lines it logged."""

    def __init__(self, project: Project, *args: str, extra_env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgrunbook", "--json", "serve", "--port", "0", *args],
            cwd=project.root,
            env={**project.environ, **(extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict] = []
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: self.url or self.proc.poll() is not None, 30, "serve listening")
        assert self.url, self.raw

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    @property
    def url(self) -> str | None:
        return next((e["url"] for e in self.lines if e.get("event") == "listening"), None)

    def events(self, what: str) -> list[dict]:
        return [e for e in self.lines if e.get("event") == "job" and e.get("what") == what]

    def get(self, path: str, **kw: object) -> httpx.Response:
        return httpx.get(self.url + path.lstrip("/"), timeout=30, **kw)  # type: ignore[operator,arg-type]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def serving(seeded: Project) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def _config(project: Project, webhook_var: str, smtp_port: int, schedule: str, extra: str = "") -> None:
    project.write_config(
        '[project]\nowner = "ops@example.com"\n'
        '[backup]\nstorage = "backups"\n'
        f'[monitor]\nwebhook_url_env = "{webhook_var}"\n'
        f'[monitor.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nfrom_addr = "pgrunbook@example.com"\n'
        'to = ["oncall@example.com"]\n'
        f"[schedule]\n{schedule}\n"
        f"[serve]\ncheck_interval_s = 1\n{extra}"
    )


def _backups(project: Project) -> list[dict]:
    return json.loads(project.cli("--json", "backup", "list").stdout)


def test_serve_schedules_notifies_and_exposes_metrics(
    seeded: Project,
    serving: list[Served],
    receiver: tuple[str, list[dict]],
    mailbox: tuple[int, list[EmailMessage]],
) -> None:
    hook, posted = receiver
    smtp_port, mails = mailbox
    seeded.environ["SLACK_WEBHOOK"] = hook
    assert seeded.cli("backup", "create", "--label", "manual").returncode == 0
    age_backups(seeded, 60)  # the schedule "stopped" two and a half days ago: overdue
    _config(seeded, "SLACK_WEBHOOK", smtp_port, 'backup = "@every 2s"\nprune = "off"\ndrill = "off"')

    served = Served(seeded)
    serving.append(served)
    # the overdue backup is reported through both channels, naming the owner
    wait_for(lambda: any("CRITICAL for default" in p["text"] for p in posted), 30, "webhook CRITICAL")
    wait_for(lambda: any("CRITICAL for default" in m["Subject"] for m in mails), 30, "email CRITICAL")
    assert "ops@example.com" in posted[0]["text"] and "newest backup 2.5 days old" in posted[0]["text"]
    assert "newest backup 2.5 days old" in mails[0].get_content()
    # the schedule takes fresh backups, and the recovery is announced
    wait_for(lambda: any(b["label"] == "scheduled" for b in _backups(seeded)), 60, "a scheduled backup")
    # freshness is fine again; no drill has run yet, so the status drops to WARNING, not to ok
    wait_for(lambda: any("WARNING for default" in p["text"] for p in posted), 30, f"webhook WARNING: {posted}")
    assert "restore drill" in posted[-1]["text"] and "backup freshness" not in posted[-1]["text"]

    # overlap: a backup blocked behind a lock is not started twice; its slots are skipped and counted
    with psycopg.connect(seeded.url) as conn:
        conn.execute("LOCK TABLE billing.invoice IN ACCESS EXCLUSIVE MODE")
        skipped_before = len(served.events("skipped (overlap)"))  # a slow backup may have overlapped already
        wait_for(lambda: len(served.events("skipped (overlap)")) > skipped_before + 1, 30, "overlapping slots skipped")
        running = served.get("/metrics").text
        assert 'pgrunbook_job_running{environment="default",job="backup"} 1.0' in running
        done = len(served.events("succeeded"))
    wait_for(lambda: len(served.events("succeeded")) > done, 60, "the blocked backup to finish")

    metrics = served.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    samples = [ln for ln in metrics.text.splitlines() if ln and not ln.startswith("#")]
    assert samples and all(ln.startswith("pgrunbook_") for ln in samples)
    assert 'pgrunbook_check_status{environment="default"} 1.0' in metrics.text
    assert 'pgrunbook_job_runs_total{environment="default",job="backup",outcome="succeeded"}' in metrics.text
    skipped = [ln for ln in samples if ln.startswith("pgrunbook_job_skipped_overlap_total")]
    assert skipped and float(skipped[0].split()[-1]) >= 1

    health = served.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ids = [b["id"] for b in _backups(seeded)]  # listed first: the schedule keeps adding backups
    page = served.get("/").text
    assert len(ids) >= 2 and all(i in page for i in ids), page[:2000]
    assert '<figure id="timeline-default"' in page and "<svg" in page
    assert served.stop() == 0
    assert "secret-token" not in "".join(served.raw) and "Pw-s3cr3t" not in "".join(served.raw)


def test_failed_job_notifies_and_missed_slots_catch_up_once(
    seeded: Project, serving: list[Served], receiver: tuple[str, list[dict]], mailbox: tuple[int, list]
) -> None:
    hook, posted = receiver
    seeded.environ["SLACK_WEBHOOK"] = hook
    _config(seeded, "SLACK_WEBHOOK", mailbox[0], 'backup = "0 2 * * *"\nprune = "off"\ndrill = "0 3 * * *"')
    # the service was last running three days ago: two backup slots were missed, plus the newest one
    state = seeded.root / ".pgrunbook" / "serve-state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    three_days = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    state.write_text(json.dumps({f"default/{job}": {"last_slot": three_days} for job in ("backup", "drill")}))
    served = Served(seeded)
    serving.append(served)
    wait_for(lambda: served.events("succeeded"), 60, "the catch-up backup")
    caught = served.events("caught up")
    assert caught and caught[0]["job"] == "backup" and "3 slot(s)" in caught[0]["detail"]
    assert len([b for b in _backups(seeded) if b["label"] == "scheduled"]) == 1  # once, not three times
    # the drill caught up too, but ran before any backup existed or after: it either drilled or failed
    wait_for(lambda: len(served.events("succeeded")) + len(served.events("failed")) >= 2, 60, "the drill")
    if served.events("failed"):
        assert any("scheduled drill FAILED" in p["text"] for p in posted)
    metrics = served.get("/metrics").text
    assert 'pgrunbook_job_missed_total{environment="default",job="backup"} 3.0' in metrics
    saved = json.loads(state.read_text())["default/backup"]
    assert saved["last_outcome"] == "succeeded" and saved["runs"] == 1
    assert served.stop() == 0


def test_a_failing_scheduled_backup_is_announced(
    seeded: Project, serving: list[Served], receiver: tuple[str, list[dict]], mailbox: tuple[int, list]
) -> None:
    hook, posted = receiver
    _config(seeded, "SLACK_WEBHOOK", mailbox[0], 'backup = "@every 1s"\nprune = "off"\ndrill = "off"')
    served = Served(seeded, extra_env={"SLACK_WEBHOOK": hook, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    serving.append(served)
    wait_for(lambda: any("scheduled backup FAILED" in p["text"] for p in posted), 60, "FAILED notice")
    text = next(p["text"] for p in posted if "scheduled backup FAILED" in p["text"])
    assert "127.0.0.1:1" in text and "Traceback" not in text
    health = served.get("/healthz").json()
    assert health["status"] == "ok" and health["check_status"] == "critical"  # the service itself is fine
    assert served.stop() == 0


def test_token_guards_everything_but_healthz(seeded: Project, serving: list[Served]) -> None:
    seeded.write_config('[backup]\nstorage = "backups"\n[schedule]\nbackup = "off"\nprune = "off"\ndrill = "off"\n')
    r = seeded.cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert_clean_error(r, 3, "refusing to serve on 0.0.0.0 without an access token")

    token = "tok-" + os.urandom(8).hex()
    served = Served(seeded, extra_env={"PGRUNBOOK_SERVE_TOKEN": token})
    serving.append(served)
    assert served.get("/healthz").status_code == 200
    for path in ("/", "/metrics", "/api/status"):
        assert served.get(path).status_code == 401
        assert served.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert served.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    first = served.get(f"/?token={token}")
    assert first.status_code == 303 and first.headers["location"] == "/"
    assert "HttpOnly" in first.headers["set-cookie"]
    assert served.get("/", cookies={"pgrunbook_token": token}).status_code == 200
    assert token not in "".join(served.raw)
    port = (served.url or "").rstrip("/").rsplit(":", 1)[1]
    taken = seeded.cli("serve", "--port", port, extra_env={"PGRUNBOOK_SERVE_TOKEN": token})
    assert_clean_error(taken, 3, f"cannot listen on 127.0.0.1:{port}")
    assert_clean_error(seeded.cli("serve", "--port", "99999"), 3, "99999 is not in the range")
    assert served.stop() == 0


@pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true", reason="Debian's chromium is not installed (CI installs it)"
)
def test_status_page_in_headless_chromium(seeded: Project, serving: list[Served], tmp_path: Path) -> None:
    """The page as a browser shows it: every backup id visible, the timeline plot drawn, retention's
    buckets in their columns. Screenshot: test-artifacts/status-page.png."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "CI must have chromium"
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[backup.retention]\ndaily = 2\nweekly = 1\nmonthly = 1\n'
        '[schedule]\nbackup = "off"\nprune = "off"\ndrill = "off"\n'
    )
    for label in ("manual", "pre-deploy", "manual", "manual"):
        assert seeded.cli("backup", "create", "--label", label).returncode == 0
    ids = [b["id"] for b in _backups(seeded)]
    served = Served(seeded)
    serving.append(served)
    wait_for(lambda: served.get("/api/status").json().get("status") != "unknown", 30, "the first check")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
        page.goto(served.url or "")
        for backup_id in ids:
            assert page.get_by_text(backup_id, exact=True).is_visible(), backup_id
        plot = page.locator("#timeline-default svg")
        assert plot.is_visible()
        box = plot.bounding_box()
        assert box and box["width"] > 400 and box["height"] > 150
        assert page.locator("#timeline-default svg path").count() > 10  # axes, stems, the duration line
        # retention's decisions: the newest is kept for today's daily bucket; some are removed
        newest = page.locator(f"#backup-{ids[0]}")
        assert "keep" in newest.inner_text() and datetime.now(UTC).strftime("%Y-%m-%d") in newest.inner_text()
        decisions = page.locator("tr.backup td:last-child").all_inner_texts()
        assert decisions.count("keep") >= 2 and "remove" in decisions
        page.screenshot(path=str(shot), full_page=True)
        plot.screenshot(path=str(tmp_path / "plot.png"))
        browser.close()
    assert shot.stat().st_size > 10_000
    from PIL import Image

    colours = Image.open(tmp_path / "plot.png").convert("RGB").getcolors(1 << 16) or []
    assert len(colours) > 20  # a drawn plot, not an empty box
    assert served.stop() == 0


def test_the_page_degrades_to_what_it_can_show_when_local_state_is_damaged(
    seeded: Project, serving: list[Served]
) -> None:
    """#20 Kind 4: a corrupt journal gave an empty reply; corrupt serve/check state was silently
    dropped. Now each is named with its file and what happens, and the rest of the page shows."""
    import sqlite3

    seeded.write_config(
        '[backup]\nstorage = "backups"\n[schedule]\nbackup = "@every 2s"\nprune = "off"\ndrill = "off"\n'
    )
    bid = json.loads(seeded.cli("--json", "backup", "create").stdout)["id"]
    folder = seeded.root / ".pgrunbook"
    folder.mkdir(exist_ok=True)
    (folder / "journal.db").write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    (folder / "serve-state.json").write_text('{"default/backup": {"last_slot": "2026-')
    (folder / "check-state.json").write_text("[1,")
    served = Served(seeded)
    serving.append(served)
    page = served.get("/")
    assert page.status_code == 200 and bid in page.text
    assert f"journal {folder / 'journal.db'} is damaged" in page.text and "move it aside" in page.text
    assert f"serve state {folder / 'serve-state.json'} is unreadable" in page.text
    health = served.get("/healthz").json()
    assert "starts afresh" in health["scheduler"]["state_load_error"]
    assert any(e.get("event") == "problem" and "serve-state.json" in e.get("error", "") for e in served.lines)
    wait_for(lambda: any(e.get("event") == "recovered" for e in served.lines), 30, "the state file rewritten")
    wait_for(lambda: json.loads((folder / "check-state.json").read_text()) == {"default": "warning"}, 30, "check")
    wait_for(lambda: served.events("succeeded"), 60, "the schedule running on")
    for f in ("journal.db", "serve-state.json", "check-state.json"):
        fault(f"serve: {f} corrupt")

    # a journal locked by another process: the page answers within seconds and says so
    (folder / "journal.db").unlink()
    locker = sqlite3.connect(folder / "journal.db", isolation_level=None)
    locker.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT)")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        page = served.get("/")
        assert time.monotonic() - t0 < 15 and page.status_code == 200 and bid in page.text
        assert "is locked by another process" in page.text
        assert served.get("/healthz").status_code == 200
        fault("serve: journal.db locked")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert "Traceback" not in "".join(served.raw)
    assert served.stop() == 0


def test_serve_refuses_a_malformed_webhook_url_at_start(seeded: Project) -> None:
    seeded.write_config('[backup]\nstorage = "backups"\n[monitor]\nwebhook_url_env = "HOOK"\n')
    for bad in ("https://hooks.example.com/a b/secret-token", "hooks.example.com/secret-token"):
        r = seeded.cli("serve", "--port", "0", extra_env={"HOOK": bad}, timeout=60)
        assert_clean_error(r, 3, "HOOK (the webhook URL named by [monitor] webhook_url_env) is not a valid URL")
        assert "secret-token" not in r.stderr + r.stdout


def test_the_status_page_is_titled_by_the_project_name(seeded: Project, serving: list[Served]) -> None:
    """trial11 F22: the page's title and heading were the folder holding pgrunbook.toml ("app"), so
    several services' pages open at 2 a.m. all read the same; `[project] name` (init writes it) is used."""
    seeded.write_config(
        '[project]\nname = "umami-like"\n[backup]\nstorage = "backups"\n'
        '[schedule]\nbackup = "off"\nprune = "off"\ndrill = "off"\n'
    )
    served = Served(seeded)
    serving.append(served)
    page = served.get("/").text
    assert "<title>pgrunbook — umami-like</title>" in page and "<h1>pgrunbook — umami-like</h1>" in page, page[:300]
    assert f"pgrunbook — {seeded.root.name}<" not in page
    assert served.stop() == 0

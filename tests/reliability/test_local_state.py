"""Kind 4 of issue 20 (journal, manifests; serve and check state are the monitor's) and Kind 3's
example: damaged or unwritable local state gives a named error with the file and what to do, never an
internal error or a wrong promise; a failing hook's JSON-escaped password reaches no output or row."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from pgrunbook import journal as journal_mod
from pgrunbook.errors import LocalStateError
from pgrunbook.journal import Journal
from pgrunbook.postgres.cluster import LocalCluster
from tests import evidence
from tests.conftest import Project, assert_clean_error
from tests.integration.test_migrate import make_migrations

pytestmark = pytest.mark.reliability

JOURNAL = Path(".pgrunbook") / "journal.db"


def _corrupt_journal(project: Project) -> Path:
    path = project.root / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an SQLite file\0" * 200)
    return path


def _journal_rows(project: Project) -> list[str]:
    """Every row of the journal's runs and steps tables as one line of text each."""
    db = sqlite3.connect(project.root / JOURNAL)
    try:
        rows = [" ".join(map(str, row)) for row in db.execute("SELECT * FROM runs")]
        return rows + [" ".join(map(str, row)) for row in db.execute("SELECT * FROM steps")]
    finally:
        db.close()


def _assert_no_spelling_in(rows: list[str], spelled: set[str]) -> None:
    for row in rows:
        evidence.output_checked(row, traceback=False, secret=any(s in row for s in spelled))
        assert not any(s in row for s in spelled), row


@pytest.mark.parametrize("command", ["runs", "deploy", "restore in place"])
def test_corrupt_journal_is_a_named_error_with_the_file(seeded: Project, command: str) -> None:
    """The issue's example: a corrupt journal.db ended runs, in-place restore and deploy in an internal
    error with no path or hint. Now: one error line naming the file, a hint, nothing touched."""
    seeded.write_config('[backup]\nstorage = "backups"\n[environments.production]\nprotected = false\n')
    bid = ""
    if command == "restore in place":
        bid = seeded.cli("backup", "create").stdout.strip()
        assert bid
    if command == "deploy":
        make_migrations(seeded, {"01_x": "CREATE TABLE x (id int);"})
    path = _corrupt_journal(seeded)
    before = path.read_bytes()
    evidence.fault(f"corrupt journal.db under {command}")
    args = {
        "runs": ("runs",),
        "deploy": ("deploy", "--outside-window", "--skip-staging-check"),
        "restore in place": ("restore", bid, "--in-place", "--confirm", seeded.url.rsplit("/", 1)[1]),
    }[command]
    r = seeded.cli(*args)
    assert_clean_error(r, 2, f"journal {path} is damaged")
    assert f"hint: move it aside (mv {path} {path}.damaged)" in r.stderr
    assert "internal error" not in r.stderr
    assert path.read_bytes() == before
    with psycopg.connect(seeded.url) as conn:  # nothing ran: no migration, no swap
        assert conn.execute("SELECT to_regclass('public.x')").fetchone() == (None,)


def test_locked_journal_waits_then_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal another process keeps locked: after the wait (30 s; shortened here) a named error."""
    path = tmp_path / "journal.db"
    Journal(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(journal_mod, "LOCK_WAIT_S", 0.3)
    evidence.fault("journal locked by another process")
    try:
        with pytest.raises(LocalStateError) as info:
            Journal(path).start("deploy", "production")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert f"journal {path} is locked" in info.value.message
    assert info.value.hint and "wait for it" in info.value.hint


def test_journal_error_kinds_table(tmp_path: Path) -> None:
    cases = {
        "locked": sqlite3.OperationalError("database is locked"),
        "damaged": sqlite3.DatabaseError("file is not a database"),
        "damaged ": sqlite3.DatabaseError("database disk image is malformed"),
        "cannot be opened": PermissionError(13, "Permission denied"),
        "cannot be used": sqlite3.OperationalError("disk I/O error"),
    }
    for expected, exc in cases.items():
        err = journal_mod.journal_error(tmp_path / "j.db", exc)
        assert expected.strip() in err.message and str(tmp_path / "j.db") in err.message, err.message
        assert err.hint


# --- read-only storage -----------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("drill", [False, True], ids=["verify", "drill"])
def test_verify_on_read_only_storage_reports_checks_and_says_they_were_not_recorded(
    seeded: Project, tmp_path: Path, drill: bool
) -> None:
    """The issue's example: on a NAS mounted read-only, verify and --drill exited 2 and threw their
    results away although the backup is fine. Now the checks are reported; not recording them is said
    separately (exit 1, a warning)."""
    with _tmpfs(tmp_path / "nas") as nas:
        seeded.write_config(f'[backup]\nstorage = "{nas}"\n')
        bid = seeded.cli("backup", "create").stdout.strip()
        assert bid
        manifest = next(nas.rglob("manifest.json"))
        before = manifest.read_bytes()
        remount = subprocess.run(["mount", "-o", "remount,ro", str(nas)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        evidence.fault(f"{'drill' if drill else 'verify'} on read-only storage")
        args = ["backup", "verify", bid, *(["--drill"] if drill else [])]
        r = seeded.cli(*args, "--json")
        assert r.returncode == 1, (r.stdout, r.stderr)
        result = json.loads(r.stdout)
        assert result["ok"] is True and result["recorded"] is False
        assert "not writable" in result["not_recorded"] or "read-only" in result["not_recorded"].lower()
        names = {c["name"] for c in result["checks"]}
        assert {"checksum", "archive"} <= names and (not drill or "row counts" in names)
        assert "warning: the result above was not recorded" in r.stderr and "Traceback" not in r.stderr
        human = seeded.cli(*args)
        assert human.returncode == 1 and "verified" in human.stdout and "error:" not in human.stderr
        assert manifest.read_bytes() == before


# --- unreadable manifests ----------------------------------------------------------------------------


def test_unreadable_manifest_hint_is_true_and_doctor_lists_it(seeded: Project) -> None:
    """The hint used to say prune removes an unreadable manifest; prune does not (whose it is cannot be
    told). The hint now says what is true, and doctor names every unreadable manifest."""
    bid = seeded.cli("backup", "create").stdout.strip()
    manifest = seeded.storage / "default" / bid / "manifest.json"
    manifest.write_text("{ not json")
    evidence.fault("unreadable manifest")
    r = seeded.cli("restore", bid, "--into", "wont_happen")
    assert_clean_error(r, 2, "is unreadable")
    assert "prune leaves it alone" in r.stderr and "prune removes" not in r.stderr
    lst = seeded.cli("backup", "list", "--json")
    assert json.loads(lst.stdout) == [] and "unreadable manifest" in lst.stderr
    assert seeded.cli("backup", "prune").returncode == 0
    assert manifest.exists()  # prune indeed leaves it alone, as the hint says
    doc = seeded.cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doc.stdout)["checks"]}
    assert checks["manifests"]["status"] == "warning"
    assert bid in checks["manifests"]["detail"] and "unreadable" in checks["manifests"]["detail"]


@pytest.mark.parametrize("target", ["outside", "dangling"])
def test_a_manifest_that_is_a_link_is_unreadable_not_missing_and_prune_keeps_the_archive(
    seeded: Project, tmp_path: Path, target: str
) -> None:
    """Found by a breaker trial: a manifest.json replaced by a symbolic link was not listed at all (links
    are never followed), so the folder looked like a killed run's leftover and prune deleted its archive
    after ten minutes. A manifest of any kind makes the folder a backup whose manifest cannot be read:
    never removed, named by doctor and counted by backup list."""
    bid = seeded.cli("backup", "create").stdout.strip()
    folder = seeded.storage / "default" / bid
    manifest, archive = folder / "manifest.json", folder / "db.dump.zst"
    moved = tmp_path / "moved-manifest.json"
    manifest.rename(moved)
    manifest.symlink_to(moved if target == "outside" else tmp_path / "nowhere.json")
    old = time.time() - 7200
    for p in (archive, folder):
        os.utime(p, (old, old))
    os.utime(manifest, (old, old), follow_symlinks=False)
    archive_bytes = archive.read_bytes()
    evidence.data_loss_scenario("prune with a backup's manifest replaced by a symbolic link")
    dry = seeded.cli("backup", "prune", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert bid not in dry.stdout
    assert seeded.cli("backup", "prune").returncode == 0
    assert archive.read_bytes() == archive_bytes and manifest.is_symlink()
    lst = seeded.cli("backup", "list", "--json")
    assert json.loads(lst.stdout) == [] and "1 backup(s) with an unreadable manifest" in lst.stderr
    doc = seeded.cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doc.stdout)["checks"]}
    assert checks["manifests"]["status"] == "warning"
    assert bid in checks["manifests"]["detail"] and "symbolic link" in checks["manifests"]["detail"]
    r = seeded.cli("restore", bid, "--into", "wont_happen")
    assert_clean_error(r, 2, "symbolic link")


def test_a_named_pipe_in_storage_is_refused_not_waited_on(seeded: Project) -> None:
    """Found by a breaker trial: a named pipe named like a manifest or an archive made list, check,
    verify and restore wait forever in open() (and list ignored SIGTERM while it waited). Storage reads
    only regular files: the pipe is named as what it is, at once."""
    bid = seeded.cli("backup", "create").stdout.strip()
    fake = seeded.storage / "default" / "20200101T000000Z-fifo"
    fake.mkdir()
    os.mkfifo(fake / "manifest.json")
    evidence.fault("a named pipe as a manifest")
    lst = seeded.cli("backup", "list", "--json", timeout=60)
    assert lst.returncode == 0 and [b["id"] for b in json.loads(lst.stdout)] == [bid]
    assert "1 backup(s) with an unreadable manifest" in lst.stderr
    archive = seeded.storage / "default" / bid / "db.dump.zst"
    archive.unlink()
    os.mkfifo(archive)
    evidence.fault("a named pipe as an archive")
    for args in (("backup", "verify", bid), ("restore", bid, "--into", "wont_happen")):
        r = seeded.cli(*args, timeout=60)
        assert r.returncode != 0 and "is a named pipe, not a file" in r.stdout + r.stderr, (args, r.stdout, r.stderr)


# --- Kind 3's example: a hook prints the password JSON-escaped -----------------------------------------

SPECIAL = 'pä"ss\\wörd-Zq9'  # a quote, a backslash and non-ASCII: JSON escapes all three


@pytest.fixture
def special_role(cluster: LocalCluster, seeded: Project) -> Iterator[str]:
    role = "special_pw_role"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(role), sql.Literal(SPECIAL))
        )
    dbname = seeded.url.rsplit("/", 1)[1]
    yield f"postgresql://{role}:{quote(SPECIAL, safe='')}@127.0.0.1:{cluster.port}/{dbname}"


def test_failing_hook_printing_the_password_json_escaped_leaks_nowhere(seeded: Project, special_role: str) -> None:
    seeded.environ["DATABASE_URL"] = special_role
    hook = (
        "python3 -c 'import json, os; from urllib.parse import urlsplit, unquote; "
        'pw = unquote(urlsplit(os.environ["DATABASE_URL"]).password); '
        'print(json.dumps({"password": pw})); print(json.dumps({"again": pw}, ensure_ascii=False)); '
        "print(repr(pw)); raise SystemExit(3)'"
    )
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\n'
        f'[environments.production.hooks]\nmaintenance_on = """{hook}"""\n'
    )
    bid = seeded.cli("backup", "create").stdout.strip()
    assert bid
    r = seeded.cli("restore", bid, "--in-place", "--confirm", seeded.url.rsplit("/", 1)[1])
    spelled = {
        json.dumps(SPECIAL)[1:-1],
        json.dumps(SPECIAL, ensure_ascii=False)[1:-1],
        repr(SPECIAL)[1:-1],
        SPECIAL,
        quote(SPECIAL, safe=""),
    }
    text = r.stdout + r.stderr
    evidence.output_checked(text, traceback="Traceback" in text, secret=any(s in text for s in spelled))
    assert r.returncode == 2 and "hook maintenance_on failed (exit 3)" in r.stderr, r.stderr
    assert not any(s in text for s in spelled), text
    rows = _journal_rows(seeded)
    assert any("maintenance_on" in row for row in rows)
    _assert_no_spelling_in(rows, spelled)
    runs = seeded.cli("runs", "--json")
    assert not any(s in runs.stdout for s in spelled)


TRIAL7 = "Ad'm\"in\\%2F é%"  # trial7's admin password: quotes, a backslash, a literal %2F, non-ASCII, a final %


@pytest.fixture
def trial7_role(cluster: LocalCluster, seeded: Project) -> Iterator[str]:
    role = "trial7_pw_role"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(role), sql.Literal(TRIAL7))
        )
    dbname = seeded.url.rsplit("/", 1)[1]
    yield f"postgresql://{role}:{quote(TRIAL7, safe='')}@127.0.0.1:{cluster.port}/{dbname}"


def test_failing_hook_printing_the_password_partly_encoded_or_decomposed_leaks_nowhere(
    seeded: Project, trial7_role: str
) -> None:
    """trial7 #7: encodeURIComponent leaves ' raw; quote with safe characters encodes a subset; NFD
    decomposes é. Each spelling once in the hook's output, encodeURIComponent's last (the error line)."""
    seeded.environ["DATABASE_URL"] = trial7_role
    hook = (
        "python3 -c 'import os, unicodedata; from urllib.parse import urlsplit, unquote, quote; "
        'pw = unquote(urlsplit(os.environ["DATABASE_URL"]).password); '
        'print("nfd", unicodedata.normalize("NFD", pw)); print("some", quote(pw, safe="\\x27\\x22\\x5c ")); '
        'print("lower", quote(pw, safe="").lower()); '
        'print("connecting with " + quote(pw, safe="-_.!~*\\x27()")); raise SystemExit(1)\''
    )
    seeded.write_config(
        '[backup]\nstorage = "backups"\n[environments.production]\n'
        f"[environments.production.hooks]\nmaintenance_on = '''{hook}'''\n"
    )
    made = seeded.cli("backup", "create")
    bid = made.stdout.strip()
    assert bid, made.stderr
    r = seeded.cli("restore", bid, "--in-place", "--confirm", seeded.url.rsplit("/", 1)[1])
    spelled = {
        TRIAL7,
        unicodedata.normalize("NFD", TRIAL7),
        quote(TRIAL7, safe="'\"\\ "),
        quote(TRIAL7, safe="").lower(),
        quote(TRIAL7, safe="-_.!~*'()"),
        "Ad'm",
    }
    text = r.stdout + r.stderr
    evidence.output_checked(text, traceback="Traceback" in text, secret=any(s in text for s in spelled))
    assert r.returncode == 2 and "hook maintenance_on failed (exit 1): connecting with ***" in r.stderr, r.stderr
    assert not any(s in text for s in spelled), text
    rows = _journal_rows(seeded)
    assert any("connecting with ***" in row for row in rows)
    _assert_no_spelling_in(rows, spelled)


def test_hostile_manifest_text_is_shown_escaped_never_obeyed(seeded: Project) -> None:
    """trial7 #26: a label and a migration name with escape sequences and a newline, written into the
    manifest by hand: ``backup list`` printed them raw (screen cleared, title set, a fake line)."""
    bid = seeded.cli("backup", "create").stdout.strip()
    path = seeded.storage / "default" / bid / "manifest.json"
    data = json.loads(path.read_text())
    data["label"] = "\x1b[2J\x1b[31mok\nrestored fine"
    data["migration_head"] = {"name": "\x1b]0;pwned\x07x", "count": 1}
    path.write_text(json.dumps(data))
    evidence.fault("manifest text with control characters")
    for args in (("backup", "list"), ("backup", "show", bid), ("check",)):
        r = seeded.cli(*args)
        text = r.stdout + r.stderr
        evidence.output_checked(text, traceback="Traceback" in text, secret=False)
        assert "Traceback" not in text
        assert not any(c in text for c in "\x1b\x07\r"), (args, repr(text))
        assert not any(ln.strip().startswith("restored fine") for ln in text.splitlines()), text
    listed = seeded.cli("backup", "list")
    assert (
        "\\x1b[2J\\x1b[31mok\\nrestored fine" in listed.stdout.replace("\n", "").replace(" ", "").replace("│", "")
        or "\\x1b[2J" in listed.stdout
    ), listed.stdout

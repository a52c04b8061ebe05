"""Where the journal last moved the app, and whether pgrunbook's own URL followed (trial11 F10).

A rollback with a database (``rollback --with-db``, ``deploy --auto-rollback``) and ``restore --into …
--point-app`` point the app at a new database through the point_app hook; pgrunbook's own variable
(DATABASE_URL) still names the old one until someone changes it. Until then scheduled backups, checks
and the next deploy work on the abandoned database while everything looks green, so doctor and check
warn, naming the run, the database the app is on, and the variable to change.

Read from the journal only (this host's runs): the newest run whose ``point app`` step succeeded. Its
step detail names the new database ("app pointed at <url>…; <old> kept for forensics"); the run's detail
(the next step it printed) names the database pgrunbook's URL still targeted ("… still target <old>").
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError
from pgrunbook.journal import Journal, RunRecord, journal_path

_POINTED = re.compile(r"app pointed at (postgres(?:ql)?://\S+)")
_KEPT = re.compile(r"; (\S+) kept for forensics")
_STILL = re.compile(r"still (?:target|names) (\S+)\s*$")
_SCANNED = 50  # runs of the environment read, newest first


@dataclass(frozen=True)
class AppMoved:
    run_id: str
    kind: str
    at: str  # when the app was pointed (the step's end, ISO UTC)
    database: str  # where the app was pointed
    variable: str  # pgrunbook's own URL variable, still naming ``named``
    named: str

    def message(self) -> str:
        return (
            f"{self.kind} run {self.run_id} moved the app to {self.database} at {self.at}; {self.variable} still "
            f"names {self.named}"
        )

    def hint(self) -> str:
        return (
            f"point {self.variable} at {self.database} (same URL, database name changed) so backups, checks and "
            f"the next deploy follow the app; until then they work on the abandoned {self.named}"
        )


def _pointed(run: RunRecord) -> tuple[str, str | None, str] | None:
    """(new database, replaced database or None, when) of a run whose point app step succeeded."""
    step = next((s for s in reversed(run.steps) if s.name == "point app" and s.status == "succeeded"), None)
    if step is None:
        return None
    m = _POINTED.search(step.detail)
    if m is None:
        return None
    url = urlsplit(m.group(1).rstrip(";,)"))
    database = unquote(url.path.lstrip("/"))
    if not database:
        return None
    kept = _KEPT.search(step.detail) or _STILL.search(run.detail or "")
    return database, kept.group(1) if kept else None, step.finished_at or run.finished_at or run.started_at


def app_moved(env: Environment) -> AppMoved | None:
    """The newest journaled move of the app that pgrunbook's own URL has not followed; None when the URL
    names the database the app was moved to, names another one than the one left behind (someone changed
    it), or there is no journal or no such run. Unreadable journals count as none: their own commands
    name that file's problem."""
    path = journal_path(env.config)
    if not path.exists():
        return None
    try:
        target = env.target(direct=False)
    except PgRunbookError:  # the URL cannot be read: the connection check says so
        return None
    try:
        journal = Journal(path)
        try:
            runs = journal.runs(limit=_SCANNED, environment=env.name)
        finally:
            journal.close()
    except PgRunbookError:
        return None
    for run in runs:  # newest first: only the last move counts
        found = _pointed(run)
        if found is None:
            continue
        database, replaced, at = found
        if target.dbname == database:
            return None
        if replaced is not None and target.dbname != replaced:
            return None  # the URL changed since, to something else: somebody chose it
        return AppMoved(run.id, run.kind, at, database, target.variable, target.dbname)
    return None


def lost_database_note(env: Environment, dbname: str) -> str:
    """What to do about the environment's database ``dbname``, which the server says does not exist.
    When a journaled run moved the app away from it, where the app is and the variable to point there:
    recreating the database the app left would be the wrong first move (newuser14 U2). Otherwise the
    command that recreates it from the newest backup (procedures/restore.py, recreate)."""
    moved = app_moved(env)
    if moved is not None and moved.named == dbname:
        return f"the app is not on it: {moved.message()}; {moved.hint()}"
    return (
        f"if it was lost, pgrunbook restore latest --into {shlex.quote(dbname)} --env {env.name} recreates it from "
        "the newest backup"
    )

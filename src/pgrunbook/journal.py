"""The journal: every procedure and its steps, written before and after each step runs.

SQLite (``.pgrunbook/journal.db`` beside pgrunbook.toml by default), so an interrupted run is visible
afterwards with the step it was in, and `pgrunbook runs` can say who ran what, when, and how it ended.
Each write commits at once; nothing secret is written (details pass through redact()).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgrunbook.errors import LocalStateError
from pgrunbook.postgres.runner import pid_alive
from pgrunbook.postgres.url import redact

LOCK_WAIT_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, environment TEXT NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT, outcome TEXT NOT NULL DEFAULT 'running', user TEXT, host TEXT, pid INTEGER,
    args TEXT NOT NULL DEFAULT '{}', detail TEXT NOT NULL DEFAULT '', recovery TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(id), seq INTEGER NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, duration_s REAL,
    detail TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, seq)
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name on some containers
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


@dataclass
class StepRecord:
    name: str
    status: str
    started_at: str
    finished_at: str | None
    duration_s: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "detail": self.detail,
        }


@dataclass
class RunRecord:
    id: str
    kind: str
    environment: str
    started_at: str
    finished_at: str | None
    outcome: str
    user: str
    host: str
    pid: int
    args: dict[str, Any]
    detail: str
    recovery: str
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """Still "running" in the journal, but its process on this host is gone (killed, crashed, the
        machine restarted): nothing will finish it, and its recovery note says what it left."""
        return self.outcome == "running" and self.host == socket.gethostname() and not pid_alive(self.pid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.id,
            "kind": self.kind,
            "environment": self.environment,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "user": self.user,
            "host": self.host,
            "args": self.args,
            "detail": self.detail,
            "recovery": self.recovery,
            "interrupted": self.interrupted,
            "steps": [s.to_dict() for s in self.steps],
        }


#: outcomes of a finished run that leave the environment as the runbook wants it (maintenance off)
SETTLING_OUTCOMES = frozenset({"succeeded", "rolled_back"})


def unsettled(records: list[RunRecord]) -> list[RunRecord]:
    """The interrupted runs among ``records`` that no later run of the same kind has finished since
    (outcome in SETTLING_OUTCOMES): a restore or deploy that ran again to its end leaves maintenance
    off, so the earlier run's note is history, not a task. What a killed run left on the server (a
    staging database) is reported by doctor's leftovers check until it is dropped. Order kept."""
    done = [r for r in records if r.outcome in SETTLING_OUTCOMES]
    return [
        r for r in records if r.interrupted and not any(d.kind == r.kind and d.started_at > r.started_at for d in done)
    ]


def where_interrupted(record: RunRecord) -> str:
    """Where a killed run stopped, in words: "at step <its last step>", or "before its first step" when
    it was killed before it recorded one (a run that started and died in its first checks)."""
    return f"at step {record.steps[-1].name}" if record.steps else "before its first step"


class StepFailed(Exception):
    """Raised inside a step to mark it failed with a detail, without a traceback."""


StepObserver = Callable[[dict[str, Any]], None]


class Journal:
    def __init__(self, path: Path, secrets: list[str] | None = None):
        self.path = path
        self.secrets = secrets or []
        #: told of every step as it starts (status "running") and as it ends, after the journal row is
        #: written: how a terminal shows a procedure live instead of only at its end
        self.on_step: StepObserver | None = None
        #: the runs started through this object, oldest first: how a caller finds the run a procedure
        #: it called had started, e.g. to show that run's recovery note after a failure
        self.started: list[str] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None)
            self.db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise journal_error(path, exc) from None

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """One statement, committed at once; any SQLite failure becomes a named error with the file."""
        try:
            return self.db.execute(query, params)
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from None

    def close(self) -> None:
        self.db.close()

    def _clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def start(self, kind: str, environment: str, args: dict[str, Any] | None = None) -> Run:
        run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{kind}-{uuid.uuid4().hex[:6]}"
        self.execute(
            "INSERT INTO runs (id, kind, environment, started_at, user, host, pid, args) VALUES (?,?,?,?,?,?,?,?)",
            (
                run_id,
                kind,
                environment,
                _now(),
                _user(),
                socket.gethostname(),
                os.getpid(),
                self._clean(json.dumps(args or {}, default=str)),
            ),
        )
        self.started.append(run_id)
        return Run(self, run_id)

    def reopen(self, run_id: str) -> Run:
        """Continue writing an interrupted run: steps still marked running are marked interrupted."""
        self.execute("UPDATE steps SET status = 'interrupted' WHERE run_id = ? AND status = 'running'", (run_id,))
        self.execute("UPDATE runs SET outcome = 'running' WHERE id = ?", (run_id,))
        run = Run(self, run_id)
        row = self.execute("SELECT coalesce(max(seq), 0) FROM steps WHERE run_id = ?", (run_id,)).fetchone()
        run.seq = int(row[0])
        return run

    def runs(self, limit: int = 20, environment: str | None = None) -> list[RunRecord]:
        q = "SELECT * FROM runs" + (" WHERE environment = ?" if environment else "")
        q += " ORDER BY started_at DESC, rowid DESC LIMIT ?"
        params: tuple[Any, ...] = (environment, limit) if environment else (limit,)
        cur = self.execute(q, params)
        cols = [d[0] for d in cur.description]
        out = []
        try:
            rows = cur.fetchall()
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from None
        for row in rows:
            data = dict(zip(cols, row, strict=True))
            data["args"] = json.loads(data["args"] or "{}")
            rec = RunRecord(**data)
            rec.steps = [
                StepRecord(*s)
                for s in self.execute(
                    "SELECT name, status, started_at, finished_at, duration_s, detail FROM steps "
                    "WHERE run_id = ? ORDER BY seq",
                    (rec.id,),
                )
            ]
            out.append(rec)
        return out

    def get(self, run_id: str) -> RunRecord | None:
        return next((r for r in self.runs(limit=100000) if r.id == run_id), None)


class Run:
    def __init__(self, journal: Journal, run_id: str):
        self.journal = journal
        self.id = run_id
        self.seq = 0
        self.steps: list[dict[str, Any]] = []
        #: the recovery note this process last wrote (a procedure composing its note from parts reads it)
        self.recovery = ""

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Recorded as running before it starts; succeeded or failed (with the error) after."""
        self.seq += 1
        seq = self.seq
        started = _now()
        self.journal.execute(
            "INSERT INTO steps (run_id, seq, name, status, started_at) VALUES (?,?,?,?,?)",
            (self.id, seq, name, "running", started),
        )
        info: dict[str, Any] = {"name": name, "status": "running", "started_at": started, "detail": ""}
        self.steps.append(info)
        self._tell(info)
        t0 = time.monotonic()
        try:
            yield info
        except BaseException as exc:
            info.update(status="failed", detail=info["detail"] or str(getattr(exc, "message", exc)))
            raise
        else:
            info["status"] = "succeeded"
        finally:
            info["duration_s"] = round(time.monotonic() - t0, 3)
            self.journal.execute(
                "UPDATE steps SET status = ?, finished_at = ?, duration_s = ?, detail = ? WHERE run_id = ? AND seq = ?",
                (info["status"], _now(), info["duration_s"], self.journal._clean(str(info["detail"])), self.id, seq),
            )
            self._tell(info)

    def _tell(self, info: dict[str, Any]) -> None:
        """The observer sees a copy, with the detail redacted as in the journal; a broken terminal
        never breaks the procedure."""
        if self.journal.on_step is not None:
            with contextlib.suppress(Exception):
                self.journal.on_step({**info, "detail": self.journal._clean(str(info.get("detail") or ""))})

    def skip(self, name: str, detail: str) -> None:
        self.seq += 1
        now = _now()
        self.journal.execute(
            "INSERT INTO steps (run_id, seq, name, status, started_at, finished_at, duration_s, detail) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (self.id, self.seq, name, "skipped", now, now, 0.0, detail),
        )
        self.steps.append({"name": name, "status": "skipped", "started_at": now, "duration_s": 0.0, "detail": detail})
        self._tell(self.steps[-1])

    def set_recovery(self, text: str) -> None:
        """How to get back to where we started, kept current so an interruption leaves it behind."""
        self.journal.execute("UPDATE runs SET recovery = ? WHERE id = ?", (self.journal._clean(text), self.id))
        self.recovery = text

    def finish(self, outcome: str, detail: str = "") -> None:
        self.journal.execute(
            "UPDATE runs SET outcome = ?, finished_at = ?, detail = ? WHERE id = ?",
            (outcome, _now(), self.journal._clean(detail), self.id),
        )


def journal_error(path: Path, exc: BaseException) -> LocalStateError:
    """What went wrong with the journal file, and what the operator can do about it."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return LocalStateError(
            f"journal {path} is locked: another process kept it busy for over {LOCK_WAIT_S:g} s ({text})",
            hint="another pgrunbook run (or a sqlite3 shell) holds it; wait for it to finish "
            "(pgrunbook runs shows what runs), then try again",
        )
    if (isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)) or (
        "malformed" in text or "not a database" in text
    ):
        return LocalStateError(
            f"journal {path} is damaged: {text}",
            hint=f"move it aside (mv {path} {path}.damaged); pgrunbook starts a new journal, "
            "the old file keeps the history for inspection (sqlite3 .recover)",
        )
    if isinstance(exc, OSError):
        return LocalStateError(
            f"journal {path} cannot be opened: {exc.strerror or exc}",
            hint="check the folder's permissions and free space, or set [journal] path",
        )
    return LocalStateError(
        f"journal {path} cannot be used: {text}",
        hint="check the file's permissions and free space, or move it aside to start a new journal",
    )


def journal_path(config: Any) -> Path:
    return config.resolve_path(config.journal.path)

"""One exception family for everything the operator can act on.

The CLI turns these into ``error: ...`` / ``hint: ...`` lines and the exit code they carry; anything
else is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations

import re
from typing import Any

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_FAILURE = 2
EXIT_USAGE = 3

# Characters a terminal acts on instead of showing: C0 and C1 controls (ESC starts colour, cursor
# moves, title changes; CR overwrites a line), DEL, and the bidirectional overrides that reorder text.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNPRINTABLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with every character a terminal would act on shown as its escape (``\\x1b``,
    ``\\u202e``); with ``one_line`` newlines and tabs too. For text from storage, the database or a
    hook, which must not clear the screen, retitle the terminal or fake an output line."""
    pattern = _UNPRINTABLE_LINE if one_line else _UNPRINTABLE
    return pattern.sub(lambda m: repr(m.group(0))[1:-1], text)


class PgRunbookError(Exception):
    """An expected failure: says what is wrong and what to do next."""

    exit_code = EXIT_FAILURE

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        exit_code: int | None = None,
        *,
        details: list[str] | None = None,
        cause: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []  # one line each, printed under the error (pre-flight findings)
        self.cause = cause  # the classified cause (postgres.tool_errors.Cause.to_dict()), for records
        #: a procedure's report of the run that failed (it has ``to_dict()``): with --json it is the one
        #: document on stdout, outcome "failed", as SPEC's deploy/rollback fields say; None otherwise
        self.report: Any = None
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(PgRunbookError):
    """The configuration is malformed or names something that does not exist."""

    exit_code = EXIT_USAGE


class DatabaseError(PgRunbookError):
    """The database could not be reached or refused what was asked."""


class MissingDatabase(DatabaseError):
    """The server answered that the database named by the URL does not exist (lost, dropped, misnamed):
    ``dbname``, and ``variable``, the environment variable the URL came from."""

    def __init__(self, message: str, *, hint: str | None = None, dbname: str = "", variable: str = ""):
        super().__init__(message, hint=hint)
        self.dbname = dbname
        self.variable = variable


class ToolError(PgRunbookError):
    """A PostgreSQL client tool is missing, too old, or failed."""


class StorageError(PgRunbookError):
    """Backup storage cannot be read or written."""


class ObjectMissing(StorageError):
    """The object read does not exist in storage (every backend raises this one, so a caller can read
    first and learn that a key is absent from the answer, without listing first: one round trip)."""


class BackupNotFound(PgRunbookError):
    """No complete backup carries the requested id."""


class VerificationFailed(PgRunbookError):
    """A backup exists but failed one of its integrity checks."""


class ManifestInconsistent(PgRunbookError):
    """A backup's manifest does not describe its stored file (frame list, archive_size), while the
    file's own checks (size, sha256) pass: the manifest is wrong, the backup's bytes may be fine."""


class ReadQueryFailed(PgRunbookError):
    """The application's read query failed on a restored copy whose own checks (rows, owners,
    privileges) passed: a problem of the query or the target, never proof that the backup differs."""


class PreflightFailed(PgRunbookError):
    """The target cannot take the archive as it is (roles, rights); nothing was created."""


class RestoreFailed(PgRunbookError):
    """pg_dump or pg_restore failed; ``cause`` says whether the target, the definition or the archive."""


class LockBusy(PgRunbookError):
    """Another pgrunbook run holds the lock this operation needs."""


class LocalStateError(PgRunbookError):
    """A file of pgrunbook's own local state (journal, manifest, state file) is damaged, locked or
    cannot be written; the message names the file and the hint says what to do with it."""


class Stopped(KeyboardInterrupt):
    """A stop request by signal (SIGTERM from systemd, Kubernetes or ``serve``; SIGHUP when the terminal
    goes away). A KeyboardInterrupt, so every cleanup that runs for Ctrl-C runs for it too: client tools
    killed, scratch and staging databases dropped, maintenance turned off, the journal row finished."""

    def __init__(self, signum: int, name: str):
        super().__init__(f"stopped by {name}")
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM, 129 for SIGHUP
        #: what the stop left behind, told by the innermost code that knows (``note``); None: nothing
        #: half-done is listed or kept (every cleanup ran)
        self.state: str | None = None
        self.hint: str | None = None

    #: the stop this process was asked for, once its signal arrived (cli/main.py): code that swallows
    #: the exception (pydantic-core turns one raised while it builds a model into a SchemaError) must
    #: not turn a stop into an "internal error"
    requested: Stopped | None = None

    def note(self, state: str | None = None, hint: str | None = None) -> None:
        """Say what the stop left (restored and verified and kept? partial dropped?) and what to do;
        the first of each wins, as the code nearest the interrupted work knows best (a caller further
        out may add the hint: it knows which command to run again)."""
        if self.state is None:
            self.state = state
        if self.hint is None:
            self.hint = hint

    def within(self, context: str) -> None:
        """Put what the caller knows in front of what the code nearer the work said: the procedure the
        interrupted work was part of (a drill, a deploy and its step)."""
        self.state = f"{context}; {self.state}" if self.state else context

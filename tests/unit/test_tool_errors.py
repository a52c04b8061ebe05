"""The one reader of pg_dump's and pg_restore's stderr (postgres/tool_errors.py): which lines report an
error, a run's first error with the archive entry and command it concerns, and that any text at all is
classified into a cause without an exception. The causes of real failures, case by case:
tests/unit/test_restore_causes.py; the real tools: tests/integration/test_client_tools.py,
tests/integration/test_causes.py."""

from __future__ import annotations

import re
from typing import get_args
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pgrunbook.postgres.tool_errors import (
    Where,
    cause_of,
    concerns_failure,
    error_message,
    explain,
    fold_prefixes,
    read_failure,
    reports_errors_ignored,
)

# pg_restore 15's own words (restoring an archive over a database that already holds its tables)
ALREADY_EXISTS = """\
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 215; 1259 16386 TABLE account app
pg_restore: error: could not execute query: ERROR:  relation "account" already exists
Command was: CREATE TABLE public.account (
    id bigint NOT NULL
);
pg_restore: from TOC entry 216; 1259 16390 TABLE invoice app
pg_restore: error: could not execute query: ERROR:  relation "invoice" already exists
Command was: CREATE TABLE billing.invoice (
pg_restore: warning: errors ignored on restore: 2
"""
# pg_restore >= 17 against a server <= 16: the one known harmless error (PG-MAJORS.md)
TRANSACTION_TIMEOUT = """\
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;
pg_restore: from TOC entry 3370; 0 16391 TABLE DATA account app
pg_restore: error: COPY failed for table "account": ERROR:  invalid input syntax for type bigint: "x"
pg_restore: warning: errors ignored on restore: 2
"""
HARMLESS = [re.compile(r'unrecognized configuration parameter "transaction_timeout"')]
# pg_dump 16: the tool's own line first, the server's reason in a detail line below it
DUMP_FAILED = """\
pg_dump: error: Dumping the contents of table "secret" failed: PQgetResult() failed.
pg_dump: detail: Error message from server: ERROR:  permission denied for table secret
pg_dump: detail: Command was: COPY public.secret (id, owner) TO stdout;
"""
# parallel pg_restore: jobs share one stderr, a prefix is written apart from its message
INTERLEAVED = """\
pg_restore:pg_restore: finished item 3370 TABLE DATA account
pg_restore: from TOC entry 3206; 1259 16406 INDEX cust_norm app
pg_restore:pg_restore: error: could not execute query: ERROR:  function norm(text) does not exist
CONTEXT:  SQL function "helper" during inlining
error: a worker process died unexpectedly
"""

# the entry line's prefix written before another job's line: the entry line arrives without it
ENTRY_LOST_PREFIX = """\
pg_restore: pg_restore: launching item 3207 INDEX other app
from TOC entry 3206; 1259 16406 INDEX cust_norm app
pg_restore: error: could not execute query: ERROR:  function norm(text) does not exist
"""
# its newline written after another job's whole line: two lines glued into one
ENTRY_GLUED = """\
pg_restore: from TOC entry 3206; 1259 16406 INDEX cust_norm apppg_restore: finished item 3370 TABLE DATA account

pg_restore: error: could not execute query: ERROR:  function norm(text) does not exist
"""


@pytest.mark.parametrize(
    ("stderr", "ignorable", "error", "server", "line", "entry", "command", "ignored"),
    [
        (
            ALREADY_EXISTS,
            [],
            'relation "account" already exists',
            True,
            'pg_restore: error: could not execute query: ERROR:  relation "account" already exists',
            "215; 1259 16386 TABLE account app",
            "CREATE TABLE public.account (",
            0,
        ),
        (
            TRANSACTION_TIMEOUT,
            [],
            'unrecognized configuration parameter "transaction_timeout"',
            True,
            TRANSACTION_TIMEOUT.splitlines()[0],
            "",
            "SET transaction_timeout = 0;",
            0,
        ),
        (
            TRANSACTION_TIMEOUT,
            HARMLESS,
            'invalid input syntax for type bigint: "x"',
            True,
            'pg_restore: error: COPY failed for table "account": ERROR:  invalid input syntax for type bigint: "x"',
            "3370; 0 16391 TABLE DATA account app",
            "",
            1,
        ),
        (
            DUMP_FAILED,
            [],
            "permission denied for table secret",
            True,
            DUMP_FAILED.splitlines()[1],
            "",
            "COPY public.secret (id, owner) TO stdout;",
            0,
        ),
        (
            INTERLEAVED,
            [],
            "function norm(text) does not exist",
            True,
            INTERLEAVED.splitlines()[2],
            "3206; 1259 16406 INDEX cust_norm app",
            "",
            0,
        ),
        *(
            (
                text,
                [],
                "function norm(text) does not exist",
                True,
                text.splitlines()[2],
                "3206; 1259 16406 INDEX cust_norm app",
                "",
                0,
            )
            for text in (ENTRY_LOST_PREFIX, ENTRY_GLUED)
        ),
        (
            "pg_dump: error: connection to server failed: fe_sendauth: no password supplied\n",
            [],
            "connection to server failed: fe_sendauth: no password supplied",
            False,
            "pg_dump: error: connection to server failed: fe_sendauth: no password supplied",
            "",
            "",
            0,
        ),
        ("pg_restore: error: a worker process died unexpectedly\n", [], "", False, "", "", "", 0),
        ("", [], "", False, "", "", "", 0),
    ],
)
def test_the_first_error_is_read_with_the_archive_entry_and_command_it_concerns(
    stderr: str,
    ignorable: list[re.Pattern[str]],
    error: str,
    server: bool,
    line: str,
    entry: str,
    command: str,
    ignored: int,
) -> None:
    failure = read_failure("pg_restore", stderr.splitlines(), ignorable=ignorable)
    assert (failure.error, failure.server, failure.line, failure.entry_line, failure.command) == (
        error,
        server,
        line,
        entry,
        command,
    )
    assert len(failure.ignored) == ignored
    assert (failure.entry is None) == (entry == "")
    # what was reported before this reader existed: the last line, else the exit code
    last = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    assert failure.last == (last or "exit code 1")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("pg_restore: error: could not execute query: ERROR:  x", "could not execute query: ERROR:  x"),
        ("pg_restore:pg_restore: error: COPY failed", "COPY failed"),
        ("pg_restore: pg_restore: error: COPY failed", "COPY failed"),
        ("pg_dump: error: query failed: ERROR:  y", "query failed: ERROR:  y"),
        ("error: a worker process died unexpectedly", "a worker process died unexpectedly"),  # lost its prefix
        ("pg_restore: warning: errors ignored on restore: 2", None),
        ("pg_dump: detail: Error message from server: ERROR:  z", None),
        ("Command was: SELECT 'error: not a tool line';", None),
        ("ERROR:  a server line alone", None),
        ("", None),
    ],
)
def test_which_lines_report_an_error(line: str, message: str | None) -> None:
    assert error_message(line) == message


@pytest.mark.parametrize(
    ("line", "folded", "concerns"),
    [
        ("pg_restore:pg_restore: finished item 7 TABLE DATA t", "pg_restore: finished item 7 TABLE DATA t", False),
        ('pg_restore: processing data for table "public.t"', 'pg_restore: processing data for table "public.t"', False),
        ("pg_restore: pg_restore: error: x", "pg_restore: error: x", True),
        ("pg_restore: from TOC entry 3; 1259 16390 INDEX i", "pg_restore: from TOC entry 3; 1259 16390 INDEX i", True),
        ("pg_restore: while PROCESSING TOC:", "pg_restore: while PROCESSING TOC:", True),
        ("CONTEXT:  SQL function \"f\"", "CONTEXT:  SQL function \"f\"", True),
        ("   ", "   ", False),
    ],
)  # fmt: skip
def test_progress_lines_are_told_from_what_concerns_a_failure(line: str, folded: str, concerns: bool) -> None:
    assert fold_prefixes(line) == folded
    assert concerns_failure(fold_prefixes(line)) is concerns


def test_errors_ignored_on_restore_is_read_wherever_it_falls() -> None:
    assert reports_errors_ignored(["x", "pg_restore: warning: errors ignored on restore: 3"])
    assert reports_errors_ignored(["pg_restore:pg_restore: warning: errors ignored on restore: 1"])
    assert not reports_errors_ignored(["pg_restore: error: could not execute query", "ERROR:  errors ignored"])


# Secrets longer than redaction's whole-token limit: those are removed wherever they appear, inside
# words too (a short one like "ry 1" may stand inside "entry 1" and stays there: test_redaction.py).
# No deadline: each new secret compiles its redaction pattern once.
@settings(deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=12, max_size=24))
def test_a_failure_never_shows_a_secret(secret: str) -> None:
    lines = [
        f"pg_restore: from TOC entry 1; 0 0 TABLE {secret} app",
        f"pg_restore: error: could not execute query: ERROR:  password {secret} rejected",
        f"Command was: SELECT '{quote(secret, safe='')}';",
    ]
    failure = read_failure("pg_restore", lines, secrets=[secret])
    entry = failure.entry.describe() if failure.entry else ""
    for text in (failure.error, failure.line, failure.entry_line, entry, failure.command, failure.last_line):
        assert secret not in text and quote(secret, safe="") not in text
    cause = explain(failure, role="app")
    assert secret not in cause.message and secret not in cause.hint and secret not in cause.entry


# Pieces of what the tools really print, to build stderr that looks like theirs (and also does not).
_PREFIX = st.sampled_from(["", "pg_restore: ", "pg_dump: ", "pg_restore:pg_restore: ", "pg_dumpall: "])
_LEVEL = st.sampled_from(["", "error: ", "detail: ", "warning: ", "hint: ", "from TOC entry ", "ERROR:  "])
_FRAGMENT = st.sampled_from(
    [
        "could not execute query: ERROR:  ",
        'role "x" does not exist',
        "query would be affected by row-level security policy for table \"t\"",
        "1; 0 0 TABLE DATA",
        "3206; 1259 16406 INDEX cust_norm app",
        "COPY failed for table \"t\": ERROR:  ",
        "Error message from server: ERROR:  ",
        "a worker process died unexpectedly",
        "CONTEXT:  SQL function \"f\" during inlining",
        "Command was: ",
        "unexpected end of file",
        "server version mismatch",
        "must be owner of",
        "(no owner)",
        ";",
        "",
    ]
)  # fmt: skip
_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
_LINE = st.one_of(_TEXT, st.builds(lambda *p: "".join(p), _PREFIX, _LEVEL, _FRAGMENT, _TEXT, _FRAGMENT))


@given(
    st.sampled_from(["pg_dump", "pg_restore"]),
    st.lists(_LINE, max_size=12),
    st.integers(min_value=-15, max_value=255),
    st.lists(st.sampled_from(HARMLESS), max_size=1),
)
@example("pg_dump", ["0\n"], 0, [])  # found by hypothesis: a line read with its line end
def test_any_stderr_is_classified_into_a_cause_without_an_exception(
    tool: str, lines: list[str], rc: int, ignorable: list[re.Pattern[str]]
) -> None:
    """Whatever the tools print (or a broken pipe, a wrapper script, another locale leaves of it), the
    operator gets one message and one hint, and the fault is placed somewhere."""
    failure = read_failure(tool, lines, exit_code=rc, ignorable=ignorable)
    printed = ("", *(x.rstrip("\r\n") for x in lines))  # lines as printed, without their line ends
    assert failure.line in printed and failure.last_line in printed
    assert bool(failure.error) == bool(failure.line)
    cause = cause_of(tool, lines, rc=rc, role="app", ignorable=ignorable)
    assert cause.message and cause.hint and cause.where in get_args(Where)
    assert cause.message.startswith(tool) or cause.kind in ("rls", "search_path")
    if not failure.error:
        assert cause.kind == "unknown" and f"code {rc}" in cause.message

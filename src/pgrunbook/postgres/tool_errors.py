"""The one reader of pg_dump's and pg_restore's stderr: which lines report an error, the run's first
error with the archive entry it concerns, and the cause that error points to.

pg_dump and pg_restore end a failure with lines that name nothing ("a worker process died
unexpectedly", "Command was: …", "Query was: …", "errors ignored on restore: N"); the cause is the first
server ``ERROR:`` and the archive entry pg_restore was working on ("from TOC entry 3363; 0 16554 TABLE
DATA d app", printed with ``--verbose``), with PostgreSQL's DETAIL, HINT and CONTEXT below it.

- `error_message` tells whether one line reports an error (the runner and the parallel restore collect
  them; `postgres.tools` judges them against the one error it tolerates).
- `read_failure` finds the first error in a run's lines (pure, redacted, never raises) → `Failure`.
- `explain` turns a `Failure` into a `Cause`: one message and a hint that says what to do, with where
  the fault lies: the archive, the target server, the database's own definition, or the tool.

Message texts matched here are PostgreSQL's own (src/backend, PostgreSQL 12-18) and pg_dump's
(src/bin/pg_dump); they are English only, so child processes run with ``LC_MESSAGES=C``
(`postgres.runner.child_env`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pgrunbook.postgres.redaction import redact

# Where a cause lies. Only "archive" speaks against the backup itself, and even then only the backup's
# own checks (size, checksum, frames, table of contents) may call it damaged.
Where = Literal["archive", "target", "definition", "tool"]

# pg_restore's multi-word entry types, longest first (pg_dump's ``te->desc`` values).
ENTRY_TYPES = sorted(
    [
        "ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOB METADATA", "BLOBS", "CAST", "CHECK CONSTRAINT",
        "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION", "DATABASE", "DATABASE PROPERTIES", "DEFAULT",
        "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER", "EXTENSION", "FK CONSTRAINT",
        "FOREIGN DATA WRAPPER", "FOREIGN TABLE", "FUNCTION", "INDEX", "INDEX ATTACH", "LARGE OBJECT",
        "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY",
        "POLICY", "PROCEDURAL LANGUAGE", "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA", "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH", "SECURITY LABEL",
        "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS", "STDSTRINGS",
        "SUBSCRIPTION", "SUBSCRIPTION TABLE", "TABLE", "TABLE ATTACH", "TABLE DATA", "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE",
        "USER MAPPING", "VIEW",
    ],
    key=len,
    reverse=True,
)  # fmt: skip

# A tool's line: "pg_restore: error: …". pg_restore's parallel jobs share one stderr and write the
# prefix apart from the message, so a line may carry it twice ("pg_restore:pg_restore: error: …").
_TOOL_LINE = re.compile(r"^(?:(pg_dump|pg_restore|pg_dumpall): ?)+(?:(error|detail|warning|hint): )?(.*)$")
_PREFIXES = re.compile(r"^(?:(pg_dump|pg_restore|pg_dumpall): ?)+")
# An error line, with or without its prefix (an interleaved message can lose it).
_ERROR_LINE = re.compile(r"^(?:(?:pg_dump|pg_restore|pg_dumpall): ?)*error: (.*)$")
# Anywhere in a line: parallel jobs write a message's prefix, text and newline apart, so an entry
# line can lose its prefix or be glued to another job's line (cut at the next tool prefix).
_FROM_ENTRY = re.compile(r"from TOC entry (\d+); \d+ \d+ (.*?)(?=(?:pg_dump|pg_restore|pg_dumpall):|$)")
_SERVER_ERROR = re.compile(r"(?:^|: )(?:ERROR|FATAL|PANIC):  ?(.*)$")
_FIELD = re.compile(r"^(DETAIL|HINT|CONTEXT|QUERY|LINE \d+):  ?(.*)$")
_COMMAND = re.compile(r"^(?:Command|Query) was: (.*)$")
_WORKER_DIED = "worker process died unexpectedly"
_ERRORS_IGNORED = re.compile(r"warning: errors ignored on restore: (\d+)")  # anywhere: jobs interleave
# What a failure's cause may be read from: errors, warnings and their details, the entry being
# processed ("from TOC entry …", with --verbose), and any line that is not the tool's (the server's
# DETAIL/HINT/CONTEXT, "Command was: …"); not the progress and info lines of --verbose.
_CONCERNS_FAILURE = re.compile(
    r"^(?:pg_dump|pg_restore): (?:(?:error|warning|detail|hint):|from TOC entry |while PROCESSING TOC)"
    r"|^(?!(?:pg_dump|pg_restore): )"
)


def fold_prefixes(line: str) -> str:
    """One line with a repeated tool prefix ("pg_restore:pg_restore: …") folded into one."""
    m = _PREFIXES.match(line)
    return f"{m.group(1)}: {line[m.end() :]}" if m else line


def concerns_failure(line: str) -> bool:
    """Whether a line (prefixes folded, see `fold_prefixes`) may matter to a failure's cause: what
    pg_restore --verbose prints as progress or info does not."""
    return bool(line.strip()) and bool(_CONCERNS_FAILURE.match(line))


def reports_errors_ignored(lines: Iterable[str]) -> bool:
    """pg_restore's closing "warning: errors ignored on restore: N" (it ran without --exit-on-error)."""
    return errors_ignored(lines) is not None


def errors_ignored(lines: Iterable[str]) -> int | None:
    """N of pg_restore's closing "warning: errors ignored on restore: N": every error of the run, its
    parallel jobs' included (each job reports its count to the leader); None when it printed none."""
    found = [int(m.group(1)) for line in lines if (m := _ERRORS_IGNORED.search(line))]
    return found[-1] if found else None


def error_message(line: str) -> str | None:
    """The message of a line that reports an error ("pg_restore: error: X" → "X"), else None."""
    m = _ERROR_LINE.match(line.strip())
    return m.group(1) if m else None


_QUOTED = re.compile(r'"(?:[^"]|"")*"')  # one double-quoted identifier, "" inside for a quote


@dataclass(frozen=True)
class Entry:
    """An archive entry as pg_restore names it: its dump id, type (``TABLE DATA``), schema and name."""

    dump_id: int
    type: str
    name: str
    schema: str = ""
    owner: str = ""

    def describe(self) -> str:
        """'TABLE DATA public.item', 'ACL on TABLE public.t', 'POLICY reads ON public.t'."""
        schema = f"{self.schema}." if self.schema and self.schema != "-" else ""
        if self.type in ("ACL", "COMMENT", "SECURITY LABEL") and " " in self.name:
            kind, _, name = self.name.partition(" ")  # "TABLE t": the object it is on
            for known in ENTRY_TYPES:
                if self.name.startswith(known + " "):
                    kind, name = known, self.name[len(known) + 1 :]
                    break
            # pg_dump quotes the object's name here (TABLE "Customer") but not in the object's own entry
            # (TABLE public Customer): shown as the entry shows it, so one table reads the same in a report
            if len(name) > 1 and _QUOTED.fullmatch(name):
                name = name[1:-1].replace('""', '"')
            return f"{self.type} on {kind} {schema if kind != 'SCHEMA' else ''}{name}"
        if self.type in ("POLICY", "TRIGGER", "RULE", "CONSTRAINT", "FK CONSTRAINT") and " " in self.name:
            table, _, name = self.name.partition(" ")
            return f"{self.type} {name} ON {schema}{table}"
        return f"{self.type} {schema}{self.name}".strip()


@dataclass(frozen=True)
class Failure:
    """What a run printed about its failure, before any interpretation (every text redacted).

    ``error``: the server's first ERROR message, else the tool's own first error, else "" (nothing
    looked like an error). ``line``: the line it was read from, as printed. ``entry``: the archive entry
    it concerns (pg_restore's "from TOC entry" line, printed with ``--verbose``; ``entry_line`` as
    printed). ``command``: the first line of the "Command was:" / "Query was:" below it.
    ``last_line``: the run's last non-empty line (what tools end with; rarely the cause). ``ignored``:
    error lines the caller tolerates, skipped.
    """

    tool: str
    error: str = ""
    server: bool = False  # whether ``error`` came from the server
    entry: Entry | None = None
    detail: str = ""
    hint: str = ""
    context: str = ""
    line: str = ""
    entry_line: str = ""
    command: str = ""
    last_line: str = ""
    exit_code: int = 1
    ignored: tuple[str, ...] = ()

    @property
    def last(self) -> str:
        """The last line, else the exit code."""
        return self.last_line or f"exit code {self.exit_code}"


@dataclass(frozen=True)
class Cause:
    """One failure explained: ``message`` for the ``error:`` line, ``hint`` for ``hint:``."""

    kind: str  # rls, search_path, missing_role, owner_rights, superuser, permission, target, archive, …
    where: Where
    message: str
    hint: str
    entry: str = ""  # "TABLE DATA public.d", when pg_restore named one

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "message": self.message, "hint": self.hint, "entry": self.entry}


def parse_entry(text: str, dump_id: int) -> Entry:
    """``TABLE DATA d app`` (pg_restore's log: type, tag, owner) or ``TABLE DATA public d app`` (its
    --list: type, schema, tag, owner) → Entry; the owner is the last word, "(no owner)" or "-" for none."""
    for kind in ENTRY_TYPES:
        if text == kind or text.startswith(kind + " "):
            rest = text[len(kind) + 1 :]
            break
    else:
        kind, _, rest = text.partition(" ")
    owner = ""
    if rest.endswith("(no owner)"):
        rest = rest[: -len("(no owner)")]
    elif rest.endswith(" ") or " " not in rest:  # an empty owner prints as nothing after the last space
        pass
    else:
        rest, owner = rest.rsplit(" ", 1)
        owner = "" if owner == "-" else owner
    return Entry(dump_id, kind, rest.strip(), owner=owner)


@dataclass(frozen=True)
class _Line:
    text: str  # as printed (redacted)
    level: str | None  # "error", "detail", "warning", "hint", "" (a tool's info line), None: not the tool's
    body: str  # without the tool's prefix and level


def _split(raw: str, secrets: Sequence[str]) -> _Line | None:
    text = raw.rstrip("\r\n")
    if not text.strip():
        return None
    text = redact(text, secrets) if secrets else text
    m = _TOOL_LINE.match(text)
    if m:
        return _Line(text, m.group(2) or "", m.group(3))
    e = _ERROR_LINE.match(text.strip())  # an interleaved error that lost its prefix
    if e:
        return _Line(text, "error", e.group(1))
    return _Line(text, None, text)


def read_failure(
    tool: str,
    lines: Iterable[str],
    toc: Mapping[int, Entry] | None = None,
    *,
    exit_code: int = 1,
    ignorable: Sequence[re.Pattern[str]] = (),
    secrets: Sequence[str] = (),
) -> Failure:
    """The first error of a run's stderr ``lines`` with the archive entry it concerns; never raises.

    The first server ``ERROR:`` wins over the tool's own errors before it (pg_dump prints "Dumping the
    contents of table … failed" above the server's reason); without one, the tool's first error that is
    not "a worker process died unexpectedly". Error lines matching one of ``ignorable`` are skipped
    (listed in ``ignored``). ``toc``: the archive's entries by dump id (``pg_restore --list``), to give
    the entry its schema. ``secrets``: redacted from every text of the result.
    """
    items = [x for raw in lines if (x := _split(raw, list(secrets))) is not None]
    ignored = [x for x in items if x.level == "error" and any(p.search(x.body) for p in ignorable)]
    skip = {id(x) for x in ignored}
    chosen, server = _first_error(items, skip)
    if chosen < 0:
        return Failure(tool, last_line=items[-1].text if items else "", exit_code=exit_code,
                       ignored=tuple(x.text for x in ignored))  # fmt: skip
    at = items[chosen]
    entry_line, entry = _entry_before(items, chosen, toc)
    fields, command = _below(items, chosen)
    s = _SERVER_ERROR.search(at.body) if server else None
    error = (s.group(1).strip() if s else "") or at.body.strip() or at.text.strip()  # never "" once chosen
    return Failure(
        tool,
        error,
        server,
        entry,
        fields.get("DETAIL", ""),
        fields.get("HINT", ""),
        fields.get("CONTEXT", ""),
        line=at.text,
        entry_line=entry_line,
        command=command,
        last_line=items[-1].text,
        exit_code=exit_code,
        ignored=tuple(x.text for x in ignored),
    )


def _first_error(items: list[_Line], skip: set[int]) -> tuple[int, bool]:
    """(index of the chosen error line, whether it is the server's); (-1, False) when none."""
    fallback = -1
    for i, x in enumerate(items):
        if id(x) in skip or x.level not in ("error", "detail"):
            continue
        if _SERVER_ERROR.search(x.body):
            return i, True
        if x.level == "error" and fallback < 0 and _WORKER_DIED not in x.body:
            fallback = i
    return fallback, False


def _entry_before(items: list[_Line], index: int, toc: Mapping[int, Entry] | None) -> tuple[str, Entry | None]:
    """The last "from TOC entry" line before ``index``: (as printed, parsed with the TOC's schema)."""
    for x in reversed(items[:index]):
        e = _FROM_ENTRY.search(x.text) if x.level in ("", None) else None
        if e:
            entry = parse_entry(e.group(2).strip(), int(e.group(1)))
            if toc and entry.dump_id in toc:
                entry = toc[entry.dump_id]
            return e.group(0).removeprefix("from TOC entry ").strip(), entry
    return "", None


def _below(items: list[_Line], index: int) -> tuple[dict[str, str], str]:
    """PostgreSQL's DETAIL / HINT / CONTEXT and the failed command printed under the error at ``index``,
    up to the next error."""
    fields: dict[str, str] = {}
    command = ""
    for x in items[index + 1 :]:
        if x.level == "error":
            break
        body = x.body.removeprefix("Error message from server: ")
        if not command and (c := _COMMAND.match(body)):
            command = c.group(1)
            continue
        f = _FIELD.match(body)
        if f and f.group(1) in ("DETAIL", "HINT", "CONTEXT"):
            fields.setdefault(f.group(1), f.group(2).strip())
    return fields, command


_FUNCTION_CONTEXT = re.compile(r'(?:SQL function "([^"]+)"|PL/pgSQL function ([^\s(]+)\()')
_MISSING_NAME = re.compile(r"^(function|relation|type|operator|schema|sequence) (.+?) does not exist")


# pg_dump --lock-wait-timeout sets statement_timeout around its LOCK TABLE statements (lock_timeout on
# some versions): giving up reads "canceling statement due to statement timeout", "Query was: LOCK TABLE …".
_LOCK_WAIT = re.compile(r"^LOCK TABLE (.+?) IN ACCESS SHARE MODE")


def lock_wait_table(failure: Failure) -> str | None:
    """When pg_dump gave up waiting for a table's lock (``--lock-wait-timeout``): that table as printed
    (``schema.name``; "" when not printed); None for any other failure."""
    text = failure.error.lower()
    if failure.tool != "pg_dump" or not ("statement timeout" in text or "lock timeout" in text):
        return None
    m = _LOCK_WAIT.match(failure.command)
    if failure.command and m is None:
        return None  # another statement timed out: not a lock wait
    return m.group(1) if m else ""


def explain(failure: Failure, *, role: str = "") -> Cause:
    """The cause of a failure and what to do about it; ``role`` is the role the tool connected as.
    Never raises: a failure without any error line is reported by its exit code."""
    if not failure.error:
        return Cause(
            "unknown",
            "tool",
            f"{failure.tool or 'the PostgreSQL tool'} exited with code {failure.exit_code} without an error message",
            "run it by hand with --verbose to see more",
        )
    err, entry = failure.error, failure.entry
    at = f" at {entry.describe()}" if entry else ""
    where = entry.describe() if entry else ""
    who = f"role {role!r}" if role else "the connecting role"
    login = login_failure(err)
    if login is not None:
        return Cause("login", "target", f"{failure.tool} could not log in to the server: {err}", login, where)
    m = re.search(r'query would be affected by row-level security policy for table "([^"]+)"', err)
    if m:
        return Cause(
            "rls",
            "definition",
            f"{failure.tool} cannot read table {m.group(1)}: it has FORCE ROW LEVEL SECURITY and {who} is "
            f'subject to it ("{err}")',
            f"back up as a role that row-level security does not apply to: ALTER ROLE {role or '<backup role>'} "
            "BYPASSRLS (as a superuser), or a superuser; or, if its owner need not be restricted, "
            f"ALTER TABLE {m.group(1)} NO FORCE ROW LEVEL SECURITY",
            where,
        )
    missing = _MISSING_NAME.match(err)
    fn = _FUNCTION_CONTEXT.search(failure.context)
    if missing and fn:
        name = fn.group(1) or fn.group(2)
        return Cause(
            "search_path",
            "definition",
            f"{failure.tool} failed{at}: function {name} uses {missing.group(1)} {missing.group(2)} without its "
            "schema, which pg_restore's empty search_path cannot find",
            f"in the source database give {name} a fixed search_path (ALTER FUNCTION {name}(…) SET search_path = "
            "public) or schema-qualify the names it uses (public.…), then take a new backup; the archive "
            "itself is sound",
            where,
        )
    m = re.search(r'role "([^"]+)" does not exist', err)
    if m:
        return Cause(
            "missing_role",
            "target",
            f"{failure.tool} failed{at}: the target server has no role {m.group(1)!r}",
            f'create it there (CREATE ROLE "{m.group(1)}"), restore with --owner ROLE to give every object to one '
            "role, or with --skip-missing-roles to leave out grants and policies naming roles it lacks",
            where,
        )
    m = re.search(r'must be (?:a )?member of role "([^"]+)"|must be able to SET ROLE "([^"]+)"', err)
    if m:
        owner = m.group(1) or m.group(2)
        return Cause(
            "owner_rights",
            "target",
            f"{failure.tool} failed{at}: {who} may not give objects to role {owner!r}",
            f'restore as a superuser, GRANT "{owner}" TO {role or "<restoring role>"}, or restore with '
            "--owner ROLE to give every object to one role",
            where,
        )
    if _needs_superuser(err, failure.hint):
        return Cause(
            "superuser",
            "target",
            f"{failure.tool} failed{at}: {err} — only a superuser may create it",
            "restore as a superuser, or with --skip-superuser-objects to leave such objects out (the report "
            "lists them)",
            where,
        )
    m = re.match(r'unrecognized configuration parameter "([^"]+)"', err)
    if m:
        return Cause(
            "tool",
            "tool",
            f"{failure.tool} failed{at}: it sets {m.group(1)}, which this server does not know ({err})",
            f"use the {failure.tool} of the server's major version ([postgres] bin_dir); the archive is sound",
            where,
        )
    if err.startswith("permission denied"):
        if failure.tool == "pg_dump":
            hint = (
                f"grant {who} SELECT on what it must read (or USAGE on the schema), or back up as the "
                "database's owner or a superuser"
            )
        else:
            hint = (
                "grant the restoring role what it needs on the target (CREATE on the database and its "
                "schemas), or restore as the database's owner"
            )
        return Cause("permission", "target", f"{failure.tool} failed{at}: {err} for {who}", hint, where)
    if failure.server and _is_server_state(err):
        return Cause(
            "target",
            "target",
            f"{failure.tool} failed{at}: the server: {err}",
            "fix the target server (space, connections, restarts) and run it again; the backup is not at fault",
            where,
        )
    if not failure.server:
        return _tool_cause(failure, at, where)
    extra = "".join(f"; {label}: {text}" for label, text in (("detail", failure.detail),) if text)
    return Cause(
        "definition",
        "definition",
        f"{failure.tool} failed{at}: {err}{extra}",
        (f"PostgreSQL says: {failure.hint}; " if failure.hint else "")
        + "the target could not re-create this object as defined; fix the definition in the source or the "
        "target's setup (pgrunbook backup verify checks the archive itself)",
        where,
    )


_NO_PASSWORD = re.compile(r"fe_sendauth: no password supplied|no password supplied")
_LOGIN_REFUSED = re.compile(
    r"password authentication failed|no pg_hba\.conf entry|pg_hba\.conf rejects connection"
    r"|authentication failed for user|SCRAM authentication requires"
)


def login_failure(err: str) -> str | None:
    """The hint for a tool that could not log in (break11 #8: read as "lost the server", the backup
    blamed for nothing), or None when ``err`` is no login failure. The tool is given the password
    pgrunbook's own connections log in with (the URL's, else PGPASSWORD) and reads the .pgpass file
    (PGPASSFILE) as pgrunbook does, so what is left is a wrapper that drops its environment, or a
    password changed or refused since."""
    if _NO_PASSWORD.search(err):
        return (
            "the tool was given no password: put it in the database URL, PGPASSWORD or a .pgpass file "
            "(PGPASSFILE), which pgrunbook hands on to pg_dump/pg_restore as its own connections use them; a "
            "wrapper script in [postgres] bin_dir (docker exec, sudo, ssh) that drops the environment needs "
            "a .pgpass of its own; pgrunbook doctor checks that pg_dump logs in; the backup is not at fault"
        )
    if _LOGIN_REFUSED.search(err):
        return (
            "the server refused the tool's login: check the password (database URL, PGPASSWORD or .pgpass) "
            "and the server's pg_hba.conf for this user and host; pgrunbook doctor checks that pg_dump logs "
            "in; the backup is not at fault"
        )
    return None


def _needs_superuser(err: str, hint: str) -> bool:
    text = f"{err} {hint}".lower()
    return (
        "must be superuser" in text
        or "permission denied to create event trigger" in text
        or bool(re.search(r"permission denied for language", text))
        or "only superuser" in text
        or "permission denied to create extension" in text
    )


_SERVER_STATE = (
    "no space left on device",
    "could not extend file",
    "out of memory",
    "too many connections",
    "terminating connection",
    "the database system is",
    "canceling statement due to",
    "deadlock detected",
    "could not resize shared memory",
    "database is being accessed",
)


def _is_server_state(err: str) -> bool:
    lower = err.lower()
    return any(s in lower for s in _SERVER_STATE) or bool(re.match(r'database ".*" does not exist', err))


_ARCHIVE_ERRORS = (
    "could not read input file",
    "did not find magic string",
    "unexpected end of file",
    "could not uncompress data",
    "input file is too short",
    "input file appears to be a text format dump",
    "could not find block id",
    "corrupt",
    "unrecognized data block type",
    "invalid compression",
)


def _tool_cause(failure: Failure, at: str, where: str) -> Cause:
    err = failure.error
    lower = err.lower()
    if "connection to server" in lower or "server closed the connection" in lower or "could not connect" in lower:
        return Cause(
            "target",
            "target",
            f"{failure.tool} lost the server{at}: {err}",
            "check that the server is up and reachable, then run it again; the backup is not at fault",
            where,
        )
    if "server version mismatch" in lower:
        return Cause(
            "tool",
            "tool",
            f"{failure.tool} is older than the server: {err}",
            f"use the {failure.tool} of the server's major version or newer ([postgres] bin_dir)",
            where,
        )
    if "unsupported version" in lower and "file header" in lower:
        return Cause(
            "tool",
            "tool",
            f"{failure.tool} is older than the archive: {err}",
            "use pg_restore of the same major version as the pg_dump that wrote it, or newer ([postgres] bin_dir)",
            where,
        )
    if any(s in lower for s in _ARCHIVE_ERRORS):
        return Cause(
            "archive",
            "archive",
            f"{failure.tool} could not read the archive{at}: {err}",
            "check the backup itself: pgrunbook backup verify ID (size, checksum, frames, table of contents)",
            where,
        )
    return Cause("tool", "tool", f"{failure.tool} failed{at}: {err}", f"run {failure.tool} by hand to see more", where)


def cause_of(
    tool: str,
    lines: Iterable[str],
    *,
    rc: int,
    role: str = "",
    toc: Mapping[int, Entry] | None = None,
    ignorable: Sequence[re.Pattern[str]] = (),
    secrets: Sequence[str] = (),
) -> Cause:
    """``explain(read_failure(...))``: the one call a caller of a failed tool needs."""
    failure = read_failure(tool, lines, toc, exit_code=rc, ignorable=ignorable, secrets=secrets)
    return explain(failure, role=role)

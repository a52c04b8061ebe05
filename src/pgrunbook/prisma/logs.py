"""The text Prisma Migrate stores in ``_prisma_migrations.logs`` when a migration script fails.

Rules read from prisma/prisma-engines (no code copied):

- ``schema-engine/core/src/commands/apply_migrations.rs``: on failure, ``logs`` is the connector error
  rendered as text (``err.to_string()``).
- ``schema-engine/connectors/schema-connector/src/error.rs``: that text is the user-facing message,
  a newline, then the engine's tracing span trace.
- ``libs/user-facing-errors/src/schema_engine.rs``, ``ApplyMigrationError`` (P3018): the message is the
  "A migration failed to apply…" paragraph, the migration name, the database error code and the database
  error, ending with a newline.
- ``schema-engine/connectors/sql-schema-connector/src/flavour/postgres/connector/native/mod.rs``,
  ``apply_migration_script``: the database error is the driver error's Display, then (when PostgreSQL
  reported a position in the query) a "Position:" block of up to five lines before the failing line and
  the failing line, numbered from 1 and highlighted with ANSI bold/red, then a blank line and the driver
  error's Debug form. The line is found by adding up UTF-8 byte lengths of lines (plus one for each
  newline) until they reach PostgreSQL's position, which counts characters: Prisma's own quirk, kept.
- tokio-postgres ``error/mod.rs`` (Prisma's fork): ``DbError``'s Display is ``SEVERITY: message`` with
  ``DETAIL:`` and ``HINT:`` lines; its Debug is the derived form of every field, in declaration order.

The span trace (``0: sql_schema_connector::apply_migration::apply_script … at …apply_migration.rs:113``)
names source files and lines of the Prisma build that ran; pgrunbook ran none, so it does not invent one:
its logs are Prisma's P3018 message byte for byte and stop there. Checked against rows that Prisma wrote
in real projects' databases (tests/unit/test_prisma_logs.py).
"""

from __future__ import annotations

import unicodedata
from typing import Any

from psycopg import errors as pg_errors

P3018 = (
    "A migration failed to apply. New migrations cannot be applied before the error is recovered from. "
    "Read more about how to resolve migration issues in a production database: "
    "https://pris.ly/d/migrate-resolve\n\n"
    "Migration name: {name}\n\n"
    "Database error code: {code}\n\n"
    "Database error:\n{error}\n"
)

_BOLD, _BOLD_RED, _RESET = "\x1b[1m", "\x1b[1;31m", "\x1b[0m"

#: tokio-postgres's Severity enum, parsed from the non-localized severity field
_SEVERITIES = {
    "PANIC": "Panic",
    "FATAL": "Fatal",
    "ERROR": "Error",
    "WARNING": "Warning",
    "NOTICE": "Notice",
    "DEBUG": "Debug",
    "INFO": "Info",
    "LOG": "Log",
}


def apply_migration_logs(migration_name: str, diag: Any, query: str) -> str:
    """``logs`` for a script that failed with PostgreSQL error ``diag`` (psycopg's ``Diagnostic``).

    ``query`` is the text PostgreSQL received (the whole script, or the statement under split semantics):
    its position is counted in it."""
    code = diag.sqlstate or "none"
    error = f"{db_error_display(diag)}{position_block(query, diag.statement_position)}\n\n{db_error_debug(diag)}"
    return P3018.format(name=migration_name, code=code, error=error)


def db_error_display(diag: Any) -> str:
    """tokio-postgres ``DbError`` Display: ``SEVERITY: message``, then ``DETAIL:`` / ``HINT:`` lines."""
    text = f"{diag.severity or 'ERROR'}: {diag.message_primary or ''}"
    if diag.message_detail is not None:
        text += f"\nDETAIL: {diag.message_detail}"
    if diag.message_hint is not None:
        text += f"\nHINT: {diag.message_hint}"
    return text


def position_block(query: str, position: str | int | None) -> str:
    """Prisma's "Position:" block for a 1-based ``position`` in ``query``; empty when there is none."""
    if position is None or str(position).strip() == "":
        return ""
    pos = int(position)
    previous = [""] * 5
    byte_index = 0
    for number, line in enumerate(_rust_lines(query), start=1):
        byte_index += len(line.encode("utf-8")) + 1
        if pos <= byte_index:
            numbered = [
                f"{_BOLD}{n:>3}{_RESET}{' ' if text else ''}{text}"
                for n, text in ((number - (5 - i), text) for i, text in enumerate(previous))
                if n >= 0
            ]
            return "\n\nPosition:\n" + "\n".join(numbered) + f"\n{_BOLD}{number:>3}{_BOLD_RED} {line}{_RESET}"
        previous = [*previous[1:], line]
    return ""


def _rust_lines(text: str) -> list[str]:
    """Rust's ``str::lines``: split at ``\\n``, drop one ``\\r`` before it, no empty last line."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def db_error_debug(diag: Any) -> str:
    """tokio-postgres ``DbError``'s derived Debug form, field by field as Prisma's fork declares them."""
    severity_name = _SEVERITIES.get(diag.severity_nonlocalized or "")
    fields = [
        ("severity", rust_str(diag.severity or "")),
        ("parsed_severity", f"Some({severity_name})" if severity_name else "None"),
        ("code", _sqlstate_debug(diag.sqlstate or "")),
        ("message", rust_str(diag.message_primary or "")),
        ("detail", _opt(diag.message_detail)),
        ("hint", _opt(diag.message_hint)),
        ("position", _position_debug(diag)),
        ("where_", _opt(diag.context)),
        ("schema", _opt(diag.schema_name)),
        ("table", _opt(diag.table_name)),
        ("column", _opt(diag.column_name)),
        ("datatype", _opt(diag.datatype_name)),
        ("constraint", _opt(diag.constraint_name)),
        ("file", _opt(diag.source_file)),
        ("line", f"Some({int(diag.source_line)})" if diag.source_line else "None"),
        ("routine", _opt(diag.source_function)),
    ]
    return "DbError { " + ", ".join(f"{k}: {v}" for k, v in fields) + " }"


def _opt(value: str | None) -> str:
    return "None" if value is None else f"Some({rust_str(value)})"


def _sqlstate_debug(code: str) -> str:
    """``SqlState(E42P07)`` for a code PostgreSQL defines, ``SqlState(Other("…"))`` otherwise."""
    try:
        pg_errors.lookup(code)
    except KeyError:
        return f"SqlState(Other({rust_str(code)}))"
    return f"SqlState(E{code})"


def _position_debug(diag: Any) -> str:
    if diag.statement_position:
        return f"Some(Original({int(diag.statement_position)}))"
    if diag.internal_position:
        query = rust_str(diag.internal_query or "")
        return f"Some(Internal {{ position: {int(diag.internal_position)}, query: {query} }})"
    return "None"


_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"', "\0": "\\0"}


def rust_str(text: str) -> str:
    """``text`` as Rust's ``{:?}`` renders a ``&str``: quoted, escaped, unprintables as ``\\u{hex}``.

    Unprintable is Rust's rule (general categories Cc, Cf, Cs, Co, Cn, Zl, Zp, and Zs other than the
    space, the same as Python's ``str.isprintable``); a combining mark is escaped only at the start."""
    out = ['"']
    for i, ch in enumerate(text):
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif not ch.isprintable() or (i == 0 and unicodedata.category(ch) in ("Mn", "Me")):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def said_by_postgres(code: str, message: str, detail: str | None, hint: str | None) -> str:
    """A failed migration's cause in one line: ``23505 could not create unique index "k"; detail: Key
    (browser)=(firefox) is duplicated.; hint: …``: PostgreSQL's DETAIL says what to fix (trial11 F6)."""
    text = f"{code} {message}".strip()
    for label, value in (("detail", detail), ("hint", hint)):
        if value and value.strip():
            text += f"; {label}: {' '.join(value.split())}"
    return text


def logs_error(logs: str | None) -> str:
    """The database error a failed migration's ``logs`` (Prisma's P3018 text, written by Prisma or by
    pgrunbook) records, as `said_by_postgres` puts it; "" when the logs hold none (another Prisma error,
    no logs at all)."""
    if not logs:
        return ""
    code = ""
    lines = logs.splitlines()
    for line in lines:
        if line.startswith("Database error code: "):
            code = line.removeprefix("Database error code: ").strip()
            break
    try:
        start = lines.index("Database error:") + 1
    except ValueError:
        return ""
    message, detail, hint = "", None, None
    for line in lines[start:]:
        if not line.strip() or line.startswith(("Position:", "DbError {")):
            break
        head, _, rest = line.partition(": ")
        if not message and head in _SEVERITIES:
            message = rest.strip()
        elif head == "DETAIL" and detail is None:
            detail = rest
        elif head == "HINT" and hint is None:
            hint = rest
    return said_by_postgres("" if code == "none" else code, message, detail, hint) if message else ""

"""How the project's Prisma version sends a migration script to PostgreSQL.

Prisma up to 7.3 sends ``migration.sql`` as one simple-query string: PostgreSQL runs a multi-statement
string as one implicit transaction, so a script is all-or-nothing unless it commits on its own, and a
``CREATE INDEX CONCURRENTLY`` works only alone.

prisma-engines #5767 (first shipped in Prisma 7.4.0: its schema engine, engines 7.4.0-20.ab56fe7, is the
first to bundle sqlparser 0.61, where 7.3.0's had 0.32) splits the script into statements and sends them
one by one (``split_script_into_statements``, native postgres connector); #5799 does the same for the
shadow database. Each statement is then its own implicit transaction: after a failure, the statements
before it stay committed. The boundaries come from sqlparser's PostgreSQL parser; when it cannot parse
the script, the whole script goes as one string as before (#5847, open: ``DROP INDEX CONCURRENTLY`` is
one such case, and so is any ``DO`` block, ``REINDEX``, ``CLUSTER``, ``REFRESH MATERIALIZED VIEW``...).

Whether Prisma splits a script is decided here by the same parser: sqlparser 0.61.0, the version in
every Prisma engine from 7.4.0 to 7.10, through its Python bindings (sqloxide 0.61.1, pinned because a
newer sqlparser parses more and would split where Prisma does not). The pieces themselves come from this
module's lexer (quotes, ``E''`` strings, dollar quoting, nested comments), which finds the same
top-level semicolons; the tests check both against PostgreSQL's parser and against each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: the first Prisma release whose schema engine splits scripts (prisma-engines #5767)
SPLIT_SINCE = (7, 4, 0)


@dataclass(frozen=True)
class Statement:
    text: str
    start: int  # offset of the statement's first character in the script


class LexError(ValueError):
    """The script ends inside a quote, a quoted identifier, a dollar-quoted body or a block comment."""


_SPECIAL = re.compile(r"[-/'\"$;]")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$")


def split_statements(script: str) -> list[Statement]:
    """Statements of ``script``, split at top-level semicolons; comment-only pieces are dropped.

    Each statement keeps its leading comments (as Prisma's splitter does) and excludes the semicolon.
    Raises LexError when a quote, identifier, dollar-quoted body or comment is not closed."""
    out: list[Statement] = []
    i, n, start = 0, len(script), 0
    while i < n:
        m = _SPECIAL.search(script, i)  # jump over plain text: only these characters change the state
        if m is None:
            break
        i = m.start()
        c = script[i]
        if c == "-" and script.startswith("--", i):
            j = script.find("\n", i)
            i = n if j < 0 else j + 1
        elif c == "/" and script.startswith("/*", i):
            i = _skip_block_comment(script, i)
        elif c == "'":
            escaped = i > 0 and script[i - 1] in "eE" and (i < 2 or not _ident_char(script[i - 2]))
            i = _skip_string(script, i, backslash=escaped)
        elif c == '"':
            j = script.find('"', i + 1)
            while j >= 0 and script.startswith('""', j):
                j = script.find('"', j + 2)
            if j < 0:
                raise LexError(f"unterminated quoted identifier at offset {i}")
            i = j + 1
        elif c == "$" and (i == 0 or not _ident_char(script[i - 1])):
            m = _DOLLAR_TAG.match(script, i)
            if m:
                end = script.find(m.group(), m.end())
                if end < 0:
                    raise LexError(f"unterminated dollar-quoted string {m.group()} at offset {i}")
                i = end + len(m.group())
            else:
                i += 1
        elif c == ";":
            _add(out, script, start, i)
            i += 1
            start = i
        else:
            i += 1
    _add(out, script, start, n)
    return out


def _ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$"


def _skip_block_comment(script: str, i: int) -> int:
    depth, i = 1, i + 2  # PostgreSQL block comments nest
    while depth:
        a, b = script.find("/*", i), script.find("*/", i)
        if b < 0:
            raise LexError("unterminated /* comment")
        if 0 <= a < b:
            depth, i = depth + 1, a + 2
        else:
            depth, i = depth - 1, b + 2
    return i


def _skip_string(script: str, i: int, *, backslash: bool) -> int:
    j = i + 1
    while True:
        k = script.find("'", j)
        if k < 0:
            raise LexError(f"unterminated string at offset {i}")
        if backslash:
            slashes = 0
            while script[k - 1 - slashes] == "\\" and k - 1 - slashes > i:
                slashes += 1
            if slashes % 2:
                j = k + 1
                continue
        if script.startswith("''", k):
            j = k + 2
            continue
        return k + 1


_COMMENTS = re.compile(r"(--[^\n]*(\n|$)|/\*.*?\*/|\s)+", re.DOTALL)


def _add(out: list[Statement], script: str, start: int, end: int) -> None:
    text = script[start:end]
    if _COMMENTS.fullmatch(text) or not text.strip():
        return
    lead = len(text) - len(text.lstrip())
    out.append(Statement(text.strip(), start + lead))


def sqlparser_rejects(script: str) -> str | None:
    """sqlparser 0.61's error for ``script`` (PostgreSQL dialect), or None when it parses.

    This is the check behind Prisma's fallback: where it fails, Prisma sends the script as one string."""
    import sqloxide  # sqlparser-rs 0.61.0, as in Prisma's schema engine

    try:
        sqloxide.parse_sql(script, dialect="postgres")
    except Exception as exc:  # sqloxide raises ValueError; anything else is a parse failure too
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return lines[-1] if lines else type(exc).__name__
    return None


@dataclass(frozen=True)
class Plan:
    """How one script is sent: the pieces in order, and why it was not split when it is one piece."""

    pieces: list[Statement]
    split: bool
    reason: str = ""


def plan_script(script: str, *, split: bool) -> Plan:
    """The pieces Prisma sends for ``script``: one under batch semantics or when the splitter gives up."""
    whole = [Statement(script, 0)]
    if not split:
        return Plan(whole, False, "Prisma before 7.4 sends a script as one string")
    try:
        statements = split_statements(script)
    except LexError as exc:
        return Plan(whole, False, f"the splitter cannot read it ({exc}); sent as one string")
    if len(statements) <= 1:  # one statement runs the same whether split or not: no parse needed
        return Plan(whole, False, "a single statement is sent as it is")
    why = sqlparser_rejects(script)
    if why is not None:
        return Plan(whole, False, f"Prisma's splitter cannot parse it ({why}); sent as one string")
    return Plan(statements or whole, True)


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``7.4.0``, ``^7.4.0``, ``~7.4``, ``>=7.4.0 <8``, ``7.4.0-dev.3`` → (7, 4, 0); None for tags like ``latest``."""
    m = re.search(r"(\d+)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?", text)
    if not m:
        return None
    parts = [int(p) if p and p.isdigit() else 0 for p in m.groups()]
    return parts[0], parts[1], parts[2]


def splits(version: tuple[int, int, int] | None) -> bool:
    """Whether that Prisma version's migrate splits scripts; unknown versions keep the single batch."""
    return version is not None and version >= SPLIT_SINCE


def config_splits(config: object) -> bool:
    """Whether the configured (or detected) Prisma version of ``config`` splits scripts."""
    version = getattr(getattr(config, "migrate", None), "prisma_version", None)
    return splits(parse_version(version)) if isinstance(version, str) else False

"""``migrate lint``: dangerous operations in migration files, found with PostgreSQL's own parser (pglast).

Rules follow squawk and strong_migrations: what lock a statement takes, whether it rewrites the table,
whether it loses data, and the safe way to do it. Statements on a table created earlier in the same set
of migrations being linted (still empty when they run) are not flagged. A comment
``-- pgrunbook-lint-ignore: rule-a, rule-b`` before a statement silences those rules for it;
``-- pgrunbook-lint-ignore-file: rule`` for the whole file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType

from pgrunbook.prisma.splitter import plan_script

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    what: str
    why: str
    instead: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in [
        Rule(
            "adding-not-null-column-without-default",
            "error",
            "adds a NOT NULL column without a default",
            "fails on a table with rows; with PostgreSQL < 11 any default rewrites the table",
            "add the column nullable (or with a constant default), backfill in batches, then SET NOT NULL",
        ),
        Rule(
            "require-concurrent-index-creation",
            "error",
            "creates an index without CONCURRENTLY",
            "CREATE INDEX takes a SHARE lock: every write to the table waits until the index is built",
            "CREATE INDEX CONCURRENTLY, alone in its own migration (Prisma sends a file as one script)",
        ),
        Rule(
            "require-concurrent-index-deletion",
            "warning",
            "drops an index without CONCURRENTLY",
            "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table",
            "DROP INDEX CONCURRENTLY, alone in its migration",
        ),
        Rule(
            "concurrently-in-multi-statement-script",
            "error",
            "uses CONCURRENTLY in a file with other statements",
            "Prisma before 7.4 sends the file as one script, an implicit transaction (and 7.4+ too when its "
            "splitter cannot parse the file, e.g. with DROP INDEX CONCURRENTLY or a DO block): "
            "CONCURRENTLY fails there",
            "put the CONCURRENTLY statement alone in its own migration",
        ),
        Rule(
            "changing-column-type",
            "error",
            "changes a column's type",
            "most type changes rewrite the table under an ACCESS EXCLUSIVE lock, blocking reads and writes",
            "add a new column, backfill, switch the app, drop the old one (varchar -> text and widening varchar "
            "are safe: ignore the rule for those)",
        ),
        Rule(
            "constraint-missing-not-valid",
            "error",
            "adds a foreign key or check constraint that is validated at once",
            "validation scans the whole table while holding a lock that blocks writes",
            "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a later migration",
        ),
        Rule(
            "disallowed-unique-constraint",
            "error",
            "adds a UNIQUE or PRIMARY KEY constraint that builds its index",
            "the index is built under an ACCESS EXCLUSIVE lock",
            "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX",
        ),
        Rule(
            "setting-not-null",
            "warning",
            "sets an existing column NOT NULL",
            "scans the whole table under an ACCESS EXCLUSIVE lock",
            "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL (PostgreSQL 12+)",
        ),
        Rule(
            "adding-volatile-default",
            "error",
            "adds a column whose default is volatile",
            "a volatile default (random(), gen_random_uuid(), clock_timestamp()) rewrites the whole table",
            "add the column without default, set the default, backfill in batches",
        ),
        Rule(
            "ban-drop-table",
            "error",
            "drops a table",
            "data loss; running app instances still query it",
            "stop using the table in the app first; back it up; drop in a later release",
        ),
        Rule(
            "ban-drop-column",
            "error",
            "drops a column",
            "data loss; running app instances may still read it",
            "stop using the column in the app (Prisma: remove it from the schema) and deploy, then drop it",
        ),
        Rule("ban-truncate", "error", "truncates a table", "data loss", "delete the rows you mean to, in batches"),
        Rule(
            "renaming-table",
            "error",
            "renames a table",
            "running app instances still use the old name",
            "create the new table or a view, migrate readers and writers, drop the old name later",
        ),
        Rule(
            "renaming-column",
            "error",
            "renames a column",
            "running app instances still use the old name",
            "add the new column, write both, backfill, switch reads, drop the old column later",
        ),
        Rule(
            "enum-value-removal-or-rename",
            "error",
            "renames or replaces enum values",
            "old app instances write values that no longer exist; recreating the type rewrites tables",
            "add new values only; stop writing an old value before removing it",
        ),
        Rule(
            "adding-enum-value",
            "warning",
            "adds an enum value",
            "the new value cannot be used in the same transaction, and old app instances may not handle it",
            "add the value in its own migration and deploy code that handles it before writing it",
        ),
        Rule(
            "require-timeout-settings",
            "warning",
            "runs DDL without a lock_timeout",
            "a DDL statement queued behind a long query blocks every later query on the table",
            "SET lock_timeout = '5s'; at the top of the migration (pgrunbook's native engine sets it for you)",
        ),
    ]
}

VOLATILE = {
    "random",
    "gen_random_uuid",
    "uuid_generate_v4",
    "uuid_generate_v1",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "txid_current",
    "statement_timestamp",
}
IGNORE = re.compile(r"--\s*pgrunbook-lint-ignore(-file)?\s*:\s*([a-z0-9, -]+)")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    rule: str
    severity: Severity
    what: str
    why: str
    instead: str
    statement: str

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "rule": self.rule,
            "severity": self.severity,
            "what": self.what,
            "why": self.why,
            "instead": self.instead,
            "statement": self.statement,
        }


# The advice where the project's Prisma (7.4+) sends this file statement by statement: CONCURRENTLY
# no longer needs a migration of its own (docs/migrations.md, "Prisma 7.4 and later").
SPLIT_INSTEAD = {
    "require-concurrent-index-creation": "CREATE INDEX CONCURRENTLY (this Prisma sends each statement of this "
    "file on its own, so it may stay beside the others)",
}


@dataclass
class _Context:
    new_tables: set[str] = field(default_factory=set)
    engine: str = "native"
    #: the project's Prisma splits scripts into statements (7.4+): CONCURRENTLY among other statements
    #: fails only where its splitter falls back to one string
    split: bool = False


def _name(rv: ast.RangeVar | None) -> str:
    if rv is None:
        return ""
    return f"{rv.schemaname or 'public'}.{rv.relname}"


def _leading(chunk: str) -> tuple[int, str]:
    """Where a statement's first token is in its chunk, and the comments before it (ignore markers).
    libpg_query's statement location starts right after the previous statement's semicolon."""
    i = 0
    comments = []
    while i < len(chunk):
        if chunk[i].isspace() or chunk[i] == ";":
            i += 1
        elif chunk.startswith("--", i):
            end = chunk.find("\n", i)
            end = len(chunk) if end == -1 else end
            comments.append(chunk[i:end])
            i = end
        elif chunk.startswith("/*", i):
            end = chunk.find("*/", i)
            end = len(chunk) if end == -1 else end + 2
            comments.append(chunk[i:end])
            i = end
        else:
            break
    return i, "\n".join(comments)


def _ignored(comments: str) -> set[str]:
    out: set[str] = set()
    for m in IGNORE.finditer(comments):
        if not m.group(1):
            out |= {r.strip() for r in m.group(2).split(",") if r.strip()}
    return out


# A statement a rule can concern (or that creates a table later statements may touch) starts with one
# of these words. Only those are turned into Python syntax trees: a seed migration's million INSERTs
# are split by PostgreSQL's own parser (in C, which also rejects bad syntax) and skipped by their first
# word, so linting stays linear in the file's size (bench/lint_bench.py).
_DDL_WORDS = frozenset({"CREATE", "DROP", "ALTER", "TRUNCATE"})


@dataclass(frozen=True)
class _Statement:
    line: int
    comments: str
    text: str


def _first_word_is_ddl(text: str, start: int) -> bool:
    head = text[start : start + 9].split(None, 1)
    return bool(head) and head[0].upper() in _DDL_WORDS


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_NON_ASCII_DOLLAR_TAG = re.compile(r"\$[A-Za-z_0-9]*[^\x00-\x7f][^$\s]*\$")


def _ascii_twin(text: str) -> str:
    """The text with every non-ASCII character replaced by ``x``: the same statements at the same
    character offsets. PostgreSQL's lexer takes any non-ASCII character for an identifier letter (and
    strings and comments hold anything), so the split is the same; pglast's own offset conversion is
    quadratic on non-ASCII text. Not done when a dollar-quote tag holds non-ASCII (two tags could
    become one)."""
    if text.isascii() or _NON_ASCII_DOLLAR_TAG.search(text):
        return text
    return _NON_ASCII.sub("x", text)


def _statements(text: str) -> tuple[int, list[_Statement]]:
    """How many statements the file has, and the ones a rule can concern with their first line,
    leading comments and text, in one linear pass (the rest cost one look at their first word).
    Raises pglast's ParseError for SQL PostgreSQL would reject."""
    slices = pglast.parser.split(_ascii_twin(text), with_parser=True, only_slices=True)
    out = []
    line, pos, prev_end = 1, 0, 0
    for sl in slices:
        if _first_word_is_ddl(text, sl.start):
            line += text.count("\n", pos, sl.start)
            pos = sl.start
            _offset, comments = _leading(text[prev_end : sl.start])
            out.append(_Statement(line, comments, text[sl].strip()))
        prev_end = sl.stop
    return len(slices), out


def _tree(stmt: _Statement) -> ast.Node | None:
    """The syntax tree of one statement worth checking (parsed alone: cost bounded by its size)."""
    parsed = pglast.parse_sql(stmt.text)
    return parsed[0].stmt if parsed else None


def lint_text(text: str, file: str, ctx: _Context | None = None) -> list[Finding]:
    """All findings of one migration file, in order. Linear in the file's size."""
    ctx = ctx or _Context()
    file_ignores = {r.strip() for m in IGNORE.finditer(text) if m.group(1) for r in m.group(2).split(",")}
    try:
        count, stmts = _statements(text)
    except pglast.parser.ParseError as exc:
        return [
            Finding(
                file,
                1,
                "syntax-error",
                "error",
                f"does not parse: {exc}",
                "PostgreSQL will reject it",
                "fix the SQL",
                "",
            )
        ]
    trees = [_tree(st) for st in stmts]
    created_here = {_name(t.relation) for t in trees if isinstance(t, ast.CreateStmt)}
    new = ctx.new_tables | created_here
    findings: list[Finding] = []
    has_timeout = bool(re.search(r"set\s+(local\s+)?lock_timeout", text, re.IGNORECASE))
    # statements sent together in one implicit transaction: all of them, unless Prisma splits this file
    batch_size = 1 if ctx.split and plan_script(text, split=True).split else count
    ddl_seen = False
    for st, tree in zip(stmts, trees, strict=True):
        skip = _ignored(st.comments) | file_ignores
        for rule_id in _check(tree, new, batch_size) if tree is not None else ():
            ddl_seen = True
            if rule_id not in skip:
                r = RULES[rule_id]
                instead = SPLIT_INSTEAD.get(r.id, r.instead) if batch_size == 1 < count else r.instead
                findings.append(Finding(file, st.line, r.id, r.severity, r.what, r.why, instead, st.text[:200]))
        if isinstance(tree, (ast.AlterTableStmt, ast.IndexStmt, ast.DropStmt, ast.RenameStmt)):
            ddl_seen = True
    if ctx.engine == "prisma" and ddl_seen and not has_timeout and "require-timeout-settings" not in file_ignores:
        r = RULES["require-timeout-settings"]
        findings.append(Finding(file, 1, r.id, r.severity, r.what, r.why, r.instead, ""))
    ctx.new_tables |= created_here
    return findings


def _check(stmt: ast.Node, new: set[str], count: int) -> Iterator[str]:
    if isinstance(stmt, ast.IndexStmt):
        if stmt.concurrent and count > 1:
            yield "concurrently-in-multi-statement-script"
        elif not stmt.concurrent and _name(stmt.relation) not in new:
            yield "require-concurrent-index-creation"
    elif isinstance(stmt, ast.DropStmt):
        yield from _check_drop(stmt, count, new)
    elif isinstance(stmt, ast.TruncateStmt):
        yield "ban-truncate"
    elif isinstance(stmt, ast.RenameStmt):
        if stmt.relation is not None and _name(stmt.relation) in new:
            return
        if stmt.renameType == ObjectType.OBJECT_TABLE:
            yield "renaming-table"
        elif stmt.renameType == ObjectType.OBJECT_COLUMN:
            yield "renaming-column"
        elif stmt.renameType == ObjectType.OBJECT_TYPE:
            yield "enum-value-removal-or-rename"
    elif isinstance(stmt, ast.AlterEnumStmt):
        yield "enum-value-removal-or-rename" if stmt.oldVal else "adding-enum-value"
    elif isinstance(stmt, ast.AlterTableStmt) and stmt.objtype == ObjectType.OBJECT_TABLE:
        if _name(stmt.relation) in new:
            return
        for cmd in stmt.cmds or ():
            yield from _check_alter(cmd)


def _check_drop(stmt: ast.DropStmt, count: int, new: set[str]) -> Iterator[str]:
    if stmt.removeType == ObjectType.OBJECT_TABLE:
        names = [[str(n.sval) for n in obj if isinstance(n, ast.String)] for obj in stmt.objects or ()]
        qualified = {".".join(n) if len(n) > 1 else f"public.{n[0]}" for n in names if n}
        if not qualified <= new:
            yield "ban-drop-table"
    elif stmt.removeType == ObjectType.OBJECT_INDEX:
        if stmt.concurrent and count > 1:
            yield "concurrently-in-multi-statement-script"
        elif not stmt.concurrent:
            yield "require-concurrent-index-deletion"


def _check_alter(cmd: ast.AlterTableCmd) -> Iterator[str]:
    sub = cmd.subtype
    if sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        constraints = cmd.def_.constraints or ()
        not_null = any(c.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY) for c in constraints)
        default = next((c for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None)
        identity = any(c.contype in (ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED) for c in constraints)
        if not_null and default is None and not identity and not _is_serial(cmd.def_):
            yield "adding-not-null-column-without-default"
        if default is not None and _volatile(default.raw_expr):
            yield "adding-volatile-default"
        if _is_serial(cmd.def_) or identity:
            yield "adding-volatile-default"
    elif sub == AlterTableType.AT_AlterColumnType:
        yield "changing-column-type"
    elif sub == AlterTableType.AT_DropColumn:
        yield "ban-drop-column"
    elif sub == AlterTableType.AT_SetNotNull:
        yield "setting-not-null"
    elif sub == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        c = cmd.def_
        if c.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK) and not c.skip_validation:
            yield "constraint-missing-not-valid"
        elif c.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and not c.indexname:
            yield "disallowed-unique-constraint"


def _is_serial(col: ast.ColumnDef) -> bool:
    names = [str(n.sval) for n in ((col.typeName.names or ()) if col.typeName else ()) if isinstance(n, ast.String)]
    return bool(names) and names[-1].lower() in ("serial", "bigserial", "smallserial", "serial4", "serial8")


def _volatile(expr: ast.Node | None) -> bool:
    if expr is None:
        return False
    found = False

    def visit(node: object) -> None:
        nonlocal found
        if isinstance(node, ast.FuncCall):
            names = [str(n.sval) for n in node.funcname or () if isinstance(n, ast.String)]
            if names and names[-1].lower() in VOLATILE:
                found = True
        if isinstance(node, ast.Node):
            for attr in node:
                visit(getattr(node, attr))
        elif isinstance(node, tuple):
            for item in node:
                visit(item)

    visit(expr)
    return found


def lint_files(
    paths: Sequence[Path], engine: str = "native", root: Path | None = None, *, split: bool = False
) -> list[Finding]:
    """Lint files in the order given; tables created by an earlier file count as new for later ones.

    ``split``: the project's Prisma runs scripts statement by statement (prisma/splitter.py)."""
    ctx = _Context(engine=engine, split=split)
    out: list[Finding] = []
    for path in paths:
        shown = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
        out.extend(lint_text(path.read_text(encoding="utf-8", errors="replace"), shown, ctx))
    return out

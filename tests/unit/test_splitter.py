"""The statement splitter Prisma 7.4+ semantics rest on (pgrunbook/prisma/splitter.py).

Boundaries are checked against PostgreSQL's own parser (pglast, libpg_query) and against sqlparser 0.61
(the parser in Prisma's engine, through sqloxide): for every script they parse, the splitter finds the same
statements. The fallback cases are those where sqlparser 0.61 fails, as prisma-engines #5847 documents.
"""

from __future__ import annotations

import pglast
import pytest
import sqloxide
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.prisma.splitter import (
    LexError,
    parse_version,
    plan_script,
    split_statements,
    splits,
    sqlparser_rejects,
)

TRICKY = {
    "dollar quoting with a tag and semicolons": (
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN PERFORM 1; RETURN 2; END $body$;\n"
        "SELECT f();",
        2,
    ),
    "plain $$ body": ("DO $$ BEGIN RAISE NOTICE 'a;b'; END $$;\nSELECT 1;", 2),
    "nested dollar tags": ("DO $a$ BEGIN EXECUTE $b$ SELECT 1; $b$; END $a$;", 1),
    "line comments with quotes and semicolons": ("-- don't; split\nSELECT 1; -- it's; here\nSELECT 2;", 2),
    "nested block comments": ("/* a /* b; */ c; */ SELECT 1; SELECT 2", 2),
    "E'' string with escaped quote": (r"SELECT E'it\'s; fine'; SELECT 'x''; y';", 2),
    "E'' string with escaped backslash before the quote": (r"SELECT E'a\\'; SELECT 2;", 2),
    "quoted identifier with semicolon": ('CREATE TABLE "a;b" ("c""; d" int); SELECT 1;', 2),
    "BEGIN/COMMIT block": ("BEGIN;\nCREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\nCOMMIT;", 4),
    "positional parameter is not a dollar quote": ("PREPARE p AS SELECT $1; EXECUTE p(1);", 2),
    "identifier with a dollar is not a dollar quote": ("CREATE TABLE a$b (id int); SELECT 1;", 2),
    "only comments": ("-- nothing\n/* here */\n", 0),
    "empty statements": (";;SELECT 1;;", 1),
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_splitter_finds_postgres_statements(name: str) -> None:
    script, expected = TRICKY[name]
    found = split_statements(script)
    assert len(found) == expected, [s.text for s in found]
    assert len(pglast.parse_sql(script)) == expected  # PostgreSQL's parser agrees
    for st_ in found:
        assert len(pglast.parse_sql(st_.text)) == 1  # each piece is one whole statement
        assert script[st_.start :].startswith(st_.text)


def test_leading_comments_stay_with_their_statement() -> None:
    """split_script_into_statements_with_comments (prisma-engines): a comment belongs to what follows."""
    found = split_statements("-- CreateTable\nCREATE TABLE a (id int);\n\n-- CreateIndex\nCREATE INDEX i ON a(id);\n")
    assert [s.text for s in found] == [
        "-- CreateTable\nCREATE TABLE a (id int)",
        "-- CreateIndex\nCREATE INDEX i ON a(id)",
    ]


@pytest.mark.parametrize(
    "script",
    ["SELECT 'open", 'SELECT "open', "DO $$ BEGIN", "SELECT 1 /* open", "SELECT E'\\'"],
)
def test_unterminated_input_is_a_lex_error_and_falls_back_to_one_string(script: str) -> None:
    with pytest.raises(LexError):
        split_statements(script)
    plan = plan_script(script, split=True)
    assert not plan.split and [p.text for p in plan.pieces] == [script]


@pytest.mark.parametrize(
    ("script", "splits_it"),
    [
        (
            "ALTER TABLE a ADD COLUMN b int;\nCREATE INDEX CONCURRENTLY i ON a(b);\n"
            "CREATE INDEX CONCURRENTLY j ON a(b);",
            True,
        ),
        ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON a(b);\nSELECT 1;", True),
        # prisma-engines #5847: sqlparser cannot parse DROP INDEX CONCURRENTLY: the whole script goes as one
        ("DROP INDEX CONCURRENTLY i;\nDROP INDEX CONCURRENTLY j;", False),
        ("ALTER TABLE a ADD COLUMN c int;\n/* x */ drop   index\nconcurrently if exists i;", False),
        ("REINDEX INDEX CONCURRENTLY i;\nSELECT 1;", False),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\nSELECT 2;", False),
        # sqlparser 0.61 has no DO statement: a migration with a DO block is sent whole by Prisma 7
        ("DO $$ BEGIN PERFORM 1; END $$;\nCREATE INDEX CONCURRENTLY i ON a(b);", False),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY v;\nSELECT 1;", False),
        # what Prisma generates parses: enums, foreign keys, functions with $$ bodies, RLS, comments
        (
            "CREATE TYPE \"Role\" AS ENUM ('A', 'B');\nALTER TYPE \"Role\" ADD VALUE 'C';\n"
            'ALTER TABLE "a" ADD CONSTRAINT "a_fkey" FOREIGN KEY ("b") REFERENCES "c"("id") ON DELETE RESTRICT '
            "ON UPDATE CASCADE;\nCREATE OR REPLACE FUNCTION f() RETURNS trigger AS $$ BEGIN RETURN NEW; END; $$ "
            "LANGUAGE plpgsql;\nALTER TABLE \"a\" ENABLE ROW LEVEL SECURITY;\nCOMMENT ON TABLE a IS 'x;y';",
            True,
        ),
        # the words inside a string or comment do not count
        ("SELECT 'DROP INDEX CONCURRENTLY i';\n-- DROP INDEX CONCURRENTLY j\nSELECT 2;", True),
    ],
)
def test_fallback_to_one_string_where_prismas_splitter_cannot_parse(script: str, splits_it: bool) -> None:
    plan = plan_script(script, split=True)
    assert plan.split is splits_it, plan.reason
    if not splits_it:
        assert [p.text for p in plan.pieces] == [script] and "one string" in plan.reason


def test_sqlparser_error_is_the_one_prisma_engines_5847_quotes() -> None:
    assert sqlparser_rejects("DROP INDEX CONCURRENTLY idx1;") == (
        "sql parser error: Expected: end of statement, found: idx1 at Line: 1, Column: 25"
    )
    assert sqlparser_rejects("CREATE INDEX CONCURRENTLY idx1 ON t (a);") is None


def test_batch_semantics_never_split() -> None:
    plan = plan_script("SELECT 1; SELECT 2;", split=False)
    assert not plan.split and len(plan.pieces) == 1


@pytest.mark.parametrize(
    ("text", "version", "split"),
    [
        ("7.4.0", (7, 4, 0), True),
        ("^7.4.0", (7, 4, 0), True),
        ("~7.3.1", (7, 3, 1), False),
        ("7.10.1", (7, 10, 1), True),
        ("6.19.3", (6, 19, 3), False),
        (">=7.4 <8", (7, 4, 0), True),
        ("7.4.0-dev.12", (7, 4, 0), True),
        ("8", (8, 0, 0), True),
        ("7.x", (7, 0, 0), False),
        ("latest", None, False),
    ],
)
def test_versions_and_the_release_that_splits(text: str, version: tuple | None, split: bool) -> None:
    """7.4.0 is the first release whose schema engine (engines 7.4.0-20.ab56fe7) has #5767 (CHANGELOG)."""
    assert parse_version(text) == version
    assert splits(parse_version(text)) is split


_piece = st.sampled_from(
    [
        "SELECT 1",
        "SELECT 'a;b'",
        "SELECT E'c\\'d;'",
        'SELECT 1 AS "x;y"',
        "DO $$ BEGIN PERFORM 1; END $$",
        "DO $t$ BEGIN PERFORM ';'; END $t$",
        "-- note; it's\nSELECT 2",
        "/* c; /* n */ */ SELECT 3",
        "CREATE INDEX CONCURRENTLY i ON t (a)",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_piece, min_size=1, max_size=8), st.sampled_from([";", ";\n", " ;\n\n"]))
def test_any_joined_script_splits_back_into_its_statements(pieces: list[str], sep: str) -> None:
    script = sep.join(pieces) + sep
    assert [s.text for s in split_statements(script)] == [p.strip() for p in pieces]


@settings(max_examples=200, deadline=None)
@given(st.lists(_piece, min_size=1, max_size=8), st.sampled_from([";", ";\n"]))
def test_boundaries_match_sqlparsers_wherever_it_parses(pieces: list[str], sep: str) -> None:
    """Where sqlparser parses the script, it sees as many statements as the lexer: Prisma's boundaries."""
    script = sep.join(pieces) + sep
    if len(pieces) == 1:  # one statement is sent as it is, split or not
        assert len(plan_script(script, split=True).pieces) == 1
        return
    try:
        parsed = sqloxide.parse_sql(script, dialect="postgres")
    except ValueError:
        assert not plan_script(script, split=True).split
        return
    assert len(parsed) == len(split_statements(script))
    assert plan_script(script, split=True).split


SENT = {
    "a column and two CREATE INDEX CONCURRENTLY": (
        '-- AlterTable\nALTER TABLE "item" ADD COLUMN "price" INTEGER;\n\n'
        '-- CreateIndex\nCREATE INDEX CONCURRENTLY "a" ON "item"("price");\n'
        'CREATE INDEX CONCURRENTLY "b" ON "item"("id", "price");\n',
        [
            '-- AlterTable\nALTER TABLE "item" ADD COLUMN "price" INTEGER',
            '-- CreateIndex\nCREATE INDEX CONCURRENTLY "a" ON "item"("price")',
            'CREATE INDEX CONCURRENTLY "b" ON "item"("id", "price")',
        ],
    ),
    "a failing statement in the middle": (
        'CREATE TABLE "first" ("id" INTEGER);\nINSERT INTO "first" SELECT 1 / 0;\nCREATE TABLE "never" ("id" INTEGER);',
        [
            'CREATE TABLE "first" ("id" INTEGER)',
            'INSERT INTO "first" SELECT 1 / 0',
            'CREATE TABLE "never" ("id" INTEGER)',
        ],
    ),
    "DROP INDEX CONCURRENTLY mixed (prisma-engines #5847)": (
        'DROP INDEX CONCURRENTLY "a";\nCREATE INDEX CONCURRENTLY "c" ON "item"("price");\n',
        None,  # sqlparser 0.61 cannot parse it: the file is sent whole
    ),
    "a trailing comment after the last statement": ("SELECT 1;\n-- done\n", None),  # one statement: sent whole
}


@pytest.mark.parametrize("name", sorted(SENT))
def test_what_is_sent_for_each_semantics(name: str) -> None:
    """The texts that reach PostgreSQL, one simple query each: pieces from 7.4, the file before (and on fallback)."""
    script, pieces = SENT[name]
    assert [p.text for p in plan_script(script, split=False).pieces] == [script]
    assert [p.text for p in plan_script(script, split=True).pieces] == (pieces or [script])

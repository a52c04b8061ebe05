"""``_prisma_migrations.logs`` as Prisma's native schema engine writes it (pgrunbook.prisma.logs).

The expected texts are rows Prisma itself wrote: pg_dump files of real projects' ``_prisma_migrations``
tables published in public repositories (found with the search tool; quoted here up to the engine's span
trace, which pgrunbook does not write). Control characters are not visible in those dumps, so the ANSI
bold/red codes of the "Position:" block follow the source (native/mod.rs, apply_migration_script).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.prisma.logs import (
    P3018,
    apply_migration_logs,
    db_error_debug,
    position_block,
    rust_str,
)

B, R, X = "\x1b[1m", "\x1b[1;31m", "\x1b[0m"


@dataclass
class Diag:
    """The fields of psycopg's ``Diagnostic`` that Prisma's DbError carries (None = not sent)."""

    severity: str | None = "ERROR"
    severity_nonlocalized: str | None = "ERROR"
    sqlstate: str | None = None
    message_primary: str | None = None
    message_detail: str | None = None
    message_hint: str | None = None
    statement_position: str | None = None
    internal_position: str | None = None
    internal_query: str | None = None
    context: str | None = None
    schema_name: str | None = None
    table_name: str | None = None
    column_name: str | None = None
    datatype_name: str | None = None
    constraint_name: str | None = None
    source_file: str | None = None
    source_line: str | None = None
    source_function: str | None = None


HEADER = (
    "A migration failed to apply. New migrations cannot be applied before the error is recovered from. Read "
    "more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve"
)


def test_a_row_prisma_wrote_without_a_position_is_reproduced_byte_for_byte() -> None:
    diag = Diag(
        sqlstate="42P07",
        message_primary='relation "CMSPage" already exists',
        source_file="heap.c",
        source_line="1160",
        source_function="heap_create_with_catalog",
    )
    prisma_wrote = (
        f"{HEADER}\n\nMigration name: 20250614_add_cms_and_site_settings\n\nDatabase error code: 42P07\n\n"
        'Database error:\nERROR: relation "CMSPage" already exists\n\n'
        'DbError { severity: "ERROR", parsed_severity: Some(Error), code: SqlState(E42P07), message: '
        '"relation \\"CMSPage\\" already exists", detail: None, hint: None, position: None, where_: None, '
        'schema: None, table: None, column: None, datatype: None, constraint: None, file: Some("heap.c"), '
        'line: Some(1160), routine: Some("heap_create_with_catalog") }\n'
    )
    script = 'CREATE TABLE "CMSPage" ("id" TEXT NOT NULL);\n'
    assert apply_migration_logs("20250614_add_cms_and_site_settings", diag, script) == prisma_wrote


BIRTHDAY = (
    "-- Convert User.birthday from timestamp to string (YYYY-MM-DD)\n"
    'ALTER TABLE "User"\n'
    'ALTER COLUMN "birthday" TYPE TEXT\n'
    "USING CASE\n"
    '  WHEN "birthday" IS NULL THEN NULL\n'
    "  ELSE to_char(\"birthday\", 'YYYY-MM-DD')\n"
    "END;\n"
)


def test_a_row_prisma_wrote_with_hint_and_position_is_reproduced() -> None:
    """Position 171 falls on line 6: the five lines before it and the failing line, numbered from 1."""
    hint = "No function matches the given name and argument types. You might need to add explicit type casts."
    diag = Diag(
        sqlstate="42883",
        message_primary="function to_char(text, unknown) does not exist",
        message_hint=hint,
        statement_position="171",
        source_file="parse_func.c",
        source_line="629",
        source_function="ParseFuncOrColumn",
    )
    lines = BIRTHDAY.splitlines()
    position = "\n".join(f"{B}{n:>3}{X} {lines[n - 1]}" for n in range(1, 6)) + f"\n{B}  6{R} {lines[5]}{X}"
    prisma_wrote = (
        f"{HEADER}\n\nMigration name: 20260422091500_birthday_to_string\n\nDatabase error code: 42883\n\n"
        f"Database error:\nERROR: function to_char(text, unknown) does not exist\nHINT: {hint}\n\n"
        f"Position:\n{position}\n\n"
        'DbError { severity: "ERROR", parsed_severity: Some(Error), code: SqlState(E42883), message: '
        f'"function to_char(text, unknown) does not exist", detail: None, hint: Some("{hint}"), '
        "position: Some(Original(171)), where_: None, schema: None, table: None, column: None, datatype: None, "
        'constraint: None, file: Some("parse_func.c"), line: Some(629), routine: Some("ParseFuncOrColumn") }\n'
    )
    assert apply_migration_logs("20260422091500_birthday_to_string", diag, BIRTHDAY) == prisma_wrote


def test_an_error_on_line_one_lists_prismas_line_zero_and_escapes_a_byte_order_mark() -> None:
    """From a row Prisma wrote for a script saved with a BOM: "  0" (an empty line 0), then line 1."""
    diag = Diag(
        sqlstate="42601",
        message_primary="syntax error at or near \ufeff",
        statement_position="1",
        source_file="scan.l",
        source_line="1240",
        source_function="scanner_yyerror",
    )
    logs = apply_migration_logs("0_init_production", diag, "\ufeff-- CreateSchema\nCREATE SCHEMA x;\n")
    assert f"\n\nPosition:\n{B}  0{X}\n{B}  1{R} \ufeff-- CreateSchema{X}\n\n" in logs
    assert 'message: "syntax error at or near \\u{feff}"' in logs
    assert "position: Some(Original(1))" in logs


def test_a_localized_server_keeps_its_severity_and_parses_the_english_one() -> None:
    diag = Diag(severity="ERREUR", sqlstate="42P01", message_primary="la relation « UserSession » n'existe pas")
    debug = db_error_debug(diag)
    assert debug.startswith('DbError { severity: "ERREUR", parsed_severity: Some(Error), code: SqlState(E42P01)')
    assert 'message: "la relation « UserSession » n\'existe pas"' in debug
    assert apply_migration_logs("m", diag, "x").count("ERREUR: la relation") == 1


def test_every_field_of_the_driver_error_is_rendered_in_declaration_order() -> None:
    diag = Diag(
        severity_nonlocalized=None,
        sqlstate="ZZ999",
        message_primary='a\tb\n"c"\\',
        message_detail="Key (id)=(1) already exists.",
        internal_position="3",
        internal_query="SELECT 'x'",
        context="PL/pgSQL function f() line 3",
        schema_name="Billing-Prod",
        table_name="item",
        column_name="id",
        datatype_name="int4",
        constraint_name="item_pkey",
    )
    assert db_error_debug(diag) == (
        'DbError { severity: "ERROR", parsed_severity: None, code: SqlState(Other("ZZ999")), '
        'message: "a\\tb\\n\\"c\\"\\\\", detail: Some("Key (id)=(1) already exists."), hint: None, '
        "position: Some(Internal { position: 3, query: \"SELECT 'x'\" }), "
        'where_: Some("PL/pgSQL function f() line 3"), schema: Some("Billing-Prod"), table: Some("item"), '
        'column: Some("id"), datatype: Some("int4"), constraint: Some("item_pkey"), file: None, line: None, '
        "routine: None }"
    )


def test_position_lines_follow_prismas_byte_count_and_rust_line_rules() -> None:
    # line 1 holds 4 characters but 8 bytes: Prisma adds bytes and compares with PostgreSQL's character
    # position, so position 9 (character 4 of line 2) is still counted on line 1 (8 + 1 >= 9)
    assert position_block("ÅÅÅÅ\nabcdef\n", 9).endswith(f"{B}  1{R} ÅÅÅÅ{X}")
    assert position_block("ÅÅÅÅ\nabcdef\n", 10).endswith(f"{B}  2{R} abcdef{X}")
    # CRLF: Rust's lines() drops the \r; a position past the last line gives no block at all
    assert position_block("SELECT 1;\r\nSELEC 2;\r\n", 12).endswith(f"{B}  2{R} SELEC 2;{X}")
    assert position_block("SELECT 1;\n", 99) == ""
    assert position_block("SELECT 1;\n", None) == ""
    # an empty line before the failing one is numbered without a trailing space
    assert f"{B}  1{X}\n{B}  2{R} x{X}" in position_block("\nx\n", 2)


def test_only_the_five_lines_before_the_failing_one_are_shown() -> None:
    script = "".join(f"l{n}\n" for n in range(1, 21))
    block = position_block(script, script.index("l12") + 1)
    shown = [ln.replace(B, "").replace(R, "").replace(X, "") for ln in block.split("Position:\n")[1].splitlines()]
    assert shown == ["  7 l7", "  8 l8", "  9 l9", " 10 l10", " 11 l11", " 12 l12"]


def test_the_message_template_is_prismas_p3018() -> None:
    assert P3018.startswith(HEADER + "\n\nMigration name: {name}\n\nDatabase error code: {code}\n\n")
    assert P3018.endswith("Database error:\n{error}\n")


@given(st.text())
def test_rust_debug_strings_are_quoted_and_hold_no_raw_control_characters(text: str) -> None:
    rendered = rust_str(text)
    assert rendered.startswith('"') and rendered.endswith('"')
    inner = rendered[1:-1]
    assert all(ch.isprintable() for ch in inner)
    # every quote inside is escaped, so the value cannot end early
    assert '"' not in inner.replace("\\\\", "").replace('\\"', "")


def test_the_error_a_failed_rows_logs_record_is_read_back_in_one_line() -> None:
    """trial11 F6: status names a failed migration's cause, read from its logs (Prisma's or pgrunbook's)."""
    from pgrunbook.prisma.logs import logs_error

    hint = "No function matches the given name and argument types. You might need to add explicit type casts."
    diag = Diag(sqlstate="42883", message_primary="function to_char(text, unknown) does not exist", message_hint=hint)
    logs = apply_migration_logs("m", diag, "SELECT to_char('x', 'y');\n")
    assert logs_error(logs) == f"42883 function to_char(text, unknown) does not exist; hint: {hint}"
    diag = Diag(
        sqlstate="23505",
        message_primary='could not create unique index "k"',
        message_detail="Key (browser)=(firefox) is duplicated.",
    )
    assert logs_error(apply_migration_logs("m", diag, "CREATE UNIQUE INDEX k ON t (browser);\n")) == (
        '23505 could not create unique index "k"; detail: Key (browser)=(firefox) is duplicated.'
    )
    assert logs_error(None) == "" and logs_error("some other Prisma error") == ""

"""Each lint rule fires on its dangerous form and stays silent on the safe one (docs/lint-rules.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgrunbook.prisma.lint import RULES, _Context, lint_files, lint_text

EXISTING = "-- the table exists before this migration\n"

CASES: list[tuple[str, str, str]] = [
    # rule, dangerous, safe
    (
        "adding-not-null-column-without-default",
        'ALTER TABLE "User" ADD COLUMN "age" INTEGER NOT NULL;',
        'ALTER TABLE "User" ADD COLUMN "age" INTEGER;',
    ),
    (
        "require-concurrent-index-creation",
        'CREATE INDEX "User_email_idx" ON "User"("email");',
        'CREATE INDEX CONCURRENTLY "User_email_idx" ON "User"("email");',
    ),
    ("require-concurrent-index-deletion", 'DROP INDEX "User_email_idx";', 'DROP INDEX CONCURRENTLY "User_email_idx";'),
    (
        "concurrently-in-multi-statement-script",
        'ALTER TABLE "User" ADD COLUMN "x" INT;\nCREATE INDEX CONCURRENTLY "i" ON "User"("x");',
        'CREATE INDEX CONCURRENTLY "i" ON "User"("x");',
    ),
    (
        "changing-column-type",
        'ALTER TABLE "User" ALTER COLUMN "age" SET DATA TYPE BIGINT;',
        'ALTER TABLE "User" ALTER COLUMN "age" SET DEFAULT 0;',
    ),
    (
        "constraint-missing-not-valid",
        'ALTER TABLE "Post" ADD CONSTRAINT "fk" FOREIGN KEY ("userId") REFERENCES "User"("id");',
        'ALTER TABLE "Post" ADD CONSTRAINT "fk" FOREIGN KEY ("userId") REFERENCES "User"("id") NOT VALID;',
    ),
    (
        "disallowed-unique-constraint",
        'ALTER TABLE "User" ADD CONSTRAINT "u" UNIQUE ("email");',
        'ALTER TABLE "User" ADD CONSTRAINT "u" UNIQUE USING INDEX "User_email_key";',
    ),
    (
        "setting-not-null",
        'ALTER TABLE "User" ALTER COLUMN "email" SET NOT NULL;',
        'ALTER TABLE "User" ALTER COLUMN "email" DROP NOT NULL;',
    ),
    (
        "adding-volatile-default",
        'ALTER TABLE "User" ADD COLUMN "token" UUID DEFAULT gen_random_uuid();',
        'ALTER TABLE "User" ADD COLUMN "seen" TIMESTAMPTZ DEFAULT now();',
    ),
    ("ban-drop-table", 'DROP TABLE "User";', 'DROP VIEW "UserView";'),
    ("ban-drop-column", 'ALTER TABLE "User" DROP COLUMN "age";', 'ALTER TABLE "User" ALTER COLUMN "age" DROP DEFAULT;'),
    ("ban-truncate", 'TRUNCATE "User";', 'DELETE FROM "User" WHERE "id" = 1;'),
    ("renaming-table", 'ALTER TABLE "User" RENAME TO "Account";', 'CREATE VIEW "Account" AS SELECT * FROM "User";'),
    (
        "renaming-column",
        'ALTER TABLE "User" RENAME COLUMN "name" TO "fullName";',
        'ALTER TABLE "User" ADD COLUMN "fullName" TEXT;',
    ),
    (
        "enum-value-removal-or-rename",
        "ALTER TYPE \"Role\" RENAME VALUE 'ADMIN' TO 'OWNER';",
        "CREATE TYPE \"Mood\" AS ENUM ('ok');",
    ),
    ("adding-enum-value", "ALTER TYPE \"Role\" ADD VALUE 'GUEST';", "CREATE TYPE \"Mood\" AS ENUM ('ok');"),
]


def rules_of(text: str, engine: str = "native") -> set[str]:
    return {f.rule for f in lint_text(EXISTING + text, "m.sql", _Context(engine=engine))}


@pytest.mark.parametrize(("rule", "dangerous", "safe"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_on_danger_and_not_on_the_safe_form(rule: str, dangerous: str, safe: str) -> None:
    assert rule in rules_of(dangerous)
    assert rule not in rules_of(safe)


def test_every_rule_has_a_case_and_a_row_in_the_docs() -> None:
    tested = {c[0] for c in CASES} | {"require-timeout-settings"}
    assert tested == set(RULES)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "lint-rules.md").read_text()
    for rule in RULES:
        assert f"`{rule}`" in docs, rule


def test_timeout_rule_only_for_the_prisma_engine() -> None:
    ddl = 'ALTER TABLE "User" ADD COLUMN "x" INT;'
    assert "require-timeout-settings" in rules_of(ddl, "prisma")
    assert "require-timeout-settings" not in rules_of(ddl, "native")
    assert "require-timeout-settings" not in rules_of("SET lock_timeout = '5s';\n" + ddl, "prisma")


def test_tables_created_in_the_same_migration_or_batch_are_not_flagged(tmp_path: Path) -> None:
    same = (
        'CREATE TABLE "Post" ("id" INT NOT NULL, "userId" INT);\nCREATE INDEX "p" ON "Post"("userId");\n'
        'ALTER TABLE "Post" ADD COLUMN "title" TEXT NOT NULL;'
    )
    assert lint_text(same, "m.sql") == []
    (tmp_path / "01").mkdir()
    (tmp_path / "01" / "migration.sql").write_text('CREATE TABLE "Post" ("id" INT);')
    (tmp_path / "02").mkdir()
    (tmp_path / "02" / "migration.sql").write_text('CREATE INDEX "p" ON "Post"("id");')
    files = [tmp_path / "01" / "migration.sql", tmp_path / "02" / "migration.sql"]
    assert lint_files(files) == []  # pending together: the table is still empty when the index is built
    assert [f.rule for f in lint_files(files[1:])] == ["require-concurrent-index-creation"]


def test_findings_carry_file_line_why_and_instead() -> None:
    text = 'CREATE TABLE "A" ("id" INT);\n\n-- a comment\nALTER TABLE "User" DROP COLUMN "age";\n'
    [f] = lint_text(text, "prisma/migrations/02/migration.sql")
    assert (f.file, f.line, f.rule, f.severity) == ("prisma/migrations/02/migration.sql", 4, "ban-drop-column", "error")
    assert "data loss" in f.why and f.instead


def test_ignore_comments() -> None:
    text = (
        '-- pgrunbook-lint-ignore: ban-drop-column\nALTER TABLE "User" DROP COLUMN "age";\n'
        'ALTER TABLE "User" DROP COLUMN "name";\n'
    )
    assert [f.line for f in lint_text(text, "m.sql")] == [3]
    assert lint_text("-- pgrunbook-lint-ignore-file: ban-drop-column\n" + text, "m.sql") == []


def test_syntax_error_is_a_finding_not_a_crash() -> None:
    [f] = lint_text("ALTER TABLE;", "m.sql")
    assert f.rule == "syntax-error" and f.severity == "error"


def test_concurrently_rule_follows_the_prisma_version(tmp_path: Path) -> None:
    """Prisma 7.4+ splits a file its splitter parses: CONCURRENTLY among other statements then applies."""
    mixed = tmp_path / "mixed.sql"
    mixed.write_text('ALTER TABLE "t" ADD COLUMN "c" INT;\nCREATE INDEX CONCURRENTLY "i" ON "t"("c");\n')
    unparsed = tmp_path / "unparsed.sql"  # sqlparser 0.61 cannot parse DO: Prisma 7 sends it whole
    unparsed.write_text('DO $$ BEGIN PERFORM 1; END $$;\nCREATE INDEX CONCURRENTLY "j" ON "t"("c");\n')
    rule = "concurrently-in-multi-statement-script"
    assert rule in {f.rule for f in lint_files([mixed], split=False)}
    assert rule not in {f.rule for f in lint_files([mixed], split=True)}
    assert rule in {f.rule for f in lint_files([unparsed], split=True)}


def test_index_advice_follows_the_prisma_version(tmp_path: Path) -> None:
    """trial7 #18: on Prisma 7.4+ the advice said 'alone in its own migration (Prisma sends a file as
    one script)', untrue there; where the file is sent whole (before 7.4, or unparsed) it still says so."""
    mixed = tmp_path / "mixed.sql"
    mixed.write_text('ALTER TABLE "t" ADD COLUMN "c" INT;\nCREATE INDEX "i" ON "t"("c");\n')
    unparsed = tmp_path / "unparsed.sql"
    unparsed.write_text('DO $$ BEGIN PERFORM 1; END $$;\nCREATE INDEX "j" ON "t"("c");\n')

    def advice(path: Path, split: bool) -> str:
        [f] = [f for f in lint_files([path], split=split) if f.rule == "require-concurrent-index-creation"]
        return f.instead

    assert "Prisma sends a file as one script" in advice(mixed, split=False)
    assert "one script" not in advice(mixed, split=True) and "each statement" in advice(mixed, split=True)
    assert "Prisma sends a file as one script" in advice(unparsed, split=True)


def _seed_migration(rows: int) -> str:
    """A Prisma seed migration: a table, then one INSERT per row (what `prisma db seed` dumps)."""
    head = 'CREATE TABLE "Seed" ("id" INT, "name" TEXT, "note" TEXT);\n'
    row = "INSERT INTO \"Seed\" VALUES ({i}, 'näme {i}', 'a note that makes the row longer');\n"
    tail = '-- a comment after the data\nALTER TABLE "User" DROP COLUMN "legacy";\n'
    return head + "".join(row.format(i=i) for i in range(rows)) + tail


def test_a_multi_megabyte_seed_migration_lints_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20: lint was quadratic in the file's size (16 MB: 255 s). Two checks that do not depend on
    the machine's speed: only DDL statements become Python syntax trees (work counted), and four times
    the file takes about four times as long, far from the sixteen a quadratic lint takes."""
    import time

    import pglast

    from pgrunbook.prisma import lint as lint_mod

    trees: list[str] = []
    real_parse = pglast.parse_sql

    def counting_parse(text: str):  # type: ignore[no-untyped-def]
        trees.append(text)
        return real_parse(text)

    monkeypatch.setattr(lint_mod.pglast, "parse_sql", counting_parse)
    small, large = _seed_migration(12_000), _seed_migration(48_000)  # about 1 MB and 4 MB
    assert len(large.encode()) > 3_500_000

    def timed(text: str) -> float:
        # this process's CPU time, not the wall clock: other processes' load on a shared 2-core machine
        # stretched the ~80 ms small case enough to fail the ratio (newuser14 M7)
        t0 = time.process_time()
        [f] = lint_text(text, "m.sql")
        elapsed = time.process_time() - t0
        assert f.rule == "ban-drop-column" and f.line == text.count("\n")  # the line after all the rows
        return elapsed

    # interleaved, best of five each: a burst of load on a shared machine hits both sizes alike
    pairs = [(timed(small), timed(large)) for _ in range(5)]
    t_small, t_large = min(p[0] for p in pairs), min(p[1] for p in pairs)
    assert len(trees) == 20  # CREATE TABLE and ALTER TABLE, five runs of two files: no INSERT became a tree
    assert t_large / t_small < 8, (t_small, t_large)


def test_lines_and_ignore_markers_after_multibyte_text() -> None:
    text = (
        "INSERT INTO t VALUES ('😀😀😀 ünïcödé');\n/* block\ncomment */\n"
        '-- pgrunbook-lint-ignore: ban-drop-column\nALTER TABLE "User" DROP COLUMN "a";\n'
        'ALTER TABLE "User" DROP COLUMN "b"; ALTER TABLE "User" DROP COLUMN "c";\n'
    )
    assert [(f.line, f.statement) for f in lint_text(text, "m.sql")] == [
        (6, 'ALTER TABLE "User" DROP COLUMN "b"'),
        (6, 'ALTER TABLE "User" DROP COLUMN "c"'),
    ]
    dollar = "SELECT $tä$ x $tö$ y $tö$ z $tä$;\n" + 'ALTER TABLE "User" DROP COLUMN "d";\n'
    assert [f.line for f in lint_text(dollar, "m.sql")] == [2]

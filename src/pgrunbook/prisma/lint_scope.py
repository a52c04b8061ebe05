"""Which migration files `migrate lint` reads: the ones given, else the environment's pending ones.

Apart from `prisma/lint.py`, which stays pure (SQL text in, findings out): choosing the pending
migrations asks the database for its migration history (`prisma/engine.py`).
"""

from __future__ import annotations

from pathlib import Path

from pgrunbook.config import Config
from pgrunbook.environment import Environment
from pgrunbook.errors import PgRunbookError
from pgrunbook.prisma.engine import migration_status
from pgrunbook.prisma.migrations_dir import read_migrations


def migration_files(config: Config, paths: list[Path], env_name: str | None, all_: bool) -> tuple[list[Path], str]:
    """Which files to lint and why (the scope's words for the report): the given paths (a folder means
    its ``*/migration.sql``), else the environment's pending migrations, or all of them with ``all_`` or
    when the database cannot be reached. A configuration error (exit code 3) is raised, not hidden."""
    if paths:
        files: list[Path] = []
        for p in paths:
            files.extend(sorted(p.glob("*/migration.sql"), key=lambda f: f.parent.name.encode()) if p.is_dir() else [p])
        return files, "given paths"
    migrations = [m for m in read_migrations(config.migrations_dir) if m.has_script]
    if all_:
        return [m.script_path for m in migrations], "all migrations"
    try:
        pending = set(migration_status(Environment.resolve(config, env_name)).pending)
    except PgRunbookError as exc:
        if exc.exit_code == 3:
            raise
        return [m.script_path for m in migrations], f"all migrations (database unreachable: {exc.message})"
    return [m.script_path for m in migrations if m.name in pending], "pending migrations"

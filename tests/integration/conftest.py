"""Fixtures of the integration tests that more than one module uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

CONFIG_TS = """\
import "dotenv/config";
import path from "node:path";
import { defineConfig, env } from "prisma/config";

export default defineConfig({
  schema: path.join("prisma", "schema.prisma"),
  migrations: {
    path: "db/migrations",
  },
  datasource: {
    url: env("APP_DB_URL"),
  },
});
"""

SCHEMA = 'generator client {\n  provider = "prisma-client"\n}\n\ndatasource db {\n  provider = "postgresql"\n}\n'

INIT = (
    '-- CreateTable\nCREATE TABLE "item" (\n    "id" SERIAL NOT NULL,\n'
    '    CONSTRAINT "item_pkey" PRIMARY KEY ("id")\n);\n'
)


@dataclass
class P7:
    """A Prisma 7 project: prisma.config.ts, migrations in db/migrations, URL in APP_DB_URL, no pgrunbook.toml."""

    root: Path
    base_url: str  # the database, without ?schema=
    environ: dict[str, str]

    def cli(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgrunbook", *args],
            cwd=self.root,
            env={**self.environ, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def migration(self, name: str, script: str) -> None:
        folder = self.root / "db" / "migrations" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "migration.sql").write_text(script)

    def use_schema(self, schema: str) -> str:
        url = f"{self.base_url}?schema={quote(schema, safe='')}"
        self.environ["APP_DB_URL"] = url
        return url

    def prisma_version(self, version: str) -> None:
        (self.root / "package.json").write_text(json.dumps({"devDependencies": {"prisma": version}}))


@pytest.fixture
def p7(tmp_path: Path, db: str) -> P7:
    root = tmp_path / "shop"
    (root / "prisma").mkdir(parents=True)
    (root / ".git").mkdir()  # the version search stops at the repository's root
    (root / "prisma.config.ts").write_text(CONFIG_TS)
    (root / "prisma" / "schema.prisma").write_text(SCHEMA)
    (root / "db" / "migrations").mkdir(parents=True)
    (root / "db" / "migrations" / "migration_lock.toml").write_text('provider = "postgresql"\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PGRUNBOOK_", "PG", "DATABASE_URL"))}
    environ["APP_DB_URL"] = db
    project = P7(root, db, environ)
    project.prisma_version("7.4.0")
    project.migration("20260101000000_init", INIT)
    return project

"""The migrations folder as Prisma reads it: every sub-folder in byte order of its name, each with a
``migration.sql``; ``migration_lock.toml`` names the provider."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pgrunbook.errors import ConfigError, printable
from pgrunbook.prisma.checksum import script_checksum


@dataclass(frozen=True)
class LocalMigration:
    name: str
    path: Path

    @property
    def script_path(self) -> Path:
        return self.path / "migration.sql"

    @property
    def has_script(self) -> bool:
        return self.script_path.is_file()

    @cached_property
    def script(self) -> bytes:
        try:
            return self.script_path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"migration {self.name!r} has no readable migration.sql ({exc.strerror})",
                hint=f"add {self.script_path} or remove the folder",
            ) from None

    @property
    def checksum(self) -> str:
        return script_checksum(self.script)


def read_migrations(folder: Path, *, provider: str = "postgresql") -> list[LocalMigration]:
    """Prisma's order (file names, byte-wise); a lock file for another provider is refused (P3019)."""
    if not folder.is_dir():
        raise ConfigError(
            f"migrations folder {folder} does not exist",
            hint="set [project] migrations in pgrunbook.toml to your prisma/migrations folder",
        )
    lock = folder / "migration_lock.toml"
    if lock.is_file():
        try:
            found = tomllib.loads(lock.read_text(encoding="utf-8")).get("provider")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{lock}: not valid TOML: {exc}") from None
        if found and found != provider:
            raise ConfigError(
                f"P3019: the migrations in {folder} are for provider {found!r}, not {provider!r} (migration_lock.toml)",
                hint="point [project] migrations at the PostgreSQL migrations",
            )
    dirs = [p for p in folder.iterdir() if p.is_dir()]
    for p in dirs:
        if printable(p.name, one_line=True) != p.name:
            raise ConfigError(
                f"migration folder '{printable(p.name, one_line=True)}' in {folder} holds a control character: "
                "its name would print as another line (or reorder text) in every status and deploy",
                hint="rename the folder without it (Prisma names them <timestamp>_<name>); nothing was applied",
            )
    return [LocalMigration(p.name, p) for p in sorted(dirs, key=lambda p: p.name.encode())]

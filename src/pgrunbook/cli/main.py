"""``pgrunbook``: a thin click layer over the library. The commands live in one module per group
(backup, migrate, restore, procedures, monitor, misc); importing them registers them on the group."""

from __future__ import annotations

from pgrunbook.cli import backup, migrate, misc, monitor, procedures, restore
from pgrunbook.cli.app import cli

COMMAND_MODULES = (backup, migrate, misc, monitor, procedures, restore)


def main() -> None:
    cli(prog_name="pgrunbook")

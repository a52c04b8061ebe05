"""Start-up time (SPEC "Performance"): the root group loads a command's module only when that command
is looked up (pgrunbook.cli.app.COMMANDS), and the modules load their library inside the commands.
So help and version load no library at all. Not a timing test: it lists the modules the real command
line loads (tests/startup_probe.py); tests/integration/test_startup.py does the same for commands
that connect."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import pgrunbook.cli
from pgrunbook.cli.app import COMMANDS, cli
from tests.startup_probe import LIBRARIES, loaded, modules_after

# Command line -> what it must not load. Help and version need click, nothing else: not even rich
# (the consoles are made when a command first prints through them, pgrunbook.cli.render.Output).
NOTHING_BUT_THE_CLI = (*LIBRARIES, "rich", "pgrunbook.config", "pgrunbook.environment", "pgrunbook.journal")
ENGINES_AND_ABOVE = ("pgrunbook.backup", "pgrunbook.prisma", "pgrunbook.procedures", "pgrunbook.monitor")
MUST_NOT_LOAD = {
    ("--help",): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
    ("--version",): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
    ("restore", "--help"): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
    ("status", "--help"): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
    ("backup", "--help"): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
    ("backup", "list", "--help"): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
    ("migrate", "deploy", "--help"): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
    ("deploy", "--help"): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
    ("serve", "--help"): NOTHING_BUT_THE_CLI + ENGINES_AND_ABOVE,
}


@pytest.mark.parametrize("args", sorted(MUST_NOT_LOAD), ids=" ".join)
def test_help_and_version_load_no_library(args: tuple[str, ...], tmp_path: Path) -> None:
    modules, code = modules_after(list(args), tmp_path)
    assert code == 0
    assert "click" in modules  # the probe did run the command line
    assert loaded(modules, MUST_NOT_LOAD[args]) == []


def test_help_still_lists_every_command() -> None:
    """Loading lazily must not hide a command from ``pgrunbook --help``."""
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"], prog_name="pgrunbook")
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMANDS)


def test_the_lazy_table_names_every_command_and_its_module() -> None:
    """Every command a cli module defines is in COMMANDS under the module that defines it, and every
    entry of COMMANDS exists: a new command cannot be left out of the lazy table unnoticed."""
    folder = Path(pgrunbook.cli.__file__).parent
    for info in pkgutil.iter_modules([str(folder)]):
        importlib.import_module(f"pgrunbook.cli.{info.name}")
    defined = {name: command.callback.__module__ for name, command in cli.commands.items() if command.callback}
    assert defined == COMMANDS


@pytest.mark.parametrize(
    ("typo", "suggested"), [("bakup", "backup"), ("restor", "restore"), ("stauts", "status"), ("dotcor", "doctor")]
)
def test_a_mistyped_command_is_still_given_its_suggestion(typo: str, suggested: str, tmp_path: Path) -> None:
    """click suggests from the commands loaded so far; in a fresh process with lazy loading that is none
    (trial8 #6), so a typo must load them all before click looks."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "pgrunbook", typo, "list"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert r.returncode != 0
    assert r.stderr.splitlines()[0] == f"error: No such command '{typo}'. Did you mean '{suggested}'?"

"""The CLI's entry point: what it does around every command."""

from __future__ import annotations

import gc
import sys

import pytest

from pgrunbook.cli.main import main


def test_the_entry_point_freezes_what_outlives_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded modules and the command's objects are moved out of the cyclic collector's way (gc.freeze),
    before the command runs and again before exiting: neither the command's own collections nor the
    one at exit walk them again (bench/restore_fixed_costs.py measured the CPU this saves)."""
    gc.unfreeze()
    monkeypatch.setattr(sys, "argv", ["pgrunbook", "--version"])
    try:
        try:
            main()
        except SystemExit as ended:
            assert ended.code in (0, None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the test process goes on collecting as usual


@pytest.mark.parametrize(
    ("argv", "commands"),
    [
        (["backup"], "copy, create, list, prune, verify"),
        (["migrate"], "deploy, lint, resolve"),
        (["--json", "backup"], "copy, create, list, prune, verify"),
        ([], "backup, check, demo"),
    ],
)
def test_a_group_without_its_command_says_so_and_shows_its_usage(argv: list[str], commands: str) -> None:
    """`pgrunbook backup` alone: one error line naming the commands it takes, the group's usage, a hint,
    exit 3 (SPEC: usage error); nothing on stdout, even with --json. Before: the help text itself was the
    error line ("error: Usage: ...")."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "pgrunbook", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stdout == "", r
    lines = r.stderr.splitlines()
    path = " ".join(["pgrunbook", *[a for a in argv if not a.startswith("-")]])
    assert lines[0].startswith(f"error: {path} needs a command: one of {commands}"), r.stderr
    assert [x for x in lines if x.startswith("error:")] == [lines[0]]
    assert lines[1].startswith(f"Usage: {path} [OPTIONS] COMMAND") and "Commands:" in r.stderr
    assert lines[-1] == f"hint: {path} COMMAND --help shows a command's options"

"""The CLI's entry point: what it does around every command."""

from __future__ import annotations

import gc
import subprocess
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


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgrunbook", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("argv", "path", "commands", "hint"),
    [
        (["backup", "--json"], "pgrunbook backup", "copy, create, list, prune, verify", "pgrunbook backup list --json"),
        (["backup", "--env", "prod"], "pgrunbook backup", "copy, create", "pgrunbook backup list --env prod"),
        (["backup", "--drill"], "pgrunbook backup", "copy, create", "pgrunbook backup verify BACKUP_ID --drill"),
        (["migrate", "--json"], "pgrunbook migrate", "deploy, lint, resolve", "pgrunbook migrate lint --json"),
        (["migrate", "--dry-run"], "pgrunbook migrate", "deploy, lint, resolve", "pgrunbook migrate deploy --dry-run"),
        (["--json", "backup", "--json"], "pgrunbook backup", "copy, create", "pgrunbook backup list --json"),
        (["--env", "prod"], "pgrunbook", "backup, check, demo", "pgrunbook status --env prod"),
        (["--json", "--into", "x"], "pgrunbook", "backup, check", "pgrunbook --json restore BACKUP_ID --into x"),
        (["--json"], "pgrunbook", "backup, check, demo", "pgrunbook --json status"),
        (["--config", "x.toml"], "pgrunbook", "backup, check, demo", "pgrunbook --config x.toml status"),
    ],
)
def test_options_without_a_command_get_the_groups_error_and_where_they_go(
    argv: list[str], path: str, commands: str, hint: str
) -> None:
    """`pgrunbook backup --json` (a command's option given to the group, no command): the group's own
    error as for `pgrunbook backup` alone, its usage, and a hint with the option after a command that
    takes it; exit 3. Before: click's "No such option '--json'" (and "Missing command." for
    `pgrunbook --json`, an option of the group itself). Every group, every such option (trial #1)."""
    r = _run(argv)
    assert r.returncode == 3 and r.stdout == "", r
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"error: {path} needs a command: one of {commands}"), r.stderr
    assert [x for x in lines if x.startswith("error:")] == [lines[0]], r.stderr
    assert lines[1].startswith(f"Usage: {path} [OPTIONS] COMMAND") and "Commands:" in r.stderr
    assert lines[-1].startswith("hint: ") and lines[-1].split(": ", 2)[-1].split("; ")[0].endswith(hint), r.stderr
    assert "No such option" not in r.stderr and "Missing command" not in r.stderr


@pytest.mark.parametrize(
    ("argv", "error", "hint"),
    [
        (
            ["backup", "--json", "list"],
            "error: --json is an option of pgrunbook backup list, not of pgrunbook backup: it goes after the command",
            "hint: pgrunbook backup list --json",
        ),
        (
            ["--env", "prod", "backup", "list"],
            "error: --env is an option of pgrunbook backup list, not of pgrunbook: it goes after the command",
            "hint: pgrunbook backup list --env prod",
        ),
        (
            ["migrate", "--dry-run=1", "deploy"],
            "error: --dry-run is an option of pgrunbook migrate deploy, not of pgrunbook migrate: it goes after "
            "the command",
            "hint: pgrunbook migrate deploy --dry-run=1",
        ),
        (
            ["backup", "--drill", "list"],
            "error: --drill is not an option of pgrunbook backup nor of pgrunbook backup list",
            "hint: pgrunbook backup verify takes it: pgrunbook backup verify BACKUP_ID --drill",
        ),
    ],
)
def test_a_commands_option_before_the_command_says_where_it_goes(argv: list[str], error: str, hint: str) -> None:
    """A command's option typed before the command: one error line naming the command that takes it,
    the corrected command line as the hint, exit 3 (was: "No such option")."""
    r = _run(argv)
    assert r.returncode == 3 and r.stdout == "", r
    assert r.stderr.splitlines() == [error, hint], r.stderr


@pytest.mark.parametrize("argv", [["backup", "--bogus"], ["--bogus"], ["backup", "list", "--bogus"]])
def test_an_option_no_command_takes_stays_unknown(argv: list[str]) -> None:
    """An option no command takes is not sent after a command: click's "No such option" and --help."""
    r = _run(argv)
    assert r.returncode == 3 and r.stdout == "", r
    lines = r.stderr.splitlines()
    assert lines[0] == "error: No such option '--bogus'." and lines[-1].startswith("hint: pgrunbook"), r.stderr


def test_a_misplaced_options_hint_never_repeats_a_password() -> None:
    """The hint repeats the user's arguments in their place: a URL's password among them is masked."""
    r = _run(["backup", "--to", "s3://AKID:wJalrXUtnFEMIsecret@bucket/x", "copy", "ID"])
    assert r.returncode == 3, r
    assert "wJalrXUtnFEMIsecret" not in r.stderr and r.stderr.splitlines()[-1].startswith(
        "hint: pgrunbook backup copy --to s3://***@bucket/x ID"
    ), r.stderr

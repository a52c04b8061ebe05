"""The journal's step observer: how a terminal shows a procedure live. SQLite in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pgrunbook.cli.render import step_line
from pgrunbook.journal import Journal, RunRecord, unsettled


def _journal(tmp_path: Path) -> tuple[Journal, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    journal = Journal(tmp_path / "journal.db", secrets=["s3cr3t"])
    journal.on_step = seen.append
    return journal, seen


def test_each_step_is_told_as_it_starts_and_as_it_ends(tmp_path: Path) -> None:
    journal, seen = _journal(tmp_path)
    run = journal.start("deploy", "production")
    with run.step("maintenance on") as info:
        assert [(s["name"], s["status"]) for s in seen] == [("maintenance on", "running")]  # before the work
        info["detail"] = "hook ran"
    with pytest.raises(RuntimeError), run.step("migrate"):
        raise RuntimeError("22012 division by zero, password s3cr3t")
    run.skip("health", "nothing migrated")
    assert [(s["name"], s["status"]) for s in seen] == [
        ("maintenance on", "running"),
        ("maintenance on", "succeeded"),
        ("migrate", "running"),
        ("migrate", "failed"),
        ("health", "skipped"),
    ]
    assert seen[1]["detail"] == "hook ran" and seen[1]["duration_s"] >= 0
    assert "s3cr3t" not in seen[3]["detail"] and "division by zero" in seen[3]["detail"]  # redacted as the row


def test_a_broken_observer_never_breaks_the_procedure(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")

    def broken(_: dict[str, Any]) -> None:
        raise BrokenPipeError("the terminal went away")

    journal.on_step = broken
    run = journal.start("rollback", "production")
    with run.step("app rollback") as info:
        info["detail"] = "done"
    assert [(s.name, s.status, s.detail) for s in journal.runs()[0].steps] == [("app rollback", "succeeded", "done")]


def test_step_lines_align_their_marks_and_escape_names() -> None:
    running = step_line({"name": "restore [db]", "status": "running"})
    done = step_line({"name": "restore [db]", "status": "succeeded", "duration_s": 1.25, "detail": "into x"})
    failed = step_line({"name": "migrate", "status": "failed", "duration_s": 0, "detail": "boom"})
    assert running == "  [yellow]   …[/]  restore \\[db]"  # no duration while it runs
    assert done == "  [green]  ok[/]  restore \\[db] (1.2s) into x"
    assert failed == "  [red]FAIL[/]  migrate (0.0s) boom"


def _record(kind: str, started: str, outcome: str, *, dead: bool) -> RunRecord:
    import socket
    import subprocess

    pid = os.getpid()
    if dead:  # a process that has ended: its pid is free (the kernel does not reuse it this soon)
        child = subprocess.Popen(["true"])
        child.wait()
        pid = child.pid
    return RunRecord(
        f"{started}-{kind}", kind, "production", started, None, outcome, "u", socket.gethostname(), pid, {}, "", ""
    )


@pytest.mark.parametrize(
    "later, reported",
    [
        (None, True),  # nothing since: the note is a task
        (("restore", "succeeded"), False),  # the same kind ran to its end since: history
        (("restore", "rolled_back"), False),
        (("restore", "failed"), True),  # a failed retry settles nothing
        (("backup", "succeeded"), True),  # another kind says nothing of the restore's leftovers
    ],
)
def test_an_interrupted_run_is_reported_until_a_later_run_of_its_kind_finishes(
    later: tuple[str, str] | None, reported: bool
) -> None:
    """A re-trial's finding: doctor warned of a killed in-place restore forever, even after a later
    restore had succeeded and the leftover was dropped; nothing could clear it."""
    killed = _record("restore", "2026-12-01T01:00:00Z", "running", dead=True)
    records = [killed]
    if later is not None:
        records.insert(0, _record(later[0], "2026-12-01T02:00:00Z", later[1], dead=False))
    assert killed.interrupted
    assert (unsettled(records) == [killed]) is reported
    older = _record("restore", "2026-12-01T00:00:00Z", "succeeded", dead=False)
    assert (unsettled([killed, older]) == [killed]) is True  # only a later run settles it

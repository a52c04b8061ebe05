"""The journal's step observer: how a terminal shows a procedure live. SQLite in a temp folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgrunbook.cli.render import step_line
from pgrunbook.journal import Journal


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

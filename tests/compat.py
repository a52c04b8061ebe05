"""The compatibility matrix: the version suite (tests/versions, pytest -m versions) records one cell per
(server major, tools major, operation) it ran; ``python -m tests.compat`` then writes the matrix into
docs/compatibility.md between its markers, so the page says what the last CI run proved (scripts/test-majors
runs both).

A cell is "ok" (the operation ran and was verified) or "refused" (pgrunbook refused before touching
anything, with one error line naming what to install).
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

OUT_VAR = "PGRUNBOOK_COMPAT_OUT"
START, END = "<!-- matrix: written by tests/compat.py -->", "<!-- end of matrix -->"
OPERATIONS = [
    "backup",
    "drill",
    "restore --into",
    "restore --in-place",
    "deploy + automatic rollback",
    "migrate deploy/status",
    "drift vs 15",
    "restore with older tools",
]


def record(server: int, tools: int, operation: str, result: str, detail: str = "") -> None:
    """One cell, appended to $PGRUNBOOK_COMPAT_OUT/cells.jsonl when the variable is set."""
    folder = os.environ.get(OUT_VAR)
    if not folder:
        return
    assert operation in OPERATIONS and result in ("ok", "refused"), (operation, result)
    Path(folder).mkdir(parents=True, exist_ok=True)
    row = {"server": server, "tools": tools, "operation": operation, "result": result, "detail": detail[:800]}
    with open(Path(folder) / "cells.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def matrix(cells: list[dict]) -> str:
    """Markdown: one row per (server, tools), one column per operation; refusals listed below."""
    grid: dict[tuple[int, int], dict[str, str]] = defaultdict(dict)
    refusals: dict[str, str] = {}
    for c in cells:
        grid[(c["server"], c["tools"])][c["operation"]] = c["result"]
        if c["result"] == "refused":
            refusals.setdefault(f"server {c['server']}, tools {c['tools']}, {c['operation']}", c["detail"])
    lines = [
        "| server | tools | " + " | ".join(OPERATIONS) + " |",
        "|---|---|" + "---|" * len(OPERATIONS),
    ]
    for (server, tools), row in sorted(grid.items()):
        marks = [{"ok": "ok", "refused": "refused"}.get(row.get(op, ""), "–") for op in OPERATIONS]
        lines.append(f"| {server} | {tools} | " + " | ".join(marks) + " |")
    if refusals:
        lines += ["", "Refusals (before anything was touched), the error and hint lines each printed:", ""]
        lines += [f"- {k}: `{v}`" for k, v in sorted(refusals.items())]
    return "\n".join(lines)


def write(cells_file: Path, doc: Path) -> None:
    cells = [json.loads(ln) for ln in cells_file.read_text().splitlines() if ln.strip()]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{START}\nWritten by the CI run of {stamp} ({len(cells)} cells).\n\n{matrix(cells)}\n{END}"
    text = doc.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{block}{tail}")


if __name__ == "__main__":
    write(Path(sys.argv[1]), Path(sys.argv[2]))

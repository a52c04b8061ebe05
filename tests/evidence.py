"""The reliability suite's figures, counted while the tests run and written to docs/RELIABILITY.md.

Tests record what they inject and what they check; the counts are never typed by hand. The file is
rewritten only after a full run in which every reliability-relevant test passed.
"""

from __future__ import annotations

import platform
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

COUNTS: Counter[str] = Counter()
FAULTS: Counter[str] = Counter()
BAD_INPUTS: Counter[str] = Counter()
DATA_LOSS: Counter[str] = Counter()


def fault(kind: str) -> None:
    """A fault was injected and the test went on to prove nothing was lost."""
    FAULTS[kind] += 1


def data_loss_scenario(kind: str) -> None:
    """A way to lose data was tried (delete or restore what is not pgrunbook's) and the test went on to
    prove that nothing of anyone else's was deleted, overwritten or restored over."""
    DATA_LOSS[kind] += 1


def bad_input(kind: str) -> None:
    BAD_INPUTS[kind] += 1


def output_checked(text: str, *, traceback: bool, secret: bool) -> None:
    """Every output a test inspected for tracebacks and secrets; the findings are counted too."""
    COUNTS["outputs checked"] += 1
    COUNTS["tracebacks shown"] += int(traceback)
    COUNTS["secrets found"] += int(secret)


def write(path: Path, passed: int, failed: int) -> None:
    pg = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
    rows = [
        ("faults injected and survived", sum(FAULTS.values())),
        ("data lost", 0 if failed == 0 else "see failures"),
        (
            "data-loss scenarios tried (other content, links, shared storage, rotted copies, templates)",
            sum(DATA_LOSS.values()),
        ),
        ("bad inputs tried", sum(BAD_INPUTS.values())),
        ("outputs checked for tracebacks and secrets", COUNTS["outputs checked"]),
        ("tracebacks shown", COUNTS["tracebacks shown"]),
        ("secrets found", COUNTS["secrets found"]),
    ]
    lines = [
        "# Reliability",
        "",
        "<!-- written by the test suite (tests/evidence.py) after a full passing run; do not edit by hand -->",
        "",
        "What pgrunbook promises, and the suite that checks it on every CI run:",
        "",
        "- **Nothing is lost.** A backup is listed, counted by retention or restorable only once its manifest",
        "  is written, last and atomically; a killed, failed or full-disk backup leaves only leftovers that",
        "  the next prune removes. Restores check the backup before touching any database, and never",
        "  overwrite the live database (in place = restore into a new one, then swap names; the old one is",
        "  kept); a restore killed or cut off by the server is marked unfinished, never put into use, and",
        "  replaced by the next run. Deploys take a verified backup before any migration and can be resumed",
        "  or rolled back, also when the server crashes mid-migration.",
        "- **No partial backup is ever listed** (SIGKILL mid-dump, storage server killed mid-upload, disk full).",
        "- **No secret leaks**: passwords and S3 keys never in argv (`/proc/*/cmdline` read during a backup),",
        "  output, manifests or journal rows.",
        "- **Protected environments are never changed without confirmation** (`--confirm <dbname>`).",
        "",
        f"Last full run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {passed} tests passed, {failed} failed; "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, {pg}.",
        "",
        "| figure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "Faults injected, by kind:",
        "",
        "| fault | times |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(FAULTS.items())],
        "",
        "Data-loss scenarios tried, by kind (issue 20, Kind 1):",
        "",
        "| scenario | times |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(DATA_LOSS.items())],
        "",
        "Bad inputs tried, by kind (each: one `error:` line, the SPEC's exit code, no traceback, no secret):",
        "",
        "| input | times |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(BAD_INPUTS.items())],
        "",
    ]
    path.write_text("\n".join(lines))

"""One command for all the figures: backup, restore and migrations benchmarks, side by side with the
plain PostgreSQL tools, written to bench/RESULTS.md with a description of the machine.

    .venv/bin/python bench/run_all.py [--size-mb 1024] [--runs 3]

Each benchmark builds its own dataset on a throwaway cluster; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    mem = ""
    try:
        kb = int(
            next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        )
        mem = f", {kb / 1024 / 1024:.0f} GiB memory"
    except (OSError, StopIteration, ValueError):
        pass
    pg = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {pg}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sections = []
    for script, extra in (
        ("backup_bench.py", ["--size-mb", str(args.size_mb), "--runs", str(args.runs)]),
        ("restore_bench.py", ["--size-mb", str(args.size_mb), "--runs", str(args.runs)]),
        ("migrations_bench.py", ["--runs", "5"]),
        ("lint_bench.py", ["--size-mb", "50", "--runs", str(args.runs)]),
    ):
        print(f"running {script} ...", file=sys.stderr)
        out = subprocess.run(
            [sys.executable, str(HERE / script), *extra], check=True, capture_output=True, text=True
        ).stdout
        print(out)
        sections.append(out.strip())
    text = "\n\n".join(
        [
            "# Benchmark results",
            f"Written by `bench/run_all.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            f"Machine: {machine()}.",
            *sections,
        ]
    )
    (HERE / "RESULTS.md").write_text(text + "\n")
    print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""`migrate lint` on a large seed migration: linear in the file's size (issue 20: 16 MB took 255 s).

    .venv/bin/python bench/lint_bench.py [--size-mb 50] [--runs 3]

A Prisma seed migration as `prisma db seed` dumps it: one table, then one INSERT per row (with
non-ASCII text), then one dangerous ALTER at the end. Printed: the library call for a quarter of the
size and for the full size (median of --runs each), their ratio (4 for linear growth, 16 for
quadratic), and the whole `pgrunbook migrate lint` command (process start and file read included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pgrunbook.prisma.lint import lint_text


def seed_migration(size_bytes: int) -> str:
    head = 'CREATE TABLE "Seed" ("id" INT, "name" TEXT, "note" TEXT);\n'
    parts, total, i = [head], len(head), 0
    while total < size_bytes:
        row = f"INSERT INTO \"Seed\" VALUES ({i}, 'näme {i}', 'a note that makes the row longer');\n"
        parts.append(row)
        total += len(row.encode())
        i += 1
    parts.append('ALTER TABLE "User" DROP COLUMN "legacy";\n')
    return "".join(parts)


def timed(text: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        findings = lint_text(text, "migration.sql")
        times.append(time.perf_counter() - t0)
    assert [f.rule for f in findings] == ["ban-drop-column"], findings
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = int(args.size_mb * 1e6)
    quarter, full = seed_migration(size // 4), seed_migration(size)
    t_quarter, t_full = timed(quarter, args.runs), timed(full, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "prisma" / "migrations" / "20240101000000_seed"
        folder.mkdir(parents=True)
        (folder / "migration.sql").write_text(full)
        (Path(tmp) / "pgrunbook.toml").write_text('[project]\nmigrations = "prisma/migrations"\n')
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "pgrunbook", "migrate", "lint", str(folder / "migration.sql")],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        t_cli = time.perf_counter() - t0
    assert "ban-drop-column" in r.stdout + r.stderr, (r.stdout, r.stderr)
    print("## migrate lint on a seed migration")
    print()
    print("| file | lint_text (median) |")
    print("|---|---|")
    print(f"| {len(quarter.encode()) / 1e6:.1f} MB | {t_quarter:.2f} s |")
    print(f"| {len(full.encode()) / 1e6:.1f} MB | {t_full:.2f} s |")
    print()
    print(
        f"Growth for 4x the size: {t_full / t_quarter:.1f}x (linear: 4, quadratic: 16). "
        f"`pgrunbook migrate lint` on the {len(full.encode()) / 1e6:.0f} MB file: {t_cli:.1f} s."
    )


if __name__ == "__main__":
    main()

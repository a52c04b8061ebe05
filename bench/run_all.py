"""One command for all the figures: backup, restore and migrations benchmarks, side by side with the
plain PostgreSQL tools, written to bench/RESULTS.md with a description of the machine.

    .venv/bin/python bench/run_all.py [--size-mb 1024] [--runs 3] [--majors 15,18] [--seed-dump FILE]

Backup and restore are measured once per PostgreSQL major in --majors, each against the plain tools of
that same major (server and client tools: 15 from the system, the others from scripts/pg-majors), on
the same data: generated once (--size-mb) into a custom-format seed dump that every major's throwaway
cluster loads (or --seed-dump). Migrations and lint are measured once. Nothing else should run meanwhile:
on a shared machine, run it under the bench lock (`flock /work/notes/bench.lock ...`); the load average
at the start and end of every benchmark is printed with its table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def major_bins(majors: list[int]) -> dict[int, list[str]]:
    """Per major, the arguments naming its server and client tools: none for the system's own (15 on
    Debian 12), else the folders scripts/pg-majors fetched (it prints "server|tools MAJOR DIR")."""
    bins: dict[int, list[str]] = {m: [] for m in majors}
    if any(m != 15 for m in majors):
        out = subprocess.run([str(ROOT / "scripts" / "pg-majors")], check=True, capture_output=True, text=True).stdout
        found = {(kind, int(major)): path for kind, major, path in (ln.split() for ln in out.splitlines())}
        for m in majors:
            if m != 15:
                bins[m] = ["--server-bin", found[("server", m)], "--tools", found[("tools", m)]]
    return bins


def seed(size_mb: int, work: Path) -> str:
    """Generate the benchmark database once (backup_bench.generate) and keep it as a custom-format dump."""
    sys.path.insert(0, str(HERE))
    import psycopg

    from backup_bench import generate
    from pgrunbook.postgres.cluster import LocalCluster
    from pgrunbook.postgres.runner import connection
    from pgrunbook.postgres.url import parse_database_url

    path = work / "seed.dump"
    with LocalCluster(name="pgrunbook-bench-seed") as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        print(f"generating ~{size_mb} MB ...", file=sys.stderr)
        generate(cluster.url("bench"), size_mb)
        target = parse_database_url(cluster.url("bench"))
        subprocess.run(
            ["pg_dump", "-Fc", "-Z0", "-f", str(path), target.conninfo()],
            env={**os.environ, **connection(target).env},
            check=True,
        )
    return str(path)


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
    ap.add_argument("--majors", default="15,18", help="PostgreSQL majors to measure backup and restore on")
    ap.add_argument("--seed-dump", help="a custom-format dump of the benchmark database (else generated)")
    args = ap.parse_args()
    majors = [int(m) for m in args.majors.split(",")]
    bins = major_bins(majors)
    work = Path(tempfile.mkdtemp(prefix="pgrunbook-bench-all-"))
    seed_dump = args.seed_dump or seed(args.size_mb, work)
    sections = []
    runs = ["--runs", str(args.runs), "--seed-dump", seed_dump]
    benches = [(script, [*runs, *bins[m]]) for m in majors for script in ("backup_bench.py", "restore_bench.py")]
    for script, extra in (
        *benches,
        ("migrations_bench.py", ["--runs", "5"]),
        ("lint_bench.py", ["--size-mb", "50", "--runs", str(args.runs)]),
    ):
        print(f"running {script} {' '.join(extra)} ...", file=sys.stderr)
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
    (work / "seed.dump").unlink(missing_ok=True)
    work.rmdir()
    print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()

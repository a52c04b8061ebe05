"""What `pgrunbook restore --into` costs on top of pg_restore itself: its fixed costs, on a tiny database.

    .venv/bin/python bench/restore_fixed_costs.py [--runs 5] [--size-mb 2] [--server-bin DIR] [--tools DIR]
        [--profile]

On a database of a few MB pg_restore's own work is ~0, so what is left of the wall time is what pgrunbook
adds to every restore whatever its size: Python's start-up and imports, the configuration, journal,
manifest, choice of tools, connections, the pre-flight, the database's creation, the verification and
the exit. The table gives the median of --runs restores: the wall time, the journal's steps, and the
wall time outside them. ``--profile`` adds one restore under cProfile (wall clock, main thread: the
functions that took longest, waits included) and one under strace (every process started and every
connection opened, in milliseconds from the start).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from backup_bench import add_setup_arguments, compile_pgrunbook, load_average, throwaway_cluster
from pgrunbook.postgres.runner import connection
from pgrunbook.postgres.tools import ClientTools, find_client_tools
from pgrunbook.postgres.url import parse_database_url
from restore_bench import durable, settle_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="one more restore under cProfile, one under strace")
    add_setup_arguments(ap)
    args = ap.parse_args()
    load_start = load_average()
    compile_pgrunbook()
    work = Path(tempfile.mkdtemp(prefix="pgrunbook-bench-fixed-"))
    cluster, url, db_size = throwaway_cluster(args)
    try:
        settle_source(url)
        durable(cluster.url())
        import psycopg

        with psycopg.connect(url) as conn:
            server = conn.info.server_version
        tools = find_client_tools(server // 10000, str(server), args.tools)
        env = {**os.environ, **connection(parse_database_url(url)).env, "DATABASE_URL": url}
        cfg = work / "pgrunbook.toml"
        cfg.write_text(
            f'[backup]\nstorage = "{work / "store"}"\n[restore]\nmethod = "parallel"\njobs = 2\n'
            f'[postgres]\nbin_dir = "{tools.folder}"\n'
        )
        cli = [str(Path(sys.executable).parent / "pgrunbook"), "--config", str(cfg)]
        backup_id = subprocess.run(
            [*cli, "backup", "create"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        counter = [0]

        def drop(name: str) -> None:
            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
                conn.execute("CHECKPOINT")

        def restore(prefix: list[str] | None = None) -> tuple[float, dict[str, float]]:
            counter[0] += 1
            name = f"r{counter[0]}"
            t0 = time.perf_counter()
            subprocess.run(
                [*(prefix or []), *cli, "restore", backup_id, "--into", name], env=env, check=True, capture_output=True
            )
            wall = time.perf_counter() - t0
            last = json.loads(
                subprocess.run(
                    [*cli, "--json", "runs", "--limit", "1"], env=env, check=True, capture_output=True, text=True
                ).stdout
            )[0]
            drop(name)
            return wall, {s["name"]: float(s["duration_s"]) for s in last["steps"]}

        start_up = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            imports = "import pgrunbook.cli.main, pgrunbook.procedures.restore"
            subprocess.run([sys.executable, "-c", imports], check=True)
            start_up.append(time.perf_counter() - t0)
        restore()  # warms the page cache and the journal
        results = [restore() for _ in range(args.runs)]
        walls = [w for w, _ in results]
        names = list(results[0][1])
        print(f"\n## Fixed costs of `pgrunbook restore --into` (database {db_size / 1e6:.1f} MB, {versions(tools)})")
        print(f"median of {args.runs}; load average {load_start} -> {load_average()}\n")
        print("| phase | ms |\n|---|---|")
        print(f"| Python start-up + imports of the restore path (measured apart) | {ms(start_up)} |")
        for n in names:
            print(f"| step: {n} | {ms([s.get(n, 0.0) for _, s in results])} |")
        outside = [w - sum(s.values()) for w, s in results]
        print(f"| outside the steps (start-up, config, journal, tools, connections, exit) | {ms(outside)} |")
        print(f"| **wall time** | **{ms(walls)}** |")
        if args.profile:
            profile(restore, work)
    finally:
        cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def versions(tools: ClientTools) -> str:
    return f"pg_restore {tools.version.text}"


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}"


Restore = Callable[[list[str] | None], tuple[float, dict[str, float]]]


def profile(run: Restore, work: Path) -> None:
    """One restore under cProfile, one under strace; their summaries."""
    import pstats

    prof = work / "restore.prof"
    run([sys.executable, "-m", "cProfile", "-o", str(prof)])
    print("\n### cProfile (wall clock, main thread), by cumulative time\n```")
    pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(45)
    print("```")
    if not shutil.which("strace"):
        print("(strace not installed: no process/connection timeline)")
        return
    trace = work / "restore.strace"
    run(["strace", "-f", "-ttt", "-e", "trace=execve,connect,exit_group", "-o", str(trace)])
    lines = trace.read_text().splitlines()
    t0 = float(lines[0].split()[1])
    print("\n### strace: processes started and connections opened (ms from the start)\n```")
    for line in lines:
        pid, stamp, rest = line.split(None, 2)
        if rest.startswith("execve(") and "= 0" in rest:
            what = re.match(r'execve\("([^"]+)", \[([^\]]*)\]', rest)
            argv = what.group(2)[:110] if what else rest[:110]
            print(f"{(float(stamp) - t0) * 1000:8.1f}  {pid:>7} start {argv}")
        elif rest.startswith("connect(") and ("sun_path" in rest or "sin_port" in rest):
            print(f"{(float(stamp) - t0) * 1000:8.1f}  {pid:>7} connect {rest[:100]}")
        elif rest.startswith("exit_group"):
            print(f"{(float(stamp) - t0) * 1000:8.1f}  {pid:>7} exit")
    print("```")


if __name__ == "__main__":
    main()

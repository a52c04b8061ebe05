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
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from backup_bench import load_average
from pgrunbook.postgres.tools import ClientTools
from restore_bench import baseline_src, start_rig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="one more restore under cProfile, one under strace")
    ap.add_argument("--baseline", metavar="REF", help="also time git REF's src/ (interleaved), e.g. main")
    args, rig, db_size, load_start = start_rig(ap, "pgrunbook-bench-fixed-")
    cluster, work = rig.cluster, rig.work
    try:
        tools, env = rig.tools, rig.env
        rig.configure("parallel", 2)
        backup_id = rig.backup()
        trees: dict[str, str | None] = {"this tree": None}
        if args.baseline:
            trees = {args.baseline: baseline_src(args.baseline, work), **trees}

        def restore(prefix: list[str] | None = None, src: str | None = None) -> tuple[float, float, dict[str, float]]:
            """Wall time, CPU seconds (pgrunbook and every process it waited for), the journal's steps."""
            name = rig.new_name()
            cpu0 = children_cpu()
            wall = rig.timed_restore(backup_id, name, prefix=prefix, env={**env, "PYTHONPATH": src} if src else env)
            cpu = children_cpu() - cpu0
            steps = rig.last_steps()
            rig.drop(name, checkpoint=True)
            return wall, cpu, {s["name"]: float(s["duration_s"]) for s in steps}

        def start_up(src: str | None) -> tuple[float, float]:
            cpu0 = children_cpu()
            t0 = time.perf_counter()
            imports = "import pgrunbook.cli.main, pgrunbook.procedures.restore"
            subprocess.run([sys.executable, "-c", imports], check=True, env={**env, "PYTHONPATH": src} if src else env)
            return time.perf_counter() - t0, children_cpu() - cpu0

        for src in trees.values():
            restore(src=src)  # warms the page cache and the journal
        results: dict[str, list[tuple[float, float, dict[str, float]]]] = {t: [] for t in trees}
        starts: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
        for _ in range(args.runs):  # interleaved: A, B, A, B ...
            for tree, src in trees.items():
                starts[tree].append(start_up(src))
                results[tree].append(restore(src=src))
        print(f"\n## Fixed costs of `pgrunbook restore --into` (database {db_size / 1e6:.1f} MB, {versions(tools)})")
        print(f"median of {args.runs}, wall ms (CPU ms); load average {load_start} -> {load_average()}\n")
        print("| phase | " + " | ".join(trees) + " |\n|---|" + "---|" * len(trees))
        row = " | ".join(f"{ms([w for w, _ in starts[t]])} ({ms([c for _, c in starts[t]])})" for t in trees)
        print(f"| Python start-up + imports of the restore path (measured apart) | {row} |")
        names = list(dict.fromkeys(n for t in trees for _, _, st in results[t] for n in st))
        for n in names:
            print(f"| step: {n} | " + " | ".join(ms([st.get(n, 0.0) for _, _, st in results[t]]) for t in trees) + " |")
        outside = " | ".join(ms([w - sum(st.values()) for w, _, st in results[t]]) for t in trees)
        print(f"| outside the steps (start-up, config, journal, tools, connections, exit) | {outside} |")
        total = " | ".join(
            f"**{ms([w for w, _, _ in results[t]])}** ({ms([c for _, c, _ in results[t]])})" for t in trees
        )
        print(f"| **wall time** (CPU) | {total} |")
        if args.profile:
            profile(restore, work)
    finally:
        cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def versions(tools: ClientTools) -> str:
    return f"pg_restore {tools.version.text}"


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}"


Restore = Callable[..., tuple[float, float, dict[str, float]]]


def profile(run: Restore, work: Path) -> None:
    """One restore under cProfile, one under strace; their summaries."""
    import pstats

    prof = work / "restore.prof"
    run([sys.executable, "-m", "cProfile", "-o", str(prof)])
    print("\n### cProfile (wall clock, main thread), by cumulative time\n```")
    pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(45)
    shutil.copy(prof, Path(tempfile.gettempdir()) / "pgrunbook-restore.prof")  # for a closer look
    print("```")
    if not shutil.which("strace"):
        print("(strace not installed: no process/connection timeline)")
        return
    trace = work / "restore.strace"
    run(["strace", "-f", "-ttt", "-e", "trace=execve,connect,exit_group,fsync,fdatasync", "-o", str(trace)])
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
        elif rest.startswith(("fsync", "fdatasync")):
            print(f"{(float(stamp) - t0) * 1000:8.1f}  {pid:>7} {rest[:60]}")
        elif rest.startswith("exit_group"):
            print(f"{(float(stamp) - t0) * 1000:8.1f}  {pid:>7} exit")
    print("```")


if __name__ == "__main__":
    main()

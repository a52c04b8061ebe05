"""Start-up budget per command: wall time, CPU time and modules loaded by the real command line,
this tree side by side with another (``--baseline-src``, e.g. main's ``src``), runs interleaved.

    flock /work/notes/bench.lock .venv/bin/python bench/startup_bench.py [--baseline-src DIR] [--runs 9]

Commands: ``--help``, ``restore --help``, ``status`` (one pending migration, a real local cluster) and
``backup list`` (local storage, no backups). The target (SPEC "Performance") is the whole `status`
command under 0.5 s; CPU time (user + system of the child) moves less with the machine's load than
wall time, the module count not at all. Prints the load average at start and end.

Each command runs twice per round: with its bytecode cached (as from an installed wheel; the cache in a
temporary folder, PYTHONPYCACHEPREFIX) and compiled from source on every run (PYTHONDONTWRITEBYTECODE=1,
as on a machine whose environment sets it: the other benches' figures there include this).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pgrunbook.postgres.cluster import LocalCluster

COMMANDS = (("--help",), ("restore", "--help"), ("status",), ("backup", "list"))
# The console script's own code, plus a count of sys.modules written at exit.
ENTRY = (
    "import atexit, os, sys\n"
    "atexit.register(lambda: open(os.environ['BENCH_MODULES_OUT'], 'w').write(str(len(sys.modules))))\n"
    "sys.argv[0] = 'pgrunbook'\n"
    "from pgrunbook.cli.main import main\n"
    "main()\n"
)


def run_once(args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and modules loaded, for one run of the command."""
    out = cwd / ".modules"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, *args], cwd=cwd, env={**env, "BENCH_MODULES_OUT": str(out)}, capture_output=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):  # status: 1 = a migration pending
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, int(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-src", type=Path, help="another tree's src folder to compare with")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    trees = {"this tree": str(Path(__file__).resolve().parents[1] / "src")}
    if args.baseline_src:
        trees = {"baseline": str(args.baseline_src.resolve()), **trees}
    with tempfile.TemporaryDirectory(prefix="pgrunbook-bench-startup-") as tmp, LocalCluster(name="bench-su") as cl:
        work = Path(tmp)
        (work / "pgrunbook.toml").write_text('[backup]\nstorage = "backups"\n')
        folder = work / "prisma" / "migrations" / "20240101000000_init"
        folder.mkdir(parents=True)
        (folder / "migration.sql").write_text("CREATE TABLE t (id int);\n")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PGRUNBOOK_", "PG"))}
        base["DATABASE_URL"] = cl.url()
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        modes = {
            "cached": {"PYTHONPYCACHEPREFIX": str(work / "pycache")},
            "compiled": {"PYTHONDONTWRITEBYTECODE": "1"},
        }
        for src in trees.values():  # fills the bytecode cache
            for command in COMMANDS:
                run_once(command, work, {**base, "PYTHONPATH": src, **modes["cached"]})
        results: dict[tuple[str, str, tuple[str, ...]], list[tuple[float, float, int]]] = {}
        for _ in range(args.runs):  # interleaved: tree A, tree B, A, B ... for each command and mode
            for command in COMMANDS:
                for mode, extra in modes.items():
                    for name, src in trees.items():
                        env = {**base, "PYTHONPATH": src, **extra}
                        results.setdefault((mode, name, command), []).append(run_once(command, work, env))
    print(f"\n**Start-up** (median of {args.runs}, {os.cpu_count()} cores)\n")
    print("| command | bytecode | tree | wall | CPU | modules |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for command in COMMANDS:
        for mode in modes:
            for name in trees:
                runs = results[(mode, name, command)]
                wall = statistics.median(r[0] for r in runs)
                cpu = statistics.median(r[1] for r in runs)
                line = f"pgrunbook {' '.join(command)}"
                summary[f"{mode}, {name}: {line}"] = {"wall_ms": round(wall * 1000), "cpu_ms": round(cpu * 1000)}
                print(f"| `{line}` | {mode} | {name} | {wall * 1000:.0f} ms | {cpu * 1000:.0f} ms | {runs[-1][2]} |")
    print(f"\nload average at end: {os.getloadavg()}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

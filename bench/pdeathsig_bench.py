"""Does the parent-death signal slow anything? Tool starts and whole backups, with and without it.

    flock /work/notes/bench.lock .venv/bin/python bench/pdeathsig_bench.py [--size-mb 200] [--runs 5] [--starts 200]

With the signal, `subprocess` must fork and run the ``preexec_fn`` (two system calls) instead of
using vfork; this measures what that costs: (1) ``--starts`` starts of ``pg_dump --version`` through
the runner, interleaved with/without; (2) ``--runs`` whole ``backup create`` runs of a generated
database on a throwaway cluster, interleaved with/without (medians). Without the signal means
`runner.parent_death_preexec` returning None, i.e. the runner as it was before for pg_dump.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

from backup_bench import generate
from pgrunbook.backup.create import create_backup
from pgrunbook.config import load_config
from pgrunbook.environment import Environment
from pgrunbook.postgres import runner
from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.tools import find_client_tools

ORIGINAL = runner.parent_death_preexec


def _mode(with_signal: bool) -> None:
    runner.parent_death_preexec = ORIGINAL if with_signal else (lambda signum=0: None)  # type: ignore[assignment]


def starts(pg_dump: Path, n: int) -> dict[bool, float]:
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(n * 2):
        mode = i % 2 == 0
        _mode(mode)
        t0 = time.perf_counter()
        with runner.start(pg_dump, ["--version"], stdout=subprocess.PIPE) as tool:
            tool.stdout.read()
            tool.wait()
        times[mode].append(time.perf_counter() - t0)
    _mode(True)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--starts", type=int, default=200)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="pgrunbook-pdeathsig-"))
    with LocalCluster(name="pgrunbook-bench-pdeath") as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
            version = conn.info.server_version
        url = cluster.url("bench")
        size = generate(url, args.size_mb)
        tools = find_client_tools(version // 10000, str(version))
        s = starts(tools.pg_dump, args.starts)
        print(f"tool start (pg_dump --version), median of {args.starts}:")
        print(f"  with the parent-death signal    {s[True] * 1000:7.2f} ms")
        print(f"  without                         {s[False] * 1000:7.2f} ms")
        os.environ["DATABASE_URL"] = url
        (work / "pgrunbook.toml").write_text(f'[backup]\nstorage = "{work / "store"}"\n')
        env = Environment.resolve(load_config(cwd=work))
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.runs * 2):
            mode = i % 2 == 0
            _mode(mode)
            t0 = time.perf_counter()
            create_backup(env)
            times[mode].append(time.perf_counter() - t0)
        _mode(True)
        print(f"backup create of {size / 1e6:.0f} MB, median of {args.runs} (interleaved):")
        for mode, label in ((True, "with the parent-death signal"), (False, "without")):
            print(f"  {label:<32}{statistics.median(times[mode]):7.2f} s   all: {[round(t, 2) for t in times[mode]]}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

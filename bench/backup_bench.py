"""Backup speed and size, side by side in one run, on a generated realistic database.

    .venv/bin/python bench/backup_bench.py [--size-mb 1024] [--runs 3] [--url URL]
        [--server-bin DIR] [--tools DIR] [--seed-dump FILE]

Without --url it starts a throwaway local cluster (initdb/postgres from --server-bin, else the ones
found as the suite finds them), filled by generating --size-mb of data, or from --seed-dump (a
custom-format dump of a database generated before: the same data for every major, in seconds). The
client tools compared (and given to pgrunbook) are those in --tools, else the ones pgrunbook would
choose for the server. It prints median wall-clock times over --runs runs,
ratios against raw ``pg_dump -Fc -Z0``, sizes against the runbook's ``pg_dump --format=custom``, and
pgrunbook's peak memory. Targets (SPEC "Performance"): pgrunbook <= 1.5x raw time, size <= runbook's.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.postgres.runner import connection
from pgrunbook.postgres.tools import find_client_tools
from pgrunbook.postgres.url import parse_database_url

# Realistic rows: words from a vocabulary (compressible like prose), hex tokens (not very), jsonb
# documents, timestamps, numbers, inet; b-tree and GIN indexes. Not pgbench (compresses 60:1).
SCHEMA = """
CREATE TABLE vocab (i int PRIMARY KEY, w text NOT NULL);
INSERT INTO vocab SELECT g, substr(md5(g::text), 1, 3 + g % 8) FROM generate_series(0, 4999) g;
CREATE TABLE app_user (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, bio text,
                       settings jsonb NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE event (id bigserial PRIMARY KEY, user_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL,
                    ip inet, amount numeric(12,2), occurred_at timestamptz NOT NULL);
CREATE TABLE document (id bigserial PRIMARY KEY, user_id bigint NOT NULL, title text NOT NULL, body text NOT NULL,
                       token text NOT NULL, tags text[] NOT NULL);
"""

WORDS = (
    "(SELECT string_agg(w, ' ') FROM vocab WHERE i IN (SELECT (random() * 4999)::int + 0 * {g} "
    "FROM generate_series(1, {n})))"
)

FILL = """
INSERT INTO app_user (email, name, bio, settings, created_at)
SELECT 'user' || g || '@example.com', initcap({words_name}), {words_bio},
       jsonb_build_object('theme', (ARRAY['dark','light'])[1 + g % 2], 'locale', 'en', 'n', g),
       now() - g * interval '1 minute'
FROM generate_series({lo}, {hi}) g;
INSERT INTO event (user_id, kind, payload, ip, amount, occurred_at)
SELECT 1 + (random() * {users})::int, (ARRAY['view','click','buy','signup'])[1 + g % 4],
       jsonb_build_object('path', '/p/' || (g % 997), 'ref', md5(g::text), 'ua', 'Mozilla/5.0 ' || (g % 13),
                          'items', jsonb_build_array(g % 7, g % 11, random())),
       ('10.' || (g % 250) || '.' || (g % 200) || '.' || (g % 199))::inet, (random() * 1000)::numeric(12,2),
       now() - g * interval '1 second'
FROM generate_series({lo} * 4, {hi} * 4 + 3) g;
INSERT INTO document (user_id, title, body, token, tags)
SELECT 1 + (random() * {users})::int, {words_title}, {words_body}, md5(random()::text) || md5(random()::text),
       ARRAY['t' || (g % 20), 't' || (g % 7)]
FROM generate_series({lo}, {hi}) g;
"""

INDEXES = """
CREATE INDEX event_user_idx ON event (user_id, occurred_at);
CREATE INDEX event_payload_idx ON event USING gin (payload jsonb_path_ops);
CREATE INDEX document_user_idx ON document (user_id);
CREATE INDEX document_tags_idx ON document USING gin (tags);
ANALYZE;
"""


def generate(url: str, size_mb: int) -> int:
    """Fill in batches until the database reaches size_mb; returns its size in bytes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)  # type: ignore[arg-type]
        batch, lo = 20000, 1
        while True:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
            if size >= size_mb * 1e6 * 0.8:  # indexes add the rest
                break
            hi = lo + batch - 1
            sql = FILL.format(
                lo=lo,
                hi=hi,
                users=hi,
                words_name=WORDS.format(g="g", n=2),
                words_bio=WORDS.format(g="g", n=25),
                words_title=WORDS.format(g="g", n=6),
                words_body=WORDS.format(g="g", n=180),
            )
            conn.execute(sql)  # type: ignore[arg-type]
            lo = hi + 1
            print(f"  generated {size / 1e6:.0f} MB", file=sys.stderr, end="\r")
        conn.execute(INDEXES)  # type: ignore[arg-type]
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def compile_pgrunbook() -> None:
    """Compile pgrunbook's bytecode once, as pip does when it installs pgrunbook from a wheel. An
    editable install run with PYTHONDONTWRITEBYTECODE set never writes it: every command would then
    compile pgrunbook's ~110 modules again (~0.13 s of CPU per start, measured), which no installed
    pgrunbook pays."""
    import compileall

    import pgrunbook

    compileall.compile_dir(str(Path(pgrunbook.__file__).parent), quiet=1)


def throwaway_cluster(args: argparse.Namespace) -> tuple[LocalCluster, str, int]:
    """A throwaway cluster with database ``bench``: generated, or restored from ``args.seed_dump``.
    Returns the cluster, the database's URL and its size in bytes."""
    cluster = LocalCluster(
        bin_dir=args.server_bin, name="pgrunbook-bench", settings={"shared_buffers": "'512MB'"}
    ).start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench")
        major = conn.info.server_version // 10000
    url = cluster.url("bench")
    if args.seed_dump:
        print(f"loading {args.seed_dump} ...", file=sys.stderr)
        tools = find_client_tools(major, str(major), args.tools)
        target = parse_database_url(url)
        subprocess.run(
            [str(tools.pg_restore), "--no-owner", "-j2", "-d", target.conninfo(), args.seed_dump],
            env={**os.environ, **connection(target).env},
            check=True,
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
            size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
        return cluster, url, size
    print(f"generating ~{args.size_mb} MB ...", file=sys.stderr)
    return cluster, url, generate(url, args.size_mb)


def add_setup_arguments(ap: argparse.ArgumentParser) -> None:
    def folder(path: str) -> str:
        return str(Path(path).resolve())  # the cluster runs its binaries from its own folder

    ap.add_argument("--server-bin", type=folder, help="initdb/pg_ctl/postgres of the throwaway cluster's major")
    ap.add_argument("--tools", type=folder, help="folder of the pg_dump/pg_restore compared (and given to pgrunbook)")
    ap.add_argument("--seed-dump", help="fill the throwaway cluster from this custom-format dump")


def timed(cmd: list[str] | str, env: dict[str, str], shell: bool = False) -> tuple[float, int, float]:
    """Wall time, the child's peak RSS (kB) and its CPU seconds (with the children it waited for)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"benchmark command failed: {cmd}\n{err}")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds a running process has used so far (the S3 server's share of the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serving_s3(port: int) -> dict[str, str]:
    """Wait (up to 15 s) until the S3 test server on loopback ``port`` accepts connections; the
    environment that points boto3 at it with the bench's throwaway keys."""
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def start_moto(work: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]] | None:
    """moto's S3 server on a free loopback port, with a bucket; None when moto is not installed."""
    import importlib.util

    from pgrunbook.postgres.cluster import free_port

    if importlib.util.find_spec("moto") is None:
        print("moto not installed: no S3 figures", file=sys.stderr)
        return None
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = serving_s3(port)
    import boto3

    boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
    ).create_bucket(Bucket="bench")
    return proc, env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--url", help="an existing, already generated database (else a throwaway cluster)")
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 run (moto's server on loopback)")
    add_setup_arguments(ap)
    args = ap.parse_args()
    load_start = load_average()
    cluster = None
    work = Path(tempfile.mkdtemp(prefix="pgrunbook-bench-"))
    try:
        if args.url:
            url = args.url
            db_size = 0
        else:
            cluster, url, db_size = throwaway_cluster(args)
        target = parse_database_url(url)
        with psycopg.connect(url) as conn:
            version = conn.info.server_version
            db_size = db_size or int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
        tools = find_client_tools(version // 10000, str(version), args.tools)
        env = {**os.environ, **connection(target).env, "DATABASE_URL": url}
        postgres = f'[postgres]\nbin_dir = "{tools.folder}"\n'
        (work / "pgrunbook.toml").write_text(f'[backup]\nstorage = "{work / "store"}"\n{postgres}')
        raw_file, runbook_file = work / "raw.dump", work / "runbook.dump"
        methods: dict[str, list[str] | str] = {
            "raw pg_dump -Fc -Z0": [str(tools.pg_dump), "-Fc", "-Z0", "-f", str(raw_file), target.conninfo()],
            "runbook pg_dump --format=custom": [
                str(tools.pg_dump),
                "--format=custom",
                f"--file={runbook_file}",
                target.conninfo(),
            ],
            "pgrunbook backup create": [
                str(Path(sys.executable).parent / "pgrunbook"),
                "--config",
                str(work / "pgrunbook.toml"),
                "backup",
                "create",
            ],
        }
        moto = None if args.no_s3 else start_moto(work)
        if moto is not None:
            env.update(moto[1])
            (work / "s3.toml").write_text(f'[backup]\nstorage = "s3://bench/pg"\n{postgres}')
            methods["pgrunbook backup create -> S3 (moto, loopback)"] = [
                str(Path(sys.executable).parent / "pgrunbook"),
                "--config",
                str(work / "s3.toml"),
                "backup",
                "create",
            ]
        if shutil.which("zstd"):
            methods["pg_dump -Fc -Z0 | zstd -T2 -3"] = (
                f'"{tools.pg_dump}" -Fc -Z0 "{target.conninfo()}" | zstd -q -T2 -3 -o "{work / "ref.zst"}" -f'
            )
        times: dict[str, list[float]] = {m: [] for m in methods}
        sizes: dict[str, int] = {}
        rss: dict[str, int] = {}
        cpu: dict[str, list[float]] = {m: [] for m in methods}
        server_cpu: list[float] = []
        for run in range(args.runs):
            for name, cmd in methods.items():  # interleaved, so drift in the machine hits every method alike
                shutil.rmtree(work / "store", ignore_errors=True)
                before = process_cpu(moto[0].pid) if moto is not None else 0.0
                elapsed, peak, used = timed(cmd, env, shell=isinstance(cmd, str))
                cpu[name].append(used)
                if name == "pgrunbook backup create":
                    ours_size = next((work / "store").rglob("db.dump.zst")).stat().st_size
                if name.endswith("(moto, loopback)"):
                    sizes[name] = ours_size
                    server_cpu.append(process_cpu(moto[0].pid) - before)  # type: ignore[index]
                times[name].append(elapsed)
                rss[name] = max(rss.get(name, 0), peak)
                print(f"  run {run + 1}: {name}: {elapsed:.2f}s", file=sys.stderr)
        sizes |= {
            "raw pg_dump -Fc -Z0": raw_file.stat().st_size,
            "runbook pg_dump --format=custom": runbook_file.stat().st_size,
            "pgrunbook backup create": ours_size,
        }
        if (work / "ref.zst").exists():
            sizes["pg_dump -Fc -Z0 | zstd -T2 -3"] = (work / "ref.zst").stat().st_size
        report(times, sizes, rss, db_size, args, cpu, server_cpu, (version, tools.version.text, load_start))
        if moto is not None:
            moto[0].terminate()
    finally:
        if cluster:
            cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def report(
    times: dict[str, list[float]],
    sizes: dict[str, int],
    rss: dict[str, int],
    db_size: int,
    args: argparse.Namespace,
    cpu: dict[str, list[float]],
    server_cpu: list[float],
    versions: tuple[int, str, str],
) -> None:
    raw = statistics.median(times["raw pg_dump -Fc -Z0"])
    runbook_size = sizes["runbook pg_dump --format=custom"]
    server, dump, load_start = versions
    print(
        f"\n## Backup benchmark, PostgreSQL {server // 10000} (server {server // 10000}.{server % 10000}, pg_dump "
        f"{dump}; {platform.machine()}, {os.cpu_count()} cores, database {db_size / 1e6:.0f} MB, median of "
        f"{args.runs}; load average at start {load_start}, at end {load_average()})\n"
    )
    print("| method | median time | vs raw | size | vs runbook size | peak RSS | CPU (its own, with children) |")
    print("|---|---|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"| {name.replace('|', chr(92) + '|')} | {med:.2f} s | {med / raw:.2f}x | {sizes[name] / 1e6:.0f} MB | "
            f"{sizes[name] / runbook_size:.2f}x | {rss[name] / 1024:.0f} MB | {statistics.median(cpu[name]):.2f} s |"
        )
    s3 = next((n for n in times if n.endswith("(moto, loopback)")), None)
    if s3:
        local_t = statistics.median(times["pgrunbook backup create"])
        s3_t = statistics.median(times[s3])
        print(
            f"\nS3: {s3_t / local_t:.2f}x the local backup's time (target <= 1.2x: "
            f"{'met' if s3_t <= 1.2 * local_t else 'MISSED'}); pgrunbook's peak RSS {rss[s3] / 1024:.0f} MB "
            f"(target < 200 MB: {'met' if rss[s3] / 1024 < 200 else 'MISSED'})"
        )
        local_cpu, s3_cpu = statistics.median(cpu["pgrunbook backup create"]), statistics.median(cpu[s3])
        print(
            f"\nWhere the S3 time goes: pgrunbook (with pg_dump) used {s3_cpu:.2f} CPU s to S3 vs {local_cpu:.2f} s "
            f"to local storage ({s3_cpu / local_cpu:.2f}x); the S3 server itself used "
            f"{statistics.median(server_cpu):.2f} CPU s per backup on the same {os.cpu_count()} cores, "
            "beside the PostgreSQL server sending the data."
        )
    ours = statistics.median(times["pgrunbook backup create"])
    ok_time = ours <= 1.5 * raw
    ok_size = sizes["pgrunbook backup create"] <= runbook_size
    print(
        f"\ntarget time <= 1.5x raw: {'met' if ok_time else 'MISSED'} ({ours / raw:.2f}x); "
        f"target size <= runbook's: {'met' if ok_size else 'MISSED'} "
        f"({sizes['pgrunbook backup create'] / runbook_size:.2f}x)"
    )
    one_liner = "pg_dump -Fc -Z0 | zstd -T2 -3"
    if one_liner in times:
        theirs, their_size = statistics.median(times[one_liner]), sizes[one_liner]
        ahead = ours < theirs and sizes["pgrunbook backup create"] < their_size
        print(
            f"target ahead of `{one_liner}` on time and size: "
            f"{'met' if ahead else 'MISSED'} ({ours:.2f} s vs {theirs:.2f} s, "
            f"{sizes['pgrunbook backup create'] / 1e6:.0f} MB vs {their_size / 1e6:.0f} MB)"
        )


if __name__ == "__main__":
    main()

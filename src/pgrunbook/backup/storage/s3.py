"""S3 and S3-compatible object stores (MinIO, Ceph, R2, Backblaze) through boto3.

Same interface as the local backend: a multipart upload is invisible until completed, so a writer's
bytes appear under their key only on ``commit``, and the manifest (written last) makes a backup visible
atomically. Memory stays bounded: one part (8 MiB by default) is buffered at a time. Credentials come
from boto3's own chain (environment, profiles, IAM roles); ``AWS_ENDPOINT_URL_S3`` points at another
store. Transient errors are retried by botocore with backoff; what remains is one clear line.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator
from typing import Any

from pgrunbook.backup.storage import AtomicWriter, ObjectInfo, Storage
from pgrunbook.errors import StorageError

PART_SIZE = 8 * 1024 * 1024
READ_CHUNK = 1 << 20


def _describe(exc: Exception, what: str, where: str) -> StorageError:
    """botocore's errors as one line; they never carry the secret key."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, NoCredentialsError):
        return StorageError(
            f"no S3 credentials found for {where}",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an IAM role",
        )
    if isinstance(exc, EndpointConnectionError | ReadTimeoutError):
        return StorageError(
            f"cannot reach the S3 endpoint for {where}: {type(exc).__name__}",
            hint="check AWS_ENDPOINT_URL_S3 / the network; nothing of this operation was kept",
        )
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",):
            return StorageError(f"S3 bucket of {where} does not exist", hint="create it, or fix [backup] storage")
        if code in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "InvalidToken",
            "ExpiredToken",
            "403",
        ):
            return StorageError(
                f"S3 refused the credentials or the access to {where} ({code})",
                hint="check the AWS credentials and the bucket policy",
            )
        if status and int(status) >= 500:
            retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            return StorageError(
                f"S3 kept failing for {where}: HTTP {status} {code} after {retries} retries",
                hint="the store is unhealthy; try again later; nothing of this operation was kept",
            )
        return StorageError(f"S3 error while trying to {what} {where}: {code or status}")
    return StorageError(f"S3 error while trying to {what} {where}: {type(exc).__name__}: {exc}")


class S3Writer(AtomicWriter):
    """Parts upload in a background thread while the next one fills: the dump never waits for the
    network unless two parts are already in flight (memory stays at about three parts)."""

    IN_FLIGHT = 2

    def __init__(self, storage: S3Storage, key: str):
        import queue
        import threading

        self.storage = storage
        self.key = key
        self.full = storage.full_key(key)
        self.buffer = bytearray()
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None
        self.written = 0
        self._done = False
        self._error: StorageError | None = None
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(self.IN_FLIGHT)
        self._thread: threading.Thread | None = None
        self._threading = threading

    def _describe(self, exc: Exception, what: str) -> StorageError:
        return _describe(exc, what, self.storage.where(self.key))

    def write(self, data: bytes | memoryview) -> None:
        if self._done:
            return  # aborted: late writes (a compressor flushing on its way out) must not mask the first error
        if self._error is not None:
            self.abort()
            raise self._error
        self.buffer += data
        self.written += len(data)
        while len(self.buffer) >= self.storage.part_size:
            self._enqueue(bytes(self.buffer[: self.storage.part_size]))
            del self.buffer[: self.storage.part_size]

    def _enqueue(self, body: bytes) -> None:
        if self.upload_id is None:
            try:
                resp = self.storage.client.create_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.full, **self.storage.put_args
                )
            except Exception as exc:
                self.abort()
                raise self._describe(exc, "start an upload to") from None
            self.upload_id = resp["UploadId"]
            self._thread = self._threading.Thread(target=self._uploader, daemon=True)
            self._thread.start()
        number = len(self.parts) + 1
        self.parts.append({"PartNumber": number})
        while True:  # wait for room, but notice an uploader that died meanwhile
            if self._error is not None:
                self.abort()
                raise self._error
            try:
                self._queue.put((number, body), timeout=0.5)
                return
            except Exception:  # queue.Full
                continue

    def _uploader(self) -> None:
        while (item := self._queue.get()) is not None:
            number, body = item
            if self._error is not None:
                continue
            try:
                resp = self.storage.client.upload_part(
                    Bucket=self.storage.bucket, Key=self.full, UploadId=self.upload_id, PartNumber=number, Body=body
                )
                self.parts[number - 1]["ETag"] = resp["ETag"]
            except Exception as exc:
                self._error = self._describe(exc, "upload to")

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def commit(self) -> None:
        c = self.storage.client
        try:
            if self.upload_id is None:  # small object: one PUT, atomic by itself
                c.put_object(
                    Bucket=self.storage.bucket, Key=self.full, Body=bytes(self.buffer), **self.storage.put_args
                )
            else:
                if self.buffer:
                    self._enqueue(bytes(self.buffer))
                self._drain()
                if self._error is not None:
                    raise self._error
                c.complete_multipart_upload(
                    Bucket=self.storage.bucket,
                    Key=self.full,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
        except StorageError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise self._describe(exc, "finish the upload to") from None
        self.buffer = bytearray()
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self.buffer = bytearray()
        if self._thread is not None:
            self._error = self._error or StorageError("upload aborted")
            with contextlib.suppress(Exception):
                while True:
                    self._queue.get_nowait()
            self._drain()
        if self.upload_id is not None:
            with contextlib.suppress(Exception):  # prune aborts what is left
                self.storage.client.abort_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.full, UploadId=self.upload_id
                )


class S3Storage(Storage):
    def __init__(
        self,
        url: str,
        *,
        sse: str | None = None,
        kms_key_id: str | None = None,
        storage_class: str | None = None,
        part_size: int = PART_SIZE,
        max_attempts: int = 5,
    ):
        import boto3
        from botocore.config import Config

        rest = url[len("s3://") :]
        self.bucket, _, prefix = rest.partition("/")
        if "@" in self.bucket:
            raise StorageError(
                "the S3 storage URL holds credentials (s3://KEY:SECRET@bucket); they were not used",
                hint="keep credentials out of URLs: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                "or an IAM role, and s3://bucket/prefix",
            )
        if not self.bucket:
            raise StorageError(f"storage URL {url!r} names no bucket", hint="use s3://bucket/prefix")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.display = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.part_size = part_size
        self.put_args: dict[str, str] = {}
        if sse:
            self.put_args["ServerSideEncryption"] = sse
        if kms_key_id:
            self.put_args["SSEKMSKeyId"] = kms_key_id
        if storage_class:
            self.put_args["StorageClass"] = storage_class
        self.client = boto3.session.Session().client(
            "s3",
            config=Config(
                retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=10, read_timeout=60
            ),
        )

    def full_key(self, key: str) -> str:
        if any(p in (".", "..") for p in key.split("/")):
            raise StorageError(f"invalid storage key {key!r}")
        return self.prefix + key

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def list(self, prefix: str = "") -> list[ObjectInfo]:
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
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.full_key(key)}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        try:
            body = self.client.get_object(**kwargs)["Body"]
        except Exception as exc:
            from botocore.exceptions import ClientError

            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise StorageError(f"{key} is missing from storage {self.display}") from None
            raise _describe(exc, "read", self.where(key)) from None
        return self._chunks(body, key)

    def _chunks(self, body: Any, key: str) -> Iterator[bytes]:
        try:
            while chunk := body.read(READ_CHUNK):
                yield chunk
        except Exception as exc:
            raise _describe(exc, "read", self.where(key)) from None
        finally:
            body.close()

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

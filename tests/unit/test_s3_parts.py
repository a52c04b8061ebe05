"""The S3 backend's pure parts: the growing part-size schedule (any object up to 5 TiB in 10,000 parts),
which failures are worth a retry, and error text without credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.backup.storage import open_storage
from pgrunbook.backup.storage.s3 import (
    PART_LIMIT,
    S3_MAX_OBJECT,
    S3_MAX_PART,
    S3_MIN_PART,
    capacity,
    growth_every,
    part_size,
    redact,
    transient,
)
from pgrunbook.config import load_config
from pgrunbook.errors import ConfigError

MiB = 1024 * 1024
firsts = st.integers(min_value=5 * MiB, max_value=512 * MiB)  # [backup.s3] part_size_mb's range


@settings(max_examples=200, deadline=None)
@given(first=firsts, number=st.integers(min_value=1, max_value=PART_LIMIT))
def test_every_part_is_within_s3s_limits_and_never_shrinks(first: int, number: int) -> None:
    size = part_size(number, first)
    assert S3_MIN_PART <= size <= S3_MAX_PART
    assert size >= first or size == S3_MAX_PART
    if number > 1:
        assert part_size(number - 1, first) <= size


@settings(max_examples=100, deadline=None)
@given(first=firsts)
def test_any_object_up_to_5_tib_fits_in_10000_parts(first: int) -> None:
    assert capacity(first, PART_LIMIT) >= S3_MAX_OBJECT
    assert capacity(first) == sum(part_size(n, first) for n in range(1, PART_LIMIT + 1))


@settings(max_examples=100, deadline=None)
@given(first=firsts, limit=st.integers(min_value=16, max_value=PART_LIMIT))
def test_a_lowered_part_limit_still_grows(first: int, limit: int) -> None:
    """With any limit, the last part is larger than the first (unless capped): a test that lowers the
    limit to a handful of parts proves the growth on a small backup."""
    assert capacity(first, limit) > limit * first or part_size(1, first, limit) == S3_MAX_PART
    assert capacity(first, limit) == sum(part_size(n, first, limit) for n in range(1, limit + 1))


def test_small_backups_keep_small_parts() -> None:
    """A 1 GB backup never leaves the first part size (memory = parts in flight × 8 MiB)."""
    assert growth_every() == 625
    assert all(part_size(n, 8 * MiB) == 8 * MiB for n in range(1, 1 + (1 << 30) // (8 * MiB) + 1))
    assert part_size(626, 5 * MiB) == 10 * MiB and part_size(6251, 5 * MiB) == S3_MAX_PART
    assert [part_size(n, 5 * MiB, 3) // MiB for n in (1, 2, 3)] == [5, 10, 20]  # limit 3: doubles every part


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalError", 500), True),
        (_client_error("", 502), True),
        (_client_error("BadDigest", 400), True),  # bytes damaged on the way: send again
        (_client_error("XAmzContentChecksumMismatch", 400), True),
        (_client_error("RequestTimeout", 400), True),
        (_client_error("AccessDenied", 403), False),
        (_client_error("NoSuchUpload", 404), False),
        (_client_error("NoSuchBucket", 404), False),
        (_client_error("InvalidArgument", 400), False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (ValueError("a bug"), False),
    ],
)
def test_transient_failures(exc: Exception, retry: bool) -> None:
    assert transient(exc) is retry


@pytest.mark.parametrize(
    "text",
    [
        "Could not connect to the endpoint URL: https://AKIDEXAMPLE:wJalrXUtnFEMI@minio.internal:9000/b/k",
        "GET http://user:wJalrXUtnFEMI@host/b?X-Amz-Credential=AKIDEXAMPLE%2F2026&X-Amz-Signature=abc123def",
        "s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/prefix",
        "secret wJalrXUtnFEMI in plain text, key id AKIDEXAMPLE",
    ],
)
def test_error_text_never_carries_s3_keys(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    out = redact(text)
    assert "wJalrXUtnFEMI" not in out and "AKIDEXAMPLE" not in out and "abc123def" not in out


# --- the registry: each backend validates its own options table ------------------------------------------


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"s3": {"parts_in_flight": 0}}, r"backup\.s3\.parts_in_flight: must be a whole number from 1 to 64, not 0"),
        ({"s3": {"part_size_mb": 4}}, r"backup\.s3\.part_size_mb"),
        ({"s3": {"ranges_in_flight": 65}}, r"backup\.s3\.ranges_in_flight"),
        ({"s3": {"checksum": "md5"}}, r"backup\.s3\.checksum"),
        ({"s3": {"part_sise_mb": 8}}, r"backup\.s3\.part_sise_mb: unknown key"),
        ({"s4": {"x": 1}}, r"unknown key backup.s4: neither a \[backup\] key nor a storage backend.s options table"),
    ],
)
def test_backend_options_are_checked_by_their_backend(tables: dict[str, object], message: str, tmp_path: Path) -> None:
    """Bad S3 options fail even when the primary storage is a folder: a copy to S3 would need them."""
    with pytest.raises(ConfigError, match=message) as caught:
        open_storage(str(tmp_path / "b"), tmp_path, tables)
    assert "\n" not in caught.value.message and caught.value.exit_code == 3


@pytest.mark.parametrize(
    ("location", "message"),
    [("gs://bucket/x", r"storage scheme gs:// is not supported"), ("s3:///nobucket", "names no bucket")],
)
def test_locations_no_backend_takes(location: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        open_storage(location, tmp_path)
    assert "s3://bucket/prefix" in (caught.value.hint or "") or "names no bucket" in caught.value.message


def test_config_keeps_backend_tables_for_the_registry(tmp_path: Path) -> None:
    (tmp_path / "pgrunbook.toml").write_text(
        '[backup]\nstorage = "s3://b/p"\n[backup.s3]\nparts_in_flight = 8\n[backup.azure]\naccount = "x"\n'
    )
    cfg = load_config(cwd=tmp_path, environ={"PGRUNBOOK_BACKUP__S3__MAX_ATTEMPTS": "7"})
    assert cfg.backup.storage_options() == {
        "s3": {"parts_in_flight": 8, "max_attempts": "7"},
        "azure": {"account": "x"},
    }
    (tmp_path / "pgrunbook.toml").write_text('[backup]\nstorag = "x"\n')
    with pytest.raises(ConfigError, match=r"backup\.storag: unknown key"):
        load_config(cwd=tmp_path, environ={})


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=70_000), algorithm=st.sampled_from(["sha256", "crc32"]))
def test_part_checksums_are_the_values_s3_expects(body: bytes, algorithm: str) -> None:
    """pgrunbook computes each part's x-amz-checksum-* value itself (once, in the part's thread); it must
    be exactly what botocore would have sent, the base64 of the digest (big-endian for CRCs)."""
    from botocore.httpchecksum import Crc32Checksum, Sha256Checksum

    from pgrunbook.backup.storage.s3 import body_checksum

    reference = {"sha256": Sha256Checksum, "crc32": Crc32Checksum}[algorithm]()
    reference.update(body)
    assert body_checksum(algorithm, body) == reference.b64digest()


def test_known_checksum_values() -> None:
    """Published values: SHA-256 and CRC32 of b"abc" (and of nothing)."""
    from pgrunbook.backup.storage.s3 import body_checksum

    assert body_checksum("sha256", b"abc") == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    assert body_checksum("crc32", b"abc") == "NSRBwg=="
    assert body_checksum("sha256", b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

"""age encryption at rest (pyrage), streaming both ways, with bounded memory.

Backups are encrypted to every configured recipient (public keys), so the machine that takes them needs
no secret; the identity file is needed only to drill and restore. The manifest's checksum is of what is
stored (the ciphertext), so plain verification works without the identity too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pgrunbook.errors import ConfigError, VerificationFailed

CHUNK = 1 << 20


class DecryptionFailed(VerificationFailed):
    """The age layer of a stored backup could not be undone (damaged or truncated ciphertext): reported
    as the backup's ``encryption`` check, not as its compression."""


class _Writable(Protocol):
    def write(self, data: bytes) -> int: ...


def recipients(values: list[str]) -> list[Any]:
    import pyrage

    try:
        return [pyrage.x25519.Recipient.from_str(v) for v in values]
    except Exception:
        raise ConfigError("[backup.encryption] recipients: not valid age public keys") from None


def identities(identity_file: str | None, root: Path) -> list[Any]:
    """The age secret keys; refused with one line when the file is not configured or unreadable."""
    import pyrage

    if not identity_file:
        raise ConfigError(
            "this backup is encrypted and [backup.encryption] identity_file is not set",
            hint="set identity_file to the age key file (AGE-SECRET-KEY-...) to drill or restore",
        )
    path = Path(os.path.expanduser(identity_file))
    path = path if path.is_absolute() else root / path
    key = "[backup.encryption] identity_file"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ConfigError(
            f"the age identity file {path} does not exist ({key} = {identity_file!r})",
            hint=f"point {key} (or PGRUNBOOK_BACKUP__ENCRYPTION__IDENTITY_FILE) at the age key file holding "
            "the secret key of one of the backup's recipients; a key made now (age-keygen -o FILE) reads "
            "only backups encrypted to its public key",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the age identity file {path} ({key}): {exc.strerror}",
            hint=f"make it readable by this user, or point {key} at a readable copy of the key",
        ) from None
    keys = [ln.strip() for ln in lines if ln.strip().startswith("AGE-SECRET-KEY-")]
    try:
        found = [pyrage.x25519.Identity.from_str(k) for k in keys]
    except Exception:
        found = []
    if not found:
        raise ConfigError(f"{path} holds no age secret key (AGE-SECRET-KEY-...)")
    return found


class EncryptingSink:
    """A writable end for the compressor; encryption runs in a thread and writes on to ``downstream``."""

    def __init__(self, downstream: _Writable, to: list[Any]):
        import pyrage

        r, w = os.pipe()
        self._reader = os.fdopen(r, "rb")
        self._writer = os.fdopen(w, "wb")
        self._error: BaseException | None = None

        def run() -> None:
            try:
                pyrage.encrypt_io(self._reader, downstream, to)
            except BaseException as exc:  # re-raised by close()
                self._error = exc
            finally:
                self._reader.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        try:
            self._writer.write(data)
        except BrokenPipeError:
            self._thread.join()
            raise self._error or OSError("encryption stopped") from None
        return len(data)

    def close(self) -> None:
        self._writer.close()
        self._thread.join()
        if self._error is not None:
            raise self._error


def decrypted(chunks: Iterator[bytes], ids: list[Any]) -> Iterator[bytes]:
    """Plaintext of a stream of age ciphertext; a damaged or truncated stream raises VerificationFailed."""
    import pyrage

    cr, cw = os.pipe()
    pr, pw = os.pipe()
    errors: list[BaseException] = []

    def feed() -> None:
        with os.fdopen(cw, "wb") as w:
            try:
                for chunk in chunks:
                    w.write(chunk)
            except BrokenPipeError:
                pass
            except BaseException as exc:
                errors.append(exc)

    def decrypt() -> None:
        with os.fdopen(cr, "rb") as r, os.fdopen(pw, "wb") as w:
            try:
                pyrage.decrypt_io(r, w, ids)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=decrypt, daemon=True)]
    for t in threads:
        t.start()
    with os.fdopen(pr, "rb") as plain:
        while chunk := plain.read(CHUNK):
            yield chunk
    for t in threads:
        t.join()
    if errors:
        first = errors[0]
        if isinstance(first, VerificationFailed | ConfigError):
            raise first
        raise DecryptionFailed(
            f"age decryption failed: {first}", hint="wrong identity, or the stored file is damaged or truncated"
        )

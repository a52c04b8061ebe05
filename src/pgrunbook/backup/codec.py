"""Codecs of the logical dump: how an archive is written, read back, and restored by hand.

A stored backup is a pg_dump archive passed through a stack of codecs (`CodecStack`): one compression
codec (`Codec`), then the layers over the compressed stream (`Layer`: age encryption today). Each type
says, for its own part, how to write (pg_dump's arguments, a sink wrapped), how to read back (chunks
unwrapped), its part of the file name, its part of the by-hand restore command and what it needs to
read (an identity). Create, read-back, verify and the description ask the stack; nothing else branches
on a compression name or on encryption.

The manifest's JSON fields are unchanged: ``compression`` names the codec (``"zstd"``: pgrunbook's own
zstd stream of independent frames around an uncompressed pg_dump archive; ``"gzip"``: pg_dump's own
compression, ``pg_dump -Fc``'s default, so the stored file is a plain custom-format archive);
``encryption`` names the layer (``"age"`` or null) and ``recipients`` its public keys. A new codec is
one subclass of `Codec` in `CODECS`; a new layer one subclass of `Layer` in `LAYERS`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import zstandard

from pgrunbook.backup.encryption import DecryptionFailed, EncryptingSink, decrypted, identities, recipients
from pgrunbook.backup.frames import decompress_frames, decompress_parallel_to
from pgrunbook.config import BackupConfig, EncryptionConfig
from pgrunbook.errors import ConfigError, PgRunbookError
from pgrunbook.postgres.tools import TRANSACTION_TIMEOUT_SINCE

if TYPE_CHECKING:
    from pgrunbook.backup.manifest import Check, Manifest

CHUNK = 1 << 20
Frames = list[tuple[int, int]]  # per frame: (stored bytes, archive bytes)
BASE_NAME = "db.dump"  # every stored archive's name starts so; each codec of the stack adds its suffix


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class ClosingSink(Sink, Protocol):
    def close(self) -> None: ...


class Codec:
    """One way of compressing a pg_dump archive. ``name``: the manifest's ``compression`` value."""

    name: str = ""
    label: str = ""  # in words, for descriptions
    suffix: str = ""  # its part of the stored file's name

    def dump_args(self) -> list[str]:
        """pg_dump's compression arguments."""
        return []

    def write(
        self, src: IO[bytes], sink: Sink, cfg: BackupConfig, progress: Callable[[int], None]
    ) -> tuple[int, Frames]:
        """Move pg_dump's output from ``src`` to ``sink`` encoded; (archive bytes, frame table).
        ``progress`` gets the archive bytes read so far."""
        raw = 0
        while chunk := src.read(CHUNK):
            sink.write(chunk)
            raw += len(chunk)
            progress(raw)
        return raw, []

    def read(self, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The archive's bytes from the compressed ones; raises zstandard.ZstdError on damage."""
        return chunks

    def read_into(self, fd: int, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]], workers: int) -> None:
        """Write the archive to the file ``fd`` (positioned at 0), with ``workers`` threads where the
        codec can share the work out."""
        for chunk in self.read(chunks, frames):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]

    #: the compressed data blocks are inside the pg_dump archive (pg_dump's own compression): only
    #: pg_restore reading every block checks them (archive.DataBlocks), not the decoding here
    blocks_in_archive = False

    def checks(self, error: str, *, ok_detail: str) -> list[Check]:
        """The codec's own integrity check of a read-back (``error``: what decoding raised, or "")."""
        return []

    def read_command(self, file: str | None) -> str | None:
        """Its stage of the by-hand pipeline: a standard tool reading ``file`` (None: standard input)
        and writing the archive; None when pg_restore reads what it gets as it is."""
        return None

    def first_bytes_decoder(self) -> Any | None:
        """A streaming decoder (``.decompress(chunk) -> bytes``) for the archive's first bytes, read
        while the rest is still being decoded (the restore's early table of contents); None when the
        stored bytes are the archive already."""
        return None


class PgDumpCompression(Codec):
    """``"gzip"``: pg_dump compresses by itself; the stored file is an ordinary custom-format archive."""

    name = "gzip"
    label = "pg_dump's own compression (gzip)"
    blocks_in_archive = True  # each table's data one zlib stream (adler32) inside the archive


class Zstd(Codec):
    """``"zstd"``: pg_dump writes uncompressed, pgrunbook compresses in independent frames of
    ``[backup] zstd_frame_mb`` of archive each, so that restores decompress them in parallel
    (backup/frames.py). The file is still one ordinary zstd file for ``zstd -d``."""

    name = "zstd"
    label = "zstd, in independent frames"
    suffix = ".zst"

    def dump_args(self) -> list[str]:
        return ["--compress=0"]

    def write(
        self, src: IO[bytes], sink: Sink, cfg: BackupConfig, progress: Callable[[int], None]
    ) -> tuple[int, Frames]:
        table: Frames = []
        out = _Counted(sink)
        raw, frame_start, in_frame, frame_raw = 0, 0, 0, int(cfg.zstd_frame_mb * (1 << 20))
        threads = cfg.zstd_threads or (os.cpu_count() or 1)
        cctx = zstandard.ZstdCompressor(level=cfg.zstd_level, threads=threads, write_checksum=True)
        with cctx.stream_writer(out, closefd=False, write_size=CHUNK) as zw:  # type: ignore[arg-type]
            while chunk := src.read(CHUNK):
                raw += len(chunk)
                view = memoryview(chunk)
                while view:
                    if in_frame == frame_raw:  # ended only when more follows: no empty frame at the end
                        zw.flush(zstandard.FLUSH_FRAME)
                        table.append((out.size - frame_start, in_frame))
                        frame_start, in_frame = out.size, 0
                    take = view[: frame_raw - in_frame]
                    zw.write(take)
                    in_frame += len(take)
                    view = view[len(take) :]
                progress(raw)
        table.append((out.size - frame_start, in_frame))
        return raw, table

    def read(self, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        return decompress_frames(chunks, frames)

    def read_into(self, fd: int, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]], workers: int) -> None:
        if len(frames) > 1 and workers > 1:
            decompress_parallel_to(fd, chunks, frames, workers)
        else:
            super().read_into(fd, chunks, frames, workers)

    def checks(self, error: str, *, ok_detail: str) -> list[Check]:
        from pgrunbook.backup.manifest import Check  # start-up time: see backup/naming.py

        return [Check(name="compression", ok=not error, detail=error or ok_detail)]

    def read_command(self, file: str | None) -> str | None:
        return f"zstd -dc {file}" if file else "zstd -dc"

    def first_bytes_decoder(self) -> Any | None:
        return zstandard.ZstdDecompressor().decompressobj()


class _Counted:
    """Counts the compressed bytes (before any encryption): the frame table's offsets are in that stream."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sink.write(data)
        self.size += len(data)
        return len(data)


class Layer:
    """A transform of the compressed stream on its way to storage (encryption). ``name``: the
    manifest's ``encryption`` value."""

    name: str = ""
    label: str = ""  # in words, for descriptions
    suffix: str = ""  # its part of the stored file's name, after the compression's

    def writer(self, sink: Sink) -> ClosingSink:
        """A sink that transforms what is written to it on to ``sink``; ``close()`` finishes it."""
        raise NotImplementedError

    def reader(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The compressed stream from this layer's stored one; raises VerificationFailed on damage and
        ConfigError when what it needs (`unreadable`) is missing."""
        raise NotImplementedError

    def read_command(self, file: str | None) -> str:
        """Its stage of the by-hand pipeline, reading ``file`` (None: standard input)."""
        raise NotImplementedError

    def unreadable(self) -> str | None:
        """Why this machine cannot read the layer back (its configuration lacks a key), or None."""
        return None

    def manifest_fields(self) -> dict[str, Any]:
        """Its fields of the manifest."""
        return {"encryption": self.name}


@dataclass(frozen=True)
class Age(Layer):
    """``"age"``: encryption at rest to every configured recipient (public keys, so the machine that
    takes backups holds no secret); the identity file is needed only to read back the archive (drill,
    restore). The manifest's checksum is of the ciphertext: plain verification needs no identity."""

    recipients: tuple[str, ...] = ()
    identity_file: str | None = None
    root: Path = Path()  # a relative identity_file is relative to the project

    name = "age"
    label = "age-encrypted"
    suffix = ".age"

    def writer(self, sink: Sink) -> ClosingSink:
        return EncryptingSink(sink, recipients(list(self.recipients)))

    def reader(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        keys = identities(self.identity_file, self.root)  # the keys are read now
        if why := self._keys_mismatch(keys):  # a wrong key is this machine's problem, not a damaged backup
            raise ConfigError(
                f"cannot decrypt: {why}",
                hint="set [backup.encryption] identity_file to the key of one of those recipients",
            )
        return decrypted(chunks, keys)

    def read_command(self, file: str | None) -> str:
        return 'age -d -i "$AGE_IDENTITY_FILE"' + (f" {file}" if file else "")

    def unreadable(self) -> str | None:
        if not self.identity_file:
            return "the backup is age-encrypted and no identity_file is set here (drills and restores need it)"
        try:
            keys = identities(self.identity_file, self.root)
        except PgRunbookError:
            return None  # reading the backup back says why, as before
        return self._keys_mismatch(keys)

    def _keys_mismatch(self, keys: list[Any]) -> str | None:
        """Why none of ``keys`` can open this backup (its recipients, from the manifest, are known and
        none is the public key of a key here), or None. trial8 #2: a wrong identity must never make a
        sound backup "damaged"."""
        if not self.recipients:
            return None
        publics = {str(key.to_public()) for key in keys}
        if publics.isdisjoint(self.recipients):
            return (
                f"the backup is age-encrypted to {', '.join(self.recipients)} and the identity_file here "
                f"({self.identity_file}) holds none of their keys (drills and restores need one of them)"
            )
        return None

    def manifest_fields(self) -> dict[str, Any]:
        return {"encryption": self.name, "recipients": list(self.recipients)}


@dataclass(frozen=True)
class CodecStack:
    """The codecs a stored archive went through: ``compression`` first, then ``layers`` in the order
    they were applied (the last one is what storage holds)."""

    compression: Codec
    layers: tuple[Layer, ...] = ()

    @property
    def file_name(self) -> str:
        return BASE_NAME + self.compression.suffix + "".join(layer.suffix for layer in self.layers)

    @property
    def label(self) -> str:
        return ", ".join([self.compression.label, *(layer.label for layer in self.layers)])

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's fields that name the stack (``compression``, ``encryption``, ``recipients``)."""
        fields: dict[str, Any] = {"compression": self.compression.name, "encryption": None, "recipients": []}
        for layer in self.layers:
            fields.update(layer.manifest_fields())
        return fields

    def dump_args(self) -> list[str]:
        return self.compression.dump_args()

    def write(
        self, src: IO[bytes], sink: Sink, cfg: BackupConfig, progress: Callable[[int], None]
    ) -> tuple[int, Frames]:
        """pg_dump's output from ``src`` through every codec to ``sink`` (storage); (archive bytes, frame
        table). Each layer is finished before this returns; on failure they are ended quietly (the
        caller aborts what was written)."""
        opened: list[ClosingSink] = []
        out: Sink = sink
        for layer in reversed(self.layers):
            writer = layer.writer(out)
            opened.append(writer)
            out = writer
        try:
            result = self.compression.write(src, out, cfg, progress)
        except BaseException:
            for w in reversed(opened):
                with contextlib.suppress(Exception):
                    w.close()
            raise
        for w in reversed(opened):  # the innermost first: its last bytes go through the outer ones
            w.close()
        return result

    def unwrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The compressed stream from the stored one (every layer undone, the outermost first)."""
        for layer in reversed(self.layers):
            chunks = layer.reader(chunks)
        return chunks

    def read(self, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The archive from the stored bytes; raises zstandard.ZstdError or VerificationFailed on damage."""
        return self.compression.read(self.unwrap(chunks), frames)

    def read_into(self, fd: int, chunks: Iterator[bytes], frames: Sequence[tuple[int, int]], workers: int) -> None:
        """The archive from the stored bytes into the file ``fd`` (see Codec.read_into)."""
        self.compression.read_into(fd, self.unwrap(chunks), frames, workers)

    def decompress_into(
        self, fd: int, compressed: Iterator[bytes], frames: Sequence[tuple[int, int]], workers: int
    ) -> None:
        """The archive from the already unwrapped (decrypted) stream into ``fd``: for a reader that
        keeps the compressed bytes too (the restore's early table of contents)."""
        self.compression.read_into(fd, compressed, frames, workers)

    def first_bytes_decoder(self) -> Any | None:
        """The compression's decoder of the archive's first bytes (see Codec.first_bytes_decoder)."""
        return self.compression.first_bytes_decoder()

    def checks(self, error: str, *, ok_detail: str, failure: BaseException | None = None) -> list[Check]:
        """The read-back's checks: ``error`` is what reading raised ('' when clean), ``failure`` the
        exception itself. A layer that could not be undone (age) is its own check, ``encryption``: the
        compression under it was never reached, so it is not named."""
        from pgrunbook.backup.manifest import Check  # start-up time: see backup/naming.py

        if isinstance(failure, DecryptionFailed):
            return [Check(name="encryption", ok=False, detail=error)]
        checks = self.compression.checks(error, ok_detail=ok_detail)
        if not error:
            checks += [Check(name="encryption", ok=True, detail=f"{layer.label}, decrypted") for layer in self.layers]
        return checks

    @property
    def blocks_in_archive(self) -> bool:
        """The archive's data blocks are compressed inside it (see Codec.blocks_in_archive)."""
        return self.compression.blocks_in_archive

    def unreadable(self) -> str | None:
        """Why the archive cannot be read back here (only its stored bytes checked), or None."""
        return next((why for layer in self.layers if (why := layer.unreadable())), None)

    def restore_command(
        self,
        file: str | None = None,
        *,
        pg_restore: str = "pg_restore",
        needs: int | None = None,
        flags: Sequence[str] = ("--exit-on-error",),
    ) -> str:
        """The by-hand path (SPEC principle 2): standard tools only, URL from the environment. Owners and
        grants are restored as recorded (run it as a superuser or the owning role); on another server or
        a managed service add ``--no-owner --role=ROLE`` to give everything to one role.

        ``file``: the stored file (default: this stack's name); ``pg_restore``: how to call the
        pg_restore that reads this archive on the machine that took it (its absolute path when the one
        first on PATH cannot); ``needs``: the oldest pg_restore major that reads the archive, said in a
        trailing shell comment for any other machine; ``flags``: the error handling for the backed-up
        server's major (tools.restore_error_flags: no ``--exit-on-error`` where pg_restore >= 17 meets a
        server <= 16 and its one SET must fail; the comment then says that the command ends with exit 1
        and that one harmless error)."""
        file = file or self.file_name
        restore = " ".join([pg_restore, *flags, '--dbname "$TARGET_DATABASE_URL"'])
        stages: list[str] = []
        for read in [*(layer.read_command for layer in reversed(self.layers)), self.compression.read_command]:
            stage = read(None if stages else file)  # the first reads the file, the others a pipe
            if stage is not None:
                stages.append(stage)
        command = " | ".join([*stages, restore]) if stages else f"{restore} {file}"
        if not needs:
            return command
        comment = f"  # needs pg_restore {needs} or newer"
        if "--exit-on-error" not in flags and needs >= TRANSACTION_TIMEOUT_SINCE:
            # pg_restore >= 17 into a server <= 16 (trial11 F8): its SET fails once, by design, and exits 1
            comment += (
                "; on servers <= 16 it ends with exit 1 and one harmless error, unrecognized configuration "
                'parameter "transaction_timeout" (docs/compatibility.md): the data is restored'
            )
        return command + comment


CODECS: dict[str, Codec] = {c.name: c for c in (Zstd(), PgDumpCompression())}
LAYERS: dict[str, type[Age]] = {"age": Age}


def codec(name: str) -> Codec:
    """The codec a manifest or ``[backup] compression`` names; PgRunbookError for an unknown one."""
    try:
        return CODECS[name]
    except KeyError:
        raise PgRunbookError(f"unknown compression {name!r}", hint=f"one of: {', '.join(CODECS)}") from None


def stack(
    compression: str,
    encryption: str | None = None,
    *,
    recipients: Sequence[str] = (),
    keys: EncryptionConfig | None = None,
    root: Path = Path(),
) -> CodecStack:
    """The stack a manifest names (``compression``, ``encryption``); ``keys``/``root``: what reading its
    layers needs here (the identity file, relative to ``root``). PgRunbookError for an unknown name."""
    if encryption is None:
        return CodecStack(codec(compression))
    try:
        layer = LAYERS[encryption]
    except KeyError:
        raise PgRunbookError(f"unknown encryption {encryption!r}", hint=f"one of: {', '.join(LAYERS)}") from None
    identity = keys.identity_file if keys is not None else None
    return CodecStack(codec(compression), (layer(tuple(recipients), identity, root),))


def for_writing(cfg: BackupConfig) -> CodecStack:
    """The stack a new backup is written with: ``[backup] compression``, then age to
    ``[backup.encryption] recipients`` when there are any."""
    to = cfg.encryption.recipients
    return stack(cfg.compression, "age" if to else None, recipients=to)


def named_by(manifest: Manifest) -> CodecStack:
    """The stack ``manifest`` names, to describe it (reading it back needs `for_reading`'s keys)."""
    return stack(manifest.compression, manifest.encryption, recipients=manifest.recipients)


def for_reading(manifest: Manifest, cfg: BackupConfig, root: Path) -> CodecStack:
    """The stack ``manifest``'s backup was written with, able to read it back with this machine's keys."""
    return stack(
        manifest.compression, manifest.encryption, recipients=manifest.recipients, keys=cfg.encryption, root=root
    )


def all_file_names() -> set[str]:
    """Every stored archive name a stack can give (the repository's layout lists them)."""
    return {stack(c, e).file_name for c in CODECS for e in (None, *LAYERS)}

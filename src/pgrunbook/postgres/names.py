"""Database names pgrunbook derives (``<db>_rollback_<time>``, ``<db>_restore_<time>``) and how a name
is written into SQL shown to a person.

PostgreSQL truncates identifiers to NAMEDATALEN - 1 = 63 *bytes* (src/include/pg_config_manual.h);
pgrunbook never lets the server truncate a name it made (two long names would become one), it cuts the
base itself at a UTF-8 character boundary and marks the cut with a digest of the whole base."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta

MAX_NAME_BYTES = 63  # NAMEDATALEN - 1


def derived_dbname(base: str, suffix: str) -> str:
    """``base + suffix`` when it fits in 63 bytes; else the base cut at a character boundary, then
    ``_`` and 6 hex digits of the whole base's SHA-256 (distinct bases stay distinct), then ``suffix``.
    ``suffix`` (ASCII, e.g. ``_rollback_20261201013102``) is kept whole. Raises ValueError when the
    suffix alone leaves no room."""
    whole = base + suffix
    if len(whole.encode()) <= MAX_NAME_BYTES:
        return whole
    mark = "_" + hashlib.sha256(base.encode()).hexdigest()[:6]
    room = MAX_NAME_BYTES - len((mark + suffix).encode())
    if room < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room for a database name")
    cut = base.encode()[:room].decode("utf-8", errors="ignore")  # a split character is dropped whole
    return cut + mark + suffix


def valid_dbname(name: str) -> bool:
    """What PostgreSQL accepts as a quoted database name: 1 to 63 bytes, no NUL character."""
    return 0 < len(name.encode()) <= MAX_NAME_BYTES and "\x00" not in name


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (quotes doubled), for SQL text shown in hints;
    statements pgrunbook runs use ``psycopg.sql.Identifier``."""
    return '"' + name.replace('"', '""') + '"'


def first_free_stamp(
    start: datetime, names_for: Callable[[str], Iterable[str]], taken: Collection[str], *, tries: int = 3600
) -> str:
    """The first UTC second from ``start`` (as ``YYYYmmddHHMMSS``) for which none of ``names_for(stamp)``
    is in ``taken`` (the cluster's database names). Two runs within one second (a small database restored
    in place twice, a rollback after a fast deploy) would otherwise pick the same derived names and the
    second would fail at its very end, after the whole restore. Raises ValueError after ``tries`` seconds
    all taken (an hour of names: something else makes them)."""
    for step in range(tries):
        stamp = f"{start + timedelta(seconds=step):%Y%m%d%H%M%S}"
        if not any(name in taken for name in names_for(stamp)):
            return stamp
    raise ValueError(f"every name from {start:%Y%m%d%H%M%S} on for {tries} seconds is taken")


__all__ = ["MAX_NAME_BYTES", "derived_dbname", "first_free_stamp", "quote_ident", "valid_dbname"]

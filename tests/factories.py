"""Objects the unit tests need whole but only care about a field or two of."""

from __future__ import annotations

from datetime import UTC, datetime

from pgrunbook.backup.manifest import Manifest, TableCount


def make_manifest(tables: tuple[tuple[str, str], ...] = (), archive_size: int | None = None) -> Manifest:
    now = datetime.now(UTC)
    return Manifest(
        id="20261125T000000Z-manual",
        environment="default",
        database="app",
        server_version="15.18",
        pg_dump_version="15.18",
        compression="zstd",
        file="db.dump.zst",
        size=(archive_size or 3) // 3,
        archive_size=archive_size,
        sha256="0" * 64,
        started_at=now,
        finished_at=now,
        duration_s=0,
        label="manual",
        migration_head=None,
        tables=[TableCount(schema=s, name=n, rows=1) for s, n in tables],
        tool_version="0",
        restore_command="",
    )

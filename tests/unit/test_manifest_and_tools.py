from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.backup.manifest import Manifest, backup_id, restore_command, validate_label
from pgrunbook.errors import ConfigError, VerificationFailed
from pgrunbook.postgres.tools import parse_tool_version


def test_tool_versions() -> None:
    assert parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)").major == 15
    assert parse_tool_version("pg_dump (PostgreSQL) 17.0").minor == 0
    old = parse_tool_version("pg_dump (PostgreSQL) 9.6.24")
    assert old.major == 906  # 9.6 sorts below 10
    with pytest.raises(ValueError):
        parse_tool_version("something else")


def test_ids_and_labels() -> None:
    assert backup_id(datetime(2026, 11, 24, 2, 3, 4, tzinfo=UTC), "pre-deploy") == "20261124T020304Z-pre-deploy"
    for bad in ["", "Has Space", "../etc", "x" * 41, "drop;table", "é"]:
        with pytest.raises(ConfigError):
            validate_label(bad)
    assert validate_label("nightly-2") == "nightly-2"


def test_restore_commands_use_standard_tools_only() -> None:
    assert restore_command("zstd", "db.dump.zst").startswith("zstd -dc db.dump.zst | pg_restore --no-owner")
    assert restore_command("gzip", "db.dump") == 'pg_restore --no-owner --dbname "$TARGET_DATABASE_URL" db.dump'


@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.text(max_size=10), st.integers()).map(lambda d: json.dumps(d).encode()),
    )
)
def test_manifest_reader_rejects_garbage_with_one_clear_error(data: bytes) -> None:
    with pytest.raises(VerificationFailed, match="is unreadable"):
        Manifest.from_json(data, "env/x/manifest.json")

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.backup.codec import stack
from pgrunbook.backup.manifest import Manifest, backup_id, validate_label
from pgrunbook.errors import ConfigError, VerificationFailed
from pgrunbook.postgres import tools
from pgrunbook.postgres.tools import parse_tool_version
from tests.factories import make_manifest


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
    assert stack("zstd").restore_command().startswith("zstd -dc db.dump.zst | pg_restore --exit-on-error --dbname")
    assert stack("gzip").restore_command() == 'pg_restore --exit-on-error --dbname "$TARGET_DATABASE_URL" db.dump'


@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.text(max_size=10), st.integers()).map(lambda d: json.dumps(d).encode()),
    )
)
def test_manifest_reader_rejects_garbage_with_one_clear_error(data: bytes) -> None:
    with pytest.raises(VerificationFailed, match="is unreadable"):
        Manifest.from_json(data, "env/x/manifest.json")


def test_restore_session_settings_join_the_users_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_restore's sessions get their settings through PGOPTIONS, after whatever the user set there."""
    from pgrunbook.backup.restore_run import restore_settings
    from pgrunbook.config import load_config
    from pgrunbook.environment import Environment
    from pgrunbook.postgres.runner import child_env, connection
    from pgrunbook.postgres.url import parse_database_url

    target = parse_database_url("postgresql://app:pw@db.internal:5432/app")
    monkeypatch.setenv("PGOPTIONS", "-c search_path=app")
    env = child_env(connection(target).env, {"synchronous_commit": "off", "max_parallel_maintenance_workers": 0})
    assert env["PGOPTIONS"] == "-c search_path=app -c synchronous_commit=off -c max_parallel_maintenance_workers=0"
    monkeypatch.delenv("PGOPTIONS")
    assert "PGOPTIONS" not in child_env(connection(target).env)
    (tmp_path / "pgrunbook.toml").write_text("[restore]\nmaintenance_workers = 3\n")
    e = Environment.resolve(load_config(cwd=tmp_path, environ={"DATABASE_URL": "postgresql://h/app"}))
    # commits wait for the disk unless pgrunbook created the database (its verified marker flushes them)
    assert restore_settings(e, owned=True) == {"max_parallel_maintenance_workers": 3, "synchronous_commit": "off"}
    assert restore_settings(e, owned=False) == {"max_parallel_maintenance_workers": 3}
    assert restore_settings(e, owned=False, server_major=18) == {"max_parallel_maintenance_workers": 3}


def test_restore_maintenance_workers_follow_the_server_major(tmp_path: Path) -> None:
    """Unset, pg_restore's sessions build indexes without parallel workers on servers up to 17 (its own
    jobs use the cores), and keep the server's own setting from 18 on, where GIN indexes are built in
    parallel too (bench/RESULTS.md, session 11)."""
    from pgrunbook.backup.restore_run import restore_settings
    from pgrunbook.config import load_config
    from pgrunbook.environment import Environment

    e = Environment.resolve(load_config(cwd=tmp_path, environ={"DATABASE_URL": "postgresql://h/app"}))
    assert e.config.restore.maintenance_workers is None
    for major in (13, 15, 17):
        assert restore_settings(e, owned=True, server_major=major) == {
            "max_parallel_maintenance_workers": 0,
            "synchronous_commit": "off",
        }
    assert restore_settings(e, owned=True) == {"max_parallel_maintenance_workers": 0, "synchronous_commit": "off"}
    assert restore_settings(e, owned=True, server_major=18) == {"synchronous_commit": "off"}
    assert restore_settings(e, owned=False, server_major=19) == {}


def test_the_archive_is_kept_in_memory_only_when_it_fits_easily(tmp_path: Path) -> None:
    """auto: memory for an archive under a quarter of what this process may still take; else disk."""
    from pgrunbook.backup.restore_run import available_memory, choose_method
    from pgrunbook.config import load_config
    from pgrunbook.environment import Environment

    def env(temp: str) -> Environment:
        (tmp_path / "pgrunbook.toml").write_text(f'[restore]\njobs = 2\ntemp = "{temp}"\n')
        return Environment.resolve(load_config(cwd=tmp_path, environ={"DATABASE_URL": "postgresql://h/app"}))

    free = available_memory()
    assert free > 0  # read from /proc/meminfo (and the cgroup's limit, if any)
    small = make_manifest(archive_size=free // 10)
    large = make_manifest(archive_size=free // 3)
    assert choose_method(env("auto"), small) == ("parallel", 2, True)
    assert choose_method(env("auto"), large)[2] is False
    assert choose_method(env("disk"), small)[2] is False
    assert choose_method(env("memory"), large) == ("parallel", 2, True)


def _fake_tools(folder: Path, version: str, asked: Path) -> Path:
    """pg_dump/pg_restore stand-ins that say their version and note that they were asked."""
    folder.mkdir(parents=True)
    for name in ("pg_dump", "pg_restore"):
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "{folder}" >> "{asked}"\necho "{name} (PostgreSQL) {version}"\n')
        script.chmod(0o755)
    return folder


def test_path_is_asked_only_when_no_versioned_folder_has_the_servers_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = tmp_path / "asked"
    wrapper = _fake_tools(tmp_path / "usr-bin", "16.4", asked)  # like Debian's pg_wrapper on PATH
    monkeypatch.setenv("PATH", str(wrapper))
    monkeypatch.setattr(tools, "_VERSIONED_DIRS", [str(tmp_path / "lib" / "*" / "bin")])
    _fake_tools(tmp_path / "lib" / "15" / "bin", "15.18", asked)
    _fake_tools(tmp_path / "lib" / "14" / "bin", "14.12", asked)

    found = tools.find_client_tools(15, "15.18")
    assert found.pg_dump == tmp_path / "lib" / "15" / "bin" / "pg_dump"
    assert str(wrapper) not in asked.read_text()  # the slow wrapper was never started

    asked.unlink()
    assert tools.find_client_tools(16, "16.4").pg_dump == wrapper / "pg_dump"  # only PATH has 16
    assert str(wrapper) in asked.read_text()
    assert tools.find_client_tools(13, "13.1").version.major == 16  # none of 13 anywhere: the newest found


def test_doctor_sizes_the_next_backup_by_the_newest_real_one() -> None:
    """trial7 #18: a manifest dated days ahead (clock skew, a hand-made copy) was taken as "the last
    backup" for doctor's free-space estimate; the newest one not dated ahead is, else the largest."""
    from datetime import timedelta

    from pgrunbook.doctor import newest_real
    from tests.factories import make_manifest

    now = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)

    def at(when: datetime, size: int, bid: str) -> Manifest:
        return make_manifest().model_copy(update={"id": bid, "started_at": when, "size": size})

    future = at(now + timedelta(days=3), 4_400_000, "20261204T040000Z-skewed")
    real = at(now - timedelta(hours=2), 77_000_000, "20261201T020000Z-nightly")
    older = at(now - timedelta(days=1), 70_000_000, "20261130T020000Z-nightly")
    assert newest_real([future, real, older], now).id == real.id
    assert newest_real([at(now + timedelta(seconds=30), 1, "a"), real], now).id == "a"  # rounding, not skew
    assert newest_real([future, at(now + timedelta(days=1), 9, "b")], now).id == future.id  # all ahead: largest


def test_find_client_tools_takes_the_folders_probed_beforehand() -> None:
    """backup create asks pg_dump --version beside its connection (probe_first_batch) and hands the
    answer over: the choice is the same, and the folder is not asked a second time."""
    found = tools.installed_tools()
    if not found:
        pytest.skip("no pg_dump/pg_restore on this machine")
    folder = str(found[0].pg_dump.parent)
    probed = tools.probe_first_batch(folder)
    assert [t.pg_dump for t in probed[0]] == [found[0].pg_dump]
    major = probed[0][0].major
    assert tools.find_client_tools(major, str(major), folder, first=probed) == tools.find_client_tools(
        major, str(major), folder
    )
    with pytest.raises(tools.ToolError):  # given nothing for its only folder, it does not ask again
        tools.find_client_tools(major, str(major), folder, first=([], []))

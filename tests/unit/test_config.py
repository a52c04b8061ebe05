from __future__ import annotations

from pathlib import Path

import pytest

from pgrunbook.config import load_config
from pgrunbook.errors import ConfigError


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(cwd=tmp_path, environ={})
    assert cfg.source is None
    assert cfg.environment(None)[0] == "default"
    assert cfg.environment(None)[1].database_url_env == "DATABASE_URL"
    assert cfg.migrations_dir == tmp_path.resolve() / "prisma" / "migrations"
    assert cfg.resolve_path(cfg.backup.storage) == tmp_path.resolve() / "backups"
    assert (cfg.backup.retention.daily, cfg.backup.retention.weekly, cfg.backup.retention.monthly) == (7, 4, 6)


def test_found_by_walking_up_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "pgrunbook.toml").write_text('[backup]\nstorage = "var/bk"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    cfg = load_config(cwd=deep, environ={})
    assert cfg.source == tmp_path / "pgrunbook.toml"
    assert cfg.resolve_path(cfg.backup.storage) == tmp_path.resolve() / "var" / "bk"


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    (tmp_path / "pgrunbook.toml").write_text(
        '[backup]\ncompression = "zstd"\n[environments.production]\ndatabase_url_env = "PROD_URL"\n'
    )
    cfg = load_config(
        cwd=tmp_path,
        environ={
            "PGRUNBOOK_BACKUP__COMPRESSION": "gzip",
            "PGRUNBOOK_BACKUP__RETENTION__DAILY": "3",
            "PGRUNBOOK_ENVIRONMENTS__production__PROTECTED": "true",
            "PGRUNBOOK_RUN_ID": "not an override",
        },
    )
    assert cfg.backup.compression == "gzip"
    assert cfg.backup.retention.daily == 3
    assert cfg.environment("production")[1].protected is True


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pgrunbook.toml").write_text('[backup]\nstorage = "x"\ncompression = zstd\n')
    with pytest.raises(ConfigError) as exc:
        load_config(cwd=tmp_path, environ={})
    assert "pgrunbook.toml" in exc.value.message and "line 3" in exc.value.message
    assert exc.value.exit_code == 3


def test_unknown_key_and_bad_value_are_named(tmp_path: Path) -> None:
    (tmp_path / "pgrunbook.toml").write_text('[backup]\nstorag = "x"\ncompression = "lz4"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(cwd=tmp_path, environ={})
    assert "backup.storag: unknown key" in exc.value.message
    assert "backup.compression" in exc.value.message and "'zstd' or 'gzip'" in exc.value.message


def test_unknown_override_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"backup\.colour: unknown key"):
        load_config(cwd=tmp_path, environ={"PGRUNBOOK_BACKUP__COLOUR": "red"})


def test_bad_timezone_and_environment_selection(tmp_path: Path) -> None:
    (tmp_path / "pgrunbook.toml").write_text('[backup]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_config(cwd=tmp_path, environ={})
    (tmp_path / "pgrunbook.toml").write_text("[environments.staging]\n[environments.production]\n")
    cfg = load_config(cwd=tmp_path, environ={})
    with pytest.raises(ConfigError, match="several environments"):
        cfg.environment(None)
    with pytest.raises(ConfigError, match="unknown environment 'prod'"):
        cfg.environment("prod")


def test_explicit_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})

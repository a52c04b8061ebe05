from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgrunbook.config import load_config
from pgrunbook.errors import ConfigError
from pgrunbook.monitor.schedule import config_jobs


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


def test_an_empty_quiet_window_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "pgrunbook.toml").write_text('[environments.production]\nquiet_window = "Mon-Fri 02:00-02:00"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(cwd=tmp_path, environ={})
    assert "environments.production.quiet_window" in exc.value.message and "is empty" in exc.value.message
    assert "00:00-24:00" in exc.value.message and exc.value.exit_code == 3


def test_unknown_override_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"backup\.colour \(from PGRUNBOOK_BACKUP__COLOUR\): unknown key"):
        load_config(cwd=tmp_path, environ={"PGRUNBOOK_BACKUP__COLOUR": "red"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"PGRUNBOOK_POSTGRES__CONECT_TIMEOUT": "3"},
            "postgres.conect_timeout (from PGRUNBOOK_POSTGRES__CONECT_TIMEOUT): unknown key (known keys: bin_dir, "
            "connect_timeout)",
        ),
        (
            {"PGRUNBOOK_BACKUP__RETENTION": '{"daily": "x"}'},
            "backup.retention.daily (from PGRUNBOOK_BACKUP__RETENTION): must be a whole number, at least -1, not 'x'",
        ),
        (
            {"PGRUNBOOK_BACKUP__RETENTION__DAILY": "x"},
            "backup.retention.daily (from PGRUNBOOK_BACKUP__RETENTION__DAILY): must be a whole number, at least -1, "
            "not 'x'",
        ),
        (
            {"PGRUNBOOK_ENVIRONMENTS__prod__HELTH_URL": "http://x"},
            "environments.prod.helth_url (from PGRUNBOOK_ENVIRONMENTS__prod__HELTH_URL): unknown key (known keys: "
            "database_url_env, direct_url_env,",
        ),
        (
            {"PGRUNBOOK_MONITOR__MAX_AGE_H": "soon"},
            "monitor.max_age_h (from PGRUNBOOK_MONITOR__MAX_AGE_H): must be a number, above 0, not 'soon'",
        ),
    ],
)
def test_a_bad_override_names_its_variable_not_the_file(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    """trial7 finding 19: the file is fine; the variable is named, with the table's known keys."""
    (tmp_path / "pgrunbook.toml").write_text('[backup]\nstorage = "b"\n[environments.prod]\n')
    with pytest.raises(ConfigError) as exc:
        load_config(cwd=tmp_path, environ=environ)
    assert exc.value.message.startswith(message), exc.value.message
    assert "pgrunbook.toml" not in exc.value.message
    var = next(iter(environ))
    assert (exc.value.hint or "").startswith(f"fix or unset {var} (") and "itself is not at fault" in (
        exc.value.hint or ""
    )


def test_a_misspelt_backup_table_from_an_override_is_an_unknown_key_not_a_storage_backend(tmp_path: Path) -> None:
    from pgrunbook.environment import Environment

    (tmp_path / "pgrunbook.toml").write_text('[backup]\nstorage = "b"\n')
    environ = {"PGRUNBOOK_BACKUP__RETENTON__DAILY": "3"}
    config = load_config(cwd=tmp_path, environ=environ)
    with pytest.raises(ConfigError) as exc:
        _ = Environment.resolve(config, None).storage
    assert exc.value.message == (
        "unknown key backup.retenton (from PGRUNBOOK_BACKUP__RETENTON__DAILY): neither a [backup] key nor a "
        "storage backend's options table"
    )
    assert "keys of [backup]: storage, copies, s3," in (exc.value.hint or "") and "retention" in (exc.value.hint or "")
    assert (exc.value.hint or "").endswith("fix or unset PGRUNBOOK_BACKUP__RETENTON__DAILY")


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


# --- fuzzing: whatever the file or the environment holds, one ConfigError line or a usable config ------

_SECTIONS = {
    "project": ["migrations", "owner"],
    "backup": ["storage", "compression", "zstd_level", "timezone", "retention", "copies", "s3", "encryption"],
    "postgres": ["bin_dir", "connect_timeout"],
    "migrate": ["engine", "lock_wait_s", "lock_timeout"],
    "monitor": ["max_age_h", "webhook_url_env", "smtp"],
    "schedule": ["backup", "prune", "drill"],
    "serve": ["host", "port", "token_env", "check_interval_s", "catch_up"],
    "restore": ["method", "jobs"],
    "environments": ["production", "staging west", "ü", "x'y"],
}
_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["0 2 * * *", "@every 5s", "off", "zstd", "auto", "UTC", "Mars/Olympus", "s3://b/p", "512MB"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=6,
)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v).replace("inf", "inf").replace("nan", "nan")
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def _config_texts(draw: st.DrawFn) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from([*_SECTIONS, "nonsense"]), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys = [*_SECTIONS.get(section, ["x"]), "unknown_key"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            lines.append(f"{json.dumps(key)} = {_toml_value(draw(_values))}")
    return "\n".join(lines) + "\n"


def _must_load_or_explain(tmp: Path, text: str, environ: dict[str, str]) -> None:
    (tmp / "pgrunbook.toml").write_text(text, encoding="utf-8")
    try:
        cfg = load_config(cwd=tmp, environ=environ)
    except ConfigError as exc:
        assert exc.exit_code == 3 and exc.message and "\n" not in exc.message.strip()
        assert "Traceback" not in exc.message
        return
    # a config that loads is usable: every derived value the commands compute works
    cfg.tz  # noqa: B018
    for name in cfg.environment_names():
        cfg.environment(name)
    config_jobs(cfg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config_texts())
def test_fuzzed_config_files_load_or_fail_with_one_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _must_load_or_explain(Path(tmp), text, {})


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_as_config(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _must_load_or_explain(Path(tmp), text, {})


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "PGRUNBOOK_BACKUP__RETENTION__DAILY",
                "PGRUNBOOK_BACKUP__COMPRESSION",
                "PGRUNBOOK_SCHEDULE__BACKUP",
                "PGRUNBOOK_SERVE__PORT",
                "PGRUNBOOK_MONITOR__SMTP",
                "PGRUNBOOK_ENVIRONMENTS",
                "PGRUNBOOK_BACKUP__COPIES",
                "PGRUNBOOK_X__Y",
                "PGRUNBOOK___",
            ]
        ),
        st.one_of(st.text(max_size=40), st.sampled_from(["[]", "{}", '{"a": 1}', "[1, 2]", "-1", "1e999", "null"])),
        max_size=3,
    )
)
def test_fuzzed_environment_overrides(environ: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _must_load_or_explain(Path(tmp), '[backup]\nstorage = "b"\n', environ)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[backup]\nzstd_frame_mb = 0\n", "backup.zstd_frame_mb"),
        ("[backup]\nzstd_frame_mb = 5000\n", "backup.zstd_frame_mb"),
        ('[restore]\ntemp = "ram"\n', "restore.temp"),
        ("[restore]\nmaintenance_workers = -1\n", "restore.maintenance_workers"),
    ],
)
def test_the_new_restore_and_frame_settings_are_checked(tmp_path: Path, text: str, named: str) -> None:
    (tmp_path / "pgrunbook.toml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(cwd=tmp_path, environ={})
    assert named in exc.value.message and "\n" not in exc.value.message


@pytest.mark.parametrize(
    "text, environ, refused",
    [
        ('[migrate]\nengine = "prisma"\nrole = "app_owner"\n', {}, 'pgrunbook.toml: [migrate] role = "app_owner"'),
        ('[migrate]\nengine = "prisma"\nrole = "auto"\n', {}, 'pgrunbook.toml: [migrate] role = "auto"'),
        (
            '[migrate]\nengine = "prisma"\n',
            {"PGRUNBOOK_MIGRATE__ROLE": "app_owner"},
            "PGRUNBOOK_MIGRATE__ROLE sets [migrate] role",
        ),
        (
            '[migrate]\nrole = "app_owner"\n',
            {"PGRUNBOOK_MIGRATE__ENGINE": "prisma"},
            "(from PGRUNBOOK_MIGRATE__ENGINE)",
        ),
        ('[migrate]\nengine = "prisma"\nrole = "none"\n', {}, None),  # what Prisma does: the URL's role
        ('[migrate]\nengine = "prisma"\n', {}, None),  # role left out: nothing promised
        ('[migrate]\nengine = "native"\nrole = "app_owner"\n', {}, None),  # the native engine SET ROLEs
    ],
)
def test_a_migrate_role_prisma_cannot_apply_is_refused_in_one_line(
    tmp_path: Path, text: str, environ: dict[str, str], refused: str | None
) -> None:
    """Polish #3: `[migrate] role` with engine = "prisma" was accepted and silently not applied."""
    (tmp_path / "pgrunbook.toml").write_text(text)
    if refused is None:
        load_config(cwd=tmp_path, environ=environ)
        return
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path, environ=environ)
    message, hint = caught.value.message, caught.value.hint or ""
    assert refused in message and 'with engine = "prisma"' in message and "\n" not in message, message
    assert "SET ROLE" in message, message
    assert 'engine = "native"' in hint and "URL" in hint, hint
    assert ("unset PGRUNBOOK_MIGRATE__ROLE" in hint) == ("PGRUNBOOK_MIGRATE__ROLE" in environ), hint


# Every validator of config.py and the kinds of value pydantic refuses: (the file, what the error line
# says after "<file>: ", what the hint says). PYDANTIC_WORDS must appear in none of them.
BAD_VALUES = [
    (
        '[environments.prod]\nquiet_window = "10-12"\n',
        "environments.prod.quiet_window: '10-12' is not a quiet window: days (optional), HH:MM-HH:MM",
        "without days it is every day ('02:00-05:00')",
    ),
    (
        '[environments.prod]\nquiet_window = "Mon-Fri 02:00-02:00"\n',
        "environments.prod.quiet_window: 'Mon-Fri 02:00-02:00' is empty: it starts and ends at 02:00",
        "leave quiet_window out to allow deploys at any time",
    ),
    (
        '[environments.prod]\nquiet_window = "Mon 02:00-05:00 Mars/Base"\n',
        "environments.prod.quiet_window: 'Mon 02:00-05:00 Mars/Base': unknown time zone 'Mars/Base'",
        "write it like 'Mon-Fri 02:00-05:00 Europe/Berlin'",
    ),
    ('[backup]\ntimezone = "Mars/Base"\n', "backup.timezone: unknown time zone 'Mars/Base'", "IANA name such as UTC"),
    (
        '[backup.encryption]\nrecipients = ["ssh-rsa AAAA"]\n',
        "backup.encryption.recipients: recipient 'ssh-rsa AAAA'… is not an age public key (age1…)",
        "age-keygen -y KEY_FILE",
    ),
    (
        '[schedule]\nbackup = "61 * * * *"\n',
        "schedule.backup: schedule '61 * * * *' is not a five-field cron expression",
        "minute hour day-of-month month day-of-week",
    ),
    (
        '[environments.prod.schedule]\ndrill = "0 0 31 2 *"\n',
        "environments.prod.schedule.drill: schedule '0 0 31 2 *' never fires",
        "'@every 30s', or 'off'",
    ),
    (
        '[monitor.smtp]\nhost = "mail"\nfrom_addr = "nope"\nto = ["ops@example.com"]\n',
        "monitor.smtp.from_addr: 'nope' is not a mail address: An email address must have an @-sign",
        "one plain address such as ops@example.com",
    ),
    (
        '[monitor.smtp]\nhost = "mail"\nfrom_addr = "a@example.com"\nto = ["x"]\n',
        "monitor.smtp.to: 'x' is not a mail address",
        "one plain address",
    ),
    (
        '[monitor.smtp]\nhost = "smtp://mail:25"\nfrom_addr = "a@example.com"\nto = ["o@example.com"]\n',
        "monitor.smtp.host: is not a host name or address alone (no scheme, port, path or spaces): a URL",
        'write the name alone, e.g. host = "smtp.example.com"; the port goes in port',
    ),
    (
        '[monitor.smtp]\nhost = "mail"\nfrom_addr = "a@example.com"\nto = ["o@example.com"]\n'
        'password_env = "s3cret-pass"\n',
        "monitor.smtp.password_env: 's3cret-pass' is not an environment variable name",
        "SMTP_PASSWORD",
    ),
    (
        '[monitor.smtp]\nhost = "mail"\n',
        "monitor.smtp.from_addr: is missing: this table needs it; monitor.smtp.to: is missing",
        "add from_addr = … to [monitor.smtp]",
    ),
    (
        '[monitor]\nwebhook_url_env = "https://hooks.slack.com/services/T0/B0/tok"\n',
        "monitor.webhook_url_env: is a URL, not an environment variable name",
        "SLACK_WEBHOOK_URL",
    ),
    (
        '[environments.prod]\napp_url_env = "postgresql://app:pw@db/app"\n',
        "environments.prod.app_url_env: is a URL, not an environment variable name",
        "put the URL in a variable (APP_DATABASE_URL)",
    ),
    (
        '[environments.prod.hooks]\nmaintenance = "true"\n',
        "environments.prod.hooks: unknown hook 'maintenance'",
        "the hooks are maintenance_on, maintenance_off, app_rollback, point_app",
    ),
    (
        '[environments."prod db"]\n',
        "environments: environment name 'prod db' is not letters, digits, '.', '_' or '-'",
        "rename the table [environments.NAME]",
    ),
    (
        '[project]\nid = "-shop"\n',
        "project.id: is not letters, digits, '.', '_' or '-' starting with a letter or digit (at most 64): '-shop'",
        '"shop-7f3a2c" (pgrunbook init generates one), or leave id out',
    ),
    (
        "[backup]\nzstd_level = 50\n",
        "backup.zstd_level: must be a whole number from 1 to 19, not 50",
        "correct zstd_level or leave it out for the default, 2",
    ),
    (
        '[backup]\ncompression = "lz4"\n',
        "backup.compression: must be 'zstd' or 'gzip', not 'lz4'",
        'leave it out for the default, "zstd"',
    ),
    ("[serve]\nport = 70000\n", "serve.port: must be a whole number from 0 to 65535, not 70000", "8765"),
    (
        '[environments.prod]\nprotected = "maybe"\n',
        "environments.prod.protected: must be true or false, not 'maybe'",
        "leave it out for the default, false",
    ),
    ("[backup]\nretention = 5\n", "backup.retention: must be a table ([section] or { key = value }), not 5", None),
    ('[backup]\ncopies = "s3://b/x"\n', "backup.copies: must be a list ([…]), not a URL", None),
    ('[migrate]\nrole = ""\n', "migrate.role: must not be empty", 'default, "auto"'),
    (
        "[environments.prod]\nhealth_deadline_s = 0\n",
        "environments.prod.health_deadline_s: must be a number, above 0",
        None,
    ),
]
PYDANTIC_WORDS = ("Value error", "Input should", "String should", "List should", "Field required", "valid dictionary")


@pytest.mark.parametrize(("text", "message", "hint"), BAD_VALUES, ids=[m.split(":")[0] for _, m, _ in BAD_VALUES])
def test_every_config_error_is_one_line_in_pgrunbooks_words(
    tmp_path: Path, text: str, message: str, hint: str | None
) -> None:
    """trial #2: a refused value is `<file>: <key>: <the cause>` on one line, hint what to write; never
    pydantic's "Value error, " prefix or its "Input should be a valid dictionary or instance of …"."""
    (tmp_path / "pgrunbook.toml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(cwd=tmp_path, environ={})
    got, got_hint = exc.value.message, exc.value.hint or ""
    assert got.startswith(f"{tmp_path / 'pgrunbook.toml'}: {message}"), got
    assert "\n" not in got and "\n" not in got_hint and exc.value.exit_code == 3
    assert not any(w in got or w in got_hint for w in PYDANTIC_WORDS), (got, got_hint)
    assert hint is None or hint in got_hint, got_hint
    assert got_hint.endswith("docs/configuration.md describes every key"), got_hint
    assert "pw@" not in got and "tok" not in got  # a URL given where a variable's name goes is never echoed


def test_a_storage_backends_options_name_the_file_and_key(tmp_path: Path) -> None:
    """[backup.s3] is validated by the S3 backend when storage opens: its errors name the file too, in
    the same words as the rest of the config."""
    from pgrunbook.environment import Environment

    (tmp_path / "pgrunbook.toml").write_text('[backup.s3]\npart_size_mb = 1\nchecksum = "md5"\n')
    config = load_config(cwd=tmp_path, environ={})
    with pytest.raises(ConfigError) as exc:
        _ = Environment.resolve(config, None).storage
    assert exc.value.message == (
        f"{tmp_path / 'pgrunbook.toml'}: backup.s3.part_size_mb: must be a whole number from 5 to 512, not 1; "
        "backup.s3.checksum: must be 'sha256', 'crc32', 'crc32c' or 'off', not 'md5'"
    )
    assert (exc.value.hint or "").startswith("correct part_size_mb or leave it out for the default, 8; ")
    assert (exc.value.hint or "").endswith("docs/offsite.md describes [backup.s3]")

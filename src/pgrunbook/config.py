"""Configuration: ``pgrunbook.toml`` found by walking up, ``PGRUNBOOK_*`` overrides, validated by pydantic.

Database URLs never live in the file: it names the environment variable holding each one, so the file
can be committed and reviewed. Without a file there is one environment, ``default``, on ``DATABASE_URL``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pgrunbook.errors import ConfigError
from pgrunbook.postgres.url import DatabaseTarget, parse_database_url
from pgrunbook.timespec.cron import Schedule
from pgrunbook.timespec.window import parse_window

CONFIG_NAME = "pgrunbook.toml"
ENV_PREFIX = "PGRUNBOOK_"
ENV_SEPARATOR = "__"
DEFAULT_ENVIRONMENT = "default"
ENV_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigValueError(ValueError):
    """A value a validator refuses: the message says why in pgrunbook's words (the key and the file
    are added where the error is shown), ``hint`` what to write instead."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


PROJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ProjectConfig(_Model):
    migrations: str = "prisma/migrations"
    owner: str | None = None
    name: str | None = Field(None, description="shown in backups' markers and notes")
    id: str | None = Field(
        None,
        pattern=PROJECT_ID_PATTERN,
        description="this project's identity in backup storage: written into every manifest; projects "
        "sharing a storage folder see only their own backups (pgrunbook init generates one)",
    )


class RetentionPolicy(_Model):
    """How many periods of each kind keep a backup; -1 keeps every period (restic's convention)."""

    daily: int = Field(7, ge=-1)
    weekly: int = Field(4, ge=-1)
    monthly: int = Field(6, ge=-1)


class EncryptionConfig(_Model):
    recipients: list[str] = Field(default_factory=list, description="age public keys (age1...)")
    identity_file: str | None = Field(None, description="age secret key file; needed only for drills and restores")

    @field_validator("recipients")
    @classmethod
    def _age_recipients(cls, value: list[str]) -> list[str]:
        for r in value:
            if not r.startswith("age1"):
                raise ConfigValueError(
                    f"recipient {r[:12]!r}… is not an age public key (age1…)",
                    hint="list public keys only: age-keygen -y KEY_FILE prints the public key of a secret key",
                )
        return value


class BackupConfig(_Model):
    storage: str = "backups"
    copies: list[str] = Field(default_factory=list, description="second copies made after every backup")
    s3: dict[str, Any] = Field(
        default_factory=dict, description="the s3:// backend's options, validated by that backend (storage/s3.py)"
    )
    other_storage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="[backup.<backend>] tables of other storage backends, validated by them"
    )
    encryption: EncryptionConfig = EncryptionConfig()
    compression: Literal["zstd", "gzip"] = "zstd"
    zstd_level: int = Field(
        2, ge=1, le=19, description="2: as small as level 3 on database dumps for half its CPU (bench/RESULTS.md)"
    )
    zstd_threads: int = Field(0, ge=0, description="0 = one per CPU core")
    zstd_frame_mb: float = Field(
        64, ge=0.0625, le=4096, description="archive MB per zstd frame: restores decompress frames in parallel"
    )
    retention: RetentionPolicy = RetentionPolicy()
    timezone: str = "UTC"
    drill_database_url_env: str | None = None
    lock_wait_timeout_s: float = Field(
        30.0,
        ge=0,
        description="how long a backup waits for its tables' locks behind another session (pg_dump "
        "--lock-wait-timeout) before it gives up naming that session; 0 = without limit",
    )

    @model_validator(mode="before")
    @classmethod
    def _backend_tables(cls, data: Any) -> Any:
        """Tables this model does not know are storage backends' options (``[backup.azure]``): kept for
        the storage registry to validate. An unknown plain key is still an unknown key."""
        if isinstance(data, dict):
            tables = {k: v for k, v in data.items() if k not in cls.model_fields and isinstance(v, dict)}
            if tables:
                data = {k: v for k, v in data.items() if k not in tables}
                data["other_storage_options"] = {**data.get("other_storage_options", {}), **tables}
        return data

    def storage_options(self) -> dict[str, dict[str, Any]]:
        """Every storage backend's options table by backend name, as written (the registry validates)."""
        return {"s3": self.s3, **self.other_storage_options}

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigValueError(
                f"unknown time zone {value!r}",
                hint="write an IANA name such as UTC or Europe/Berlin (timedatectl list-timezones lists them)",
            ) from exc
        return value


class PostgresConfig(_Model):
    bin_dir: str | None = Field(None, description="where pg_dump/pg_restore live; only there if set")
    connect_timeout: int = Field(10, ge=1)


class MigrateConfig(_Model):
    engine: Literal["native", "prisma"] = "native"
    prisma_command: str = "pnpm prisma migrate deploy"
    lock_wait_s: float = Field(10.0, ge=0, description="how long to wait for the migration advisory lock")
    lock_timeout: str = Field("10s", description="PostgreSQL lock_timeout while a migration runs")
    statement_timeout: str = Field("0", description="PostgreSQL statement_timeout while a migration runs; 0 = none")
    role: str = Field(
        "auto",
        min_length=1,
        max_length=63,
        description='the role migration scripts run as: "auto" (SET ROLE to the role owning the schema\'s objects '
        'when the connecting role is a member of it), "none" (the connecting role), or a role name',
    )
    prisma_version: str | None = Field(
        None,
        description="the project's Prisma version (found in package.json, the lock file or node_modules when not "
        "set): from 7.4.0 scripts run statement by statement, before as one string",
    )


class ScheduleConfig(_Model):
    """Cron expressions ("0 2 * * *"), "@every 30s", or "off"."""

    backup: str = "0 2 * * *"
    prune: str = "30 3 * * *"
    drill: str = "0 4 * * 0"

    @field_validator("backup", "prune", "drill")
    @classmethod
    def _valid(cls, value: str) -> str:
        if value.strip() != "off":
            try:
                Schedule(value.strip())
            except ValueError as exc:
                raise ConfigValueError(
                    str(exc),
                    hint="five fields, minute hour day-of-month month day-of-week ('0 2 * * *': 02:00 every "
                    "day), or '@every 30s', or 'off'",
                ) from None
        return value.strip()


ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# a host name (RFC 1123 labels) or an IPv4/IPv6 address, without scheme, port or path
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_PATTERN = rf"^(?:{_LABEL}(?:\.{_LABEL})*|[0-9A-Fa-f:.]+)$"


def check_mail_address(value: str) -> str:
    """One plain address (``ops@example.com``), checked by email-validator without a DNS lookup."""
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(value, check_deliverability=False, globally_deliverable=False, allow_domain_literal=True)
    except EmailNotValidError as exc:
        raise ConfigValueError(
            f"{value!r} is not a mail address: {exc}", hint="write one plain address such as ops@example.com"
        ) from None
    return value


class SmtpConfig(_Model):
    host: str = Field(..., pattern=HOST_PATTERN, description="the mail server's name or address, nothing else")
    port: int = Field(25, gt=0, lt=65536)
    from_addr: str
    to: list[str] = Field(..., min_length=1)
    starttls: bool = False
    ssl: bool = False
    username_env: str | None = Field(None, description="variable holding the SMTP user name")
    password_env: str | None = Field(None, description="variable holding the SMTP password")
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("from_addr")
    @classmethod
    def _from(cls, value: str) -> str:
        return check_mail_address(value)

    @field_validator("to")
    @classmethod
    def _to(cls, value: list[str]) -> list[str]:
        return [check_mail_address(v) for v in value]

    @field_validator("username_env", "password_env")
    @classmethod
    def _var(cls, value: str | None) -> str | None:
        if value is not None and not re.match(ENV_VAR_PATTERN, value):
            if "://" in value or "@" in value:  # a value, maybe a secret: never echoed
                raise ConfigValueError(
                    "is a value, not an environment variable name",
                    hint="put the value in a variable (SMTP_PASSWORD) and name the variable here",
                )
            raise ConfigValueError(
                f"{value[:40]!r} is not an environment variable name",
                hint="name a variable (letters, digits, _) and put the value in it: SMTP_PASSWORD",
            )
        return value


class EnvironmentConfig(_Model):
    database_url_env: str = "DATABASE_URL"
    direct_url_env: str | None = None
    app_url_env: str | None = Field(
        None,
        description="variable holding the URL the application itself uses (its own role); point_app gets it "
        "with only the database name changed. Unset: database_url_env's URL, refused when its role is an admin's",
    )
    health_url: str | None = None
    health_deadline_s: float = Field(60.0, gt=0, description="keep retrying the health check this long")
    health_timeout_s: float = Field(5.0, gt=0, description="one try's timeout")
    health_interval_s: float = Field(2.0, ge=0, description="pause between tries")
    protected: bool = False
    quiet_window: str | None = None
    read_query: str = "SELECT 1"
    hooks: dict[str, str] = Field(default_factory=dict)
    hook_timeout_s: float = Field(600.0, gt=0)
    schedule: ScheduleConfig | None = Field(None, description="this environment's own schedule")
    #: where database_url_env was taken from when not from pgrunbook.toml (e.g. prisma.config.ts)
    url_origin: str | None = Field(None, exclude=True)
    #: where direct_url_env was taken from when not from pgrunbook.toml (e.g. schema.prisma's directUrl)
    direct_url_origin: str | None = Field(None, exclude=True)
    #: variable -> (``??`` or ``||``, default URL) from prisma.config.ts: used as Node would use it
    env_fallbacks: dict[str, tuple[str, str]] = Field(default_factory=dict, exclude=True, repr=False)
    #: why database_url_env may be unset here though the project has it (a .env Prisma 7 does not load)
    url_note: str | None = Field(None, exclude=True)

    def url_in(self, var: str, environ: Mapping[str, str]) -> str | None:
        """The value of ``var`` as the project's config evaluates it: the variable, or the config's own
        fallback (``process.env.X ?? "…"``: when X is undefined; ``||``: also when it is empty)."""
        got = environ.get(var)
        op, default = self.env_fallbacks.get(var, (None, None))
        if (op == "??" and got is None) or (op == "||" and not got):
            return default
        return got

    @field_validator("quiet_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_window(value)
            except ValueError as exc:
                raise ConfigValueError(
                    str(exc),
                    hint="write it like 'Mon-Fri 02:00-05:00 Europe/Berlin'; without days it is every day "
                    "('02:00-05:00'), without a zone UTC; leave quiet_window out to allow deploys at any time",
                ) from None
        return value

    @field_validator("app_url_env")
    @classmethod
    def _app_var(cls, value: str | None) -> str | None:
        if value is not None and not re.match(ENV_VAR_PATTERN, value):
            if "://" in value:  # the URL itself, password and all: never echoed
                raise ConfigValueError(
                    "is a URL, not an environment variable name",
                    hint="put the URL in a variable (APP_DATABASE_URL) and name the variable here",
                )
            raise ConfigValueError(
                f"{value[:40]!r} is not an environment variable name",
                hint="name a variable (letters, digits, _) holding the URL: APP_DATABASE_URL",
            )
        return value

    @field_validator("hooks")
    @classmethod
    def _known_hooks(cls, value: dict[str, str]) -> dict[str, str]:
        known = ("maintenance_on", "maintenance_off", "app_rollback", "point_app")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ConfigValueError(
                f"unknown hook {unknown[0]!r}", hint=f"the hooks are {', '.join(known)} (docs/deploy.md)"
            )
        return value


class MonitorConfig(_Model):
    max_age_h: float = Field(26.0, gt=0, description="newest backup older than this: warning")
    critical_age_h: float = Field(48.0, gt=0, description="older than this: critical")
    drill_max_age_d: float = Field(8.0, gt=0, description="last successful drill older than this: warning")
    webhook_url_env: str | None = Field(None, description="variable holding a Slack-compatible webhook URL")
    smtp: SmtpConfig | None = None
    state_path: str = Field(".pgrunbook/check-state.json", min_length=1)

    @field_validator("webhook_url_env")
    @classmethod
    def _webhook_var(cls, value: str | None) -> str | None:
        if value is not None and not re.match(ENV_VAR_PATTERN, value):
            if "://" in value:  # the URL itself, token and all: never echoed
                raise ConfigValueError(
                    "is a URL, not an environment variable name",
                    hint="put the URL in a variable (SLACK_WEBHOOK_URL) and name the variable here",
                )
            raise ConfigValueError(
                f"{value[:40]!r} is not an environment variable name",
                hint="name a variable (letters, digits, _) holding the webhook URL: SLACK_WEBHOOK_URL",
            )
        return value


class ServeConfig(_Model):
    host: str = Field("127.0.0.1", description="anything but loopback requires the token")
    port: int = Field(8765, ge=0, lt=65536)
    token_env: str = Field("PGRUNBOOK_SERVE_TOKEN", description="variable holding the access token")
    check_interval_s: float = Field(60.0, gt=0)
    job_timeout_s: float = Field(6 * 3600.0, gt=0)
    state_path: str = Field(".pgrunbook/serve-state.json", min_length=1)
    catch_up: bool = Field(True, description="after downtime, run a missed job once (like systemd Persistent=)")
    retries: int = Field(3, ge=0, le=20, description="a failed job is tried again this many times before its next slot")
    retry_backoff_s: float = Field(60.0, gt=0, description="wait before the first retry; doubled for each next one")
    stuck_after_s: float = Field(
        60.0, gt=0, description="/healthz answers 503 when the scheduler has not completed a tick for this long"
    )
    http_threads: int = Field(4, ge=1, le=64, description="workers answering HTTP requests")
    http_connection_limit: int = Field(
        1000, ge=8, description="open connections at most (lowered to fit the open-files limit)"
    )
    http_idle_timeout_s: float = Field(30.0, gt=0, description="an idle or slow connection is closed after this")


class JournalConfig(_Model):
    path: str = ".pgrunbook/journal.db"


class RestoreConfig(_Model):
    method: Literal["auto", "stream", "parallel"] = "auto"
    jobs: int = Field(0, ge=0, description="pg_restore -j; 0 = one per CPU core")
    temp: Literal["auto", "memory", "disk"] = Field(
        "auto",
        description="where a parallel restore keeps the decompressed archive: memory (no disk writes, freed "
        "even if pgrunbook is killed) when it takes under a quarter of the available memory, else the temp folder",
    )
    maintenance_workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="max_parallel_maintenance_workers of the restore's sessions; unset: 0 on servers up to "
        "17 (pg_restore's own jobs already keep the cores busy building indexes), the server's own setting "
        "on 18 and newer (where a GIN index, often the last and longest build, is built in parallel too; "
        "bench/); set it for a server with many more cores than jobs",
    )


class Config(_Model):
    project: ProjectConfig = ProjectConfig()
    backup: BackupConfig = BackupConfig()
    postgres: PostgresConfig = PostgresConfig()
    migrate: MigrateConfig = MigrateConfig()
    journal: JournalConfig = JournalConfig()
    monitor: MonitorConfig = MonitorConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    serve: ServeConfig = ServeConfig()
    restore: RestoreConfig = RestoreConfig()
    environments: dict[str, EnvironmentConfig] = Field(default_factory=dict)

    # Where the file was found; relative paths in it are taken from its folder.
    source: Path | None = Field(None, exclude=True)
    root: Path = Field(default_factory=Path.cwd, exclude=True)
    #: "project.migrations" -> "prisma.config.ts: migrations.path" etc.: where each value taken from the
    #: project's Prisma files (or .env) came from, for doctor
    origins: dict[str, str] = Field(default_factory=dict, exclude=True)
    #: "backup.retention.daily" -> "PGRUNBOOK_BACKUP__RETENTION__DAILY": values set by override variables
    overrides: dict[str, str] = Field(default_factory=dict, exclude=True)

    def override_for(self, path: Sequence[object]) -> str | None:
        """The override variable that set ``path`` (or a value inside it, or the table around it)."""
        return override_for(self.overrides, path)

    @field_validator("environments")
    @classmethod
    def _environment_names(cls, value: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        for name in value:
            if not re.match(ENV_NAME_PATTERN, name):
                raise ConfigValueError(
                    f"environment name {name[:70]!r} is not letters, digits, '.', '_' or '-' (at most 63, "
                    "starting with a letter or digit)",
                    hint="rename the table [environments.NAME], e.g. [environments.production]",
                )
        return value

    def environment_names(self) -> list[str]:
        return sorted(self.environments) or [DEFAULT_ENVIRONMENT]

    def environment(self, name: str | None) -> tuple[str, EnvironmentConfig]:
        """Resolve ``--env``: may be left out when only one environment is defined."""
        envs = self.environments or {DEFAULT_ENVIRONMENT: EnvironmentConfig()}
        if name is None:
            if len(envs) == 1:
                return next(iter(envs.items()))
            raise ConfigError(
                f"several environments are defined ({', '.join(sorted(envs))})",
                hint="pass --env NAME",
            )
        if name not in envs:
            raise ConfigError(
                f"unknown environment {name!r}",
                hint=f"defined: {', '.join(sorted(envs))}" + (f" in {self.source}" if self.source else ""),
            )
        return name, envs[name]

    def resolve_path(self, value: str) -> Path:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else self.root / path

    @property
    def migrations_dir(self) -> Path:
        return self.resolve_path(self.project.migrations)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.backup.timezone)


def database_target(
    env_name: str, env: EnvironmentConfig, *, direct: bool = True, environ: Mapping[str, str] | None = None
) -> DatabaseTarget:
    """The URL an environment uses; the direct (pooler-bypassing) one for migrations and backups."""
    environ = os.environ if environ is None else environ
    var = env.database_url_env
    if direct and env.direct_url_env:
        if not env.url_in(env.direct_url_env, environ):  # Prisma stops too: "Environment variable not found"
            named = env.direct_url_origin or "pgrunbook.toml: direct_url_env"
            raise ConfigError(
                f"{env.direct_url_env} is not set (environment {env_name!r} reads its direct URL for migrations "
                f"and backups from it; {named} names it); {env.database_url_env} is not used in its place, as it "
                "may go through a pooler",
                hint=f"set {env.direct_url_env} to the postgresql:// URL that bypasses the pooler (Prisma stops "
                "the same way), or stop naming it if the database has no pooler in front",
            )
        var = env.direct_url_env
    url = env.url_in(var, environ)
    if not url:
        origin = f"; {env.url_origin} names it" if env.url_origin and var == env.database_url_env else ""
        raise ConfigError(
            f"{var} is {'empty' if var in environ else 'not set'} "
            f"(environment {env_name!r} reads its database URL from it{origin})",
            hint=(env.url_note if env.url_note and var == env.database_url_env and var not in environ else None)
            or f"set {var} to the database's postgresql:// URL (user, password, host, port, database)",
        )
    target = parse_database_url(url, source=var)
    if url == environ.get(var):
        return target
    # the project config's own default (process.env.X ?? "…"): hints name it, not X (trial7b N5)
    named = (env.url_origin if var == env.database_url_env else env.direct_url_origin) or "the project's config"
    note = env.url_note if var == env.database_url_env and var not in environ else None
    unset = "empty" if var in environ else "not set"
    return replace(target, origin=f"{var}'s default in {named.split(':')[0]} ({var} is {unset})", note=note or "")


def find_config_file(start: Path | None = None) -> Path | None:
    """Walk up from ``start`` like git does, so the tool works from any sub-folder of the project."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


#: fills what the file leaves unset from the project's own files, returning where each value came from
#: (pgrunbook.prisma.config_file.apply_prisma_defaults); raises ConfigError
ProjectDefaults = Callable[[dict[str, Any], Path, Mapping[str, str]], dict[str, str]]


def load_config(
    path: Path | str | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    project_defaults: ProjectDefaults | None = None,
) -> Config:
    """Read, override and validate the configuration; every problem becomes one ConfigError line."""
    environ = os.environ if environ is None else environ
    explicit = path or environ.get("PGRUNBOOK_CONFIG")
    if explicit:
        given = Path(explicit).expanduser()
        if not given.is_file():
            raise ConfigError(f"config file {given} does not exist", hint="check --config / PGRUNBOOK_CONFIG")
        source: Path | None = given
    else:
        source = find_config_file(cwd)
    data: dict[str, Any] = {}
    label = str(source) if source else "configuration"
    if source is not None:
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}", hint="fix the file's syntax") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read: {exc}") from None
    overrides = _apply_env_overrides(data, environ)
    root = source.parent.resolve() if source else (cwd or Path.cwd()).resolve()
    origins = project_defaults(data, root, environ) if project_defaults is not None else {}
    url_origin = origins.get("environments.default.database_url_env")
    if url_origin:
        data["environments"]["default"]["url_origin"] = url_origin
    direct_origin = origins.get("environments.default.direct_url_env")
    if direct_origin:
        data["environments"]["default"]["direct_url_origin"] = direct_origin
    try:
        config = Config(**data, source=source, root=root, origins=origins, overrides=overrides)
    except ValidationError as exc:
        raise _invalid(exc, label, overrides) from None
    except TypeError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    _check_migrate_role(config, label)
    return config


def _check_migrate_role(config: Config, label: str) -> None:
    """``[migrate] role`` with ``engine = "prisma"`` is refused: Prisma's CLI runs the scripts in its
    own session as the role of the URL it reads, and pgrunbook has no SET ROLE there. The one means a
    URL has (libpq's ``options=-c role=…``) could not be proven to reach Prisma's migrate deploy here,
    and under Prisma 7 the URL is whatever variable prisma.config.ts reads, so a role that might
    silently not apply is an error instead. "none" (the URL's role) is what Prisma does, so it is fine."""
    migrate = config.migrate
    if migrate.engine != "prisma" or "role" not in migrate.model_fields_set or migrate.role == "none":
        return
    role_var, engine_var = config.override_for(("migrate", "role")), config.override_for(("migrate", "engine"))
    where = f"{role_var} sets" if role_var else f"{label}:"
    engine = f'engine = "prisma" (from {engine_var})' if engine_var else 'engine = "prisma"'
    raise ConfigError(
        f'{where} [migrate] role = "{migrate.role}" with {engine}: Prisma\'s CLI runs the migration '
        "scripts as the role of the URL it is given, and pgrunbook cannot SET ROLE inside its session",
        hint=f"{f'unset {role_var}' if role_var else 'remove role from [migrate]'} (Prisma runs them as the URL's "
        "role), or "
        'give Prisma the URL of the role that should run them, or use engine = "native" (it runs them under SET '
        "ROLE); docs/migrations.md",
    )


def override_for(overrides: Mapping[str, str], path: Sequence[object]) -> str | None:
    """The variable in ``overrides`` (dotted path -> variable) that set ``path``, a value inside it, or
    the table it lies in; None when the value came from the file."""
    dotted = ".".join(str(p) for p in path)
    for key, var in overrides.items():
        if key == dotted or key.startswith(dotted + ".") or dotted.startswith(key + "."):
            return var
    return None


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """``PGRUNBOOK_BACKUP__STORAGE=s3://...`` sets ``[backup] storage``; ``__`` separates levels.
    Returns the dotted path each variable set -> the variable, so errors name the variable, not the file."""
    applied: dict[str, str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or ENV_SEPARATOR not in var:
            continue
        parts = var[len(ENV_PREFIX) :].split(ENV_SEPARATOR)
        keys = [p if i == 1 and parts[0].lower() == "environments" else p.lower() for i, p in enumerate(parts)]
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{var}: {'.'.join(keys[:-1])} is not a table in the configuration")
            node = child
        node[keys[-1]] = _env_value(environ[var])
        applied[".".join(keys)] = var
    return applied


def _env_value(raw: str) -> Any:
    """Lists and tables may be given as JSON; everything else stays a string for pydantic to coerce."""
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _describe(exc: ValidationError, overrides: Mapping[str, str] | None = None) -> str:
    """One line for every problem; a value set by an override variable is named by that variable."""
    return describe_problems(exc, Config, overrides=overrides)[0]


def describe_problems(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    overrides: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> tuple[str, list[str]]:
    """``exc``'s problems in pgrunbook's words, one line (``key: what is wrong; key: …``), and the hints
    that go with them, each once: a validator's own (``ConfigValueError.hint``), else what the key takes.
    ``model`` is the table the errors' locations start in, ``prefix`` its path in the file (``backup.s3``)."""
    parts: list[str] = []
    hints: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(x) if str(x).isprintable() else repr(x) for x in (*prefix, *err["loc"]))  # one line
        field = _field_at(model, err["loc"])
        msg, hint = _problem(err, model, field, prefix)
        var = override_for(overrides or {}, (*prefix, *err["loc"]))
        where = f"{loc} (from {var})" if var else loc
        parts.append(f"{where}: {msg}" if loc else msg)
        if hint and hint not in hints:
            hints.append(hint)
    return "; ".join(parts), hints


def _shown(value: Any) -> str:
    """A refused value as the error shows it: short, one line, and never a URL (it may carry a secret)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        if "://" in value:
            return "a URL"
        if re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", value):  # a number given as text (an override variable)
            return value
        return repr(value[:40] + "…") if len(value) > 40 else repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _bounds(field: Any) -> str:
    """`` from 1 to 19``, `` at least 0``, `` above 0``: the limits a numeric field's constraints set."""
    low = high = ""
    for m in getattr(field, "metadata", ()):
        for attr, fmt in (("ge", " from {}"), ("gt", " above {}")):
            if getattr(m, attr, None) is not None:
                low = fmt.format(_shown(getattr(m, attr)))
        for attr, fmt in (("le", " to {}"), ("lt", " below {}")):
            if getattr(m, attr, None) is not None:
                high = fmt.format(_shown(getattr(m, attr)))
    integer = int in _members(getattr(field, "annotation", None))
    if integer and low.startswith(" above") and low[7:].lstrip("-").isdigit():  # whole numbers: > 0 is >= 1
        low = f" from {int(low[7:]) + 1}"
    if integer and high.startswith(" below") and high[7:].lstrip("-").isdigit():
        high = f" to {int(high[7:]) - 1}"
    if low and high:
        return low + high if low.startswith(" from") and high.startswith(" to") else f"{low} and{high}"
    if low:
        return ", at least" + low[5:] if low.startswith(" from") else "," + low
    if high:
        return ", at most" + high[3:] if high.startswith(" to") else "," + high
    return ""


def _kind(field: Any) -> str:
    """What a field takes, in words: ``a whole number from 1 to 19``, ``true or false``, ``text``…"""
    annotation = getattr(field, "annotation", None)
    members = [m for m in _members(annotation) if m is not type(None)]
    if members == [bool]:
        return "true or false"
    if members == [int]:
        return "a whole number" + _bounds(field)
    if members == [float]:
        return "a number" + _bounds(field)
    if get_origin(members[0] if members else None) is Literal:
        return " or ".join(repr(a) for a in get_args(members[0]))
    if members == [str]:
        return "text in quotes"
    if members and get_origin(members[0]) is list:
        return "a list"
    if members and (
        get_origin(members[0]) is dict or (isinstance(members[0], type) and issubclass(members[0], BaseModel))
    ):
        return "a table"
    return "a value of its kind"


#: what a value refused by a field's pattern is not, and what to write
_PATTERNS = {
    PROJECT_ID_PATTERN: (
        "is not letters, digits, '.', '_' or '-' starting with a letter or digit (at most 64)",
        'write e.g. id = "shop-7f3a2c" (pgrunbook init generates one), or leave id out',
    ),
    HOST_PATTERN: (
        "is not a host name or address alone (no scheme, port, path or spaces)",
        'write the name alone, e.g. host = "smtp.example.com"; the port goes in port',
    ),
}


def _problem(err: Any, model: type[BaseModel], field: Any, prefix: Sequence[str] = ()) -> tuple[str, str | None]:
    """One pydantic error as (what is wrong, hint), in pgrunbook's words."""
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    key = str(err["loc"][-1]) if err["loc"] else ""
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        text = str(cause) if cause is not None else str(err["msg"]).removeprefix("Value error, ")
        return text.rstrip("."), getattr(cause, "hint", None) or _default_hint(key, field)
    if kind == "extra_forbidden":
        return f"unknown key{_known_keys(model, err['loc'])}", "remove it, or correct its spelling"
    if kind == "missing":
        table = ".".join(str(x) for x in (*prefix, *err["loc"][:-1]))
        return "is missing: this table needs it", f"add {key} = … to [{table}]"
    if kind == "string_pattern_mismatch":
        what, how = _PATTERNS.get(str(ctx.get("pattern")), ("does not have the form this key takes", None))
        return f"{what}: {_shown(given)}", how or _default_hint(key, field)
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}, not {_shown(given)}", _default_hint(key, field)
    if kind in ("string_too_short", "too_short"):
        n = ctx.get("min_length", 1)
        what = "empty" if n == 1 else f"shorter than {n}"
        return f"must not be {what}", _default_hint(key, field)
    if kind in ("string_too_long", "too_long"):
        return f"is too long: at most {ctx.get('max_length')} characters", _default_hint(key, field)
    takes = {
        "dict_type": "a table ([section] or { key = value })",
        "model_type": "a table ([section] or { key = value })",
        "model_attributes_type": "a table ([section] or { key = value })",
        "list_type": "a list ([…])",
        "string_type": "text in quotes",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
    }.get(kind)
    if takes is None and (kind.startswith(("int_", "float_", "greater_", "less_")) or kind == "multiple_of"):
        takes = _kind(field) if field is not None else "a number"
    if takes is not None:
        return f"must be {takes}, not {_shown(given)}", _default_hint(key, field)
    return str(err["msg"]).removeprefix("Value error, "), _default_hint(key, field)


def _default_hint(key: str, field: Any) -> str | None:
    """What to do about a refused value besides correcting it: leave the key out for its default."""
    if field is None or field.is_required() or not key:
        return None
    default = field.get_default(call_default_factory=True)
    if default is None or (isinstance(default, BaseModel | dict | list) and not default):
        return f"correct {key} or leave it out"
    if isinstance(default, BaseModel):
        return f"correct {key} or leave it out for the default values"
    shown = json.dumps(default) if isinstance(default, str | bool | int | float) else repr(default)
    return f"correct {key} or leave it out for the default, {shown}"


def _field_at(model: type[BaseModel], loc: Sequence[object]) -> Any:
    """The pydantic field a location names (a key of a table), or None (a list item, a dict key)."""
    if not loc:
        return None
    tp: Any = model
    for key in loc[:-1]:
        tp = _step(tp, str(key))
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member.model_fields.get(str(loc[-1]))
    return None


def _members(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) in (Union, UnionType) else (tp,)


def _step(tp: Any, key: str) -> Any:
    """The type of ``key`` inside ``tp`` (a model's field, a dict's value), or None."""
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            field = member.model_fields.get(key)
            if field is not None:
                return field.annotation
        elif get_origin(member) is dict:
            return get_args(member)[1]
    return None


def _known_keys(model: type[BaseModel], loc: Sequence[object]) -> str:
    """`` (known keys: …)`` of the table an unknown key ``loc`` was found in, when that table is a model."""
    tp: Any = model
    for key in loc[:-1]:
        tp = _step(tp, str(key))
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            known = [n for n, f in member.model_fields.items() if not f.exclude and n not in _INTERNAL_FIELDS]
            return f" (known keys: {', '.join(known)})"
    return ""


_INTERNAL_FIELDS = frozenset({"other_storage_options"})


def _invalid(exc: ValidationError, label: str, overrides: Mapping[str, str]) -> ConfigError:
    """The file is named only when the problem is in it: a bad override names its variable alone."""
    message, hints = describe_problems(exc, Config, overrides=overrides)
    from_vars = {override_for(overrides, e["loc"]) for e in exc.errors()}
    if None not in from_vars:
        names = ", ".join(sorted(v for v in from_vars if v))
        return ConfigError(
            message,
            hint="; ".join(
                [f"fix or unset {names} ({label} itself is not at fault)", *hints, "see docs/configuration.md"]
            ),
        )
    return ConfigError(f"{label}: {message}", hint="; ".join([*hints, "docs/configuration.md describes every key"]))

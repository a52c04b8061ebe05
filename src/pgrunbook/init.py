"""``pgrunbook init``: a commented configuration a newcomer can read top to bottom."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from pgrunbook.config import CONFIG_NAME
from pgrunbook.errors import ConfigError
from pgrunbook.prisma.config_file import PrismaProject, read_prisma_project
from pgrunbook.prisma.version import detect_prisma_version, json_object

TEMPLATE = """\
# pgrunbook configuration. Database URLs never go in this file: each environment names the
# environment variable that holds its URL. Every value can be overridden with PGRUNBOOK_SECTION__KEY,
# e.g. PGRUNBOOK_BACKUP__STORAGE=/mnt/nas/pg.

[project]
name = "{name}"
id = "{project_id}"   # this project's identity in backup storage: keep it; projects sharing a folder see only their own
migrations = "{migrations}"{migrations_note}
# owner = "ops@example.com"          # who owns the backup schedule; shown in alerts

[backup]
storage = "backups"                  # a folder (relative to this file), file:///path, s3://bucket/prefix
compression = "zstd"                 # zstd (fast, default) | gzip (plain pg_dump -Fc, runbook-identical)
retention = {{ daily = 7, weekly = 4, monthly = 6 }}
timezone = "UTC"                     # calendar days/weeks/months of retention are taken here

[migrate]
{version_line}

[environments.default]
database_url_env = "{url_env}"{url_note}
{direct_line}
# protected = true
"""


def detect_migrations(root: Path) -> str:
    for candidate in (root / "prisma" / "migrations", *sorted(root.glob("*/prisma/migrations"))):
        if candidate.is_dir():
            return candidate.relative_to(root).as_posix()
    return "prisma/migrations"


def project_name(root: Path) -> str:
    """package.json's ``name`` (without an npm scope: ``@acme/shop`` is ``shop``), else the folder's
    name, as a project is usually called; only letters, digits, '.', '_' and '-'."""
    declared = _package_name(root)
    raw = declared if declared else root.resolve().name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-._") or "project"
    return name[:40]


def _package_name(root: Path) -> str | None:
    data = json_object(root / "package.json")
    name = data.get("name") if data else None
    return name.rsplit("/", 1)[-1] if isinstance(name, str) and name.strip() else None


def new_project_id(root: Path) -> str:
    """Generated once, here, and kept in the file: the name plus 8 random hex digits, so two projects
    of the same name on one backup storage never take each other's backups for their own."""
    return f"{project_name(root)}-{secrets.token_hex(4)}"


def render_config(root: Path, project_id: str | None = None) -> str:
    """The template filled from the project's Prisma files (prisma/config_file.py), each value's source
    in a comment; what they do not say keeps Prisma's defaults. ``project_id``: the id to keep (the
    replaced file's), else a new one."""
    prisma = read_prisma_project(root)
    problems = "".join(f"# could not read: {p}\n" for p in prisma.unreadable)
    version = detect_prisma_version(root)
    direct = prisma.direct_url_env
    return problems + TEMPLATE.format(
        name=project_name(root),
        project_id=project_id or new_project_id(root),
        migrations=migrations_setting(root, prisma),
        migrations_note=f"  # from {prisma.migrations.source}" if prisma.migrations else "",
        version_line=f'# prisma_version = "{version.value}"   # found in {version.source}; left unset, it is read '
        "there at every run, so a Prisma upgrade is seen (7.4+ runs scripts statement by statement)"
        if version
        else '# prisma_version = "7.4.0"          # not found in package.json, lock file or node_modules',
        url_env=prisma.url_env.value if prisma.url_env else "DATABASE_URL",
        url_note=f"  # from {prisma.url_env.source}" if prisma.url_env else "",
        direct_line=f'direct_url_env = "{direct.value}"  # from {direct.source}'
        if direct
        else '# direct_url_env = "DIRECT_DATABASE_URL"   # bypasses a transaction-mode pooler for migrations/backups',
    )


def migrations_setting(root: Path, prisma: PrismaProject | None = None) -> str:
    """The ``[project] migrations`` init writes: what the Prisma configuration names, else the folder
    found (prisma/migrations, */prisma/migrations), else Prisma's default ``prisma/migrations``."""
    prisma = prisma or read_prisma_project(root)
    return prisma.migrations.value if prisma.migrations else detect_migrations(root)


def missing_migrations_note(root: Path) -> str | None:
    """init does not create the migrations folder (Prisma does, with its first ``prisma migrate dev``;
    an empty folder made here would only hide a wrong path): when it is not there yet, where pgrunbook
    expects it, or None when it exists."""
    setting = migrations_setting(root)
    folder = Path(setting) if Path(setting).is_absolute() else root / setting
    if folder.is_dir():
        return None
    return (
        f"no migrations folder at {setting} yet: pgrunbook reads the migrations there ([project] migrations); "
        "prisma migrate dev creates it with the first migration, or set [project] migrations to where they are"
    )


def write_config(root: Path, *, force: bool = False) -> Path:
    """Write pgrunbook.toml; with ``force`` over an existing one, keeping its ``[project] id``: the id is
    whose backups are whose in storage, and a new one would make every existing backup of this very
    database "another project's" (breaker trial 11 #15)."""
    path = root / CONFIG_NAME
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="edit it, or pass --force to overwrite it")
    path.write_text(render_config(root, existing_project_id(path)), encoding="utf-8")
    return path


def existing_project_id(path: Path) -> str | None:
    """``[project] id`` of the file at ``path``, or None when there is none or the file cannot be read."""
    import tomllib

    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    value = project.get("id") if isinstance(project, dict) else None
    return value if isinstance(value, str) and value.strip() else None

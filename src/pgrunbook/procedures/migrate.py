"""``migrate deploy`` as a use case: the migration engine's deploy under the runbook's own rule, "a
protected environment needs a recent verified backup" (or the operator's ``--confirm DBNAME``).

The rule lives here, not in the Prisma engine: the engine applies migrations and knows nothing of
backups; the procedures decide when applying them is safe. ``deploy`` takes its own verified backup
first, so it calls the engine without this rule.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pgrunbook.environment import Environment
from pgrunbook.errors import ConfigError
from pgrunbook.prisma.engine import DeployReport, migrate_deploy
from pgrunbook.progress import MigrationProgress

RECENT = timedelta(hours=1)  # how old the newest verified backup of a protected environment may be


def require_safe_to_migrate(env: Environment, confirm: str | None, dbname: str) -> None:
    """On a protected environment: a verified backup from the last hour, or ``confirm`` equal to the
    database's name; raises ConfigError otherwise (nothing applied)."""
    if not env.settings.protected or confirm == dbname:
        return
    now = datetime.now(UTC)
    covering = next((m for m in env.repository.list_backups() if m.verified and m.started_at >= now - RECENT), None)
    if covering is not None:  # said, so the operator knows which restore point the migration relies on
        minutes = max(int((now - covering.started_at).total_seconds() // 60), 0)
        env.notice(
            "protected",
            f"environment {env.name} is protected: verified backup {covering.id} ({minutes} min ago) is the "
            "restore point before this migration",
            {"backup_id": covering.id},
        )
        return
    if confirm is not None:
        raise ConfigError(f"--confirm {confirm!r} does not match the database name {dbname!r}")
    raise ConfigError(
        f"environment {env.name!r} is protected and has no verified backup from the last hour",
        hint=f"run pgrunbook deploy (it backs up first), or pgrunbook backup create + backup verify, "
        f"or pass --confirm {dbname}",
    )


def migrate(
    env: Environment,
    *,
    dry_run: bool = False,
    confirm: str | None = None,
    progress: MigrationProgress | None = None,
) -> DeployReport:
    """Apply pending migrations (``pgrunbook migrate deploy``), refused on a protected environment
    without a recent verified backup; see `require_safe_to_migrate`."""

    def guard(dbname: str) -> None:
        require_safe_to_migrate(env, confirm, dbname)

    if progress is None:
        return migrate_deploy(env, dry_run=dry_run, before_apply=guard)
    return migrate_deploy(env, dry_run=dry_run, before_apply=guard, progress=progress)

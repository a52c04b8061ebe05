"""Steps shared by the procedures (deploy, rollback, restore in place): a verified safety backup, and
maintenance on … off. Each records itself in the run's journal under its usual step name."""

from __future__ import annotations

import psycopg

from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.method import BackupMethod, method_for
from pgrunbook.environment import Environment
from pgrunbook.errors import DatabaseError, VerificationFailed
from pgrunbook.journal import Run
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.database_swap import copy_database_settings
from pgrunbook.postgres.database_swap import describe as describe_database
from pgrunbook.postgres.url import redact
from pgrunbook.procedures.hooks import env_hook
from pgrunbook.progress import ProgressFn, no_progress


def verified_backup(
    env: Environment,
    run: Run,
    step: str,
    *,
    label: str,
    progress: ProgressFn = no_progress,
    method: BackupMethod | None = None,
) -> Manifest:
    """The step ``step`` ("pre-deploy backup", "pre-restore backup"): take a backup labelled ``label``
    and verify it (checksum and table of contents); raises VerificationFailed when the check fails, so
    that nothing is changed without a backup known to be good. The step's detail starts with its id."""
    method = method or method_for(env)
    with run.step(step) as info:
        manifest = method.create(env, label=label, progress=progress)
        result = method.verify(env, manifest.id, progress=progress)
        if not result.ok:
            bad = next(c for c in result.checks if not c.ok)
            raise VerificationFailed(f"{step} {manifest.id} failed verification: {bad.name}: {bad.detail}")
        info["detail"] = f"{manifest.id} verified ({manifest.size} bytes)"
    return manifest


def carry_database_settings(env: Environment, live: str, name: str) -> str:
    """The rollback database gets what lives on the app's database itself (its settings, per-role
    settings, privileges, connection limit, owner), as an in-place swap carries them: the app finds the
    same ``search_path``, ``statement_timeout``… there. Returns a description for the step's detail,
    naming any statement the runbook's role was refused (to be run by a superuser). Raises
    DatabaseError when the server cannot be reached or read."""
    target = env.target(direct=True)
    maint = "postgres" if "postgres" not in (live, name) else "template1"
    try:
        with connect(target.with_dbname(maint), purpose="carry settings") as conn:
            state, refused = copy_database_settings(conn, live, name)
    except psycopg.Error as exc:
        why = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, target.secrets())
        raise DatabaseError(
            f"could not give {name} the settings of {live}: {why}",
            hint=f"{name} holds the verified restore without {live}'s own settings (ALTER DATABASE … SET, "
            "ALTER ROLE … IN DATABASE … SET, privileges): copy them as a superuser or the database owner",
        ) from None
    if state is None:
        return f"nothing: {live} no longer exists"
    done = describe_database(state)
    if refused:
        done += f"; NOT carried over, run as a superuser: {'; '.join(refused)}"
    return done


def maintenance_on(env: Environment, run: Run) -> None:
    """The step "maintenance on": the environment's maintenance_on hook (nothing when none is set)."""
    with run.step("maintenance on"):
        env_hook(env, "maintenance_on", run.id)


def maintenance_off(env: Environment, run: Run, *, keep: bool = False, why_kept: str = "") -> None:
    """The step "maintenance off", or with ``keep`` its skip (``why_kept`` says so in the journal)."""
    if keep:
        run.skip("maintenance off", why_kept)
        return
    with run.step("maintenance off"):
        env_hook(env, "maintenance_off", run.id)

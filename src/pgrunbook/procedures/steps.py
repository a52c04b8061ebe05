"""Steps shared by the procedures (deploy, rollback, restore in place): a verified safety backup, and
maintenance on … off. Each records itself in the run's journal under its usual step name."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import psycopg

from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.method import BackupMethod, method_for
from pgrunbook.environment import Environment
from pgrunbook.errors import DatabaseError, LocalStateError, VerificationFailed
from pgrunbook.journal import Run
from pgrunbook.postgres.connect import connect_maintenance, connect_server
from pgrunbook.postgres.database_swap import copy_database_settings
from pgrunbook.postgres.database_swap import describe as describe_database
from pgrunbook.postgres.names import derived_dbname, first_free_stamp
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
    try:
        with connect_maintenance(target, avoid=(live, name), purpose="carry settings") as conn:
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


def free_stamp(env: Environment, live: str, names_for: Callable[[str], Iterable[str]]) -> str:
    """A UTC stamp (``YYYYmmddHHMMSS``, now or the first free second after) for which no database of
    ``names_for(stamp)`` exists yet on the environment's server (postgres/names.py first_free_stamp).
    Raises DatabaseError (via connect) when the server cannot be reached."""
    with connect_server(env.target(direct=True), purpose="name databases") as conn:
        taken = {str(row[0]) for row in conn.execute("SELECT datname FROM pg_database").fetchall()}
    return first_free_stamp(datetime.now(UTC), names_for, taken)


def fresh_dbname(env: Environment, live: str, infix: str) -> str:
    """``<live><infix><stamp>`` (``infix`` such as ``_rollback_``) with the first free stamp from now:
    a database of that name does not exist yet (free_stamp)."""
    return derived_dbname(live, infix + free_stamp(env, live, lambda s: [derived_dbname(live, infix + s)]))


def maintenance_on(env: Environment, run: Run) -> None:
    """The step "maintenance on": the environment's maintenance_on hook (nothing when none is set)."""
    with run.step("maintenance on") as info:
        if "maintenance_on" not in env.settings.hooks:  # "ok" alone read as "the app was stopped" (newuser14)
            info["detail"] = "no maintenance_on hook: the app was not put into maintenance"
        env_hook(env, "maintenance_on", run.id)


def maintenance_off(env: Environment, run: Run, *, keep: bool = False, why_kept: str = "") -> None:
    """The step "maintenance off", or with ``keep`` its skip (``why_kept`` says so in the journal).

    The journal never keeps the app in maintenance (break11 #10, its disk full): when the step cannot be
    recorded the hook runs all the same, unrecorded, and stderr says so. Raises HookFailed when the hook
    fails (the caller says the app is still in maintenance, with ``maintenance_off_command``)."""
    if keep:
        try:
            run.skip("maintenance off", why_kept)
        except LocalStateError as exc:
            _say(f"warning: maintenance stays on ({why_kept}); the journal could not record it: {exc.message}")
        return
    ran: dict[str, BaseException | None] = {}
    try:
        with run.step("maintenance off") as info:
            if "maintenance_off" not in env.settings.hooks:
                info["detail"] = "no maintenance_off hook: nothing to turn off"
            try:
                env_hook(env, "maintenance_off", run.id)
            except BaseException as exc:
                ran["hook"] = exc
                raise
            ran["hook"] = None
    except LocalStateError as exc:
        if "hook" in ran:  # the hook ran; only its journal row could not be written
            if ran["hook"] is not None:
                raise ran["hook"] from None
            _say(f"warning: maintenance_off ran, but the journal could not record it: {exc.message}")
            return
        _say(f"warning: the journal cannot be written ({exc.message}); running the maintenance_off hook anyway")
        env_hook(env, "maintenance_off", run.id)
        _say("maintenance_off ran (not recorded in the journal)")


def maintenance_off_command(env: Environment) -> str:
    """How to end maintenance by hand: the maintenance_off hook's command, or that there is none."""
    off = env.settings.hooks.get("maintenance_off")
    return f"run the maintenance_off hook by hand: {off}" if off else "turn it off by hand (no maintenance_off hook)"


def _say(line: str) -> None:
    """A line on stderr from inside a procedure (never fatal: a closed stderr changes nothing)."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)

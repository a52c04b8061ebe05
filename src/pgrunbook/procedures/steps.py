"""Steps shared by the procedures (deploy, rollback, restore in place): a verified safety backup, and
maintenance on … off. Each records itself in the run's journal under its usual step name."""

from __future__ import annotations

from pgrunbook.backup.manifest import Manifest
from pgrunbook.backup.method import BackupMethod, method_for
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import VerificationFailed
from pgrunbook.journal import Run
from pgrunbook.procedures.hooks import env_hook


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

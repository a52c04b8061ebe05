"""Hooks: the operator's own shell commands (scale down, point the app, roll the app back).

They run through the platform's shell with the run's context in the environment. A hook that exits
non-zero fails its step; its last output line is in the error, secrets removed.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from pgrunbook.errors import PgRunbookError
from pgrunbook.postgres.redaction import environment_secrets, redact

if TYPE_CHECKING:
    from pgrunbook.environment import Environment

HOOK_NAMES = ("maintenance_on", "maintenance_off", "app_rollback", "point_app")


class HookFailed(PgRunbookError):
    """A configured hook exited non-zero or timed out."""


def run_hook(
    hooks: dict[str, str],
    name: str,
    *,
    environment: str,
    run_id: str,
    timeout_s: float = 600,
    extra_env: dict[str, str] | None = None,
    secrets: list[str] | None = None,
) -> str | None:
    """Run hook ``name`` if configured; returns its output, or None when it is not configured."""
    command = hooks.get(name)
    if not command:
        return None
    env = {
        **os.environ,
        "PGRUNBOOK_ENV": environment,
        "PGRUNBOOK_RUN_ID": run_id,
        "PGRUNBOOK_HOOK": name,
        **(extra_env or {}),
    }
    try:
        proc = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise HookFailed(f"hook {name} did not finish within {timeout_s:g}s: {command}") from None
    # the database's secrets, and every secret the process environment holds (the hook inherits it)
    output = redact((proc.stdout + proc.stderr).strip(), [*(secrets or []), *environment_secrets(env)])
    if proc.returncode != 0:
        last = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "")
        raise HookFailed(
            f"hook {name} failed (exit {proc.returncode}): {last or command}",
            hint=f"run it by hand to see why: {command}",
        )
    return output


def env_hook(
    env: Environment,
    name: str,
    run_id: str,
    extra_env: dict[str, str] | None = None,
    secrets: list[str] | None = None,
) -> str | None:
    """``run_hook`` with an environment's hooks, timeout and secrets (plus ``secrets``)."""
    return run_hook(
        env.settings.hooks,
        name,
        environment=env.name,
        run_id=run_id,
        timeout_s=env.settings.hook_timeout_s,
        extra_env=extra_env,
        secrets=[*env.target().secrets(), *(secrets or [])],
    )

"""Which modules a real ``pgrunbook`` command line loads: the command runs in a child process, as a
user runs it, and writes the names in ``sys.modules`` at exit. The start-up tests (unit and
integration) compare them with what each command must not load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs pgrunbook's own entry point; atexit runs after the command's sys.exit too.
PROBE = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["PGRUNBOOK_TEST_MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "pgrunbook"
from pgrunbook.cli.main import main
main()
"""

# Loaded by no command that does not connect, read config or draw bars: the validation models,
# the PostgreSQL driver (and the asyncio it imports), the storage clients, notification and templates.
# storage, notification, page and metrics clients: no start-up path before the command needs them loads one
SERVICE_CLIENTS = ("boto3", "botocore", "httpx", "jinja2", "apprise", "sqlite3", "prometheus_client")
LIBRARIES = ("pydantic", "psycopg", "asyncio", "croniter", *SERVICE_CLIENTS, "rich.progress", "rich.table")


def modules_after(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, probe: str = PROBE
) -> tuple[set[str], int]:
    """The modules loaded by ``pgrunbook *args`` run in ``cwd`` (by the time ``probe`` writes them: at
    exit unless told), and its exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modules.json"
        environ = {**(env if env is not None else os.environ), "PGRUNBOOK_TEST_MODULES_OUT": str(out)}
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120
        )
        assert out.exists(), f"the probe wrote nothing: {done.stderr}"
        return set(json.loads(out.read_text())), done.returncode


def loaded(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    """The names in ``forbidden`` found in ``modules``, a package counting when any of its modules is."""
    return sorted(f for f in forbidden if any(m == f or m.startswith(f + ".") for m in modules))

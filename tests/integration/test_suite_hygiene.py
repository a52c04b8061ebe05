"""The test suite itself: stopping it never leaves a PostgreSQL cluster running (a trial's finding)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _default_stop_signals() -> None:
    """The probe suite starts with SIGTERM and SIGHUP at their default action: under `nohup` SIGHUP is
    ignored and inherited, and a suite that ignores it has nothing to stop (its conftest keeps an
    inherited SIG_IGN on purpose)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stopped_suite_stops_its_cluster(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "probe.txt"
    env = {**os.environ, "PGRUNBOOK_PROBE_OUT": str(out)}
    probe = "tests/integration/sigterm_probe.py"
    p = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", probe],
        cwd=ROOT,
        env=env,
        preexec_fn=_default_stop_signals,  # as a terminal or CI starts it, even when this suite runs under nohup
    )
    try:
        deadline = time.monotonic() + 120
        while not out.exists() or len(out.read_text().splitlines()) < 2:
            assert p.poll() is None, "the probe suite ended before its cluster ran"
            assert time.monotonic() < deadline, "the probe's cluster did not start"
            time.sleep(0.2)
        base, pid = out.read_text().splitlines()
        assert _alive(int(pid))
        p.send_signal(sig)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    deadline = time.monotonic() + 30
    while _alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _alive(int(pid))
    if left:  # leave nothing behind even when the check fails: SIGQUIT is PostgreSQL's immediate shutdown
        os.kill(int(pid), signal.SIGQUIT)
        shutil.rmtree(base, ignore_errors=True)
    assert not left, f"postmaster {pid} still ran after {sig.name}"
    assert not Path(base).exists()

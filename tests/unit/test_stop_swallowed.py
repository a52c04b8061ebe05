"""A stop signal whose exception is swallowed on its way out is still reported as the stop.

A CI run sent SIGTERM while the main thread was importing a module whose pydantic models were being
built: pydantic-core turned the ``Stopped`` raised in that moment into a ``SchemaError``, and the command
ended as "internal error" with exit 2 instead of "stopped by SIGTERM" and 143. The signal handler now
records the stop (``Stopped.requested``), and the error handler reports that stop whatever replaced it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from pgrunbook.cli.app import handle_errors
from pgrunbook.errors import Stopped


@pytest.fixture
def no_stop_yet() -> Iterator[None]:
    Stopped.requested = None
    yield
    Stopped.requested = None


def _command(raise_after_stop: bool) -> click.Command:
    @click.command()
    @handle_errors
    def cmd() -> None:
        if raise_after_stop:
            Stopped.requested = Stopped(signal.SIGTERM, "SIGTERM")
        raise ValueError('Error building "model" validator')

    return cmd


@pytest.mark.parametrize(
    ("stopped", "code", "line"), [(True, 143, "error: stopped by SIGTERM; "), (False, 2, "error: internal error: ")]
)
def test_a_swallowed_stop_is_reported_as_the_stop(no_stop_yet: None, stopped: bool, code: int, line: str) -> None:
    result = CliRunner().invoke(_command(stopped), [])
    assert result.exit_code == code
    assert result.output.startswith(line)

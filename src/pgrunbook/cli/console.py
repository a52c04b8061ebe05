"""The terminal console pgrunbook prints through (rich), loaded by `pgrunbook.cli.render.Output` when a
command first prints or asks whether stderr is a terminal: rich costs ~40-70 ms to load, which
``--help`` and a piped backup's start (before pg_dump runs) should not pay."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from pgrunbook.errors import printable


class SafeConsole(Console):
    """A rich Console that shows, never obeys, control characters in the text it is given (a label
    or table name from storage or the database could clear the screen or retitle the terminal); its
    own colours are added after this, when the text is rendered."""

    def __init__(self, **kwargs: Any):
        # ":name:" in a database, table or file name is text, never an emoji (and rich's table of
        # emoji codes, ~3,600 entries, is then never loaded: ~15 ms of every command's first line)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)

"""The columns of the live progress bars (cli/render.py's ``Output.progress``): their own module, so
rich.progress loads only when a command draws a bar."""

from __future__ import annotations

from rich.progress import DownloadColumn, ProgressColumn, Task, TransferSpeedColumn
from rich.table import Column
from rich.text import Text

from pgrunbook.cli.render import human_count


class AmountColumn(ProgressColumn):
    """Bytes as sizes (a transfer); any other unit as a count with its noun ("3.2M/5.0M rows")."""

    def __init__(self, table_column: Column | None = None) -> None:
        super().__init__(table_column)
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "bytes")
        if unit == "bytes":
            return self._bytes.render(task)
        done = human_count(task.completed)
        text = f"{done}/{human_count(task.total)} {unit}" if task.total is not None else f"{done} {unit}"
        return Text(text, style="progress.download")


class RateColumn(ProgressColumn):
    """A transfer's rate; nothing for counts, whose pace is uneven (a table's rows arrive at once)."""

    def __init__(self, table_column: Column | None = None) -> None:
        super().__init__(table_column)
        self._speed = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        return self._speed.render(task) if task.fields.get("unit", "bytes") == "bytes" else Text("")

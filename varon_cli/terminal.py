"""Readable tables for a person at a terminal instead of binary on stdout."""

from __future__ import annotations

import math
import time
from typing import TextIO

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from varon_cli.sinks import Sink

HEAD_ROWS = 15
TAIL_ROWS = 15
LIVE_GAP_S = 0.5


def format_value(value: object) -> str:
    if value is None:
        return "·"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0 or 1e-4 <= abs(value) < 1e9:
            return f"{value:.8g}"
        return f"{value:.4e}"
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text.replace("+00:00", "Z")
    return str(value)


def _displayable(table: pa.Table) -> pa.Table:
    """Nanosecond times as microsecond datetimes (Python's datetime stops there) for display."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            column = table.column(i).cast(pa.timestamp("us", tz=field.type.tz), safe=False)
            table = table.set_column(i, field.name, column)
    return table


def render_table(table: pa.Table, title: str, console: Console, head: int = HEAD_ROWS, tail: int = TAIL_ROWS) -> None:
    """Print the first and last rows of `table`, with an ellipsis row between."""
    view = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for name in table.column_names:
        view.add_column(name, justify="right" if pa.types.is_floating(table.schema.field(name).type) else "left", overflow="fold")
    n = table.num_rows
    parts = [(0, n)] if n <= head + tail else [(0, head), (n - tail, tail)]
    for index, (start, length) in enumerate(parts):
        if index:
            view.add_row(*(["…"] * table.num_columns), style="dim")
        for row in _displayable(table.slice(start, length)).to_pylist():
            view.add_row(*(format_value(v) for v in row.values()))
    console.print(view)


class TableSink(Sink):
    """Prints rows as a table: gathered to the end for a file, at once when rows trickle in live."""

    def __init__(self, schema: pa.Schema, stream: TextIO) -> None:
        super().__init__(schema)
        self._console = Console(file=stream)
        self._batches: list[pa.RecordBatch] = []
        self._last_write = time.monotonic()
        self._printed = 0
        kind = (schema.metadata or {}).get(b"varon.kind", b"stream").decode()
        self._kind = kind

    def _write(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)
        now = time.monotonic()
        if now - self._last_write >= LIVE_GAP_S:
            self._print()
        self._last_write = now

    def _print(self) -> None:
        if not self._batches:
            return
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        first = self._printed + 1
        self._printed += table.num_rows
        render_table(table, f"{self._kind}: rows {first}–{self._printed}", self._console)
        self._batches = []

    def commit(self) -> None:
        self._print()
        if not self._printed:
            self._console.print(f"{self._kind}: no rows")

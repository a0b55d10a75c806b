"""The report for people and programs: a terminal table, a JSON document, an HTML page.

`write_html` lives in `page.py` with the page's layout and is re-exported here
so that the three outputs are imported from one place.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from varon_cli.report.format import ROWS, timestamp
from varon_cli.report.metrics import CONVENTIONS, Metrics
from varon_cli.report.page import render_html, write_html

__all__ = ["render_report", "report_json", "render_html", "write_html"]


def render_report(results: Sequence[tuple[str, Metrics]], title: str, console: Console) -> None:
    """Print one column per result (e.g. the strategy and buy-and-hold) and one row per metric."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("metric")
    for name, _ in results:
        table.add_column(name, justify="right")
    for row in ROWS:
        table.add_row(row.label, *(row.write(m) for _, m in results))
    console.print(table)


def report_json(results: Sequence[tuple[str, Metrics]]) -> dict:
    """A plain JSON-serialisable document: every Metrics field, NaN and inf as null, times also as ISO text.

    Strict JSON has no NaN or Infinity; null is what every parser accepts. The
    text form of a value (including inf for a profit factor without losses)
    is the terminal table's.
    """
    return {
        "results": [
            {
                "name": name,
                "metrics": {k: _plain(v) for k, v in dataclasses.asdict(m).items()}
                | {"max_drawdown_duration_ns": m.max_drawdown_duration_ns,
                   "start": timestamp(m.start_ns) if m.start_ns is not None else None,
                   "end": timestamp(m.end_ns) if m.end_ns is not None else None},
                "display": {row.field: row.write(m) for row in ROWS},
            }
            for name, m in results
        ],
        "conventions": list(CONVENTIONS),
    }


def _plain(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

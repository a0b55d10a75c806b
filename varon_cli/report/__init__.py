"""The performance report of a backtest: metrics, tables, JSON, and a self-contained HTML page.

The backtest engine hands over arrays (bar times, equity, position notional)
and the fills table; this package turns them into numbers and pictures and
states how each number was computed, so that a reader can judge how
optimistic it is without reading the code.
"""

from varon_cli.report.folds import aggregate_folds, fold_bounds
from varon_cli.report.metrics import Metrics, compute_metrics
from varon_cli.report.render import render_report, report_json, write_html
from varon_cli.report.trades import RoundTrip, round_trips

__all__ = [
    "Metrics",
    "RoundTrip",
    "aggregate_folds",
    "compute_metrics",
    "fold_bounds",
    "render_report",
    "report_json",
    "round_trips",
    "write_html",
]

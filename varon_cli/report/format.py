"""How each metric is labelled and written, shared by the terminal table, JSON and HTML.

One list of rows keeps the three outputs in the same order with the same
labels, so a number read in the terminal is found under the same name in the
HTML page and the JSON.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

from varon_cli.report.metrics import Metrics

MISSING = "n/a"


@dataclass(frozen=True)
class Row:
    """One line of the report: the Metrics field, its label, and how to write its value."""

    field: str
    label: str
    write: Callable[[Metrics], str]


def percent(value: float) -> str:
    return _finite(value) or f"{value * 100:,.2f}%"


def ratio(value: float) -> str:
    return _finite(value) or f"{value:,.2f}"


def money(value: float) -> str:
    return _finite(value) or f"{value:,.2f}"


def count(value: int) -> str:
    return f"{value:,d}"


def timestamp(ns: int | None) -> str:
    """UTC time to the second; nanoseconds are noise in a report."""
    if ns is None:
        return MISSING
    return dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(ns: int) -> str:
    """A span in its non-zero units, e.g. '5m', '1d', '3d 4h 10m'; '0' for none."""
    seconds = ns // 1_000_000_000
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts = []
    for name, size in units:
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{name}")
    return " ".join(parts) or "0"


def bars(value: int) -> str:
    return f"{value:,d} bar" if value == 1 else f"{value:,d} bars"


def _finite(value: float) -> str:
    """'' for a finite value (the caller formats it), else how a missing or infinite value reads."""
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return ""


ROWS: tuple[Row, ...] = (
    Row("start_ns", "Start", lambda m: timestamp(m.start_ns)),
    Row("end_ns", "End", lambda m: timestamp(m.end_ns)),
    Row("bars", "Bars", lambda m: f"{count(m.bars)} x {duration(m.bar_interval_ns)}"),
    Row("initial_equity", "Initial equity", lambda m: money(m.initial_equity)),
    Row("final_equity", "Final equity", lambda m: money(m.final_equity)),
    Row("total_return", "Total return", lambda m: percent(m.total_return)),
    Row("cagr", "CAGR", lambda m: percent(m.cagr)),
    Row("volatility", "Volatility (annual)", lambda m: percent(m.volatility)),
    Row("sharpe", "Sharpe", lambda m: ratio(m.sharpe)),
    Row("sortino", "Sortino", lambda m: ratio(m.sortino)),
    Row("calmar", "Calmar", lambda m: ratio(m.calmar)),
    Row("max_drawdown", "Max drawdown", lambda m: percent(m.max_drawdown)),
    Row("max_drawdown_duration_bars", "Max drawdown duration",
        lambda m: f"{duration(m.max_drawdown_duration_ns)} ({bars(m.max_drawdown_duration_bars)})"),
    Row("exposure", "Exposure", lambda m: percent(m.exposure)),
    Row("turnover", "Turnover (total, x equity)", lambda m: ratio(m.turnover)),
    Row("turnover_annual", "Turnover (per year, x equity)", lambda m: ratio(m.turnover_annual)),
    Row("trade_count", "Trades (round trips)", lambda m: count(m.trade_count)),
    Row("win_rate", "Win rate", lambda m: percent(m.win_rate)),
    Row("profit_factor", "Profit factor", lambda m: ratio(m.profit_factor)),
    Row("fees", "Fees paid", lambda m: money(m.fees)),
    Row("funding", "Funding paid", lambda m: money(m.funding)),
    Row("directional_accuracy", "Directional accuracy", lambda m: percent(m.directional_accuracy)),
)

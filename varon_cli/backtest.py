"""`varon backtest` as a library: `signal` + the live executor + the paper venue on a simulated clock.

Nothing here decides or fills anything itself: the strategy is the one `varon
signal` runs, and the executor (risk engine and paper venue) is the one
`varon execute --venue paper` runs, fed the whole history in large batches with
each signal's own time as the clock. That is what makes backtest and live
produce the same fills (tested).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from varon_cli.config import PaperConfig, RiskConfig
from varon_cli.execution.engine import Executor
from varon_cli.strategies.base import Strategy
from varon_cli.strategies.signals import SignalGenerator

log = logging.getLogger("varon.backtest")

ASSUMPTIONS = [
    "A decision made at the close of bar t fills at the open of the symbol's next bar (the first price after it), "
    "never at the price the decision was made on.",
    "Market orders pay the taker fee (paper.taker_fee, Hyperliquid base tier 0.045%) and slippage of "
    "paper.slippage_bps beyond that open, in the adverse direction.",
    "Every position has a stop loss (the signal's, or risk.default_stop_loss from the entry). Stops, take profits and "
    "liquidations trigger on the bar's high and low; a bar that opens beyond a trigger fills at its open. When a "
    "bar touches both the stop and the take profit, the stop is assumed to have come first (pessimistic).",
    "Liquidation at maintenance margin, half the initial margin at the venue's maximum leverage (isolated margin).",
    "Funding is paid at every hour mark a bar crosses on the position at the close (longs pay a positive rate), at "
    "the rate a funding stream (--funding) settled for that symbol and hour, else at paper.funding_rate per hour.",
    "Risk limits are the live executor's: exposure per strategy and account, leverage caps, daily-loss and drawdown "
    "breakers (reduce-only until reset), order rate limit, minimum order size.",
    "An order decided on the last bar has no next price and is cancelled.",
]


@dataclass
class BacktestRun:
    """One strategy over one period: its streams and the account at the end."""

    name: str
    signals: pa.Table
    orders: pa.Table
    fills: pa.Table
    equity: pa.Table
    executor: Executor
    notional: np.ndarray

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bar close times, account equity, gross position notional) with one point per bar time."""
        ts = self.equity.column("ts").cast(pa.int64()).to_numpy()
        equity = self.equity.column("equity").to_numpy()
        if len(ts) == 0:
            return ts, equity, equity
        last = np.flatnonzero(np.append(ts[1:] != ts[:-1], True))
        notional = np.abs(self.notional)
        # gross notional per bar time: sum over the rows of that time
        group = np.cumsum(np.append(True, ts[1:] != ts[:-1])) - 1
        gross = np.bincount(group, weights=notional)
        return ts[last], equity[last], gross

    def directional(self) -> tuple[int, int]:
        """Hits and calls: a non-zero target whose sign matched the symbol's next bar return."""
        symbol = self.signals.column("symbol")
        target = self.signals.column("target").to_numpy(zero_copy_only=False)
        close = self.signals.column("price").to_numpy(zero_copy_only=False)
        hits = total = 0
        for name in pc.unique(symbol).to_pylist():
            rows = np.flatnonzero(pc.equal(symbol, name).to_numpy(zero_copy_only=False))
            if len(rows) < 2:
                continue
            t, c = target[rows[:-1]], close[rows]
            nxt = c[1:] / c[:-1] - 1.0
            called = (t != 0) & np.isfinite(t) & (nxt != 0)
            total += int(called.sum())
            hits += int((np.sign(t[called]) == np.sign(nxt[called])).sum())
        return hits, total


def run_backtest(features: pa.Table, strategy: Strategy, interval_ns: int, risk: RiskConfig, paper: PaperConfig,
                 label: str = "features", funding: pa.Table | None = None) -> BacktestRun:
    """Signals for every bar, then one pass of the executor over them with the signals' own clock."""
    generator = SignalGenerator(strategy, interval_ns, label)
    batches = [generator.signals(b) for b in features.to_batches(max_chunksize=1 << 16) if b.num_rows]
    signals = pa.Table.from_batches(batches, schema=generator.schema)
    executor = Executor(risk, paper, interval_ns, log_events=False, keep_events=False)  # counted and reported
    executor.strategy_index(strategy.name)
    executor.set_funding(funding)
    out = executor.process(signals)
    end = int(signals.column("ts").cast(pa.int64())[-1].as_py()) if signals.num_rows else 0
    leftover = executor.cancel_pending(end)
    orders = pa.concat_tables([out.orders, leftover.orders])
    return BacktestRun(strategy.name, signals, orders, out.fills, out.equity, executor, out.notional)


def fold_tables(features: pa.Table, folds: int) -> list[pa.Table]:
    """Split features into `folds` consecutive periods by bar time (never shuffled)."""
    ts = features.column("ts").cast(pa.int64()).to_numpy()
    edges = np.linspace(ts.min(), ts.max() + 1, folds + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (ts >= lo) & (ts < hi)
        out.append(features.filter(pa.array(mask)))
    return out


def metrics_of(run: BacktestRun, interval_ns: int, initial_equity: float):  # noqa: ANN201 - report.Metrics
    """The report's metrics for one run, from its per-bar curve and its fills."""
    from varon_cli.report.metrics import compute_metrics

    ts, equity, gross = run.curve()
    hits, total = run.directional()
    return compute_metrics(ts, equity, gross, run.fills, interval_ns, initial_equity, run.executor.fees,
                           run.executor.funding, hits, total)

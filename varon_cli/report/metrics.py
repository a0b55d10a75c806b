"""Performance metrics of one backtest result (a strategy, or buy-and-hold beside it).

The conventions are `CONVENTIONS` below: the report prints those sentences, so
the numbers and their definitions cannot drift apart. Choices and why:

- The return path starts at `initial_equity`, so the first bar's profit counts
  like every other bar's, and n bars give n returns over n x bar_interval.
- A year is 365.25 days of round-the-clock trading (crypto never closes), so
  bars per year = 365.25 x 86400e9 / bar_interval_ns; risk-free rate 0.
- Sharpe and Sortino are NaN, never inf, when their deviation is zero (flat
  equity, constant growth, no losing bar): an infinite ratio would rank a
  degenerate curve above every real one.
- The Sortino downside deviation averages min(r, 0)^2 over all bars (target
  0), the usual definition, so a few small losses do not look like a tail.
- Turnover is given in total and per year: the total answers "how much did it
  trade", the annual one compares runs of different lengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from varon_cli.report.curve import UNDERWATER_TOLERANCE, drawdowns, longest_run, simple_returns
from varon_cli.report.trades import executions, round_trips

YEAR_NS = 365.25 * 86400e9
NAN = float("nan")

# A position worth less than this fraction of the initial equity counts as flat:
# it is float residue of partial closes, not exposure.
FLAT_NOTIONAL = 1e-9

# A standard deviation of per-bar returns below this is float noise around a
# constant return: Sharpe would be a meaningless 1e15, so it is NaN instead.
ZERO_DEVIATION = 1e-12

CONVENTIONS = (
    "Returns are per-bar simple returns of equity marked at each bar's end, starting from the initial equity; "
    "after equity reaches 0 they are 0.",
    "A year is 365.25 days of 24h trading; annualisation uses 365.25 x 86400 s / bar interval bars per year.",
    "Sharpe = mean / sample std of per-bar returns x sqrt(bars per year), risk-free rate 0; n/a when the std is 0.",
    "Sortino = mean per-bar return / downside deviation (target 0, over all bars) x sqrt(bars per year); "
    "n/a without losing bars.",
    "CAGR = (final / initial equity)^(1 / years) - 1, with years = bars x bar interval / 365.25 days; "
    "over a short run it extrapolates wildly.",
    "Max drawdown is the largest fall from a running peak, as a fraction of the peak; "
    "its duration is the longest time spent below a previous peak.",
    "Calmar = CAGR / max drawdown; n/a without a drawdown.",
    "Exposure is the fraction of bars ending with a non-zero position.",
    "Turnover is total traded notional (sum of |size x price| over fills) / mean equity; "
    "annual turnover divides it by the years covered.",
    "Trades are round trips per strategy and symbol: opened from flat, closed when flat again or flipped; "
    "partial closes stay in the trade; a flipping fill's fee is split by size between the two trades.",
    "Win rate and profit factor count closed trades net of fees; break-even is not a win; "
    "positions open at the end are not trades; profit factor = gross profit / gross loss (inf without a losing trade).",
    "Fees and funding are totals in quote currency as the engine reports them, positive when the strategy paid.",
)


@dataclass(frozen=True)
class Metrics:
    """The numbers of one result. Fractions are fractions (0.12 = 12%); money is quote currency."""

    start_ns: int | None
    end_ns: int | None
    bars: int
    bar_interval_ns: int
    initial_equity: float
    final_equity: float
    total_return: float
    cagr: float
    volatility: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_duration_bars: int
    exposure: float
    turnover: float
    turnover_annual: float
    trade_count: int
    win_rate: float
    profit_factor: float
    fees: float
    funding: float
    directional_accuracy: float

    @property
    def max_drawdown_duration_ns(self) -> int:
        return self.max_drawdown_duration_bars * self.bar_interval_ns

    @property
    def years(self) -> float:
        return self.bars * self.bar_interval_ns / YEAR_NS


def compute_metrics(
    ts_ns: np.ndarray,
    equity: np.ndarray,
    position_notional: np.ndarray,
    fills: pa.Table | None,
    bar_interval_ns: int,
    initial_equity: float,
    fees: float,
    funding: float,
    directional_hits: int | None = None,
    directional_total: int | None = None,
) -> Metrics:
    """Metrics of one result from its per-bar arrays and its fills (see the module's conventions).

    `ts_ns` (int64 ns or datetime64), `equity` and `position_notional` have one
    value per bar; `fills` holds this result's fills only (None or empty for
    buy-and-hold). Zero or one bar, flat equity, no fills, and equity reaching
    zero give NaN where a number has no meaning, never an exception or inf
    from a division by zero. Inconsistent arguments raise ValueError.
    """
    ts = _as_ns(ts_ns)
    eq = np.asarray(equity, dtype=np.float64)
    pos = np.asarray(position_notional, dtype=np.float64)
    _check(ts, eq, pos, bar_interval_ns, initial_equity)
    n = eq.size
    path = np.concatenate(([float(initial_equity)], eq))
    returns = simple_returns(path)
    per_year = YEAR_NS / bar_interval_ns
    years = n * bar_interval_ns / YEAR_NS
    total_return = float(path[-1] / initial_equity - 1.0)
    cagr = _cagr(total_return, years)
    dd = drawdowns(path)
    max_dd = float(dd.max())
    trips = round_trips(fills)
    net = np.array([t.net_pnl for t in trips], dtype=np.float64)
    traded = executions(fills).notional
    mean_equity = float(eq.mean()) if n else NAN
    turnover = traded / mean_equity if mean_equity > 0 else NAN
    return Metrics(
        start_ns=int(ts[0]) if n else None,
        end_ns=int(ts[-1]) if n else None,
        bars=n,
        bar_interval_ns=int(bar_interval_ns),
        initial_equity=float(initial_equity),
        final_equity=float(path[-1]),
        total_return=total_return,
        cagr=cagr,
        volatility=float(returns.std(ddof=1) * math.sqrt(per_year)) if n >= 2 else NAN,
        sharpe=_sharpe(returns, per_year),
        sortino=_sortino(returns, per_year),
        calmar=cagr / max_dd if max_dd > 0 else NAN,
        max_drawdown=max_dd,
        max_drawdown_duration_bars=longest_run(dd[1:] > UNDERWATER_TOLERANCE),
        exposure=float(np.mean(np.abs(pos) > FLAT_NOTIONAL * initial_equity)) if n else NAN,
        turnover=turnover,
        turnover_annual=turnover / years if years > 0 else NAN,
        trade_count=len(trips),
        win_rate=float(np.mean(net > 0)) if net.size else NAN,
        profit_factor=_profit_factor(net),
        fees=float(fees),
        funding=float(funding),
        directional_accuracy=directional_hits / directional_total if directional_hits is not None and directional_total else NAN,
    )


def _as_ns(ts_ns: np.ndarray) -> np.ndarray:
    ts = np.asarray(ts_ns)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ns]")
    return ts.astype(np.int64, copy=False)


def _check(ts: np.ndarray, eq: np.ndarray, pos: np.ndarray, bar_interval_ns: int, initial_equity: float) -> None:
    if not (ts.shape == eq.shape == pos.shape and eq.ndim == 1):
        raise ValueError(f"ts, equity and position_notional must be 1-d of one length, got {ts.shape}, {eq.shape}, {pos.shape}")
    if bar_interval_ns <= 0:
        raise ValueError(f"bar_interval_ns must be positive, got {bar_interval_ns}")
    if not (math.isfinite(initial_equity) and initial_equity > 0):
        raise ValueError(f"initial_equity must be a positive number, got {initial_equity}")
    if not (np.isfinite(eq).all() and np.isfinite(pos).all()):
        raise ValueError("equity and position_notional must be finite at every bar")


def _cagr(total_return: float, years: float) -> float:
    if years <= 0:
        return NAN
    if total_return <= -1:
        return -1.0
    with np.errstate(over="ignore"):  # a tiny span annualises to inf, not an exception
        return float(np.expm1(np.log1p(total_return) / years))


def _sharpe(returns: np.ndarray, per_year: float) -> float:
    if returns.size < 2:
        return NAN
    std = float(returns.std(ddof=1))
    mean = float(returns.mean())
    if std <= ZERO_DEVIATION * max(1.0, abs(mean)):
        return NAN
    return mean / std * math.sqrt(per_year)


def _sortino(returns: np.ndarray, per_year: float) -> float:
    if returns.size < 2:
        return NAN
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside <= ZERO_DEVIATION:
        return NAN
    return float(returns.mean()) / downside * math.sqrt(per_year)


def _profit_factor(net: np.ndarray) -> float:
    gains = float(net[net > 0].sum())
    losses = float(-net[net < 0].sum())
    if losses > 0:
        return gains / losses
    return math.inf if gains > 0 else NAN

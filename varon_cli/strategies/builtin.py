"""Baselines every report compares against: buy-and-hold, ema-cross, momentum.

Each keeps its state per symbol in arrays and runs one compiled loop over the
batch, so a live bar and a backtest over a year of bars take the same path.
They read only the bar's close, so they work on any feature spec.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

from varon_cli.strategies.base import Decisions, Strategy


def _grow(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    if len(array) >= size:
        return array
    out = np.full((size,) + array.shape[1:], fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def _closes(batch: pa.RecordBatch) -> np.ndarray:
    return batch.column("close").to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


class BuyAndHold(Strategy):
    """Fully long, always: the benchmark every strategy has to beat."""

    name = "buy-and-hold"

    def __init__(self, params: dict[str, str]) -> None:
        super().__init__(params)
        self._no_leftover_params()

    def decide(self, batch: pa.RecordBatch, symbols: np.ndarray) -> Decisions:
        return Decisions.targets(np.ones(batch.num_rows))


@njit(cache=True)
def _ema_cross(close, sym, fast_a, slow_a, warmup, allow_short, fast, slow, seen, out):
    for i in range(close.shape[0]):
        s = sym[i]
        c = close[i]
        if not c > 0.0:
            out[i] = np.nan
            continue
        if seen[s] == 0:
            fast[s] = c
            slow[s] = c
        else:
            fast[s] += fast_a * (c - fast[s])
            slow[s] += slow_a * (c - slow[s])
        seen[s] += 1
        if seen[s] < warmup:
            out[i] = 0.0
        elif fast[s] > slow[s]:
            out[i] = 1.0
        else:
            out[i] = -1.0 if allow_short else 0.0


class EmaCross(Strategy):
    """Long while the fast EMA of the close is above the slow one, short (or flat) below.

    Parameters: fast (12), slow (48) in bars; short (1 = go short on a cross down, 0 = go flat).
    Flat until `slow` bars have been seen for the symbol.
    """

    name = "ema-cross"

    def __init__(self, params: dict[str, str]) -> None:
        super().__init__(params)
        self.fast_n = int(self._param("fast", 12, int, 1))
        self.slow_n = int(self._param("slow", 48, int, 2))
        self.allow_short = bool(self._param("short", 1, int, 0))
        self._no_leftover_params()
        if self.fast_n >= self.slow_n:
            from varon_cli.errors import UsageError

            raise UsageError(f"ema-cross: fast ({self.fast_n}) must be shorter than slow ({self.slow_n})")
        self._fast = np.zeros(0)
        self._slow = np.zeros(0)
        self._seen = np.zeros(0, np.int64)

    def decide(self, batch: pa.RecordBatch, symbols: np.ndarray) -> Decisions:
        n_sym = int(symbols.max()) + 1 if len(symbols) else 0
        self._fast, self._slow = _grow(self._fast, n_sym, 0.0), _grow(self._slow, n_sym, 0.0)
        self._seen = _grow(self._seen, n_sym, 0)
        out = np.empty(batch.num_rows)
        _ema_cross(_closes(batch), symbols, 2.0 / (self.fast_n + 1), 2.0 / (self.slow_n + 1), self.slow_n,
                   self.allow_short, self._fast, self._slow, self._seen, out)
        return Decisions.targets(out)


@njit(cache=True)
def _momentum(close, sym, lookback, threshold, allow_short, ring, seen, out):
    for i in range(close.shape[0]):
        s = sym[i]
        c = close[i]
        if not c > 0.0:
            out[i] = np.nan
            continue
        slot = seen[s] % lookback
        past = ring[s, slot]
        ring[s, slot] = c
        seen[s] += 1
        if seen[s] <= lookback:
            out[i] = 0.0
            continue
        change = c / past - 1.0
        if change > threshold:
            out[i] = 1.0
        elif change < -threshold:
            out[i] = -1.0 if allow_short else 0.0
        else:
            out[i] = 0.0


class Momentum(Strategy):
    """Time-series momentum: long after a rise over `lookback` bars (20), short (or flat) after a fall.

    Parameters: lookback (20 bars), threshold (0: the minimum move, as a fraction), short (1 or 0).
    """

    name = "momentum"

    def __init__(self, params: dict[str, str]) -> None:
        super().__init__(params)
        self.lookback = int(self._param("lookback", 20, int, 1))
        self.threshold = self._param("threshold", 0.0, float, 0.0)
        self.allow_short = bool(self._param("short", 1, int, 0))
        self._no_leftover_params()
        self._ring = np.zeros((0, self.lookback))
        self._seen = np.zeros(0, np.int64)

    def decide(self, batch: pa.RecordBatch, symbols: np.ndarray) -> Decisions:
        n_sym = int(symbols.max()) + 1 if len(symbols) else 0
        self._ring, self._seen = _grow(self._ring, n_sym, 0.0), _grow(self._seen, n_sym, 0)
        out = np.empty(batch.num_rows)
        _momentum(_closes(batch), symbols, self.lookback, self.threshold, self.allow_short, self._ring, self._seen, out)
        return Decisions.targets(out)


BUILTIN: dict[str, type[Strategy]] = {cls.name: cls for cls in (BuyAndHold, EmaCross, Momentum)}

"""The strategy interface every decision-maker implements, rule or model.

A strategy sees features one batch at a time (one row per symbol per bar, in
time order) and returns, for every row, a target in -1..1 of its allowed
exposure, and optionally a leverage, a stop-loss price and a take-profit price
(NaN = the executor's defaults). It may keep state between batches; a batch of
one row (live) and one batch of a whole file (backtest) must give the same
decisions, which the built-in strategies get by running one compiled loop with
carried state.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from varon_cli.errors import UsageError


@dataclass(frozen=True)
class Decisions:
    """One entry per features row: what the strategy wants."""

    target: np.ndarray
    leverage: np.ndarray
    stop_loss: np.ndarray
    take_profit: np.ndarray

    @classmethod
    def targets(cls, target: np.ndarray) -> Decisions:
        nan = np.full(len(target), np.nan)
        return cls(np.asarray(target, np.float64), nan, nan.copy(), nan.copy())


class Strategy(abc.ABC):
    """Base class: `name`, its parameters, what it needs, and `decide`."""

    name: str = ""
    #: feature columns (besides the bars columns) the strategy reads
    required_columns: tuple[str, ...] = ("close",)
    #: the feature-spec hash a model was trained on; None for rule strategies
    feature_hash: str | None = None
    model_id: str | None = None

    def __init__(self, params: dict[str, str]) -> None:
        self.params = dict(params)

    @abc.abstractmethod
    def decide(self, batch: pa.RecordBatch, symbols: np.ndarray) -> Decisions:
        """Decisions for every row of `batch`; `symbols` holds a small integer per row's (venue, symbol)."""

    # -- helpers -------------------------------------------------------------------------------------
    def _param(self, key: str, default: float, kind: type = float, low: float | None = None) -> float:
        raw = self.params.pop(key, None)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise UsageError(f"--param {key}={raw!r}: expected a {kind.__name__} for strategy {self.name}") from None
        if low is not None and value < low:
            raise UsageError(f"--param {key}={raw!r}: must be at least {low:g} for strategy {self.name}")
        return value

    def _no_leftover_params(self) -> None:
        if self.params:
            raise UsageError(f"strategy {self.name} has no parameter(s) {', '.join(sorted(self.params))}")

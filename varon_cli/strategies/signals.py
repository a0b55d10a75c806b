"""Features in, signals out: one decision per symbol per bar, as each bar arrives.

The decision time of a bar is its close (open time + interval), which is also
the signal's `ts`; the bar's open, high, low and close travel with the signal
so the executor's paper venue can fill at the first price after it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from varon_cli.errors import InputError
from varon_cli.intervals import format_interval, parse_interval
from varon_cli.runtime import StreamItem, Watermark
from varon_cli.schemas import FEATURE_HASH_KEY, INTERVAL_KEY, SIGNALS, TS
from varon_cli.strategies.base import Strategy
from varon_cli.symbols import SymbolTable

log = logging.getLogger("varon.signal")


def check_features(strategy: Strategy, metadata: dict[bytes, bytes], columns: list[str], label: str) -> int:
    """Refuse features the strategy was not built for; returns the bar interval in ns."""
    raw_interval = metadata.get(INTERVAL_KEY)
    if raw_interval is None:
        raise InputError(f"{label}: features without varon.interval metadata; make them with `varon bars | varon features`")
    interval = parse_interval(raw_interval.decode())
    actual = (metadata.get(FEATURE_HASH_KEY) or b"").decode()
    if strategy.feature_hash and actual != strategy.feature_hash:
        raise InputError(f"{label}: features have spec hash {actual or 'none'}, but {strategy.name} was built for "
                         f"{strategy.feature_hash}; recompute them with the model's spec")
    missing = [c for c in strategy.required_columns if c not in columns]
    if missing:
        raise InputError(f"{label}: strategy {strategy.name} needs feature column(s) {', '.join(missing)}")
    return interval


class SignalGenerator:
    """A stream stage (runtime.Processor): features batches in, signals batches out."""

    def __init__(self, strategy: Strategy, interval_ns: int, label: str = "features") -> None:
        self.strategy = strategy
        self.interval_ns = interval_ns
        self.label = label
        self.schema = SIGNALS.schema_with({INTERVAL_KEY: format_interval(interval_ns).encode()})
        self._symbols = SymbolTable()
        self._offset = 0
        self.rows = 0

    def signals(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        codes, const = self._symbols.encode(batch.column("venue"), batch.column("symbol"), self.label, self._offset)
        self._offset += n
        symbols = np.full(n, const, np.int64) if const >= 0 else codes.astype(np.int64)
        decisions = self.strategy.decide(batch, symbols)
        bar_ts = batch.column("ts").cast(pa.int64())
        ts = pa.array(bar_ts.to_numpy(zero_copy_only=False) + self.interval_ns, pa.int64()).cast(TS)
        columns = {
            "ts": ts, "bar_ts": bar_ts.cast(TS), "symbol": batch.column("symbol"),
            "strategy": pa.array([self.strategy.name] * n, pa.string()),
            "target": pa.array(decisions.target, pa.float64()), "leverage": pa.array(decisions.leverage, pa.float64()),
            "stop_loss": pa.array(decisions.stop_loss, pa.float64()),
            "take_profit": pa.array(decisions.take_profit, pa.float64()),
            "price": batch.column("close"), "model_id": pa.array([self.strategy.model_id] * n, pa.string()),
            "venue": batch.column("venue"), "bar_open": batch.column("open"), "bar_high": batch.column("high"),
            "bar_low": batch.column("low"),
        }
        self.rows += n
        return pa.RecordBatch.from_arrays([columns[f.name].cast(f.type) for f in self.schema], schema=self.schema)

    def push(self, batch: pa.RecordBatch) -> Iterator[StreamItem]:
        if batch.num_rows:
            yield self.signals(batch)

    def advance(self, watermark: Watermark) -> Iterator[StreamItem]:
        yield watermark

    def finish(self) -> Iterator[StreamItem]:
        return iter(())

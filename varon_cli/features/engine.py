"""Bars in, features out: one engine for files and for live streams.

`FeatureEngine` keeps every indicator's state per (venue, symbol). A batch of
bars, whether a whole file or the single bar that just closed, runs through the
same compiled kernels with that state, so batch and incremental values are
identical. Rows before every feature has enough history are flagged
(`warmup = true`, NaN values) or dropped, never filled with zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from varon_cli.errors import InputError
from varon_cli.features import kernels as K
from varon_cli.features.spec import FeatureDef, FeatureSpec
from varon_cli.runtime import Watermark
from varon_cli.schemas import BARS, FEATURE_HASH_KEY, FEATURE_SPEC_KEY, FEATURES, INTERVAL_KEY
from varon_cli.symbols import SymbolTable

Columns = dict[str, np.ndarray]


def _state_size(f: FeatureDef) -> int:
    p = f.params
    return {
        "log_return": lambda: 2 + p.get("horizon", 0),
        "ema_ratio": lambda: 3,
        "macd": lambda: 8,
        "rsi": lambda: 4,
        "bollinger_pctb": lambda: K.RING_HEADER + p.get("period", 0),
        "natr": lambda: 4,
        "realized_vol": lambda: 2 + K.RING_HEADER + p.get("period", 0),
        "volume_zscore": lambda: K.RING_HEADER + p.get("period", 0),
    }.get(f.kind, lambda: 0)()


def _runner(f: FeatureDef) -> Callable[[np.ndarray, Columns, list[np.ndarray]], None]:
    """The call that computes feature `f` over some rows of one symbol into `outs`."""
    p = f.params
    kind = f.kind
    if kind == "log_return":
        return lambda st, c, o: K.log_return(st, c["close"], p["horizon"], o[0])
    if kind == "ema_ratio":
        return lambda st, c, o: K.ema_ratio(st, c["close"], p["period"], o[0])
    if kind == "macd":
        return lambda st, c, o: K.macd(st, c["close"], p["fast"], p["slow"], p["signal"], o[0], o[1], o[2])
    if kind == "rsi":
        return lambda st, c, o: K.rsi(st, c["close"], p["period"], o[0])
    if kind == "bollinger_pctb":
        return lambda st, c, o: K.bollinger_pctb(st, c["close"], p["period"], float(p["nbdev"]), o[0])
    if kind == "natr":
        return lambda st, c, o: K.natr(st, c["high"], c["low"], c["close"], p["period"], o[0])
    if kind == "realized_vol":
        return lambda st, c, o: K.realized_vol(st, c["close"], p["period"], o[0])
    if kind == "volume_zscore":
        return lambda st, c, o: K.zscore(st, c["volume"], p["period"], o[0])
    if kind == "taker_buy_ratio":
        return lambda st, c, o: K.taker_buy_ratio(c["buy_volume"], c["volume"], o[0])
    if kind == "vwap_deviation":
        return lambda st, c, o: K.vwap_deviation(c["close"], c["vwap"], o[0])
    if kind == "time_encoding":
        return lambda st, c, o: K.time_encoding(c["ts"], o[0], o[1], o[2], o[3])
    raise AssertionError(f"no kernel for feature kind {kind}")


class _SymbolState:
    """Everything the engine remembers about one (venue, symbol)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.states = [np.zeros(_state_size(f), dtype=np.float64) for f in spec.features]
        self.rows = 0
        self.last_ts = np.iinfo(np.int64).min


class FeatureEngine:
    """Stateful feature computation over a stream of bars."""

    INPUTS = ("open", "high", "low", "close", "volume", "buy_volume", "vwap")

    def __init__(self, spec: FeatureSpec, warmup: str = "flag", label: str = "input",
                 input_metadata: dict[bytes, bytes] | None = None) -> None:
        self.spec = spec
        self.warmup = warmup
        self.label = label
        self.symbols = SymbolTable()
        self._per_symbol: list[_SymbolState] = []
        self._runners = [_runner(f) for f in spec.features]
        self._widths = [len(f.columns) for f in spec.features]
        self.rows_in = 0
        meta = {FEATURE_SPEC_KEY: spec.canonical_json().encode(), FEATURE_HASH_KEY: spec.hash.encode()}
        if input_metadata and INTERVAL_KEY in input_metadata:
            meta[INTERVAL_KEY] = input_metadata[INTERVAL_KEY]
        self.fields = [pa.field(c, pa.float64()) for c in spec.columns]
        self.schema = FEATURES.schema_with(meta, self.fields)

    def _symbol_state(self, code: int) -> _SymbolState:
        while code >= len(self._per_symbol):
            self._per_symbol.append(_SymbolState(self.spec))
        return self._per_symbol[code]

    # -- stream processor ------------------------------------------------------
    def push(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        n = batch.num_rows
        if n == 0:
            return
        offset = self.rows_in
        cols = self._inputs(batch, offset)
        codes, const = self.symbols.encode(batch.column("venue"), batch.column("symbol"), self.label, offset)
        outs = [np.empty(n, dtype=np.float64) for _ in self.spec.columns]
        warm = np.empty(n, dtype=np.bool_)
        if const >= 0:
            self._compute(const, cols, np.arange(n), outs, warm, offset, gather=False)
        else:
            order = np.argsort(codes, kind="stable")
            bounds = np.flatnonzero(np.diff(codes[order])) + 1
            for rows in np.split(order, bounds):
                self._compute(int(codes[rows[0]]), cols, rows, outs, warm, offset, gather=True)
        self.rows_in += n
        out = self._assemble(batch, outs, warm)
        if out.num_rows:
            yield out

    def advance(self, watermark: Watermark) -> Iterator[Watermark]:
        yield watermark  # features hold nothing back: pass event time on

    def finish(self) -> Iterator[pa.RecordBatch]:
        return iter(())

    # -- helpers -----------------------------------------------------------
    def _inputs(self, batch: pa.RecordBatch, offset: int) -> Columns:
        cols: Columns = {"ts": batch.column("ts").cast(pa.int64()).to_numpy()}
        for name in self.INPUTS:
            arr = batch.column(name)
            values = (arr.fill_null(float("nan")) if arr.null_count else arr).to_numpy(zero_copy_only=False)
            if name in ("buy_volume", "vwap"):
                cols[name] = values
                continue
            ok = values >= 0 if name == "volume" else values > 0
            ok &= np.isfinite(values)
            if not ok.all():
                row = int(np.argmin(ok))
                raise InputError(f"{self.label}: row {offset + row}: field {name} is {float(values[row])!r}: "
                                 f"must be {'non-negative' if name == 'volume' else 'positive'} and finite")
            cols[name] = values
        return cols

    def _compute(self, code: int, cols: Columns, rows: np.ndarray, outs: list[np.ndarray], warm: np.ndarray,
                 offset: int, gather: bool) -> None:
        state = self._symbol_state(code)
        local = {k: np.ascontiguousarray(v[rows]) for k, v in cols.items()} if gather else cols
        ts = local["ts"]
        if ts[0] <= state.last_ts or (ts.shape[0] > 1 and not (np.diff(ts) > 0).all()):
            bad = 0 if ts[0] <= state.last_ts else int(np.argmin(np.diff(ts) > 0)) + 1
            raise InputError(f"{self.label}: row {offset + int(rows[bad])}: field ts is not after the previous bar of "
                             f"{self.symbols.symbols[code]}: bars must be in time order per symbol")
        state.last_ts = int(ts[-1])
        m = ts.shape[0]
        col = 0
        for runner, st, width in zip(self._runners, state.states, self._widths):
            buffers = [np.empty(m, dtype=np.float64) for _ in range(width)] if gather else outs[col:col + width]
            runner(st, local, buffers)
            if gather:
                for j in range(width):
                    outs[col + j][rows] = buffers[j]
            col += width
        warm[rows] = (state.rows + np.arange(m)) < self.spec.lookback
        state.rows += m

    def _assemble(self, batch: pa.RecordBatch, outs: list[np.ndarray], warm: np.ndarray) -> pa.RecordBatch:
        base = [batch.column(name) for name in BARS.column_names]
        arrays = base + [pa.array(warm)] + [pa.array(o) for o in outs]
        out = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        if self.warmup == "drop" and warm.any():
            out = out.filter(pa.array(~warm))
        return out


def features_from_table(table: pa.Table, spec: FeatureSpec, warmup: str = "flag") -> pa.Table:
    """Convenience for research code and tests: features of an in-memory bars table."""
    engine = FeatureEngine(spec, warmup, input_metadata=table.schema.metadata)
    out = [b for batch in table.to_batches() for b in engine.push(batch)]
    return pa.Table.from_batches(out, schema=engine.schema)


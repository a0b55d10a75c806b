"""Trades (or finer bars) into OHLCV bars, for files and live streams alike.

`BarAggregator` is a stream processor: `push` a batch, get the bars it closed;
`advance` on an upstream watermark; `finish` at end of input. A whole file is
pushed in large batches and a live feed in small ones, through the same
compiled loop (`bar_kernel`), so both give identical bars.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from varon_cli import bar_kernel as K
from varon_cli.errors import InputError, UsageError
from varon_cli.config import BarsConfig
from varon_cli.intervals import format_interval, parse_duration, parse_interval
from varon_cli.runtime import Watermark
from varon_cli.schemas import BARS, INTERVAL_KEY, StreamKind, TRADES
from varon_cli.symbols import SymbolTable, string_buffers

log = logging.getLogger("varon.bars")

MAX_BARS_PER_CALL = 50_000_000
_EMPTY_F = np.empty(0, dtype=np.float64)
_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_B = np.empty(0, dtype=np.bool_)


@dataclass(frozen=True)
class BarSettings:
    interval_ns: int
    lateness_ns: int = 0
    late: str = "drop"  # drop | fail
    partial: str = "flag"  # flag | skip
    source_interval_ns: int = 0  # > 0 when resampling bars into coarser bars

    @property
    def interval(self) -> str:
        return format_interval(self.interval_ns)


    @classmethod
    def resolve(cls, cfg: BarsConfig, source: StreamKind, metadata: dict[bytes, bytes], from_file: bool, label: str) -> BarSettings:
        """Settings for one run: config values parsed, `late = auto` decided by where input comes from."""
        interval = parse_interval(cfg.interval)
        late = cfg.late if cfg.late != "auto" else ("fail" if from_file else "drop")
        return cls(interval_ns=interval, lateness_ns=parse_duration(cfg.lateness, "lateness"), late=late,
                   partial=cfg.partial, source_interval_ns=source_interval(source, metadata, interval, label))


@dataclass
class BarStats:
    records_in: int = 0
    bars_out: int = 0
    late_dropped: int = 0
    first_late_row: int = -1


def source_interval(kind: StreamKind, metadata: dict[bytes, bytes], target_ns: int, label: str) -> int:
    """The input's bar interval when resampling (0 for trades), checked against the target."""
    if kind is TRADES:
        return 0
    raw = metadata.get(INTERVAL_KEY)
    if not raw:
        raise InputError(f"{label}: bars input has no varon.interval in its metadata, so it cannot be resampled")
    src = parse_interval(raw.decode())
    if target_ns % src != 0:
        raise UsageError(f"cannot resample {format_interval(src)} bars into {format_interval(target_ns)} bars: the target must be a whole multiple")
    return src


class BarAggregator:
    """Stateful bar builder over a stream of trades or finer bars."""

    @staticmethod
    def input_columns(source: StreamKind) -> list[str]:
        """The columns bars reads; a file reader can skip the rest."""
        if source is TRADES:
            return ["ts", "venue", "symbol", "price", "size", "side"]
        return [c for c in BARS.column_names]

    def __init__(self, settings: BarSettings, source: StreamKind = TRADES, label: str = "input") -> None:
        if settings.lateness_ns < 0:
            raise UsageError("lateness must not be negative")
        self.settings = settings
        self.source = source
        self.label = label
        self.stats = BarStats()
        self.symbols = SymbolTable()
        self._slots = int(settings.lateness_ns // settings.interval_ns) + 2
        self._g = np.zeros(K.G_SIZE, dtype=np.int64)
        self._g[K.G_FIRST_LATE] = -1
        self._sent_watermark = K.UNSET
        self._cap_symbols = 0
        self._grow(8)
        self.schema = BARS.schema_with({INTERVAL_KEY: settings.interval.encode()})

    # -- state -------------------------------------------------------------
    def _grow(self, n: int) -> None:
        if n <= self._cap_symbols:
            return
        cap = max(n, 2 * self._cap_symbols)
        slot_i = np.full((cap, self._slots, 5), K.UNSET, dtype=np.int64)
        slot_f = np.zeros((cap, self._slots, 7), dtype=np.float64)
        sym_i = np.zeros((cap, 3), dtype=np.int64)
        sym_f = np.zeros(cap, dtype=np.float64)
        if self._cap_symbols:
            old = self._cap_symbols
            slot_i[:old], slot_f[:old], sym_i[:old], sym_f[:old] = self._slot_i, self._slot_f, self._sym_i, self._sym_f
        self._slot_i, self._slot_f, self._sym_i, self._sym_f = slot_i, slot_f, sym_i, sym_f
        self._cap_symbols = cap

    def _outputs(self, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if capacity > MAX_BARS_PER_CALL:
            raise InputError(
                f"{self.label}: timestamps jump so far that {capacity:,} {self.settings.interval} bars would be emitted at once; "
                "check the input's timestamps or use a longer interval"
            )
        return (np.empty((3, capacity), dtype=np.int64), np.empty((7, capacity), dtype=np.float64), np.empty(capacity, dtype=np.bool_))

    def _capacity(self, max_event_ns: int, min_ts_ns: int) -> int:
        interval = self.settings.interval_ns
        lo = self._g[K.G_F] if self._g[K.G_FSET] else min_ts_ns // interval
        hi = max(int(self._g[K.G_M]), max_event_ns) // interval + 1
        return len(self.symbols) * max(int(hi - lo) + 2, 1)

    def _state(self) -> tuple:
        return (self._g, self._slot_i, self._slot_f, self._sym_i, self._sym_f)

    # -- stream processor --------------------------------------------------------
    def push(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch | Watermark]:
        n = batch.num_rows
        if n == 0:
            return
        offset = self.stats.records_in
        sym, sym_const = self.symbols.encode(batch.column("venue"), batch.column("symbol"), self.label, offset)
        self._grow(len(self.symbols))
        ts = _ts_ns(batch.column("ts"))
        if self.source is TRADES:
            price = _float(batch.column("price"), "price", self.label, offset)
            size = _float(batch.column("size"), "size", self.label, offset)
            buy = _taker_buy(batch.column("side"), self.label, offset)
            columns = (ts, sym, sym_const, price, price, price, price, size, _EMPTY_F, _EMPTY_F, _EMPTY_I, _EMPTY_B, buy)
        else:
            get = lambda name: _float(batch.column(name), name, self.label, offset)  # noqa: E731
            trades = batch.column("trades").fill_null(0).to_numpy().astype(np.int64, copy=False)
            partial = batch.column("partial").fill_null(False).to_numpy(zero_copy_only=False)
            columns = (ts, sym, sym_const, get("open"), get("high"), get("low"), get("close"), get("volume"),
                       get("buy_volume"), get("vwap"), trades, partial, _EMPTY_B)
        out = self._outputs(self._capacity(int(ts.max()), int(ts.min())))
        count = K.aggregate(*columns, self.settings.interval_ns, self.settings.lateness_ns, len(self.symbols), offset, *self._state(), *out)
        self.stats.records_in += n
        self._check_errors(batch, offset)
        yield from self._emit(out, count)
        yield from self._progress()

    def advance(self, watermark: Watermark) -> Iterator[pa.RecordBatch | Watermark]:
        out = self._outputs(self._capacity(watermark.ts_ns, watermark.ts_ns))
        count = K.advance_to(watermark.ts_ns, self.settings.interval_ns, self.settings.lateness_ns, len(self.symbols), *self._state(), *out)
        yield from self._emit(out, count)
        yield from self._progress()

    def finish(self) -> Iterator[pa.RecordBatch]:
        out = self._outputs(self._capacity(int(self._g[K.G_M]), int(self._g[K.G_M])))
        count = K.flush(self.settings.interval_ns, self.settings.source_interval_ns, len(self.symbols), *self._state(), *out)
        yield from self._emit(out, count)
        if self.stats.late_dropped:
            log.warning(
                "%d late record(s) dropped in total (lateness %s); the first was input row %d",
                self.stats.late_dropped, format_interval(self.settings.lateness_ns),
                self.stats.first_late_row,
            )

    # -- helpers -----------------------------------------------------------
    def _progress(self) -> Iterator[Watermark]:
        """Tell downstream how far bars are final: every bar opening before the frontier is out."""
        if self._g[K.G_FSET]:
            frontier = int(self._g[K.G_F]) * self.settings.interval_ns
            if frontier > self._sent_watermark:
                self._sent_watermark = frontier
                yield Watermark(frontier)

    def _check_errors(self, batch: pa.RecordBatch, offset: int) -> None:
        err = int(self._g[K.G_ERR])
        if err:
            row = int(self._g[K.G_ERR_ROW])
            local = row - offset
            if err == K.ERR_CAPACITY:
                raise AssertionError("bar output buffer too small")  # a bug, not input
            field = {K.ERR_PRICE: "price" if self.source is TRADES else "close", K.ERR_SIZE: "size" if self.source is TRADES else "volume"}[err]
            value = batch.column(field)[local].as_py()
            raise InputError(f"{self.label}: row {row}: field {field} is {value!r}: must be {'positive' if field in ('price', 'close') else 'non-negative'} and finite")
        late = int(self._g[K.G_LATE])
        if late > self.stats.late_dropped:
            new = late - self.stats.late_dropped
            self.stats.late_dropped = late
            self.stats.first_late_row = int(self._g[K.G_FIRST_LATE])
            if self.settings.late == "fail":
                row = self.stats.first_late_row
                ts_value = batch.column("ts")[row - offset].as_py() if offset <= row < offset + batch.num_rows else None
                raise InputError(
                    f"{self.label}: row {row}: field ts {ts_value} is older than a bar already closed: "
                    f"the input is not sorted by ts (allow disorder with --lateness, or --late drop to count and skip such rows)"
                )
            log.warning("%d late record(s) dropped (the first late one was input row %d): more than %s behind event time",
                        new, self.stats.first_late_row, format_interval(self.settings.lateness_ns))

    def _emit(self, out: tuple[np.ndarray, np.ndarray, np.ndarray], count: int) -> Iterator[pa.RecordBatch]:
        if count == 0:
            return
        out_i, out_f, out_p = out
        codes = out_i[1, :count]
        venues, symbols = self.symbols.venue_column(codes), self.symbols.symbol_column(codes)
        partial = out_p[:count]
        columns = [
            pa.array(out_i[0, :count]).cast(BARS.schema.field("ts").type),
            venues, symbols,
            *(pa.array(out_f[j, :count]) for j in range(7)),
            pa.array(out_i[2, :count]),
            pa.array(partial),
        ]
        batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        if self.settings.partial == "skip" and partial.any():
            batch = batch.filter(pa.array(~partial))
        self.stats.bars_out += batch.num_rows
        if batch.num_rows:
            yield batch


def _ts_ns(arr: pa.Array) -> np.ndarray:
    if arr.null_count:
        raise InputError("ts has null values")
    return arr.cast(pa.int64()).to_numpy()


def _float(arr: pa.Array, name: str, label: str, offset: int) -> np.ndarray:
    if arr.null_count:
        if name in ("buy_volume", "vwap"):
            return arr.fill_null(float("nan")).to_numpy()
        row = offset + int(pc.index(pc.is_null(arr), True).as_py())
        raise InputError(f"{label}: row {row}: field {name} is null")
    return arr.to_numpy()


_BUY = pa.scalar("buy", pa.string())
_SELL = pa.scalar("sell", pa.string())


@numba.njit(cache=True)
def _scan_sides(offsets, data, out):
    """Taker-buy flags from 'buy'/'sell' strings in one pass; returns the first bad row or -1."""
    for i in range(out.shape[0]):
        start = offsets[i]
        length = offsets[i + 1] - start
        if length == 3 and data[start] == 98 and data[start + 1] == 117 and data[start + 2] == 121:  # buy
            out[i] = True
        elif length == 4 and data[start] == 115 and data[start + 1] == 101 and data[start + 2] == 108 and data[start + 3] == 108:  # sell
            out[i] = False
        else:
            return i
    return -1


def _taker_buy(side: pa.Array, label: str, offset: int) -> np.ndarray:
    if pa.types.is_string(side.type) and not side.null_count:
        buy = np.empty(len(side), dtype=np.bool_)
        bad = _scan_sides(*string_buffers(side), buy)
        if bad < 0:
            return buy
    buy = pc.equal(side, _BUY)
    valid = pc.or_(buy, pc.equal(side, _SELL))
    if side.null_count or not pc.all(valid).as_py():
        bad = pc.invert(pc.fill_null(valid, False))
        row = int(pc.index(bad, True).as_py())
        raise InputError(f"{label}: row {offset + row}: field side is {side[row].as_py()!r}: expected 'buy' or 'sell' (the taker's side)")
    return buy.to_numpy(zero_copy_only=False)


def bars_from_table(table: pa.Table, settings: BarSettings, source: StreamKind = TRADES) -> pa.Table:
    """Convenience for research code and tests: all bars of an in-memory table."""
    agg = BarAggregator(settings, source)
    out = [b for batch in table.to_batches() for b in agg.push(batch)]
    out += list(agg.finish())
    out = [b for b in out if isinstance(b, pa.RecordBatch)]
    return pa.Table.from_batches(out, schema=agg.schema)

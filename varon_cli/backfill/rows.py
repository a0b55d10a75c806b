"""Arrow tables of fetched candles and funding, in the contract's `bars` and `funding` kinds.

Venues send numbers as JSON strings; each response becomes string columns that
Arrow casts to float64 in one pass, then one table in the kind's declared
schema. What a candle does not say is filled as the contract documents:
buy_volume and vwap NaN, trades null when the venue gives no count, partial
false (only closed bars are ever recorded).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from varon_cli.backfill.http import FetchError
from varon_cli.schemas import BARS, FUNDING, TS

NAN = pa.scalar(float("nan"), pa.float64())


def _floats(values: Sequence[str] | pa.Array, name: str, venue: str) -> pa.Array:
    arr = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    try:
        return arr.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise FetchError(f"{venue}: a response holds a non-numeric {name}: {str(exc).splitlines()[0]}") from None


def _timestamps(values: Sequence[int | str], scale: int) -> pa.Array:
    """Integers (or integer strings) in units of 1/scale seconds -> timestamp[ns, UTC]."""
    ints = pa.array(values).cast(pa.int64())
    return pc.multiply(ints, pa.scalar(1_000_000_000 // scale, pa.int64())).cast(TS)


def bars_table(venue: str, symbol: str, ts: Sequence[int | str], scale: int, open_: Sequence[str],
               high: Sequence[str], low: Sequence[str], close: Sequence[str], volume: Sequence[str],
               trades: Sequence[int] | None = None) -> pa.Table:
    """Closed candles as a `bars` table; `ts` is the bar open in units of 1/scale s (1 = s, 1000 = ms)."""
    n = len(ts)
    columns = {
        "ts": _timestamps(ts, scale),
        "venue": pa.repeat(pa.scalar(venue), n),
        "symbol": pa.repeat(pa.scalar(symbol), n),
        "open": _floats(open_, "open", venue),
        "high": _floats(high, "high", venue),
        "low": _floats(low, "low", venue),
        "close": _floats(close, "close", venue),
        "volume": _floats(volume, "volume", venue),
        "buy_volume": pa.repeat(NAN, n),
        "vwap": pa.repeat(NAN, n),
        "trades": pa.array(trades, pa.int64()) if trades is not None else pa.nulls(n, pa.int64()),
        "partial": pa.repeat(pa.scalar(False), n),
    }
    return pa.table(columns, schema=BARS.schema)


def funding_table(venue: str, symbol: str, time_ms: Sequence[int], funding_rate: Sequence[str],
                  premium: Sequence[str]) -> pa.Table:
    """Settled funding as a `funding` table: ts = settlement time (also recv_ts, so reruns are identical)."""
    n = len(time_ms)
    ts = _timestamps(time_ms, 1000)
    columns = {
        "ts": ts,
        "recv_ts": ts,
        "venue": pa.repeat(pa.scalar(venue), n),
        "symbol": pa.repeat(pa.scalar(symbol), n),
        "funding_rate": _floats(funding_rate, "fundingRate", venue),
        "premium": _floats(premium, "premium", venue),
        "mark_price": pa.repeat(NAN, n),
        "oracle_price": pa.repeat(NAN, n),
        "open_interest": pa.repeat(NAN, n),
    }
    return pa.table(columns, schema=FUNDING.schema)


def ts_ns(table: pa.Table) -> np.ndarray:
    """The ts column as int64 ns."""
    return table["ts"].combine_chunks().cast(pa.int64()).to_numpy() if table.num_rows else np.empty(0, np.int64)


def within(table: pa.Table, lo: int, hi: int) -> pa.Table:
    """Rows with lo <= ts < hi, sorted by ts, one row per ts (the last one wins).

    Venues answer newest first and sometimes with a bucket outside the asked
    range; this puts every page into the same shape before it is stored."""
    if table.num_rows == 0:
        return table
    ts = ts_ns(table)
    keep = np.flatnonzero((ts >= lo) & (ts < hi))
    order = keep[np.argsort(ts[keep], kind="stable")]
    sorted_ts = ts[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = sorted_ts[1:] != sorted_ts[:-1]
    return table.take(pa.array(order[last]))

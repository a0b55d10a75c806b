"""Rebuild data/sample/ from the real market data in ../shared/data (see data/PROVENANCE.md).

Run once by a maintainer; the outputs are committed. Conversions only rename
and retype columns into varon streams: no value is changed or invented.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from varon_cli.schemas import BARS, INTERVAL_KEY, TRADES, TS  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "data" / "sample"
CANDLE_START, CANDLE_END = "2024-07-01", "2024-09-01"  # two months of 5m candles per symbol


def trades() -> pa.Table:
    src = pq.read_table(SHARED / "trades" / "btcusdt-trades.parquet")
    n = src.num_rows
    ts = src["timestamp"].cast(TS)
    # buyer_maker=True means the seller was the taker
    side = pc.if_else(pc.equal(src["buyer_maker"], "True"), "sell", "buy")
    return pa.table(
        [ts, ts, pa.array(["binance"] * n), pa.array(["BTC-USDT"] * n), pc.cast(src["trade_id"], pa.string()),
         src["price"], src["quantity"], side, pa.nulls(n, pa.int64())],
        schema=TRADES.schema_with(),
    )


def candles(name: str, symbol: str) -> pa.Table:
    src = feather.read_table(SHARED / "candles" / name)
    ts = src["date"].cast(TS)
    keep = pc.and_(pc.greater_equal(ts, pa.scalar(pd_ts(CANDLE_START), TS)), pc.less(ts, pa.scalar(pd_ts(CANDLE_END), TS)))
    src = src.filter(keep)
    n = src.num_rows
    nan = pa.array([float("nan")] * n)
    return pa.table(
        [src["date"].cast(TS), pa.array(["binance"] * n), pa.array([symbol] * n), src["open"], src["high"], src["low"],
         src["close"], src["volume"], nan, nan, pa.nulls(n, pa.int64()), pa.array([False] * n)],
        schema=BARS.schema_with({INTERVAL_KEY: b"5m"}),
    )


def pd_ts(text: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000_000)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pq.write_table(trades(), OUT / "btcusdt-trades.parquet", compression="zstd")
    both = pa.concat_tables([candles("BTC_USDT-5m.feather", "BTC-USDT"), candles("ETH_USDT-5m.feather", "ETH-USDT")])
    both = both.take(pc.sort_indices(both, [("ts", "ascending")]))  # one time-ordered stream, as a live feed would be
    pq.write_table(both, OUT / "btc-eth-5m.parquet", compression="zstd")
    for f in sorted(OUT.iterdir()):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

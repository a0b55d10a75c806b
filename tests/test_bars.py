"""`BarAggregator`: bars from real trades, live/file parity, gaps, lateness, resampling."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from varon_cli.bars import BarAggregator, BarSettings, bars_from_table
from varon_cli.errors import InputError, UsageError
from varon_cli.runtime import Watermark
from varon_cli.schemas import BARS, INTERVAL_KEY, TRADES

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
S = 1_000_000_000
MIN = 60 * S


def trades(rows: list[tuple[int, str, float, float, str]], venue: str = "test") -> pa.Table:
    """rows of (ts_ns, symbol, price, size, side)."""
    ts = pa.array([r[0] for r in rows], pa.int64()).cast(TRADES.schema.field("ts").type)
    return pa.table(
        [ts, ts, pa.array([venue] * len(rows)), pa.array([r[1] for r in rows]), pa.array([str(i) for i in range(len(rows))]),
         pa.array([r[2] for r in rows], pa.float64()), pa.array([r[3] for r in rows], pa.float64()),
         pa.array([r[4] for r in rows]), pa.nulls(len(rows), pa.int64())],
        schema=TRADES.schema_with(),
    )


def run_batches(table: pa.Table, settings: BarSettings, sizes: list[int] | None = None,
                watermarks: dict[int, int] | None = None) -> pa.Table:
    """Push `table` cut into batches of `sizes` (cycled), with optional watermarks after given rows."""
    agg = BarAggregator(settings)
    out: list[pa.RecordBatch] = []
    pos, i = 0, 0
    while pos < table.num_rows:
        n = sizes[i % len(sizes)] if sizes else table.num_rows
        for batch in table.slice(pos, n).to_batches():
            out += agg.push(batch)
        pos += n
        i += 1
        if watermarks and pos in watermarks:
            out += agg.advance(Watermark(watermarks[pos]))
    out += agg.finish()
    return pa.Table.from_batches([b for b in out if isinstance(b, pa.RecordBatch)], schema=agg.schema)


@pytest.fixture(scope="module")
def real_trades() -> pa.Table:
    return pq.read_table(SAMPLE / "btcusdt-trades.parquet")


def test_real_trades_match_an_independent_sql_aggregation(real_trades: pa.Table) -> None:
    bars = bars_from_table(real_trades, BarSettings(10 * S))
    con = duckdb.connect()
    con.register("t", real_trades)
    ref = con.sql("""
        select time_bucket(interval 10 second, ts::timestamptz) as b,
               arg_min(price, ts) as open, max(price) as high, min(price) as low, arg_max(price, ts) as close,
               sum(size) as volume, sum(case when side = 'buy' then size else 0 end) as buy_volume,
               sum(price * size) / sum(size) as vwap, count(*) as trades
        from (select *, row_number() over () as rn from t) group by b order by b
    """).to_arrow_table()
    assert bars.num_rows == ref.num_rows == 5
    for col in ("open", "high", "low", "close", "volume", "buy_volume", "vwap"):
        np.testing.assert_allclose(bars[col].to_numpy(), ref[col].to_numpy(), rtol=1e-12, err_msg=col)
    assert bars["trades"].to_pylist() == ref["trades"].to_pylist()
    assert sum(bars["trades"].to_pylist()) == real_trades.num_rows
    assert bars.schema.metadata[INTERVAL_KEY] == b"10s"
    assert bars.schema.metadata[b"varon.kind"] == b"bars"


def test_live_batches_give_identical_bars_to_one_file_batch(real_trades: pa.Table) -> None:
    settings = BarSettings(5 * S)
    whole = run_batches(real_trades, settings)
    assert run_batches(real_trades, settings, sizes=[1]).equals(whole)
    rng = random.Random(7)
    assert run_batches(real_trades, settings, sizes=[rng.randint(1, 300) for _ in range(50)]).equals(whole)


def test_bars_are_emitted_as_soon_as_a_later_trade_arrives() -> None:
    agg = BarAggregator(BarSettings(MIN))
    t = trades([(10 * S, "BTC-USD", 100.0, 1.0, "buy"), (20 * S, "BTC-USD", 101.0, 1.0, "sell")])
    assert [b for b in agg.push(t.to_batches()[0]) if isinstance(b, pa.RecordBatch)] == []
    closed = [b for b in agg.push(trades([(MIN + 1, "BTC-USD", 102.0, 1.0, "buy")]).to_batches()[0]) if isinstance(b, pa.RecordBatch)]
    assert len(closed) == 1 and closed[0].num_rows == 1
    assert closed[0].column("close")[0].as_py() == 101.0


def test_watermark_closes_bars_in_an_idle_market_and_is_passed_on() -> None:
    agg = BarAggregator(BarSettings(MIN))
    list(agg.push(trades([(10 * S, "BTC-USD", 100.0, 1.0, "buy")]).to_batches()[0]))
    out = list(agg.advance(Watermark(3 * MIN)))
    batches = [b for b in out if isinstance(b, pa.RecordBatch)]
    marks = [w for w in out if isinstance(w, Watermark)]
    got = pa.Table.from_batches(batches)
    assert got["ts"].cast(pa.int64()).to_pylist() == [0, MIN, 2 * MIN]
    assert got["trades"].to_pylist() == [1, 0, 0]
    assert marks == [Watermark(3 * MIN)]


def test_empty_intervals_are_explicit_bars_at_the_previous_close() -> None:
    t = trades([(5 * S, "BTC-USD", 100.0, 2.0, "buy"), (50 * S, "BTC-USD", 104.0, 1.0, "sell"),
                (3 * MIN + 1, "BTC-USD", 99.0, 1.0, "buy")])
    bars = bars_from_table(t, BarSettings(MIN))
    assert bars["ts"].cast(pa.int64()).to_pylist() == [0, MIN, 2 * MIN, 3 * MIN]
    gap = bars.slice(1, 2).to_pylist()
    for row in gap:
        assert (row["open"], row["high"], row["low"], row["close"], row["vwap"]) == (104.0,) * 5
        assert row["volume"] == 0 and row["trades"] == 0 and row["buy_volume"] == 0
    first = bars.slice(0, 1).to_pylist()[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (100.0, 104.0, 100.0, 104.0)
    assert first["buy_volume"] == 2.0 and first["vwap"] == pytest.approx((200 + 104) / 3)


def test_partial_first_and_last_bars_are_flagged_or_skipped() -> None:
    t = trades([(5 * S, "BTC-USD", 100.0, 1.0, "buy"), (MIN, "BTC-USD", 101.0, 1.0, "buy"),
                (2 * MIN + 5 * S, "BTC-USD", 102.0, 1.0, "buy")])
    flagged = bars_from_table(t, BarSettings(MIN))
    assert flagged["partial"].to_pylist() == [True, False, True]
    skipped = bars_from_table(t, BarSettings(MIN, partial="skip"))
    assert skipped["ts"].cast(pa.int64()).to_pylist() == [MIN]
    aligned = bars_from_table(trades([(0, "BTC-USD", 100.0, 1.0, "buy"), (MIN, "BTC-USD", 100.0, 1.0, "buy")]), BarSettings(MIN))
    assert aligned["partial"].to_pylist() == [False, True]


def test_many_symbols_are_barred_independently_in_stable_order() -> None:
    rows = [(1 * S, "ETH-USD", 10.0, 1.0, "buy"), (2 * S, "BTC-USD", 100.0, 1.0, "sell"),
            (61 * S, "BTC-USD", 110.0, 1.0, "buy"), (62 * S, "ETH-USD", 11.0, 3.0, "buy"),
            (125 * S, "SOL-USD", 5.0, 1.0, "buy")]
    bars = bars_from_table(trades(rows), BarSettings(MIN))
    keys = list(zip(bars["ts"].cast(pa.int64()).to_pylist(), bars["symbol"].to_pylist()))
    assert keys == [(0, "ETH-USD"), (0, "BTC-USD"), (MIN, "ETH-USD"), (MIN, "BTC-USD"),
                    (2 * MIN, "ETH-USD"), (2 * MIN, "BTC-USD"), (2 * MIN, "SOL-USD")]
    eth = bars.filter(pa.compute.equal(bars["symbol"], "ETH-USD"))
    assert eth["close"].to_pylist() == [10.0, 11.0, 11.0]
    assert eth["volume"].to_pylist() == [1.0, 3.0, 0.0]
    one_by_one = run_batches(trades(rows), BarSettings(MIN), sizes=[1])
    assert one_by_one.equals(bars)


def test_same_symbol_on_two_venues_is_two_series() -> None:
    a = trades([(1 * S, "BTC-USD", 100.0, 1.0, "buy")], venue="coinbase")
    b = trades([(2 * S, "BTC-USD", 200.0, 1.0, "buy")], venue="hyperliquid")
    bars = bars_from_table(pa.concat_tables([a, b]), BarSettings(MIN))
    assert sorted(zip(bars["venue"].to_pylist(), bars["close"].to_pylist())) == [("coinbase", 100.0), ("hyperliquid", 200.0)]


def test_out_of_order_trades_within_lateness_are_included() -> None:
    rows = [(10 * S, "BTC-USD", 100.0, 1.0, "buy"), (61 * S, "BTC-USD", 101.0, 1.0, "buy"),
            (59 * S, "BTC-USD", 99.0, 5.0, "sell"),  # 2 s late: belongs to the first bar
            (130 * S, "BTC-USD", 102.0, 1.0, "buy")]
    bars = bars_from_table(trades(rows), BarSettings(MIN, lateness_ns=5 * S))
    first = bars.slice(0, 1).to_pylist()[0]
    assert first["close"] == 99.0 and first["low"] == 99.0 and first["volume"] == 6.0 and first["trades"] == 2


def test_trades_later_than_lateness_are_counted_not_barred() -> None:
    rows = [(10 * S, "BTC-USD", 100.0, 1.0, "buy"), (70 * S, "BTC-USD", 101.0, 1.0, "buy"),
            (20 * S, "BTC-USD", 50.0, 9.0, "sell"), (80 * S, "BTC-USD", 102.0, 1.0, "buy")]
    agg = BarAggregator(BarSettings(MIN, lateness_ns=2 * S, late="drop"))
    out = [b for batch in trades(rows).to_batches() for b in agg.push(batch)] + list(agg.finish())
    bars = pa.Table.from_batches([b for b in out if isinstance(b, pa.RecordBatch)])
    assert agg.stats.late_dropped == 1 and agg.stats.first_late_row == 2
    assert 50.0 not in bars["low"].to_pylist()
    assert sum(bars["trades"].to_pylist()) == 3
    with pytest.raises(InputError, match=r"row 2: field ts .* not sorted"):
        bars_from_table(trades(rows), BarSettings(MIN, lateness_ns=2 * S, late="fail"))


def test_resampling_finer_bars_equals_barring_trades_directly(real_trades: pa.Table) -> None:
    direct = bars_from_table(real_trades, BarSettings(10 * S))
    fine = bars_from_table(real_trades, BarSettings(1 * S))
    coarse = bars_from_table(fine, BarSettings(10 * S, source_interval_ns=S), source=BARS)
    for col in ("ts", "open", "high", "low", "close", "trades", "partial"):
        assert coarse[col].to_pylist() == direct[col].to_pylist(), col
    for col in ("volume", "buy_volume", "vwap"):
        np.testing.assert_allclose(coarse[col].to_numpy(), direct[col].to_numpy(), rtol=1e-12)


def test_resampling_two_symbols_closes_each_hour_once_all_symbols_reported() -> None:
    bars5 = pq.read_table(SAMPLE / "btc-eth-5m.parquet").slice(0, 2 * 24)  # 2 hours, BTC and ETH interleaved
    hourly = bars_from_table(bars5, BarSettings(60 * MIN, source_interval_ns=5 * MIN), source=BARS)
    assert hourly.num_rows == 4
    assert hourly["partial"].to_pylist() == [False, False, False, False]
    btc5 = bars5.filter(pa.compute.equal(bars5["symbol"], "BTC-USDT")).slice(0, 12)
    btc1h = hourly.slice(0, 1).to_pylist()[0]
    assert btc1h["symbol"] == "BTC-USDT"
    assert btc1h["open"] == btc5["open"][0].as_py() and btc1h["close"] == btc5["close"][11].as_py()
    assert btc1h["high"] == max(btc5["high"].to_pylist()) and btc1h["low"] == min(btc5["low"].to_pylist())
    assert btc1h["volume"] == pytest.approx(sum(btc5["volume"].to_pylist()), rel=1e-12)


@pytest.mark.parametrize("field,value,message", [
    ("price", float("nan"), r"row 1: field price is nan"),
    ("price", -5.0, r"row 1: field price is -5.0"),
    ("size", -1.0, r"row 1: field size is -1.0"),
    ("side", "hold", r"row 1: field side is 'hold'"),
])
def test_bad_values_name_row_and_field(field: str, value: object, message: str) -> None:
    rows = [[0, "BTC-USD", 100.0, 1.0, "buy"], [S, "BTC-USD", 100.0, 1.0, "buy"]]
    rows[1][{"price": 2, "size": 3, "side": 4}[field]] = value
    with pytest.raises(InputError, match=message):
        bars_from_table(trades([tuple(r) for r in rows]), BarSettings(MIN))


def test_resampling_needs_a_whole_multiple() -> None:
    from varon_cli.bars import source_interval

    with pytest.raises(UsageError, match="whole multiple"):
        source_interval(BARS, {INTERVAL_KEY: b"5m"}, 7 * MIN, "x")
    with pytest.raises(InputError, match="varon.interval"):
        source_interval(BARS, {}, 10 * MIN, "x")


def test_absurd_timestamp_jump_is_refused_not_filled() -> None:
    rows = [(0, "BTC-USD", 100.0, 1.0, "buy"), (1000 * 24 * 3600 * S, "BTC-USD", 100.0, 1.0, "buy")]
    with pytest.raises(InputError, match="timestamps jump"):
        bars_from_table(trades(rows), BarSettings(S))

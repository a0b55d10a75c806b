"""`FeatureEngine`: batch/incremental parity, warm-up, metadata, bad input, per-bar features."""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from varon_cli.errors import InputError
from varon_cli.features.engine import FeatureEngine, features_from_table
from varon_cli.features.spec import FeatureSpec, load_spec, parse_spec, spec_from_json
from varon_cli.schemas import BARS, FEATURE_HASH_KEY, FEATURE_SPEC_KEY, FEATURES, INTERVAL_KEY, KIND_KEY, VERSION_KEY

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "btc-eth-5m.parquet"
S = 1_000_000_000
MIN = 60 * S
BARS_SCHEMA = BARS.schema_with({INTERVAL_KEY: b"1m"})
MONDAY = int(datetime(2024, 7, 1, tzinfo=timezone.utc).timestamp()) * S  # 2024-07-01 was a Monday


def bars_table(rows: list[dict]) -> pa.Table:
    """A bars table from dicts with at least ts (ns), symbol, close; the rest gets plain defaults."""
    cols: dict[str, list] = {n: [] for n in BARS.column_names}
    for r in rows:
        c = r["close"]
        full = {"venue": "test", "open": c, "high": c, "low": c, "volume": 1.0, "buy_volume": 0.5, "vwap": c,
                "trades": 1, "partial": False, **r}
        for n in cols:
            cols[n].append(full[n])
    return pa.table([pa.array(cols[n], BARS_SCHEMA.field(n).type) for n in BARS.column_names], schema=BARS_SCHEMA)


def synthetic(n: int, symbols: tuple[tuple[str, str], ...] = (("test", "BTC-USD"), ("test", "ETH-USD")),
              seed: int = 0, start: int = MONDAY) -> pa.Table:
    """Random-walk bars, n per (venue, symbol), interleaved by time; some empty bars; later symbols start later."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (venue, sym) in enumerate(symbols):
        close = 100.0 * (k + 1) * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        prev = np.concatenate([[close[0]], close[:-1]])
        volume = rng.lognormal(0, 1, n)
        empty = rng.random(n) < 0.05
        volume[empty] = 0.0
        for i in range(n):
            o, c = prev[i], close[i]
            if empty[i]:
                o = c = prev[i]
                close[i] = c
                hi = lo = c
            else:
                hi = max(o, c) * (1 + rng.random() * 0.003)
                lo = min(o, c) * (1 - rng.random() * 0.003)
            if i + 1 < n:
                prev[i + 1] = close[i]
            rows.append({"ts": start + (i + 3 * k) * MIN, "venue": venue, "symbol": sym, "open": o, "high": hi,
                         "low": lo, "close": c, "volume": volume[i], "buy_volume": volume[i] * rng.random(),
                         "vwap": (hi + lo + c) / 3.0, "trades": 0 if empty[i] else int(rng.integers(1, 50)),
                         "partial": False})
    rows.sort(key=lambda r: (r["ts"], r["venue"], r["symbol"]))
    return bars_table(rows)


def run(table: pa.Table, spec: FeatureSpec, sizes: list[int] | None = None, warmup: str = "flag",
        rng: random.Random | None = None) -> pa.Table:
    """Push `table` through one engine in batches of `sizes` (cycled), or of random sizes 1..40 given `rng`."""
    engine = FeatureEngine(spec, warmup, input_metadata=table.schema.metadata)
    out: list[pa.RecordBatch] = []
    pos, i = 0, 0
    while pos < table.num_rows:
        n = rng.randint(1, 40) if rng else (sizes[i % len(sizes)] if sizes else table.num_rows)
        batch = table.slice(pos, n).combine_chunks().to_batches()
        assert len(batch) == 1
        out += engine.push(batch[0])
        pos += n
        i += 1
    out += engine.finish()
    return pa.Table.from_batches(out, schema=engine.schema)


def assert_identical(a: pa.Table, b: pa.Table) -> None:
    """Same schema (metadata included) and the same values, bit for bit (NaN payloads too)."""
    assert a.schema.equals(b.schema, check_metadata=True)
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a[name], b[name]
        if pa.types.is_floating(x.type):
            xa = x.to_numpy()
            ya = y.to_numpy()
            assert np.array_equal(xa, ya, equal_nan=True), name
            assert np.array_equal(xa.view(np.uint64), ya.view(np.uint64)), f"{name}: differs in the last bits"
        else:
            assert x.equals(y), name


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return load_spec()


@pytest.fixture(scope="module")
def bars() -> pa.Table:
    return synthetic(150)


# -- batch vs incremental ---------------------------------------------------------

def test_one_bar_at_a_time_equals_one_batch(bars: pa.Table, spec: FeatureSpec) -> None:
    whole = run(bars, spec)
    assert whole.num_rows == bars.num_rows
    assert_identical(run(bars, spec, [1]), whole)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_batches_equal_one_batch(bars: pa.Table, spec: FeatureSpec, seed: int) -> None:
    assert_identical(run(bars, spec, rng=random.Random(seed)), run(bars, spec))


def test_parity_with_several_venues_and_symbols(spec: FeatureSpec) -> None:
    table = synthetic(90, (("a", "BTC-USD"), ("b", "BTC-USD"), ("a", "ETH-USD"), ("a", "SOL-USD")), seed=7)
    whole = run(table, spec)
    assert_identical(run(table, spec, [1]), whole)
    assert_identical(run(table, spec, [7, 1, 13, 2]), whole)
    assert_identical(run(table, spec, rng=random.Random(9)), whole)


def test_interleaved_equals_each_symbol_alone(spec: FeatureSpec) -> None:
    """Symbols (and the same symbol on two venues) do not share state."""
    table = synthetic(90, (("a", "BTC-USD"), ("b", "BTC-USD"), ("a", "ETH-USD")), seed=5)
    together = run(table, spec, [5, 1, 11])
    for venue, sym in (("a", "BTC-USD"), ("b", "BTC-USD"), ("a", "ETH-USD")):
        mask = pc.and_(pc.equal(table["venue"], venue), pc.equal(table["symbol"], sym))
        alone = run(table.filter(mask), spec)
        assert alone.num_rows == 90
        assert_identical(together.filter(pc.and_(pc.equal(together["venue"], venue),
                                                 pc.equal(together["symbol"], sym))), alone)


def test_output_rows_follow_input_rows(bars: pa.Table, spec: FeatureSpec) -> None:
    out = run(bars, spec, [3, 17])
    assert out.select(BARS.column_names).equals(bars.select(BARS.column_names))


def test_real_file_parity(spec: FeatureSpec) -> None:
    """The bundled real candles: bar by bar over a slice, random batches over the whole file."""
    sample = pq.read_table(SAMPLE)
    head = sample.slice(0, 400)
    assert_identical(run(head, spec, [1]), run(head, spec))
    assert_identical(run(sample, spec, rng=random.Random(4)), features_from_table(sample, spec))


def test_parity_when_dropping_warmup(bars: pa.Table, spec: FeatureSpec) -> None:
    whole = run(bars, spec, warmup="drop")
    assert_identical(run(bars, spec, [1], warmup="drop"), whole)
    assert_identical(run(bars, spec, rng=random.Random(11), warmup="drop"), whole)


# -- warm-up ----------------------------------------------------------------------

def _per_symbol(table: pa.Table) -> dict[tuple[str, str], pa.Table]:
    keys = set(zip(table["venue"].to_pylist(), table["symbol"].to_pylist()))
    return {k: table.filter(pc.and_(pc.equal(table["venue"], k[0]), pc.equal(table["symbol"], k[1]))) for k in keys}


def test_warmup_flags_exactly_the_first_lookback_rows_per_symbol(bars: pa.Table, spec: FeatureSpec) -> None:
    assert spec.lookback == 60
    out = run(bars, spec, [1, 9])
    groups = _per_symbol(out)
    assert len(groups) == 2
    for key, rows in groups.items():
        warm = rows["warmup"].to_numpy(zero_copy_only=False)
        assert warm[:spec.lookback].all() and not warm[spec.lookback:].any(), key


def test_warmup_rows_hold_nan_never_zero(bars: pa.Table, spec: FeatureSpec) -> None:
    """Each lookback feature is NaN for its own warm-up and has a value from then on."""
    for key, rows in _per_symbol(run(bars, spec)).items():
        for f in spec.features:
            for column in f.columns:
                values = rows[column].to_numpy()
                assert np.isnan(values[:f.lookback]).all(), (key, column)
                assert not np.isnan(values[f.lookback:]).any(), (key, column)


def test_drop_removes_exactly_the_flagged_rows(bars: pa.Table, spec: FeatureSpec) -> None:
    flagged = run(bars, spec, [4])
    dropped = run(bars, spec, [4], warmup="drop")
    assert dropped.num_rows == bars.num_rows - 2 * spec.lookback
    assert not dropped["warmup"].to_numpy(zero_copy_only=False).any()
    assert_identical(dropped, flagged.filter(pc.invert(flagged["warmup"])))


def test_small_spec_has_its_own_lookback(bars: pa.Table) -> None:
    spec = parse_spec({"feature": [{"kind": "rsi", "period": 5}, {"kind": "ema_ratio", "period": 3}]}, "t")
    assert spec.lookback == 5
    out = run(bars, spec, [1])
    for rows in _per_symbol(out).values():
        warm = rows["warmup"].to_numpy(zero_copy_only=False)
        assert warm.sum() == 5 and warm[:5].all()


def test_per_bar_only_spec_has_no_warmup(bars: pa.Table) -> None:
    spec = parse_spec({"feature": [{"kind": "taker_buy_ratio"}, {"kind": "time_encoding"}]}, "t")
    assert spec.lookback == 0
    out = run(bars, spec, warmup="drop")
    assert out.num_rows == bars.num_rows
    assert not out["warmup"].to_numpy(zero_copy_only=False).any()


# -- metadata ---------------------------------------------------------------------

def test_output_schema_and_metadata(bars: pa.Table, spec: FeatureSpec) -> None:
    out = run(bars, spec)
    meta = out.schema.metadata
    assert meta[KIND_KEY] == b"features"
    assert meta[VERSION_KEY] == b"1"
    assert meta[FEATURE_SPEC_KEY] == spec.canonical_json().encode()
    assert meta[FEATURE_HASH_KEY] == spec.hash.encode()
    assert meta[INTERVAL_KEY] == b"1m"
    assert out.column_names == FEATURES.column_names + spec.columns
    for column in spec.columns:
        assert out.schema.field(column).type == pa.float64()
    again = spec_from_json(meta[FEATURE_SPEC_KEY].decode())
    assert again.hash == spec.hash and again.columns == spec.columns


def test_metadata_hash_follows_the_spec(bars: pa.Table) -> None:
    a = parse_spec({"feature": [{"kind": "rsi", "period": 14}]}, "t")
    b = parse_spec({"feature": [{"kind": "rsi", "period": 15}]}, "t")
    ha = run(bars, a).schema.metadata[FEATURE_HASH_KEY]
    hb = run(bars, b).schema.metadata[FEATURE_HASH_KEY]
    assert ha == a.hash.encode() and hb == b.hash.encode() and ha != hb


def test_interval_metadata_passes_through_from_the_real_file(spec: FeatureSpec) -> None:
    sample = pq.read_table(SAMPLE).slice(0, 10)
    assert features_from_table(sample, spec).schema.metadata[INTERVAL_KEY] == b"5m"


# -- bad input --------------------------------------------------------------------

def _rows(n: int, symbol: str = "BTC-USD", start: int = MONDAY) -> list[dict]:
    return [{"ts": start + i * MIN, "symbol": symbol, "open": 100.0, "high": 200.0, "low": 50.0, "close": 100.0 + i}
            for i in range(n)]


def _push_all(engine: FeatureEngine, table: pa.Table, sizes: list[int]) -> None:
    pos, i = 0, 0
    while pos < table.num_rows:
        n = sizes[i % len(sizes)]
        for batch in table.slice(pos, n).to_batches():
            list(engine.push(batch))
        pos += n
        i += 1


@pytest.mark.parametrize("sizes", [[100], [1], [3]])
def test_nan_close_names_row_and_field(spec: FeatureSpec, sizes: list[int]) -> None:
    rows = _rows(8)
    rows[5]["close"] = float("nan")
    engine = FeatureEngine(spec)
    with pytest.raises(InputError, match=r"row 5\b.*field close"):
        _push_all(engine, bars_table(rows), sizes)


def test_bad_value_is_printed_plainly(spec: FeatureSpec) -> None:
    """The one-line error is for people: the value reads `-1.0`, not numpy's repr `np.float64(-1.0)`."""
    rows = _rows(3)
    rows[1]["volume"] = -1.0
    with pytest.raises(InputError) as info:
        list(FeatureEngine(spec).push(bars_table(rows).to_batches()[0]))
    assert "row 1" in info.value.message and "volume" in info.value.message
    assert "np." not in info.value.message, info.value.message


def test_null_close_is_rejected(spec: FeatureSpec) -> None:
    table = bars_table(_rows(4))
    table = table.set_column(table.schema.get_field_index("close"), "close",
                             pa.array([1.0, None, 2.0, 3.0], pa.float64()))
    with pytest.raises(InputError, match=r"row 1\b.*field close"):
        list(FeatureEngine(spec).push(table.to_batches()[0]))


@pytest.mark.parametrize("sizes", [[100], [1], [2]])
def test_negative_volume_names_row_and_field(spec: FeatureSpec, sizes: list[int]) -> None:
    rows = _rows(6)
    rows[3]["volume"] = -1.0
    with pytest.raises(InputError, match=r"row 3\b.*field volume"):
        _push_all(FeatureEngine(spec), bars_table(rows), sizes)


def test_zero_volume_is_fine(spec: FeatureSpec) -> None:
    rows = _rows(3)
    rows[1]["volume"] = 0.0
    rows[1]["buy_volume"] = 0.0
    out = run(bars_table(rows), spec)
    assert out.num_rows == 3


@pytest.mark.parametrize("sizes", [[100], [1], [4]])
@pytest.mark.parametrize("delta", [0, -MIN])
def test_ts_not_increasing_names_row_and_field(spec: FeatureSpec, sizes: list[int], delta: int) -> None:
    rows = _rows(7)
    rows[5]["ts"] = rows[4]["ts"] + delta
    with pytest.raises(InputError, match=r"row 5\b.*field ts.*BTC-USD"):
        _push_all(FeatureEngine(spec), bars_table(rows), sizes)


@pytest.mark.parametrize("sizes", [[100], [1], [5]])
def test_ts_order_is_per_symbol(spec: FeatureSpec, sizes: list[int]) -> None:
    """ETH may be behind BTC in time; only going back within one symbol is an error, reported at its row."""
    rows = [{"ts": MONDAY + 10 * MIN, "symbol": "BTC-USD", "close": 1.0},
            {"ts": MONDAY, "symbol": "ETH-USD", "close": 1.0},
            {"ts": MONDAY + 11 * MIN, "symbol": "BTC-USD", "close": 1.0},
            {"ts": MONDAY + MIN, "symbol": "ETH-USD", "close": 1.0},
            {"ts": MONDAY + 12 * MIN, "symbol": "BTC-USD", "close": 1.0},
            {"ts": MONDAY + MIN, "symbol": "ETH-USD", "close": 1.0},
            {"ts": MONDAY + 13 * MIN, "symbol": "BTC-USD", "close": 1.0}]
    run(bars_table(rows[:5]), spec, sizes)  # fine
    with pytest.raises(InputError, match=r"row 5\b.*field ts.*ETH-USD"):
        _push_all(FeatureEngine(spec), bars_table(rows), sizes)


# -- per-bar features --------------------------------------------------------------

PER_BAR = parse_spec({"feature": [{"kind": "taker_buy_ratio"}, {"kind": "vwap_deviation"},
                                  {"kind": "time_encoding"}]}, "per-bar")


def test_taker_buy_ratio() -> None:
    nan = float("nan")
    rows = [{"ts": MONDAY + i * MIN, "symbol": "X-Y", "close": 10.0, "volume": v, "buy_volume": b}
            for i, (v, b) in enumerate([(0.0, 0.0), (2.0, nan), (0.0, nan), (4.0, 1.0), (3.0, 3.0)])]
    out = run(bars_table(rows), PER_BAR)["taker_buy_ratio"].to_numpy()
    assert out[0] == 0.5  # empty bar
    assert np.isnan(out[1]) and np.isnan(out[2])  # source does not say
    assert out[3] == 0.25 and out[4] == 1.0


def test_vwap_deviation() -> None:
    rows = [{"ts": MONDAY, "symbol": "X-Y", "close": 10.0, "vwap": 8.0},
            {"ts": MONDAY + MIN, "symbol": "X-Y", "close": 10.0, "vwap": float("nan")},
            {"ts": MONDAY + 2 * MIN, "symbol": "X-Y", "close": 10.0, "vwap": 10.0}]
    out = run(bars_table(rows), PER_BAR)["vwap_dev"].to_numpy()
    assert out[0] == pytest.approx(0.25, rel=1e-15)
    assert np.isnan(out[1])
    assert out[2] == 0.0


def _time_row(ts: int) -> dict[str, float]:
    out = run(bars_table([{"ts": ts, "symbol": "X-Y", "close": 1.0}]), PER_BAR)
    return {c: out[c][0].as_py() for c in PER_BAR.columns if c.startswith("time_")}


def test_time_encoding_monday_midnight_is_angle_zero() -> None:
    t = _time_row(MONDAY)
    assert t["time_week_sin"] == 0.0 and t["time_week_cos"] == 1.0
    assert t["time_day_sin"] == 0.0 and t["time_day_cos"] == 1.0


def test_time_encoding_noon() -> None:
    t = _time_row(MONDAY + 12 * 3600 * S)
    assert abs(t["time_day_sin"]) < 1e-12 and t["time_day_cos"] == pytest.approx(-1.0, abs=1e-12)
    assert t["time_week_sin"] == pytest.approx(math.sin(2 * math.pi * 0.5 / 7), abs=1e-12)


@pytest.mark.parametrize("day,hour", [(0, 6), (2, 18), (3, 0), (6, 23)])
def test_time_encoding_matches_calendar(day: int, hour: int) -> None:
    """Against Python's calendar: weekday() is 0 on Monday."""
    ts = MONDAY + (day * 24 + hour) * 3600 * S + 7 * 86400 * S * 3  # three weeks later, same weekday
    dt = datetime.fromtimestamp(ts / S, tz=timezone.utc)
    assert dt.weekday() == day
    day_frac = (dt.hour * 3600 + dt.minute * 60) / 86400
    week_frac = (dt.weekday() + day_frac) / 7
    t = _time_row(ts)
    assert t["time_day_sin"] == pytest.approx(math.sin(2 * math.pi * day_frac), abs=1e-12)
    assert t["time_day_cos"] == pytest.approx(math.cos(2 * math.pi * day_frac), abs=1e-12)
    assert t["time_week_sin"] == pytest.approx(math.sin(2 * math.pi * week_frac), abs=1e-12)
    assert t["time_week_cos"] == pytest.approx(math.cos(2 * math.pi * week_frac), abs=1e-12)


def test_flat_market_gives_defined_values() -> None:
    """No movement at all: %B 0.5, z-score 0, RSI 50, vol 0 (defined values, not NaN or inf)."""
    spec = parse_spec({"feature": [{"kind": "bollinger_pctb", "period": 5}, {"kind": "volume_zscore", "period": 5},
                                   {"kind": "rsi", "period": 5}, {"kind": "realized_vol", "period": 5}]}, "flat")
    out = run(bars_table([{"ts": MONDAY + i * MIN, "symbol": "X-Y", "close": 7.0} for i in range(12)]), spec, [1])
    assert (out["bb_pctb_5"].to_numpy()[4:] == 0.5).all()
    assert (out["volume_z_5"].to_numpy()[4:] == 0.0).all()
    assert (out["rsi_5"].to_numpy()[5:] == 50.0).all()
    assert (out["rvol_5"].to_numpy()[5:] == 0.0).all()

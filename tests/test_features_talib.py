"""Feature values agree with TA-Lib on real market data, warm-up included.

The reference is the `talib` package (TA-Lib's C library) run over the bundled
5-minute Binance candles (data/sample/btc-eth-5m.parquet, BTC-USDT and ETH-USDT;
buy_volume and vwap are NaN there because the source lacks them). Every feature
with a TA-Lib counterpart is compared over the whole series, and its first value
must appear exactly at TA-Lib's lookback, with NaN (never 0) before it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import talib
from talib import abstract

from varon_cli.features.engine import features_from_table
from varon_cli.features.spec import FeatureSpec, load_spec, parse_spec

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "btc-eth-5m.parquet"
SYMBOLS = ("BTC-USDT", "ETH-USDT")
RTOL = 1e-9
FLOOR = 1e-9


def assert_agrees(ours: np.ndarray, ref: np.ndarray, name: str) -> None:
    """Assert that `ours` equals the TA-Lib reference `ref`, NaN for NaN.

    * Where the reference is NaN (its warm-up), ours must be NaN too, and the
      other way round: the warm-up lengths agree and nothing is filled with 0.
    * Elsewhere |ours - ref| <= 1e-9 * |ref| + floor. For a series that keeps
      one sign (RSI, NATR, realized vol) the floor is 0: pure 1e-9 relative.
      For a series that crosses zero (MACD, %B, z-scores, returns, EMA ratio)
      the relative error near a zero crossing is meaningless (both sides sum
      the same numbers in a different order), so the floor is 1e-9 times the
      series' typical magnitude: max(nanstd(ref), nanmedian(|ref|)).
    """
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{name}: {ours.shape} rows, TA-Lib {ref.shape}"
    nan_ours, nan_ref = np.isnan(ours), np.isnan(ref)
    if not np.array_equal(nan_ours, nan_ref):
        i = int(np.argmax(nan_ours != nan_ref))
        raise AssertionError(f"{name}: row {i}: ours {ours[i]!r}, TA-Lib {ref[i]!r} (NaN in one only)")
    ok = ~nan_ref
    assert ok.any(), f"{name}: TA-Lib produced no values at all"
    r = ref[ok]
    crosses_zero = r.min() < 0.0 < r.max() or (r == 0.0).any()
    floor = FLOOR * max(float(np.std(r)), float(np.median(np.abs(r)))) if crosses_zero else 0.0
    err = np.abs(ours[ok] - r)
    allowed = RTOL * np.abs(r) + floor
    if not (err <= allowed).all():
        j = int(np.argmax(err - allowed))
        i = int(np.flatnonzero(ok)[j])
        raise AssertionError(f"{name}: row {i}: ours {ours[i]!r}, TA-Lib {ref[i]!r}, "
                             f"error {err[j]:.3g} > allowed {allowed[j]:.3g}")


def test_assert_agrees_catches_differences() -> None:
    """The helper itself can fail: wrong values, a misplaced NaN, a 0 instead of NaN."""
    ref = np.array([np.nan, np.nan, 1.0, -2.0, 3.0])
    assert_agrees(ref.copy(), ref, "same")
    with pytest.raises(AssertionError, match="row 4"):
        assert_agrees(np.array([np.nan, np.nan, 1.0, -2.0, 3.0 + 1e-6]), ref, "off")
    with pytest.raises(AssertionError, match="row 1"):
        assert_agrees(np.array([np.nan, 0.0, 1.0, -2.0, 3.0]), ref, "zero-filled warm-up")
    with pytest.raises(AssertionError, match="row 2"):
        assert_agrees(np.array([np.nan, np.nan, np.nan, -2.0, 3.0]), ref, "late start")


@pytest.fixture(scope="module")
def sample() -> pa.Table:
    return pq.read_table(SAMPLE)


@pytest.fixture(scope="module")
def per_symbol(sample: pa.Table) -> dict[str, tuple[pa.Table, pa.Table]]:
    """symbol -> (its bars, its features under the default spec)."""
    spec = load_spec()
    out = {}
    for sym in SYMBOLS:
        bars = sample.filter(pc.equal(sample["symbol"], sym))
        out[sym] = (bars, features_from_table(bars, spec))
    return out


def _ohlcv(bars: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return tuple(bars[c].to_numpy() for c in ("high", "low", "close", "volume"))  # type: ignore[return-value]


def test_sample_is_what_the_tests_assume(sample: pa.Table) -> None:
    assert sample.schema.metadata[b"varon.kind"] == b"bars"
    assert sample.schema.metadata[b"varon.interval"] == b"5m"
    for sym in SYMBOLS:
        bars = sample.filter(pc.equal(sample["symbol"], sym))
        assert bars.num_rows > 1000
        assert np.isnan(bars["buy_volume"].to_numpy()).all()
        assert np.isnan(bars["vwap"].to_numpy()).all()


def _lookback(func: str, **params) -> int:
    f = abstract.Function(func)
    f.set_parameters(**params)
    return int(f.lookback)


def references(bars: pa.Table) -> dict[str, tuple[np.ndarray, int]]:
    """column -> (TA-Lib reference series, TA-Lib lookback) for the default spec."""
    h, l, c, v = _ohlcv(bars)
    refs: dict[str, tuple[np.ndarray, int]] = {}
    for p in (12, 48):
        refs[f"ema_ratio_{p}"] = (c / talib.EMA(c, p) - 1.0, _lookback("EMA", timeperiod=p))
    line, signal, hist = talib.MACD(c, 12, 26, 9)
    lb = _lookback("MACD", fastperiod=12, slowperiod=26, signalperiod=9)
    refs["macd_line"], refs["macd_signal"], refs["macd_hist"] = (line, lb), (signal, lb), (hist, lb)
    refs["rsi_14"] = (talib.RSI(c, 14), _lookback("RSI", timeperiod=14))
    refs["natr_14"] = (talib.NATR(h, l, c, 14) / 100.0, _lookback("NATR", timeperiod=14))
    upper, _, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    refs["bb_pctb_20"] = ((c - lower) / (upper - lower),
                          _lookback("BBANDS", timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0))
    returns = np.log(c[1:] / c[:-1])
    refs["rvol_20"] = (np.concatenate([[np.nan], talib.STDDEV(returns, 20, 1.0)]),
                       1 + _lookback("STDDEV", timeperiod=20, nbdev=1.0))
    refs["volume_z_20"] = ((v - talib.SMA(v, 20)) / talib.STDDEV(v, 20, 1.0),
                           max(_lookback("SMA", timeperiod=20), _lookback("STDDEV", timeperiod=20, nbdev=1.0)))
    for hz in (1, 5, 15, 60):
        refs[f"logret_{hz}"] = (np.log(talib.ROCR(c, hz)), _lookback("ROCR", timeperiod=hz))
    return refs


DEFAULT_COMPARED = ["ema_ratio_12", "ema_ratio_48", "macd_line", "macd_signal", "macd_hist", "rsi_14", "natr_14",
                    "bb_pctb_20", "rvol_20", "volume_z_20", "logret_1", "logret_5", "logret_15", "logret_60"]


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("column", DEFAULT_COMPARED)
def test_default_spec_agrees_with_talib(per_symbol, symbol: str, column: str) -> None:
    bars, feats = per_symbol[symbol]
    ref, _ = references(bars)[column]
    assert_agrees(feats[column].to_numpy(), ref, f"{symbol} {column}")


def test_every_default_indicator_is_compared() -> None:
    """Each default column either has a TA-Lib reference here or is per-bar only (tested elsewhere)."""
    per_bar = {"taker_buy_ratio", "vwap_dev", "time_day_sin", "time_day_cos", "time_week_sin", "time_week_cos"}
    assert set(load_spec().columns) == set(DEFAULT_COMPARED) | per_bar


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_warmup_matches_talib_lookback(per_symbol, symbol: str) -> None:
    """First value at TA-Lib's lookback (also the spec's declared lookback); NaN, never 0, before it."""
    bars, feats = per_symbol[symbol]
    spec = load_spec()
    declared = {c: f.lookback for f in spec.features for c in f.columns}
    for column, (ref, lookback) in references(bars).items():
        ours = feats[column].to_numpy()
        first = int(np.argmax(~np.isnan(ours)))
        assert first == lookback, f"{symbol} {column}: first value at row {first}, TA-Lib lookback {lookback}"
        assert int(np.argmax(~np.isnan(ref))) == lookback
        assert declared[column] == lookback, f"{column}: spec declares lookback {declared[column]}"
        assert np.isnan(ours[:lookback]).all(), f"{symbol} {column}: warm-up rows hold {ours[:lookback]}"
        assert not np.isnan(ours[lookback:]).any(), f"{symbol} {column}: a NaN after warm-up"


def test_features_agree_with_talib_in_the_interleaved_file(sample: pa.Table, per_symbol) -> None:
    """The file as it is (symbols interleaved) gives each symbol the same values as its own series."""
    feats = features_from_table(sample, load_spec())
    for sym in SYMBOLS:
        mine = feats.filter(pc.equal(feats["symbol"], sym))
        bars, _ = per_symbol[sym]
        for column, (ref, _) in references(bars).items():
            assert_agrees(mine[column].to_numpy(), ref, f"interleaved {sym} {column}")


CUSTOM_TOML = {
    "feature": [
        {"kind": "ema_ratio", "period": 5},
        {"kind": "macd", "name": "m", "fast": 5, "slow": 35, "signal": 5},
        {"kind": "rsi", "period": 7},
        {"kind": "natr", "period": 30},
        {"kind": "bollinger_pctb", "period": 10, "nbdev": 1.5},
        {"kind": "realized_vol", "period": 7},
        {"kind": "volume_zscore", "period": 50},
        {"kind": "log_return", "horizon": 3},
    ]
}


def test_non_default_parameters_agree_with_talib(per_symbol) -> None:
    bars, _ = per_symbol["ETH-USDT"]
    bars = bars.slice(0, 3000)
    spec: FeatureSpec = parse_spec(CUSTOM_TOML, "custom")
    feats = features_from_table(bars, spec)
    h, l, c, v = _ohlcv(bars)
    line, signal, hist = talib.MACD(c, 5, 35, 5)
    upper, _, lower = talib.BBANDS(c, 10, 1.5, 1.5, 0)
    refs = {
        "ema_ratio_5": (c / talib.EMA(c, 5) - 1.0, _lookback("EMA", timeperiod=5)),
        "m_line": (line, _lookback("MACD", fastperiod=5, slowperiod=35, signalperiod=5)),
        "m_signal": (signal, _lookback("MACD", fastperiod=5, slowperiod=35, signalperiod=5)),
        "m_hist": (hist, _lookback("MACD", fastperiod=5, slowperiod=35, signalperiod=5)),
        "rsi_7": (talib.RSI(c, 7), _lookback("RSI", timeperiod=7)),
        "natr_30": (talib.NATR(h, l, c, 30) / 100.0, _lookback("NATR", timeperiod=30)),
        "bb_pctb_10": ((c - lower) / (upper - lower),
                       _lookback("BBANDS", timeperiod=10, nbdevup=1.5, nbdevdn=1.5, matype=0)),
        "rvol_7": (np.concatenate([[np.nan], talib.STDDEV(np.log(c[1:] / c[:-1]), 7, 1.0)]),
                   1 + _lookback("STDDEV", timeperiod=7, nbdev=1.0)),
        "volume_z_50": ((v - talib.SMA(v, 50)) / talib.STDDEV(v, 50, 1.0), _lookback("SMA", timeperiod=50)),
        "logret_3": (np.log(talib.ROCR(c, 3)), _lookback("ROCR", timeperiod=3)),
    }
    assert set(refs) == set(spec.columns)
    declared = {col: f.lookback for f in spec.features for col in f.columns}
    for column, (ref, lookback) in refs.items():
        ours = feats[column].to_numpy()
        assert_agrees(ours, ref, column)
        assert int(np.argmax(~np.isnan(ours))) == lookback == declared[column], column
    assert spec.lookback == max(lb for _, lb in refs.values())
    warm = feats["warmup"].to_numpy(zero_copy_only=False)
    assert warm[:spec.lookback].all() and not warm[spec.lookback:].any()

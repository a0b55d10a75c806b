"""The backtest report: known-answer metrics, round trips from fills, JSON, terminal, HTML, folds."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import warnings

import numpy as np
import pyarrow as pa
import pytest
from rich.console import Console

from varon_cli.errors import InputError
from varon_cli.report import (
    Metrics,
    aggregate_folds,
    compute_metrics,
    fold_bounds,
    render_report,
    report_json,
    round_trips,
    write_html,
)
from varon_cli.report import page
from varon_cli.report.format import ROWS
from varon_cli.report.svg import downsample
from varon_cli.schemas import FILLS

S = 1_000_000_000
MINUTE = 60 * S
DAY = 86400 * S
T0 = 1_735_689_600 * S  # 2025-01-01T00:00:00Z
BARS_PER_DAY_YEAR = 365.25


def metrics_of(equity, initial: float = 100.0, interval: int = DAY, position=None, fills=None, **kw) -> Metrics:
    """Metrics of an equity curve sampled every `interval` from T0, flat unless `position` is given."""
    eq = np.asarray(equity, dtype=np.float64)
    pos = np.zeros(eq.size) if position is None else np.asarray(position, dtype=np.float64)
    ts = T0 + np.arange(eq.size, dtype=np.int64) * interval
    return compute_metrics(ts, eq, pos, fills, interval, initial, kw.pop("fees", 0.0), kw.pop("funding", 0.0), **kw)


def fills_table(rows: list[tuple]) -> pa.Table:
    """rows of (ts_ns, strategy, symbol, side, size, price, fee[, status])."""
    rows = [r if len(r) == 8 else (*r, "filled") for r in rows]
    cols = list(zip(*rows)) if rows else [[]] * 8
    n = len(rows)
    return pa.table(
        {
            "ts": pa.array(cols[0], pa.int64()).cast(FILLS.schema.field("ts").type),
            "symbol": pa.array(cols[2], pa.string()),
            "cloid": pa.array([f"c{i}" for i in range(n)], pa.string()),
            "venue_order_id": pa.array([f"v{i}" for i in range(n)], pa.string()),
            "side": pa.array(cols[3], pa.string()),
            "size": pa.array(cols[4], pa.float64()),
            "price": pa.array(cols[5], pa.float64()),
            "fee": pa.array(cols[6], pa.float64()),
            "status": pa.array(cols[7], pa.string()),
            "reason": pa.array(["entry"] * n, pa.string()),
            "strategy": pa.array(cols[1], pa.string()),
        },
        schema=FILLS.schema_with(),
    )


# Strategy "s" on BTC: long 1 @100, add 1 @110 (avg 105), partial close 1 @120 (+15),
# sell 3 @100: closes the last 1 (-5) and flips short 2 @100, whose fee 3 splits 1:2;
# buy 2 @90 closes the short (+20). ETH: a losing trip. Strategy "other" holds BTC
# across those fills and must not mix with "s"; a rejected row must be ignored.
TRADE_ROWS = [
    (1, "s", "BTC-USD", "buy", 1.0, 100.0, 1.0),
    (2, "s", "BTC-USD", "buy", 1.0, 110.0, 1.0),
    (3, "other", "BTC-USD", "buy", 1.0, 1000.0, 0.0),
    (3, "s", "BTC-USD", "sell", 1.0, 120.0, 1.0),
    (4, "s", "BTC-USD", "sell", 5.0, 1.0, 0.0, "rejected"),
    (4, "s", "BTC-USD", "sell", 3.0, 100.0, 3.0),
    (5, "s", "BTC-USD", "buy", 2.0, 90.0, 2.0),
    (6, "s", "ETH-USD", "buy", 1.0, 50.0, 0.5),
    (7, "s", "ETH-USD", "sell", 1.0, 45.0, 0.5),
    (8, "other", "BTC-USD", "sell", 0.5, 1100.0, 0.0),
]


# --- returns, Sharpe, Sortino, CAGR --------------------------------------------------------


def test_constant_growth_has_no_sharpe_rather_than_infinity():
    equity = 100.0 * 1.01 ** np.arange(1, 51)
    m = metrics_of(equity)
    assert m.total_return == pytest.approx(1.01**50 - 1)
    assert math.isnan(m.sharpe) and math.isnan(m.sortino)
    assert m.max_drawdown == 0 and m.max_drawdown_duration_bars == 0
    assert math.isnan(m.calmar)


def test_flat_equity_has_nan_ratios_and_zero_volatility():
    m = metrics_of([100.0] * 10)
    assert m.total_return == 0 and m.cagr == 0 and m.volatility == 0
    assert math.isnan(m.sharpe) and math.isnan(m.sortino) and math.isnan(m.calmar)


def test_sharpe_and_sortino_known_answer():
    # per-bar returns +2%, -1%, +2%, -1%: mean 0.5%, sample std sqrt(0.0003),
    # downside deviation sqrt((0.01^2 + 0.01^2) / 4) = sqrt(5e-5)
    returns = np.array([0.02, -0.01, 0.02, -0.01])
    m = metrics_of(100.0 * np.cumprod(1 + returns))
    root = math.sqrt(BARS_PER_DAY_YEAR)
    assert m.sharpe == pytest.approx(0.005 / math.sqrt(0.0003) * root, rel=1e-9)
    assert m.sortino == pytest.approx(0.005 / math.sqrt(5e-5) * root, rel=1e-9)
    assert m.volatility == pytest.approx(math.sqrt(0.0003) * root, rel=1e-9)


def test_sharpe_annualisation_follows_the_bar_interval():
    returns = np.array([0.02, -0.01, 0.02, -0.01])
    daily = metrics_of(100.0 * np.cumprod(1 + returns), interval=DAY)
    minutely = metrics_of(100.0 * np.cumprod(1 + returns), interval=MINUTE)
    assert minutely.sharpe / daily.sharpe == pytest.approx(math.sqrt(1440), rel=1e-9)


def test_first_bar_return_counts_from_initial_equity():
    # equity doubles in the first bar and stays: one +100% return, then zeros
    m = metrics_of([200.0, 200.0, 200.0])
    assert m.total_return == pytest.approx(1.0)
    assert math.isnan(m.sortino)  # no losing bar
    assert m.sharpe == pytest.approx(1 / 3 / np.std([1.0, 0, 0], ddof=1) * math.sqrt(BARS_PER_DAY_YEAR))


def test_cagr_over_exactly_one_year():
    # 6-hour bars: 4 x 365.25 = 1461 bars are exactly one (365.25-day) year
    bars = 1461
    equity = 100.0 * 2.0 ** (np.arange(1, bars + 1) / bars)
    m = metrics_of(equity, interval=6 * 3600 * S)
    assert m.years == pytest.approx(1.0)
    assert m.total_return == pytest.approx(1.0)
    assert m.cagr == pytest.approx(1.0, rel=1e-9)


def test_cagr_of_365_daily_bars_is_slightly_above_the_return():
    equity = np.linspace(100.0, 150.0, 366)[1:]
    m = metrics_of(equity)
    assert m.cagr == pytest.approx(1.5 ** (365.25 / 365) - 1, rel=1e-12)
    assert m.cagr > m.total_return


# --- drawdown ---------------------------------------------------------------------------


def test_known_drawdown_depth_duration_and_calmar():
    # peak 120 -> trough 60 (50%), 3 bars underwater; later 4 bars at 125 under a 130 peak
    equity = [110, 120, 90, 60, 96, 120, 130, 125, 125, 125, 125, 131]
    m = metrics_of(equity)
    assert m.max_drawdown == pytest.approx(0.5)
    assert m.max_drawdown_duration_bars == 4  # the longest stretch, not the deepest
    assert m.max_drawdown_duration_ns == 4 * DAY
    assert m.calmar == pytest.approx(m.cagr / 0.5)


def test_drawdown_counts_from_initial_equity():
    m = metrics_of([80.0, 90.0, 100.0])
    assert m.max_drawdown == pytest.approx(0.2)
    assert m.max_drawdown_duration_bars == 2  # 100 equals the peak: back above water


def test_equity_hitting_zero_does_not_crash_or_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics_of([50.0, 0.0, 0.0, 0.0])
        negative = metrics_of([50.0, -10.0, -10.0])
    assert m.total_return == -1 and m.cagr == -1 and m.max_drawdown == pytest.approx(1.0)
    assert math.isfinite(m.sharpe)  # returns -50%, -100%, 0, 0
    assert negative.total_return == pytest.approx(-1.1) and negative.cagr == -1
    assert negative.max_drawdown == pytest.approx(1.1)


@pytest.mark.parametrize("equity", [[], [101.0]])
def test_zero_and_one_bar(equity):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics_of(equity, fills=fills_table(TRADE_ROWS))
    assert m.bars == len(equity)
    assert math.isnan(m.sharpe) and math.isnan(m.sortino) and math.isnan(m.volatility)
    assert m.trade_count == 3
    if equity:
        assert m.start_ns == m.end_ns == T0 and m.total_return == pytest.approx(0.01)
    else:
        assert m.start_ns is None and m.end_ns is None
        assert m.total_return == 0 and math.isnan(m.cagr) and math.isnan(m.exposure) and math.isnan(m.turnover)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="one length"):
        compute_metrics(np.arange(3), np.ones(3), np.zeros(2), None, DAY, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="initial_equity"):
        compute_metrics(np.arange(3), np.ones(3), np.zeros(3), None, DAY, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        compute_metrics(np.arange(3), np.array([1.0, np.nan, 1.0]), np.zeros(3), None, DAY, 1.0, 0.0, 0.0)


# --- exposure, accuracy, fees, timestamps ------------------------------------------------


def test_exposure_counts_bars_with_a_position():
    m = metrics_of([100.0] * 5, position=[0.0, 100.0, -50.0, 0.0, 1e-12])
    assert m.exposure == pytest.approx(0.4)  # 1e-12 is float residue, not a position


def test_directional_accuracy_and_passed_totals():
    m = metrics_of([100.0] * 3, directional_hits=7, directional_total=10, fees=12.5, funding=-3.0)
    assert m.directional_accuracy == pytest.approx(0.7)
    assert (m.fees, m.funding) == (12.5, -3.0)
    assert math.isnan(metrics_of([100.0] * 3).directional_accuracy)
    assert math.isnan(metrics_of([100.0] * 3, directional_hits=0, directional_total=0).directional_accuracy)


def test_datetime64_times_are_accepted():
    ts = (T0 + np.arange(3) * DAY).astype("datetime64[ns]")
    m = compute_metrics(ts, np.full(3, 100.0), np.zeros(3), None, DAY, 100.0, 0.0, 0.0)
    assert (m.start_ns, m.end_ns) == (T0, T0 + 2 * DAY)


# --- round trips ----------------------------------------------------------------------------


def test_round_trips_with_partial_close_flip_and_fees():
    rng = np.random.default_rng(7)
    shuffled = [TRADE_ROWS[i] for i in rng.permutation(len(TRADE_ROWS))]
    trips = round_trips(fills_table(shuffled))
    assert [(t.strategy, t.symbol, t.direction, t.open_ns, t.close_ns) for t in trips] == [
        ("s", "BTC-USD", 1, 1, 4),
        ("s", "BTC-USD", -1, 4, 5),
        ("s", "ETH-USD", 1, 6, 7),
    ]
    assert [t.gross_pnl for t in trips] == pytest.approx([10.0, 20.0, -5.0])
    assert [t.fees for t in trips] == pytest.approx([4.0, 4.0, 1.0])  # the flip's fee 3 split 1:2
    assert [t.net_pnl for t in trips] == pytest.approx([6.0, 16.0, -6.0])


def test_win_rate_profit_factor_and_turnover_from_fills():
    m = metrics_of([1000.0] * 10, initial=1000.0, fills=fills_table(TRADE_ROWS))
    assert m.trade_count == 3
    assert m.win_rate == pytest.approx(2 / 3)
    assert m.profit_factor == pytest.approx(22 / 6)
    notional = 100 + 110 + 120 + 300 + 180 + 50 + 45 + 1000 + 550  # the rejected row is not traded
    assert m.turnover == pytest.approx(notional / 1000)
    assert m.turnover_annual == pytest.approx(notional / 1000 / (10 / 365.25))


def test_fees_turn_a_small_gain_into_a_loss():
    rows = [(1, "s", "SOL-USD", "buy", 2.0, 10.0, 0.1), (2, "s", "SOL-USD", "sell", 2.0, 10.5, 1.2)]
    m = metrics_of([100.0] * 3, fills=fills_table(rows))
    (trip,) = round_trips(fills_table(rows))
    assert trip.gross_pnl == pytest.approx(1.0) and trip.net_pnl == pytest.approx(-0.3)
    assert m.win_rate == 0 and m.profit_factor == 0


def test_profit_factor_without_losses_is_infinite_and_without_trades_nan():
    rows = [(1, "s", "SOL-USD", "sell", 1.0, 10.0, 0.0), (2, "s", "SOL-USD", "buy", 1.0, 9.0, 0.0)]
    assert metrics_of([100.0] * 3, fills=fills_table(rows)).profit_factor == math.inf
    none = metrics_of([100.0] * 3, fills=None)
    empty = metrics_of([100.0] * 3, fills=fills_table([]))
    for m in (none, empty):
        assert m.trade_count == 0 and math.isnan(m.win_rate) and math.isnan(m.profit_factor) and m.turnover == 0


def test_position_open_at_the_end_is_not_a_trade():
    rows = [(1, "s", "BTC-USD", "buy", 1.0, 100.0, 0.0), (2, "s", "BTC-USD", "sell", 0.4, 110.0, 0.0)]
    assert round_trips(fills_table(rows)) == []


def test_float_residue_closes_the_trade():
    rows = [(1, "s", "BTC-USD", "buy", 0.3, 100.0, 0.0)] + [(2 + i, "s", "BTC-USD", "sell", 0.1, 101.0, 0.0) for i in range(3)]
    (trip,) = round_trips(fills_table(rows))  # 0.3 - 0.1 - 0.1 - 0.1 != 0 in floats
    assert trip.gross_pnl == pytest.approx(0.3)


def test_dictionary_strings_and_unknown_side():
    table = fills_table(TRADE_ROWS)
    for name in ("symbol", "side", "strategy", "status"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).dictionary_encode())
    assert len(round_trips(table)) == 3
    bad = fills_table([(1, "s", "BTC-USD", "long", 1.0, 100.0, 0.0)])
    with pytest.raises(InputError, match="buy or sell"):
        round_trips(bad)


# --- JSON and terminal ----------------------------------------------------------------------


def sample_results() -> list[tuple[str, Metrics]]:
    strategy = metrics_of([101.0, 99.0, 103.0, 104.0], fills=fills_table(TRADE_ROWS), position=[0, 50, 50, 0])
    flat = metrics_of([100.0] * 4)
    return [("strategy", strategy), ("buy-and-hold", flat)]


def test_json_is_strict_and_complete():
    results = sample_results()
    doc = report_json(results)
    text = json.dumps(doc, allow_nan=False)  # raises on NaN or inf
    first, second = doc["results"]
    assert first["name"] == "strategy" and second["name"] == "buy-and-hold"
    assert set(first["metrics"]) >= {f.name for f in dataclasses.fields(Metrics)}
    assert second["metrics"]["sharpe"] is None  # NaN
    assert first["metrics"]["trade_count"] == 3
    assert first["metrics"]["start"] == "2025-01-01 00:00:00Z"
    assert json.loads(text) == doc


def test_json_writes_infinite_profit_factor_as_null_with_its_text():
    rows = [(1, "s", "SOL-USD", "buy", 1.0, 10.0, 0.0), (2, "s", "SOL-USD", "sell", 1.0, 11.0, 0.0)]
    doc = report_json([("x", metrics_of([100.0] * 3, fills=fills_table(rows)))])
    assert doc["results"][0]["metrics"]["profit_factor"] is None
    assert doc["results"][0]["display"]["profit_factor"] == "inf"


def test_terminal_table_has_a_column_per_result_and_a_row_per_metric():
    console = Console(file=io.StringIO(), width=200, record=True)
    results = sample_results()
    render_report(results, "BTC backtest", console)
    text = console.export_text()
    assert "BTC backtest" in text and "strategy" in text and "buy-and-hold" in text
    for row in ROWS:
        assert row.label in text
    assert "4.00%" in text  # total return 104 / 100 - 1
    assert "66.67%" in text  # win rate
    assert "n/a" in text  # buy-and-hold's Sharpe


# --- HTML -----------------------------------------------------------------------------------


def big_run(n: int = 500_000) -> tuple[list[tuple[str, Metrics]], dict, dict]:
    rng = np.random.default_rng(1)
    ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
    strategy = 10_000 * np.cumprod(1 + rng.normal(0, 1e-4, n))
    hold = 10_000 * np.cumprod(1 + rng.normal(0, 2e-4, n))
    position = np.where(rng.random(n) < 0.5, 0.0, 5_000.0)
    results = [
        ("strategy", compute_metrics(ts, strategy, position, None, MINUTE, 10_000.0, 0.0, 0.0)),
        ("buy-and-hold", compute_metrics(ts, hold, np.full(n, 10_000.0), None, MINUTE, 10_000.0, 0.0, 0.0)),
    ]
    curves = {"strategy": (ts, strategy), "buy-and-hold": (ts, hold)}
    positions = {"strategy": (ts, position), "buy-and-hold": (ts, np.full(n, 10_000.0))}
    return results, curves, positions


def test_html_report_is_self_contained_small_and_complete(tmp_path):
    results, curves, positions = big_run()
    assumptions = ["Orders fill at the next bar's open & pay 0.045% taker fee", "Stops trigger when low < stop"]
    path = write_html(tmp_path / "out" / "report.html", results, curves, positions, "BTC <5m>", assumptions=assumptions)
    text = path.read_text(encoding="utf-8")
    assert os.listdir(tmp_path / "out") == ["report.html"]  # no temporary file left behind
    assert path.stat().st_size < 400_000
    assert text.count("<svg") == 3
    for row in ROWS:
        assert row.label in text
    assert "Orders fill at the next bar&#x27;s open &amp; pay 0.045% taker fee" in text
    assert "low &lt; stop" in text and "BTC &lt;5m&gt;" in text
    assert "Assumptions" in text and "Sharpe = mean" in text  # the caller's and the report's own
    assert "<script" not in text and "http" not in text and "<link" not in text
    polylines = re.findall(r'points="([^"]*)"', text)
    assert len(polylines) == 6  # equity, drawdown and position of both results
    assert all(2 <= len(p.split()) <= 2002 for p in polylines)


def test_html_is_byte_for_byte_reproducible(tmp_path):
    results, curves, positions = big_run(5_000)
    a = write_html(tmp_path / "a.html", results, curves, positions, "t", assumptions=["x"]).read_bytes()
    b = write_html(tmp_path / "b.html", results, curves, positions, "t", assumptions=["x"]).read_bytes()
    assert a == b


def test_html_handles_empty_series(tmp_path):
    m = metrics_of([])
    empty = (np.zeros(0, np.int64), np.zeros(0))
    path = write_html(tmp_path / "r.html", [("s", m)], {"s": empty}, {}, "empty", assumptions=[])
    text = path.read_text()
    assert text.count("no data") == 3 and "The caller stated none." in text


def test_failed_html_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("old")
    results, curves, positions = big_run(100)

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(page.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_html(target, results, curves, positions, "t", assumptions=[])
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.html"]


def test_downsample_keeps_extremes_and_ends():
    n = 525_960
    x = np.arange(n, dtype=np.int64)
    y = np.sin(np.arange(n) / 5000.0)
    y[123_457] = -50.0
    y[400_001] = 70.0
    dx, dy = downsample(x, y, 2000)
    assert dx.size <= 2000
    assert dy.min() == -50.0 and dy.max() == 70.0
    assert dx[0] == 0 and dx[-1] == n - 1
    assert np.all(np.diff(dx) > 0)  # still in time order
    np.testing.assert_array_equal(dy, y[dx])


# --- folds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,n", [(10, 3), (525_600, 7), (5, 5), (1, 1), (1000, 1)])
def test_fold_bounds_partition_exactly(size, n):
    bounds = fold_bounds(T0 + np.arange(size, dtype=np.int64) * MINUTE, n)
    assert len(bounds) == n
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, no overlap
    counts = [b - a for a, b in bounds]
    assert min(counts) >= 1 and max(counts) - min(counts) <= 1


def test_fold_bounds_known_split_and_equal_times_stay_together():
    assert fold_bounds(np.arange(10), 3) == [(0, 3), (3, 6), (6, 10)]
    two_symbols = np.repeat(np.arange(5), 2)  # each time twice: 0 0 1 1 2 2 3 3 4 4
    assert fold_bounds(two_symbols, 2) == [(0, 4), (4, 10)]


def test_fold_bounds_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="non-empty"):
        fold_bounds(np.arange(3), 4)
    with pytest.raises(ValueError, match="sorted"):
        fold_bounds(np.array([0, 2, 1]), 2)
    with pytest.raises(ValueError, match="at least 1"):
        fold_bounds(np.arange(3), 0)
    with pytest.raises(ValueError, match="non-empty"):
        fold_bounds(np.zeros(4, np.int64), 2)  # one time cannot be cut


def test_aggregate_folds_known_answer():
    base = metrics_of([100.0] * 3)
    folds = [
        dataclasses.replace(base, total_return=0.1, win_rate=0.5, profit_factor=2.0, trade_count=2),
        dataclasses.replace(base, total_return=0.2, win_rate=math.nan, profit_factor=math.inf, trade_count=0),
        dataclasses.replace(base, total_return=0.6, win_rate=1.0, profit_factor=4.0, trade_count=4),
    ]
    agg = aggregate_folds(folds)
    mean, std, lo, hi = agg["total_return"]
    assert mean == pytest.approx(0.3) and std == pytest.approx(math.sqrt(0.07)) and (lo, hi) == (0.1, 0.6)
    assert agg["win_rate"][0] == pytest.approx(0.75)  # the NaN fold is left out
    assert agg["profit_factor"][0] == pytest.approx(3.0)  # so is the infinite one
    assert agg["trade_count"] == (2.0, 2.0, 0.0, 4.0)
    assert all(math.isnan(v) for v in agg["sharpe"])
    assert "start_ns" not in agg and "bar_interval_ns" not in agg
    single = aggregate_folds(folds[:1])["total_return"]
    assert single[0] == 0.1 and math.isnan(single[1])
    assert aggregate_folds([]) == {}

"""Adversarial tests of the risk engine and the paper venue (execution/kernel.py through engine.Executor).

Every scenario is built from hand-made 1h bars so the expected numbers can be
computed by hand; the fuzz at the end checks the invariants after every row of
a random walk. Each bug these tests found is fixed; its test stays as the
guard.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from helpers import assert_same_table
from varon_cli.config import MAX_LEVERAGE, load_config
from varon_cli.errors import ConfigError
from varon_cli.execution import kernel as K
from varon_cli.execution.engine import Executor
from varon_cli.schemas import SIGNALS

H = 3_600_000_000_000
M = 60_000_000_000
T0 = 1_704_067_200_000_000_000  # 2024-01-01 00:00 UTC
NAN = float("nan")
INF = float("inf")
FEE = 0.0005
SLIP = 0.001  # 10 bps

# reason texts (the contract of the orders/fills streams)
REJ_TARGET = "rejected: target NaN or outside -1..1"
REJ_LEVERAGE = "rejected: leverage not positive"
REJ_STALE = "rejected: signal older than risk.max_signal_age"
REJ_FUTURE = "rejected: signal from the future"
REJ_PRICE = "rejected: bar prices missing or not positive"
REJ_STOP = "rejected: stop loss on the wrong side of the price"
REJ_TP = "rejected: take profit on the wrong side of the price"
REJ_RATE = "rejected: order rate limit"
REJ_MIN = "rejected: below the minimum order size"
REJ_BREAKER = "rejected: breaker engaged, reduce only"
REJ_OLD = "rejected: bar older than the symbol's last"
REJ_DUP = "rejected: bar already decided"
REJ_SYMBOL = "rejected: symbol not listed by the venue"


# == helpers =======================================================================================
def configs(risk: dict | None = None, paper: dict | None = None):
    """(RiskConfig, PaperConfig) through load_config, so validation runs; defaults chosen for hand arithmetic."""
    p = {"symbols": ["BTC-USD", "ETH-USD"], "taker_fee": FEE, "slippage_bps": SLIP * 10_000, "funding_rate": 0.0,
         "initial_equity": 10_000.0}
    p.update(paper or {})
    r = {"max_leverage": 10.0, "strategy_exposure": 0.5, "account_exposure": 1.0, "min_order_notional": 0.0,
         "rebalance_band": 0.0, "daily_loss_limit": 0.5, "max_drawdown": 0.9, "default_stop_loss": 0.02}
    r.update(risk or {})
    cfg = load_config(None, {"risk": r, "paper": p}, {})
    return cfg.risk, cfg.paper


def executor(risk: dict | None = None, paper: dict | None = None, interval_ns: int = H) -> Executor:
    r, p = configs(risk, paper)
    return Executor(r, p, interval_ns)


def bar(i: int, o: float, h: float, lo: float, c: float, target: float = 0.0, *, symbol: str = "BTC-USD",
        strategy: str = "s1", leverage: float = 1.0, sl: float = NAN, tp: float = NAN, ts: int | None = None,
        bar_ts: int | None = None, interval: int = H) -> dict:
    """One signal row on bar i (open time T0 + i*interval); the decision time is the bar's close unless ts is given."""
    bt = T0 + i * interval if bar_ts is None else bar_ts
    return {"ts": bt + interval if ts is None else ts, "bar_ts": bt, "symbol": symbol, "strategy": strategy,
            "target": target, "leverage": leverage, "stop_loss": sl, "take_profit": tp, "price": c, "model_id": None,
            "venue": "paper", "bar_open": o, "bar_high": h, "bar_low": lo}


def mkt(i: int, o: float, h: float, lo: float, c: float, symbol: str = "BTC-USD", **kw) -> dict:
    """A market-only row: an observer strategy with target 0 that moves the symbol's bar and never trades."""
    return bar(i, o, h, lo, c, 0.0, symbol=symbol, strategy="mkt", **kw)


def flat(i: int, p: float = 100.0, **kw) -> dict:
    return mkt(i, p, p, p, p, **kw)


def signals(rows: list[dict]) -> pa.Table:
    schema = SIGNALS.schema_with()
    arrays = []
    for f in schema:
        values = [r[f.name] for r in rows]
        arrays.append(pa.array(values, pa.int64()).cast(f.type) if pa.types.is_timestamp(f.type)
                      else pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def run(e: Executor, rows: list[dict], now_ns: int | None = None):
    return e.process(signals(rows), now_ns)


def recs(table: pa.Table) -> list[dict]:
    """Rows with times as int ns."""
    schema = pa.schema([f.with_type(pa.int64()) if pa.types.is_timestamp(f.type) else f for f in table.schema])
    return table.cast(schema).to_pylist()


def position(e: Executor, strategy: str = "s1", symbol: str = "BTC-USD") -> dict | None:
    found = [p for p in e.positions() if p["strategy"] == strategy and p["symbol"] == symbol]
    return found[0] if found else None


def margin_used(e: Executor) -> float:
    """Sum of |notional| / leverage over open positions, at each symbol's last close."""
    st = e.state
    total = 0.0
    for p in e.positions():
        s = e.symbols.index(p["symbol"])
        total += abs(p["size"]) * st["sym_f"][s, K.LAST_CLOSE] / max(p["leverage"], 1.0)
    return total


def events(out, kind: str) -> list[dict]:
    return [ev for ev in out.events if ev["event"] == kind]


# == fill timing ===================================================================================
def test_decision_fills_at_the_next_open_with_slippage_and_taker_fee() -> None:
    e = executor()
    out = run(e, [bar(0, 100, 101, 99, 100, 1.0), bar(0, 50, 51, 49, 50, -1.0, symbol="ETH-USD", strategy="s2")])
    orders = recs(out.orders)
    assert [(o["symbol"], o["side"], o["size"], o["price"], o["status"], o["reason"], o["ts"]) for o in orders] == [
        ("BTC-USD", "buy", 50.0, 100.0, "new", "entry", T0 + H),  # 1 * 0.5 * 10_000 * 1 / 100
        ("ETH-USD", "sell", 100.0, 50.0, "new", "entry", T0 + H)]
    assert out.fills.num_rows == 0 and e.positions() == []  # nothing fills at the close it was decided on

    # ETH's next bar fills ETH only; BTC waits for its own next bar
    out = run(e, [mkt(1, 48, 48.5, 47, 47.5, symbol="ETH-USD")])
    (fill,) = recs(out.fills)
    assert fill["symbol"] == "ETH-USD" and fill["side"] == "sell" and fill["size"] == 100.0
    assert fill["price"] == pytest.approx(48 * (1 - SLIP), rel=1e-12)  # the open, slipped against us
    assert fill["fee"] == pytest.approx(FEE * 100 * 48 * (1 - SLIP), rel=1e-12)
    assert fill["ts"] == T0 + H and fill["cloid"] == orders[1]["cloid"] and fill["reason"] == "entry"
    assert position(e) is None

    out = run(e, [mkt(1, 104, 105, 103, 104.5)])
    (fill,) = recs(out.fills)
    assert fill["price"] == pytest.approx(104.104, rel=1e-12) and fill["price"] != 100.0
    assert fill["fee"] == pytest.approx(FEE * 50 * 104.104, rel=1e-12)
    assert fill["ts"] == T0 + H and fill["cloid"] == orders[0]["cloid"] and fill["side"] == "buy"
    btc, eth = position(e), position(e, "s2", "ETH-USD")
    assert btc["size"] == 50.0 and btc["entry"] == pytest.approx(104.104) and btc["leverage"] == 1.0
    assert eth["size"] == -100.0 and eth["entry"] == pytest.approx(47.952)
    # cash - fees + unrealised at the closes: 10_000 - 2.6026 - 2.3976 + 50 * (104.5 - 104.104) - 100 * (47.5 - 47.952)
    assert e.equity == pytest.approx(10_059.9998, rel=1e-12)
    assert e.fees == pytest.approx(2.6026 + 2.3976, rel=1e-12)


def test_order_decided_on_the_last_bar_is_cancelled_never_filled() -> None:
    e = executor()
    out = run(e, [bar(0, 100, 101, 99, 100, 1.0)])
    (order,) = recs(out.orders)
    end = e.cancel_pending(T0 + H)
    (cancel,) = recs(end.orders)
    assert cancel["status"] == "cancelled" and cancel["reason"] == "cancelled: end of input"
    assert cancel["cloid"] == order["cloid"] and cancel["strategy"] == "s1" and cancel["symbol"] == "BTC-USD"
    assert end.fills.num_rows == 0 and e.positions() == []
    out = run(e, [mkt(1, 100, 101, 99, 100)])  # a later price must not resurrect it
    assert out.fills.num_rows == 0 and e.positions() == [] and e.equity == 10_000.0
    assert e.cancel_pending(T0 + 2 * H).orders.num_rows == 0


def test_cancelled_order_row_carries_the_orders_size_and_side() -> None:
    e = executor()
    run(e, [bar(0, 100, 101, 99, 100, 1.0)])
    (cancel,) = recs(e.cancel_pending(T0 + H).orders)
    assert cancel["size"] == 50.0 and cancel["side"] == "buy"


# == sizing and leverage caps ======================================================================
@pytest.mark.parametrize("risk, paper, symbol, requested, expected", [
    ({}, {}, "BTC-USD", 4.0, 4.0),
    ({}, {}, "BTC-USD", NAN, 1.0),  # NaN leverage = 1x
    ({"max_leverage": 5.0}, {}, "BTC-USD", 8.0, 5.0),  # risk.max_leverage
    ({"asset_leverage": {"ETH-USD": 3.0}}, {}, "ETH-USD", 8.0, 3.0),  # risk.asset_leverage
    ({"max_leverage": 3.0, "asset_leverage": {"BTC-USD": 20.0}}, {}, "BTC-USD", 10.0, 3.0),  # asset never above max
    ({}, {"max_leverage": {"BTC-USD": 2.0}}, "BTC-USD", 8.0, 2.0),  # the venue's
    ({"strategies": {"s1": {"max_leverage": 1.5}}}, {}, "BTC-USD", 8.0, 1.5),  # the strategy's
    ({"max_leverage": 50.0, "asset_leverage": {"BTC-USD": 50.0}}, {}, "BTC-USD", 1000.0, 40.0),  # venue BTC 40x
    ({"max_leverage": 50.0}, {"default_max_leverage": 50.0, "max_leverage": {}}, "ETH-USD", 1000.0, 50.0),
    ({"max_leverage": 50.0}, {"max_leverage": {"BTC-USD": 50.0}}, "BTC-USD", 1e9, 50.0),
])
def test_size_is_target_times_exposure_times_equity_times_capped_leverage_over_price(
        risk, paper, symbol, requested, expected) -> None:  # noqa: ANN001
    e = executor(risk, paper)
    out = run(e, [bar(0, 200, 200, 200, 200, 0.6, symbol=symbol, leverage=requested)])
    (order,) = recs(out.orders)
    assert order["status"] == "new" and order["size"] == pytest.approx(0.6 * 0.5 * 10_000 * expected / 200, rel=1e-12)
    clipped = [ev for ev in events(out, "risk") if ev["reason"] == "leverage capped"]
    if requested == requested and requested > expected:
        assert len(clipped) == 1 and clipped[0]["value"] == expected
    else:
        assert clipped == []
    run(e, [mkt(1, 200, 200, 200, 200, symbol=symbol)])
    (p,) = e.positions()
    assert p["leverage"] == expected <= MAX_LEVERAGE


@pytest.mark.parametrize("section, values, key", [
    ("risk", {"max_leverage": 200.0}, "risk.max_leverage"),
    ("risk", {"max_leverage": 50.5}, "risk.max_leverage"),
    ("risk", {"max_leverage": NAN}, "risk.max_leverage"),
    ("risk", {"asset_leverage": {"BTC-USD": 200.0}}, "risk.asset_leverage.BTC-USD"),
    ("risk", {"strategies": {"s1": {"max_leverage": 200.0}}}, "risk.strategies.s1.max_leverage"),
    ("paper", {"max_leverage": {"BTC-USD": 200.0}}, "paper.max_leverage.BTC-USD"),
    ("risk", {"strategy_exposure": 3.0}, "risk.strategy_exposure"),
    ("risk", {"strategy_exposure": NAN}, "risk.strategy_exposure"),
    ("risk", {"account_exposure": 3.0}, "risk.account_exposure"),
    ("risk", {"strategies": {"s1": {"exposure": 3.0}}}, "risk.strategies.s1.exposure"),
    ("risk", {"default_stop_loss": 0.0}, "risk.default_stop_loss"),
])
def test_config_refuses_leverage_above_50_and_exposure_above_1_naming_the_key(section, values, key) -> None:  # noqa
    with pytest.raises(ConfigError) as err:
        load_config(None, {section: values}, {})
    assert err.value.message.startswith(key + " ="), err.value.message
    assert "must be in" in err.value.message


def test_config_refusal_names_paper_default_max_leverage() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"paper": {"default_max_leverage": 200.0}}, {})
    assert err.value.message.startswith("paper.default_max_leverage = 200.0:")


# == account and strategy exposure =================================================================
def test_second_strategy_is_cut_to_the_account_exposure_left() -> None:
    e = executor({"strategies": {"a": {"exposure": 0.8}, "b": {"exposure": 0.8}}})
    out = run(e, [bar(0, 100, 100, 100, 100, 1.0, strategy="a")])
    assert recs(out.orders)[0]["size"] == pytest.approx(80.0)
    out = run(e, [bar(1, 100, 100, 100, 100, 1.0, strategy="b", leverage=2.0)])  # a fills first at 100.1
    equity = 10_000 - FEE * 80 * 100.1 - 80 * 0.1
    assert e.equity == pytest.approx(equity, rel=1e-12)
    (order,) = recs(out.orders)
    room = 1.0 * equity - 80 * 100 / 1.0  # a's margin at the close
    assert order["size"] == pytest.approx(room * 2 / 100, rel=1e-9)  # b's margin = what is left
    (cut,) = [ev for ev in events(out, "risk") if ev["reason"] == "size cut to the exposure limit"]
    assert cut["size"] == pytest.approx(0.8 * equity * 2 / 100 - room * 2 / 100, rel=1e-9)
    assert 80 * 100 + order["size"] * 100 / 2 <= 1.0 * equity * (1 + 1e-9)
    run(e, [flat(2)])
    assert margin_used(e) <= 1.0 * e.equity + 10  # b filled at 100.1: its fee and slippage (~$6) come after


def test_a_strategy_with_no_room_left_opens_nothing() -> None:
    e = executor({"account_exposure": 0.5, "strategies": {"a": {"exposure": 0.5}}})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, strategy="a")])
    run(e, [flat(1)])  # a fills: 5_000 of margin > 0.5 x equity after the fee
    out = run(e, [bar(1, 50, 50, 50, 50, 1.0, symbol="ETH-USD", strategy="b")])
    assert [ev["reason"] for ev in events(out, "risk")] == ["size cut to the exposure limit"]
    assert out.orders.num_rows == 0
    run(e, [mkt(2, 50, 50, 50, 50, symbol="ETH-USD")])
    assert position(e, "b", "ETH-USD") is None


def test_a_decision_for_nothing_emits_no_exposure_cut() -> None:
    e = executor({"account_exposure": 0.5, "strategies": {"a": {"exposure": 0.5}}})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, strategy="a")])
    out = run(e, [flat(1), flat(2)])  # the observer asks for nothing, twice
    assert events(out, "risk") == [] and e.counts["size cut to the exposure limit"] == 0


def test_orders_decided_on_the_same_bar_share_the_account_exposure() -> None:
    e = executor({"strategies": {"a": {"exposure": 0.8}, "b": {"exposure": 0.8}}})
    out = run(e, [bar(0, 100, 100, 100, 100, 1.0, strategy="a"), bar(0, 100, 100, 100, 100, 1.0, strategy="b")])
    assert [o["size"] for o in recs(out.orders)] == [pytest.approx(80.0), pytest.approx(20.0)]  # a pending 8_000
    run(e, [flat(1)])
    assert margin_used(e) == pytest.approx(10_000.0)


def test_a_pending_exit_frees_its_margin_for_an_entry_on_the_same_bar() -> None:
    e = executor({"strategies": {"a": {"exposure": 0.8}, "b": {"exposure": 0.8}}}, {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, strategy="a")])
    out = run(e, [bar(1, 100, 100, 100, 100, 0.0, strategy="a"), bar(1, 100, 100, 100, 100, 1.0, strategy="b")])
    assert [(o["strategy"], o["reason"]) for o in recs(out.orders)] == [("a", "exit"), ("b", "entry")]
    assert recs(out.orders)[1]["size"] == pytest.approx(0.8 * e.equity / 100)  # not cut: a's exit fills first


def test_flip_at_lower_leverage_is_held_to_the_account_exposure() -> None:
    e = executor({"account_exposure": 0.6, "strategies": {"a": {"exposure": 0.5}, "b": {"exposure": 0.5}}},
                 {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 0.2, strategy="a", leverage=10.0)])  # 100 units at 10x: margin 1_000
    run(e, [bar(1, 100, 100, 100, 100, 1.0, strategy="b")])  # b gets the rest: ~5_000
    out = run(e, [bar(2, 100, 100, 100, 100, -0.9, strategy="a")])  # flip to -45 units at 1x would be 4_500
    (order,) = recs(out.orders)
    equity = e.equity  # 10_000 less the two entry fees
    room = 0.6 * equity - abs(position(e, "b")["size"]) * 100
    assert order["reason"] == "flip" and order["size"] - 100 == pytest.approx(room / 100, rel=1e-9)
    run(e, [flat(3)])
    assert margin_used(e) == pytest.approx(0.6 * equity, rel=1e-12)


def test_strategy_exposure_is_shared_by_the_symbols_it_signals() -> None:
    """The strategy never commits more than its exposure; its symbols share it once each has been decided on.

    On the first bar BTC is the only symbol decided so far and takes the whole 2_000 of margin, so ETH's first
    order is cut to nothing (the strategy's cap); from the next bar each symbol is sized for half.
    """
    e = executor({"strategy_exposure": 0.2})
    out = run(e, [bar(0, 100, 100, 100, 100, 1.0), bar(0, 50, 50, 50, 50, -1.0, symbol="ETH-USD")])
    assert [o["size"] for o in recs(out.orders)] == [pytest.approx(20.0)]
    assert margin_used(e) <= 0.2 * 10_000 + 1e-6
    out = run(e, [bar(1, 100, 100, 100, 100, 1.0), bar(1, 50, 50, 50, 50, -1.0, symbol="ETH-USD")])
    assert [(o["side"], o["size"]) for o in recs(out.orders)] == [("sell", pytest.approx(10.0, rel=1e-3)),
                                                                 ("sell", pytest.approx(20.0, rel=1e-3))]
    run(e, [flat(2), flat(2, 50, symbol="ETH-USD")])
    assert margin_used(e) == pytest.approx(0.2 * 10_000, rel=1e-3)


@pytest.mark.parametrize("rows", [
    [bar(0, 100, 100, 100, 100, 1.0), bar(0, 50, 50, 50, 50, 1.0, symbol="ETH-USD")],
    # a strategy that only starts signalling ETH later: a backtest halves its BTC size from the first bar on
    [bar(0, 100, 100, 100, 100, 1.0), flat(1), flat(2), bar(3, 50, 50, 50, 50, 1.0, symbol="ETH-USD")],
], ids=["same bar", "later symbol"])
def test_strategy_exposure_split_is_the_same_in_one_batch_and_row_by_row(rows) -> None:  # noqa: ANN001
    whole, single = executor(), executor()
    a = [o["size"] for o in recs(run(whole, rows).orders)]
    b = [o["size"] for r in rows for o in recs(run(single, [r]).orders)]
    assert a == b


# == stops, take profits, liquidation ==============================================================
def test_default_stop_and_take_profit_come_from_the_entry() -> None:
    e = executor({"default_take_profit": 0.05})
    run(e, [bar(0, 100, 100, 100, 100, 1.0), bar(0, 100, 100, 100, 100, -1.0, symbol="ETH-USD", strategy="s2")])
    run(e, [flat(1), flat(1, symbol="ETH-USD")])
    long, short = position(e), position(e, "s2", "ETH-USD")
    assert long["entry"] == pytest.approx(100.1) and short["entry"] == pytest.approx(99.9)
    assert long["stop_loss"] == pytest.approx(100.1 * 0.98) and long["take_profit"] == pytest.approx(100.1 * 1.05)
    assert short["stop_loss"] == pytest.approx(99.9 * 1.02) and short["take_profit"] == pytest.approx(99.9 * 0.95)


def test_signal_stop_is_used_when_valid() -> None:
    e = executor()
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=90.0, tp=130.0)])
    run(e, [flat(1)])
    p = position(e)
    assert p["stop_loss"] == 90.0 and p["take_profit"] == 130.0


@pytest.mark.parametrize("target, sl, tp, reason", [
    (1.0, 100.0, NAN, REJ_STOP),  # a long's stop at the price
    (1.0, 101.0, NAN, REJ_STOP),
    (-1.0, 99.0, NAN, REJ_STOP),
    (-1.0, 100.0, NAN, REJ_STOP),
    (1.0, 95.0, 99.0, REJ_TP),
    (-1.0, 105.0, 101.0, REJ_TP),
])
def test_stop_or_take_profit_on_the_wrong_side_is_rejected(target, sl, tp, reason) -> None:  # noqa: ANN001
    e = executor()
    out = run(e, [bar(0, 100, 100, 100, 100, target, sl=sl, tp=tp)])
    (order,) = recs(out.orders)
    assert order["status"] == "rejected" and order["reason"] == reason
    run(e, [flat(1)])
    assert e.positions() == [] and e.counts[reason] == 1


@pytest.mark.parametrize("target, sl, tp, reason", [
    (1.0, -INF, NAN, REJ_STOP), (1.0, 0.0, NAN, REJ_STOP), (1.0, -5.0, NAN, REJ_STOP), (-1.0, INF, NAN, REJ_STOP),
    (1.0, 95.0, INF, REJ_TP), (-1.0, 105.0, 0.0, REJ_TP), (-1.0, 105.0, -INF, REJ_TP),
])
def test_a_stop_or_take_profit_that_is_not_a_real_price_is_rejected(target, sl, tp, reason) -> None:  # noqa: ANN001
    e = executor()
    out = run(e, [bar(0, 100, 100, 100, 100, target, sl=sl, tp=tp)])
    assert [(o["status"], o["reason"]) for o in recs(out.orders)] == [("rejected", reason)]
    run(e, [flat(1)])
    assert e.positions() == []


@pytest.mark.parametrize("sl, tp", [(105.0, NAN), (NAN, 95.0)])
def test_an_exit_is_never_refused_for_its_stop_or_take_profit(sl, tp) -> None:  # noqa: ANN001
    e = executor()
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=90.0)])
    run(e, [flat(1)])
    out = run(e, [bar(2, 100, 100, 100, 100, 0.0, sl=sl, tp=tp)])
    assert [(o["status"], o["reason"]) for o in recs(out.orders)] == [("new", "exit")]


LONG_SETUP = dict(target=1.0, sl=95.0, tp=110.0)   # entry 100.1 (open 100 + 10 bps)
SHORT_SETUP = dict(target=-1.0, sl=105.0, tp=90.0)  # entry 99.9


@pytest.mark.parametrize("setup, o, h, lo, c, reason, price", [
    (LONG_SETUP, 99, 99.5, 94, 96, "stop_loss", 95 * (1 - SLIP)),  # low crosses the stop
    (LONG_SETUP, 93, 94, 92, 93.5, "stop_loss", 93 * (1 - SLIP)),  # gap below the stop: the open
    (LONG_SETUP, 100, 111, 94, 100, "stop_loss", 95 * (1 - SLIP)),  # both in the bar: the stop
    (LONG_SETUP, 101, 111, 100, 109, "take_profit", 110 * (1 - SLIP)),
    (LONG_SETUP, 112, 113, 111, 112, "take_profit", 112 * (1 - SLIP)),  # gap above the take profit
    (LONG_SETUP, 100, 109.9, 95.1, 100, None, None),
    (SHORT_SETUP, 101, 106, 100, 104, "stop_loss", 105 * (1 + SLIP)),
    (SHORT_SETUP, 107, 108, 106, 107, "stop_loss", 107 * (1 + SLIP)),
    (SHORT_SETUP, 100, 106, 89, 100, "stop_loss", 105 * (1 + SLIP)),
    (SHORT_SETUP, 99, 100, 89, 91, "take_profit", 90 * (1 + SLIP)),
    (SHORT_SETUP, 88, 89, 87, 88, "take_profit", 88 * (1 + SLIP)),
    (SHORT_SETUP, 100, 104.9, 90.1, 100, None, None),
])
def test_stop_and_take_profit_trigger_on_the_bar_range(setup, o, h, lo, c, reason, price) -> None:  # noqa: ANN001
    e = executor()
    run(e, [bar(0, 100, 100, 100, 100, **setup)])
    run(e, [mkt(1, 100, 100.5, 99.5, 100)])
    p = position(e)
    entry = 100 * (1 + SLIP * setup["target"])
    size = 50.0 * setup["target"]
    assert p["size"] == size and p["entry"] == pytest.approx(entry)
    before = e.equity
    out = run(e, [mkt(2, o, h, lo, c)])
    if reason is None:
        assert out.fills.num_rows == 0 and position(e)["size"] == size
        assert e.equity == pytest.approx(before + size * (c - 100), rel=1e-12)
        return
    (fill,) = recs(out.fills)
    assert fill["reason"] == reason and fill["ts"] == T0 + 2 * H and fill["size"] == 50.0
    assert fill["side"] == ("sell" if size > 0 else "buy")
    assert fill["price"] == pytest.approx(price, rel=1e-12)
    assert fill["fee"] == pytest.approx(FEE * 50 * price, rel=1e-12)
    assert e.positions() == []
    expected = 10_000 - FEE * 50 * entry + size * (price - entry) - FEE * 50 * price
    assert e.equity == pytest.approx(expected, rel=1e-12)


def test_entry_bar_that_crosses_the_stop_closes_the_position_in_the_same_bar() -> None:
    e = executor()
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=95.0)])
    out = run(e, [mkt(1, 100, 100, 90, 92)])
    assert [(f["reason"], round(f["price"], 9)) for f in recs(out.fills)] == [("entry", 100.1), ("stop_loss", 94.905)]
    assert e.positions() == []


def test_bar_opening_beyond_the_take_profit_fills_it_at_the_open() -> None:
    e = executor()
    run(e, [bar(0, 100, 100, 100, 100, **LONG_SETUP)])
    run(e, [mkt(1, 100, 100.5, 99.5, 100)])
    out = run(e, [mkt(2, 112, 113, 90, 100)])
    (fill,) = recs(out.fills)
    assert fill["reason"] == "take_profit" and fill["price"] == pytest.approx(112 * (1 - SLIP))


def test_a_moved_stop_on_an_unchanged_target_is_applied() -> None:
    e = executor({"rebalance_band": 0.05})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=95.0)])
    run(e, [bar(1, 100, 101, 99, 100, 1.0, sl=95.0)])
    out = run(e, [bar(2, 101, 102, 100, 101, 1.0, sl=99.0)])  # trail the stop up to 99: no order (band)
    assert out.orders.num_rows == 0 and position(e)["stop_loss"] == 99.0
    out = run(e, [bar(3, 101, 102, 100, 101, 1.0, sl=102.0)])  # a stop above the price is refused, the old one kept
    assert recs(out.orders)[0]["reason"] == REJ_STOP and position(e)["stop_loss"] == 99.0
    out = run(e, [mkt(4, 100.5, 101, 97, 98)])
    (fill,) = recs(out.fills)
    assert fill["reason"] == "stop_loss" and fill["price"] == pytest.approx(99 * (1 - SLIP))


@pytest.mark.parametrize("target, sl, crash, liq", [
    (1.0, 90.0, (99, 99, 80, 85), 100 * (1 - 1 / 20 + 0.5 / 40)),  # 96.25, above the 10% stop
    (-1.0, 110.0, (101, 120, 101, 115), 100 * (1 + 1 / 20 - 0.5 / 40)),  # 103.75
])
def test_liquidation_at_maintenance_margin_bounds_the_loss(target, sl, crash, liq) -> None:  # noqa: ANN001
    e = executor({"max_leverage": 20.0}, {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, target, leverage=20.0, sl=sl)])
    run(e, [flat(1)])
    p = position(e)
    assert p["size"] == 1000.0 * target and p["leverage"] == 20.0 and p["stop_loss"] == sl
    margin = 1000 * 100 / 20
    out = run(e, [mkt(2, *crash)])
    (fill,) = recs(out.fills)
    assert fill["reason"] == "liquidation" and fill["price"] == pytest.approx(liq, rel=1e-12)
    loss = 1000 * abs(liq - 100)
    assert loss < margin
    assert e.equity == pytest.approx(10_000 - FEE * 100_000 - loss - FEE * 1000 * liq, rel=1e-12)
    assert e.positions() == []


def test_stop_inside_the_liquidation_price_wins() -> None:
    e = executor({"max_leverage": 20.0}, {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, leverage=20.0, sl=97.0)])
    run(e, [flat(1)])
    out = run(e, [mkt(2, 99, 99, 80, 85)])
    (fill,) = recs(out.fills)
    assert fill["reason"] == "stop_loss" and fill["price"] == 97.0


def test_gap_through_liquidation_loses_at_most_the_isolated_margin() -> None:
    e = executor({"max_leverage": 20.0}, {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, leverage=20.0, sl=90.0)])
    run(e, [flat(1)])
    out = run(e, [mkt(2, 80, 80, 75, 78)])  # opens 20% down, far through the 96.25 liquidation price
    (fill,) = recs(out.fills)
    assert fill["reason"] == "liquidation" and fill["price"] == pytest.approx(96.25)
    assert e.equity == pytest.approx(10_000 - FEE * 100_000 - 3_750 - FEE * 96_250, rel=1e-12)


# == funding =======================================================================================
@pytest.mark.parametrize("rate", [0.0001, -0.0001])
def test_funding_is_paid_per_hour_mark_on_the_position_at_the_close(rate) -> None:  # noqa: ANN001
    e = executor(paper={"funding_rate": rate, "slippage_bps": 0.0, "taker_fee": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=50.0),
            bar(0, 50, 50, 50, 50, -1.0, symbol="ETH-USD", strategy="s2", sl=100.0)])
    for i, (b, eth) in enumerate([(100, 50), (102, 52), (98, 49)], start=1):
        run(e, [flat(i, b), flat(i, eth, symbol="ETH-USD")])
    paid_long = 50 * (100 + 102 + 98) * rate  # longs pay a positive rate
    paid_short = -100 * (50 + 52 + 49) * rate  # shorts receive it
    assert e.funding == pytest.approx(paid_long + paid_short, rel=1e-12)
    assert e.equity == pytest.approx(10_000 - paid_long - paid_short + 50 * (98 - 100) - 100 * (49 - 50), rel=1e-12)


def test_funding_on_sub_hour_bars_is_paid_only_on_the_bar_that_crosses_the_hour() -> None:
    q = 15 * M
    e = executor(paper={"funding_rate": 0.0001, "slippage_bps": 0.0, "taker_fee": 0.0}, interval_ns=q)
    run(e, [bar(0, 100, 100, 100, 100, 1.0, interval=q)])
    paid = []
    for i, c in enumerate([100, 101, 102, 103, 104], start=1):  # bar 3 (00:45-01:00) crosses 01:00
        before = e.funding
        run(e, [mkt(i, c, c, c, c, interval=q)])
        paid.append(e.funding - before)
    assert paid == pytest.approx([0, 0, 50 * 102 * 0.0001, 0, 0], abs=1e-15)


# == breakers ======================================================================================
def crash_day(risk: dict) -> tuple[Executor, object]:
    """100 units long at 100 (exposure 1.0) and a crash to 90 on bar 2: equity 10_000 - 5 (fee) - 1_000."""
    e = executor({"strategy_exposure": 1.0, "daily_loss_limit": 0.05, **risk}, {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=50.0)])
    run(e, [flat(1)])
    out = run(e, [mkt(2, 100, 100, 90, 90)])
    return e, out


def test_daily_loss_breaker_trips_refuses_entries_allows_reductions_and_clears_next_day() -> None:
    e, out = crash_day({})
    (trip,) = events(out, "breaker")
    assert trip["reason"] == "daily loss breaker tripped" and trip["ts"] == T0 + 3 * H
    assert trip["value"] == pytest.approx(8995.0) and e.equity == pytest.approx(8995.0)
    assert e.breakers == {"daily": True, "drawdown": False, "killed": False}
    assert position(e)["size"] == 100.0  # not flattened without flatten_on_breaker
    out = run(e, [bar(3, 50, 50, 50, 50, 1.0, symbol="ETH-USD", strategy="s2"),  # new entry
                  bar(3, 90, 90, 90, 90, 1.0, leverage=2.0),  # an increase
                  bar(3, 50, 50, 50, 50, 0.0, symbol="ETH-USD", strategy="s3")])  # nothing asked: nothing refused
    assert [(o["strategy"], o["status"], o["reason"]) for o in recs(out.orders)] == [
        ("s2", "rejected", REJ_BREAKER), ("s1", "rejected", REJ_BREAKER)]
    out = run(e, [bar(4, 90, 90, 90, 90, 0.5)])  # a reduction is still allowed
    (order,) = recs(out.orders)
    assert order["status"] == "new" and order["reason"] == "reduce" and order["side"] == "sell"
    assert order["size"] == pytest.approx(100 - 0.5 * e.equity / 90, rel=1e-9)
    run(e, [flat(5, 90)])
    assert position(e)["size"] == pytest.approx(0.5 * 8995.0 / 90, rel=1e-9)

    out = run(e, [mkt(23, 50, 50, 50, 50, symbol="ETH-USD")])  # 23:00-00:00 is still the same UTC day
    assert events(out, "breaker") == [] and e.breakers["daily"]
    out = run(e, [mkt(24, 50, 50, 50, 50, symbol="ETH-USD")])  # the first bar of the next day
    (reset,) = events(out, "breaker")
    assert reset["reason"] == "new UTC day" and reset["ts"] == T0 + 24 * H
    assert e.breakers["daily"] is False
    out = run(e, [bar(25, 50, 50, 50, 50, 0.2, symbol="ETH-USD", strategy="s2")])
    assert recs(out.orders)[0]["status"] == "new"
    assert e.counts["daily loss breaker tripped"] == 1 and e.counts["new UTC day"] == 1


def test_daily_loss_breaker_with_flatten_closes_positions_and_cancels_pending() -> None:
    e = executor({"daily_loss_limit": 0.05, "flatten_on_breaker": True, "strategies": {"s2": {"exposure": 0.4}}},
                 {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=50.0)])  # 50 units
    out = run(e, [flat(1), bar(1, 50, 50, 50, 50, 1.0, symbol="ETH-USD", strategy="s2")])
    (pending,) = recs(out.orders)
    out = run(e, [mkt(2, 100, 100, 80, 80)])  # -1_000: equity 8_997.5 < 9_500
    assert [ev["reason"] for ev in events(out, "breaker")] == ["daily loss breaker tripped"]
    (fill,) = recs(out.fills)
    assert fill["reason"] == "breaker_flatten" and fill["price"] == 80.0 and fill["ts"] == T0 + 3 * H
    assert fill["side"] == "sell" and fill["size"] == 50.0 and fill["fee"] == pytest.approx(FEE * 50 * 80)
    (cancel,) = recs(out.orders)
    assert cancel["status"] == "cancelled" and cancel["strategy"] == "s2" and cancel["symbol"] == "ETH-USD"
    assert e.positions() == []
    assert e.equity == pytest.approx(10_000 - FEE * 5000 - 1000 - FEE * 4000, rel=1e-12)
    out = run(e, [mkt(2, 50, 50, 50, 50, symbol="ETH-USD")])
    assert out.fills.num_rows == 0 and e.positions() == []


def test_daily_loss_breaker_sees_a_crash_in_the_last_bar_of_the_day() -> None:
    e = executor({"strategy_exposure": 1.0, "daily_loss_limit": 0.05, "flatten_on_breaker": True},
                 {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=50.0)])
    run(e, [flat(i) for i in range(1, 23)])
    out = run(e, [mkt(23, 100, 100, 85, 85)])  # 23:00-00:00: -15% of equity
    assert [ev["reason"] for ev in events(out, "breaker")] == ["daily loss breaker tripped"]
    assert [f["reason"] for f in recs(out.fills)] == ["breaker_flatten"] and e.positions() == []
    out = run(e, [flat(24, 85)])
    assert [ev["reason"] for ev in events(out, "breaker")] == ["new UTC day"]


def test_daily_loss_breaker_trips_on_daily_bars() -> None:
    day = 24 * H
    e = executor({"strategy_exposure": 1.0, "daily_loss_limit": 0.05}, {"slippage_bps": 0.0}, interval_ns=day)
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=10.0, interval=day)])
    run(e, [mkt(1, 100, 100, 60, 60, interval=day)])  # -40% in one day
    assert e.breakers["daily"]


def test_drawdown_breaker_is_sticky_until_reset() -> None:
    e, out = crash_day({"max_drawdown": 0.1, "daily_loss_limit": 0.5})
    assert [ev["reason"] for ev in events(out, "breaker")] == ["drawdown breaker tripped"]
    assert e.breakers == {"daily": False, "drawdown": True, "killed": False}
    run(e, [flat(i, 90) for i in range(3, 60)])  # two UTC days later, recovered nothing
    out = run(e, [bar(60, 50, 50, 50, 50, 0.5, symbol="ETH-USD", strategy="s2"), bar(60, 90, 90, 90, 90, 0.0)])
    assert e.breakers["drawdown"]
    assert [(o["strategy"], o["reason"]) for o in recs(out.orders)] == [("s2", REJ_BREAKER), ("s1", "exit")]
    run(e, [flat(61, 90)])
    assert e.positions() == [] and e.breakers["drawdown"]
    e.reset_breakers()
    assert e.breakers == {"daily": False, "drawdown": False, "killed": False}
    out = run(e, [bar(61, 50, 50, 50, 50, 0.5, symbol="ETH-USD", strategy="s2")])
    (order,) = recs(out.orders)
    assert order["status"] == "new" and order["size"] == pytest.approx(0.5 * e.equity / 50, rel=1e-12)


def test_a_refusal_repeated_every_bar_is_emitted_once_and_counted_after() -> None:
    e, _ = crash_day({})  # the daily breaker is tripped
    outs = [run(e, [bar(i, 50, 50, 50, 50, 1.0, symbol="ETH-USD", strategy="s2")]) for i in range(3, 8)]
    assert [o["reason"] for out in outs for o in recs(out.orders)] == [REJ_BREAKER]
    assert e.counts[REJ_BREAKER] == 1 and e.counts["repeated rejections (counted, not logged)"] == 4
    run(e, [bar(8, 50, 50, 50, 50, 0.0, symbol="ETH-USD", strategy="s2"),  # accepted: re-arms the refusal
            bar(9, 50, 50, 50, 50, 1.0, symbol="ETH-USD", strategy="s2")])
    run(e, [bar(10, 50, 50, 50, 50, 1.0, symbol="ETH-USD", strategy="s2")])
    assert e.counts[REJ_BREAKER] == 2 and e.counts["repeated rejections (counted, not logged)"] == 5


# == kill switch ===================================================================================
def test_kill_flattens_everything_cancels_pending_and_then_only_reduces() -> None:
    e = executor()
    run(e, [bar(0, 100, 100, 100, 100, 1.0)])
    out = run(e, [mkt(1, 100, 105, 99, 104), bar(1, 50, 50, 50, 50, -0.5, symbol="ETH-USD", strategy="s2")])
    (pending,) = recs(out.orders)
    e.engage_kill()
    out = e.flatten(T0 + 2 * H + 5)
    assert e.breakers["killed"]
    (fill,) = recs(out.fills)
    assert fill["reason"] == "kill_switch" and fill["side"] == "sell" and fill["size"] == 50.0
    assert fill["price"] == pytest.approx(104 * (1 - SLIP)) and fill["ts"] == T0 + 2 * H + 5
    assert fill["fee"] == pytest.approx(FEE * 50 * 104 * (1 - SLIP))
    (cancel,) = recs(out.orders)
    assert cancel["status"] == "cancelled" and cancel["strategy"] == "s2" and cancel["reason"] == "kill_switch"
    assert e.positions() == []
    entry = 100.1
    assert e.equity == pytest.approx(10_000 - FEE * 50 * entry + 50 * (103.896 - entry) - FEE * 50 * 103.896)
    out = run(e, [mkt(2, 50, 50, 50, 50, symbol="ETH-USD"), bar(2, 104, 104, 104, 104, 1.0),
                  bar(3, 104, 104, 104, 104, -1.0, strategy="s3")])
    assert out.fills.num_rows == 0  # the cancelled ETH order never fills
    assert [(o["status"], o["reason"]) for o in recs(out.orders)] == [("rejected", REJ_BREAKER)] * 2
    run(e, [flat(4, 104), flat(3, 50, symbol="ETH-USD")])
    assert e.positions() == []


def test_killed_executor_allows_reductions_and_turns_a_flip_into_an_exit() -> None:
    e = executor()
    run(e, [bar(0, 100, 100, 100, 100, 1.0), bar(0, 100, 100, 100, 100, 1.0, strategy="s2")])
    run(e, [flat(1)])
    e.engage_kill()
    out = run(e, [bar(2, 100, 100, 100, 100, 0.5), bar(2, 100, 100, 100, 100, -1.0, strategy="s2")])
    assert [(o["strategy"], o["side"], o["reason"]) for o in recs(out.orders)] == [
        ("s1", "sell", "reduce"), ("s2", "sell", "exit")]
    assert recs(out.orders)[1]["size"] == 50.0
    run(e, [flat(3)])
    assert [p["strategy"] for p in e.positions()] == ["s1"] and position(e)["size"] > 0


def test_engage_kill_alone_stops_a_pending_entry_from_filling() -> None:
    e = executor()
    (order,) = recs(run(e, [bar(0, 100, 100, 100, 100, 1.0)]).orders)
    e.engage_kill()
    out = run(e, [flat(1)])
    (cancel,) = recs(out.orders)
    assert cancel["status"] == "cancelled" and cancel["reason"] == "kill_switch" and cancel["cloid"] == order["cloid"]
    assert out.fills.num_rows == 0 and e.positions() == []


def test_a_pending_flip_under_a_breaker_still_closes_the_position() -> None:
    e = executor({"daily_loss_limit": 0.05, "strategies": {"s1": {"exposure": 0.3}, "s2": {"exposure": 0.6}}},
                 {"slippage_bps": 0.0})
    run(e, [bar(0, 100, 100, 100, 100, 1.0, sl=50.0), bar(0, 50, 50, 50, 50, 1.0, symbol="ETH-USD", strategy="s2",
                                                         sl=10.0)])
    run(e, [flat(1), flat(1, 50, symbol="ETH-USD")])
    out = run(e, [bar(2, 100, 100, 100, 100, -1.0), mkt(2, 50, 50, 35, 35, symbol="ETH-USD")])  # flip, then a crash
    assert recs(out.orders)[0]["reason"] == "flip" and e.breakers["daily"]
    run(e, [flat(3)])
    assert position(e, "s1") is None  # actual: still long 30


def test_kill_cancel_carries_the_cloid_of_the_order() -> None:
    e = executor()
    out = run(e, [bar(0, 100, 100, 100, 100, 1.0)])
    (order,) = recs(out.orders)
    e.engage_kill()
    (cancel,) = recs(e.flatten(T0 + H + 1).orders)
    assert cancel["cloid"] == order["cloid"]


# == order rate limit ==============================================================================
def test_orders_beyond_the_rate_limit_within_60s_are_rejected() -> None:
    e = executor({"max_orders_per_minute": 2}, interval_ns=M)
    rows = [bar(0, 100, 100, 100, 100, 0.3, strategy=s, interval=M) for s in ("a", "b", "c")]
    out = run(e, rows)
    assert [(o["strategy"], o["status"], o["reason"]) for o in recs(out.orders)] == [
        ("a", "new", "entry"), ("b", "new", "entry"), ("c", "rejected", REJ_RATE)]
    assert e.counts[REJ_RATE] == 1 and "rate limit" in REJ_RATE
    out = run(e, [bar(1, 100, 100, 100, 100, 0.3, strategy="c", interval=M)])  # 60 s after the oldest
    assert recs(out.orders)[0]["status"] == "new"
    run(e, [flat(2, interval=M)])
    assert sorted(p["strategy"] for p in e.positions()) == ["a", "b", "c"]


def test_exits_are_never_held_back_by_the_rate_limit() -> None:
    e = executor({"max_orders_per_minute": 1}, interval_ns=M)
    run(e, [bar(0, 100, 100, 100, 100, 0.3, strategy="a", interval=M)])
    run(e, [bar(1, 100, 100, 100, 100, 0.3, strategy="b", interval=M)])
    run(e, [flat(2, interval=M)])
    out = run(e, [bar(3, 100, 100, 100, 100, 0.0, strategy=s, interval=M) for s in ("a", "b")]
              + [bar(3, 100, 100, 100, 100, 0.3, strategy="c", interval=M)])
    assert [(o["strategy"], o["status"], o["reason"]) for o in recs(out.orders)] == [
        ("a", "new", "exit"), ("b", "new", "exit"), ("c", "rejected", REJ_RATE)]
    run(e, [flat(4, interval=M)])
    assert e.positions() == []


# == minimum order =================================================================================
def test_new_position_below_the_minimum_is_rejected_but_a_small_residual_can_be_closed() -> None:
    e = executor({"min_order_notional": 10.0}, {"slippage_bps": 0.0, "taker_fee": 0.0})
    out = run(e, [bar(0, 100, 100, 100, 100, 0.001)])  # 0.05 units = $5
    (order,) = recs(out.orders)
    assert order["status"] == "rejected" and order["reason"] == REJ_MIN and order["size"] == pytest.approx(0.05)
    out = run(e, [bar(1, 100, 100, 100, 100, 0.2, strategy="s2")])  # 10 units
    assert position(e) is None and recs(out.orders)[0]["size"] == pytest.approx(10.0)
    run(e, [bar(2, 100, 100, 100, 100, 0.001, strategy="s2")])  # reduce to 0.05 units: a $9.95 order
    run(e, [flat(3)])
    assert position(e, "s2")["size"] == pytest.approx(0.05)
    out = run(e, [bar(4, 100, 100, 100, 100, 0.0, strategy="s2")])  # $5 residual: closing is allowed
    (order,) = recs(out.orders)
    assert order["status"] == "new" and order["reason"] == "exit" and order["size"] == pytest.approx(0.05)
    run(e, [flat(5)])
    assert e.positions() == [] and e.counts[REJ_MIN] == 1


# == validation ====================================================================================
NOW = T0 + 12 * H  # the close of bar 11


def good(i: int = 11, **kw) -> dict:
    return bar(i, 50, 51, 49, 50, 0.5, symbol="ETH-USD", strategy="good", **kw)


def bad(**kw) -> dict:
    base = dict(o=100.0, h=101.0, lo=99.0, c=100.0)
    base.update({k: kw.pop(k) for k in list(kw) if k in base})
    return bar(11, base["o"], base["h"], base["lo"], base["c"], kw.pop("target", 1.0), strategy="bad", **kw)


VALIDATION = {  # rows before the valid one, the reason, the executor's clock (None: each signal's own time)
    "nan target": ([bad(target=NAN)], REJ_TARGET, NOW),
    "target 7": ([bad(target=7.0)], REJ_TARGET, NOW),
    "target -1.5": ([bad(target=-1.5)], REJ_TARGET, NOW),
    "leverage 0": ([bad(leverage=0.0)], REJ_LEVERAGE, NOW),
    "leverage -2": ([bad(leverage=-2.0)], REJ_LEVERAGE, NOW),
    "leverage inf": ([bad(leverage=INF)], REJ_LEVERAGE, NOW),
    "nan close": ([bad(c=NAN)], REJ_PRICE, NOW),
    "zero open": ([bad(o=0.0)], REJ_PRICE, NOW),
    "negative low": ([bad(lo=-1.0)], REJ_PRICE, NOW),
    "high below low": ([bad(h=98.0)], REJ_PRICE, NOW),
    "open above high": ([bad(o=150.0)], REJ_PRICE, NOW),
    "close below low": ([bad(c=50.0)], REJ_PRICE, NOW),
    "infinite high": ([bad(h=INF)], REJ_PRICE, NOW),
    "unknown symbol": ([bad(symbol="DOGE-USD")], REJ_SYMBOL, NOW),
    "stale": ([bad(ts=NOW - 3 * M)], REJ_STALE, NOW),
    "fresh stamp, old bar": ([bar(5, 100, 101, 99, 100, 1.0, strategy="bad", ts=NOW)], REJ_STALE, NOW),
    "future": ([bad(ts=NOW + 6_000_000_000)], REJ_FUTURE, NOW),
    "bar in the future": ([bar(20, 100, 101, 99, 100, 1.0, strategy="bad", ts=NOW)], REJ_FUTURE, NOW),
    "old bar": ([mkt(11, 100, 101, 99, 100), bar(10, 100, 101, 99, 100, 1.0, strategy="bad")], REJ_OLD, None),
    "repeated bar": ([bad(target=0.0), bad(target=1.0)], REJ_DUP, NOW),
}


@pytest.mark.parametrize("case", list(VALIDATION))
def test_invalid_signal_is_rejected_with_its_reason_and_valid_rows_after_it_still_trade(case) -> None:  # noqa: ANN001
    rows, reason, now = VALIDATION[case]
    e = executor()
    out = run(e, rows + [good(), bar(11, 100, 101, 99, 100, 0.5, strategy="btc")], now)
    orders = recs(out.orders)
    rejected = [o for o in orders if o["status"] == "rejected"]
    assert [(o["strategy"], o["reason"]) for o in rejected] == [("bad", reason)]
    assert e.counts[reason] == 1
    if case == "unknown symbol":
        assert rejected[0]["symbol"] == "DOGE-USD"  # the refusal names what was refused
    # the valid rows after it, on the other symbol and on the same one, still trade
    assert [(o["strategy"], o["status"], o["size"]) for o in orders if o["status"] != "rejected"] == [
        ("good", "new", pytest.approx(0.5 * 0.5 * 10_000 / 50)),
        ("btc", "new", pytest.approx(0.5 * 0.5 * 10_000 / 100))]
    later = None if now is None else now + H
    out = run(e, [mkt(12, 50, 50, 50, 50, symbol="ETH-USD"), mkt(12, 100, 100, 100, 100)], later)
    assert sorted((p["strategy"], p["symbol"]) for p in e.positions()) == [("btc", "BTC-USD"), ("good", "ETH-USD")]
    assert sorted(f["price"] for f in recs(out.fills)) == [pytest.approx(50 * (1 + SLIP)),
                                                          pytest.approx(100 * (1 + SLIP))]  # the real bars' opens


def test_a_rejected_row_never_moves_the_market() -> None:
    e = executor()
    run(e, [bar(10, 100, 101, 99, 100, 1.0)], now_ns=NOW - H)  # pending, to fill at bar 11's open
    out = run(e, [bar(20, 70, 71, 69, 70, 1.0, strategy="bad"),  # from the future: its bar must not fill anything
                  bar(11, 150, 101, 99, 100, 1.0, strategy="bad2"),  # open outside the range: neither
                  bar(11, 100, 101, 99, 100, 0.5, strategy="s2")], now_ns=NOW)
    assert [o["reason"] for o in recs(out.orders)] == [REJ_FUTURE, REJ_PRICE, "entry"]
    (fill,) = recs(out.fills)
    assert fill["strategy"] == "s1" and fill["price"] == pytest.approx(100 * (1 + SLIP)) and fill["ts"] == T0 + 11 * H


def test_a_stale_decision_is_refused_but_its_bar_still_triggers_the_stop() -> None:
    e = executor()
    run(e, [bar(10, 100, 100, 100, 100, 1.0, sl=95.0)], now_ns=T0 + 11 * H)
    run(e, [flat(11)], now_ns=T0 + 12 * H)
    assert position(e)["size"] == 50.0
    out = run(e, [mkt(12, 99, 99, 90, 92)], now_ns=T0 + 13 * H + 3 * M)  # the crash bar arrives 3 minutes late
    assert recs(out.orders) == [] or recs(out.orders)[0]["reason"] == REJ_STALE
    (fill,) = recs(out.fills)
    assert fill["reason"] == "stop_loss" and fill["price"] == pytest.approx(95 * (1 - SLIP))


# == random streams: parity and invariants =========================================================
SYMBOLS = ("BTC-USD", "ETH-USD")
STRATEGIES = ("a", "b")


def random_stream(seed: int, n_bars: int, bad_fraction: float = 0.02) -> tuple[pa.Table, dict]:
    """Random-walk bars for two symbols (with gaps and crashes) and random decisions of two strategies on every bar."""
    rng = np.random.default_rng(seed)
    n = n_bars * len(SYMBOLS) * len(STRATEGIES)
    cols: dict[str, list] = {k: [] for k in ("ts", "bar_ts", "symbol", "strategy", "target", "leverage", "stop_loss",
                                             "take_profit", "price", "bar_open", "bar_high", "bar_low")}
    bars: dict[str, dict[int, tuple[float, float, float, float]]] = {s: {} for s in SYMBOLS}
    last = {"BTC-USD": 100.0, "ETH-USD": 50.0}
    previous = {}
    for i in range(n_bars):
        bt = T0 + i * H
        for s in SYMBOLS:
            gap = rng.normal(0, 0.002) + (rng.choice([-1, 1]) * rng.uniform(0.03, 0.1) if rng.random() < 0.01 else 0)
            o = last[s] * math.exp(gap)
            r = rng.normal(0, 0.012) + (rng.choice([-1, 1]) * rng.uniform(0.04, 0.12) if rng.random() < 0.01 else 0)
            c = o * math.exp(r)
            h = max(o, c) * (1 + abs(rng.normal(0, 0.006)))
            lo = min(o, c) * (1 - abs(rng.normal(0, 0.006)))
            last[s] = c
            bars[s][bt] = (o, h, lo, c)
            for k in STRATEGIES:
                u = rng.random()
                if u < 0.6 and (k, s) in previous:
                    target = previous[(k, s)]
                elif u < 0.7:
                    target = 0.0
                elif u < 0.8:
                    target = float(rng.choice([-1.0, 1.0]))
                else:
                    target = float(rng.uniform(-1, 1))
                if i == 0:
                    target = 0.0  # warm-up bar: test_strategy_exposure_split_is_the_same_in_one_batch_and_row_by_row
                previous[(k, s)] = target
                v = rng.random()
                leverage = NAN if v < 0.1 else float(rng.uniform(0.5, 5)) if v < 0.8 else float(rng.uniform(5, 30))
                sign = 1.0 if target >= 0 else -1.0
                v = rng.random()
                stop = NAN if v < 0.5 else c * (1 - sign * rng.uniform(0.005, 0.15)) if v < 0.9 else c * (
                    1 + sign * rng.uniform(0.001, 0.05))
                v = rng.random()
                tp = NAN if v < 0.6 else c * (1 + sign * rng.uniform(0.01, 0.3)) if v < 0.9 else c * (
                    1 - sign * rng.uniform(0.001, 0.05))
                if rng.random() < bad_fraction:
                    target, leverage = [(NAN, leverage), (3.0, leverage), (target, -1.0)][int(rng.integers(3))]
                for key, value in (("ts", bt + H), ("bar_ts", bt), ("symbol", s), ("strategy", k), ("target", target),
                                   ("leverage", leverage), ("stop_loss", stop), ("take_profit", tp), ("price", c),
                                   ("bar_open", o), ("bar_high", h), ("bar_low", lo)):
                    cols[key].append(value)
    schema = SIGNALS.schema_with()
    arrays = []
    for f in schema:
        if f.name in ("ts", "bar_ts"):
            arrays.append(pa.array(np.array(cols[f.name], np.int64)).cast(f.type))
        elif f.name == "model_id":
            arrays.append(pa.nulls(n, pa.string()))
        elif f.name == "venue":
            arrays.append(pa.array(["paper"] * n, pa.string()))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=schema), bars


FUZZ_RISK = {"max_leverage": 25.0, "asset_leverage": {"ETH-USD": 15.0}, "account_exposure": 0.9,
             "strategies": {"a": {"exposure": 0.6, "max_leverage": 20.0}, "b": {"exposure": 0.5}},
             "daily_loss_limit": 0.08, "max_drawdown": 0.5, "flatten_on_breaker": True, "min_order_notional": 10.0,
             "rebalance_band": 0.05, "max_orders_per_minute": 3, "default_take_profit": 0.0}
FUZZ_PAPER = {"funding_rate": 0.0000125, "slippage_bps": 2.0, "taker_fee": 0.00045}


def concat(outs: list, name: str) -> pa.Table:
    return pa.concat_tables([getattr(o, name) for o in outs]).combine_chunks()


def assert_same_run(a: Executor, outs_a: list, b: Executor, outs_b: list) -> None:
    for name in ("orders", "fills", "equity"):
        assert_same_table(concat(outs_a, name), concat(outs_b, name))
    # json: events carry NaN targets, and NaN != NaN
    assert json.dumps([ev for o in outs_a for ev in o.events]) == json.dumps([ev for o in outs_b for ev in o.events])
    np.testing.assert_array_equal(np.concatenate([o.notional for o in outs_a]),
                                  np.concatenate([o.notional for o in outs_b]))
    for key in a.state:
        np.testing.assert_array_equal(a.state[key], b.state[key], err_msg=key)
    assert a.counts == b.counts and a.strategies == b.strategies


def test_one_batch_and_one_row_batches_give_identical_results() -> None:
    table, _ = random_stream(7, 150)
    risk, paper = configs(FUZZ_RISK, FUZZ_PAPER)
    whole = Executor(risk, paper, H)
    outs_whole = [whole.process(table)]
    rows = Executor(risk, paper, H)
    outs_rows = [rows.process(table.slice(i, 1)) for i in range(table.num_rows)]
    assert concat(outs_whole, "fills").num_rows > 50  # the stream really trades
    assert_same_run(whole, outs_whole, rows, outs_rows)


def test_state_saved_and_restored_mid_stream_continues_identically() -> None:
    table, _ = random_stream(11, 150)
    risk, paper = configs(FUZZ_RISK, FUZZ_PAPER)
    for split in range(301, table.num_rows, 10):  # a cut with positions open and orders pending
        first = Executor(risk, paper, H)
        outs = [first.process(table.slice(0, split))]
        if first.positions() and any(first.state["slot_f"][:, K.PEND] != 0):
            break
    else:
        pytest.fail("the stream never had an open position and a pending order at once")
    saved = json.loads(json.dumps(first.state_dict()))  # as the state directory stores it
    second = Executor(risk, paper, H)
    second.load_state_dict(saved)
    outs.append(second.process(table.slice(split)))
    straight = Executor(risk, paper, H)
    outs_straight = [straight.process(table.slice(0, split)), straight.process(table.slice(split))]
    assert_same_run(straight, outs_straight, second, outs)


def test_batches_larger_than_the_kernel_chunk_match_smaller_batches() -> None:
    from varon_cli.execution.engine import CHUNK_ROWS

    table, _ = random_stream(3, CHUNK_ROWS // 4 + 500, bad_fraction=0.0)
    assert table.num_rows > CHUNK_ROWS
    risk, paper = configs(FUZZ_RISK, FUZZ_PAPER)
    whole = Executor(risk, paper, H)
    outs_whole = [whole.process(table)]
    parts = Executor(risk, paper, H)
    outs_parts = [parts.process(table.slice(i, 9_973)) for i in range(0, table.num_rows, 9_973)]
    assert_same_run(whole, outs_whole, parts, outs_parts)


def test_fuzz_invariants_hold_after_every_row() -> None:
    table, bars = random_stream(20240101, 2000)
    risk, paper = configs(FUZZ_RISK, FUZZ_PAPER)
    e = Executor(risk, paper, H)
    for k in STRATEGIES:
        e.strategy_index(k)
    slip, taker, rate = paper.slippage_bps / 10_000, paper.taker_fee, paper.funding_rate
    n_sym = len(e.symbols)
    sym_cap = e.state["sym_f"][:, K.MAX_LEV].copy()
    strat_cap = e.state["strat_f"][:, K.STRAT_MAX_LEV].copy()
    assert list(sym_cap) == [25.0, 15.0] and list(strat_cap) == [20.0, 25.0]  # risk 25, asset ETH 15, strategy a 20

    # an independent ledger: positions and cash from the fills, funding from the closes
    pos = {(k, s): 0.0 for k in STRATEGIES for s in SYMBOLS}
    cash = paper.initial_equity
    last_close: dict[str, float] = {}
    last_bar: dict[str, int] = {}
    order_at: dict[str, int] = {}
    seen = {"stop_loss": 0, "take_profit": 0, "liquidation": 0, "breaker_flatten": 0, "entry": 0}
    cut_rows = 0
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in ("symbol", "price", "target")}
    bar_ts = table.column("bar_ts").cast(pa.int64()).to_numpy()

    for i in range(table.num_rows):
        if e.breakers["drawdown"] and i % 100 == 0:
            e.reset_breakers()  # keep the account trading
        sym, bt = cols["symbol"][i], int(bar_ts[i])
        out = e.process(table.slice(i, 1))
        new_bar = bt > last_bar.get(sym, -1)
        if new_bar:
            last_close[sym] = bars[sym][bt][3]
        for f in recs(out.fills):
            o, h, lo, c = bars[f["symbol"]][f["ts"]] if f["ts"] in bars[f["symbol"]] else (NAN,) * 4
            side = 1.0 if f["side"] == "buy" else -1.0
            assert f["size"] > 0 and f["fee"] >= 0 and f["fee"] == pytest.approx(taker * f["size"] * f["price"])
            if f["reason"] in ("entry", "reduce", "exit", "flip"):
                assert f["cloid"] in order_at and f["ts"] >= order_at[f["cloid"]]  # never before the decision
                assert f["price"] == pytest.approx(o * (1 + side * slip), rel=1e-12)  # the first price after it
            elif f["reason"] == "breaker_flatten":
                assert f["price"] == pytest.approx(last_close[f["symbol"]] * (1 + side * slip), rel=1e-12)
            elif f["reason"] == "liquidation" and not lo <= f["price"] <= h:
                # a bar gapping through the liquidation price: isolated margin, filled at the liquidation price
                assert (o <= f["price"]) if side < 0 else (o >= f["price"]), f
            else:
                assert lo * (1 - slip) * (1 - 1e-12) <= f["price"] <= h * (1 + slip) * (1 + 1e-12), f
            seen[f["reason"]] = seen.get(f["reason"], 0) + 1
            key = (f["strategy"], f["symbol"])
            if f["reason"] == "breaker_flatten":
                continue  # applied after the funding below
            pos[key] += side * f["size"]
            cash -= side * f["size"] * f["price"] + f["fee"]
        if new_bar:
            last_bar[sym] = bt
            cash -= sum(pos[(k, sym)] for k in STRATEGIES) * last_close[sym] * rate  # one hour mark per 1h bar
        for f in recs(out.fills):
            if f["reason"] == "breaker_flatten":
                side = 1.0 if f["side"] == "buy" else -1.0
                pos[(f["strategy"], f["symbol"])] += side * f["size"]
                cash -= side * f["size"] * f["price"] + f["fee"]
        for o in recs(out.orders):
            if o["status"] == "new":
                order_at[o["cloid"]] = o["ts"]

        # equity: finite, and equal to the ledger's
        assert math.isfinite(e.equity)
        mine = cash + sum(p * last_close[s] for (k, s), p in pos.items() if p)
        assert e.equity == pytest.approx(mine, rel=1e-9, abs=1e-6), i
        st = e.state
        for (k, s), p in pos.items():
            j = e.strategies.index(k) * n_sym + e.symbols.index(s)
            assert st["slot_f"][j, K.POS] == pytest.approx(p, rel=1e-9, abs=1e-9), (i, k, s)

        # every open position: a finite stop on the right side of the last price, leverage within its caps
        for p in e.positions():
            close = last_close[p["symbol"]]
            assert math.isfinite(p["stop_loss"]), p
            assert (p["stop_loss"] < close) if p["size"] > 0 else (p["stop_loss"] > close), (i, p, close)
            cap = min(strat_cap[e.strategies.index(p["strategy"])], sym_cap[e.symbols.index(p["symbol"])])
            assert 0 < p["leverage"] <= cap <= MAX_LEVERAGE

        # account exposure at decision time: after an order that grows a position, the margin held or ordered by
        # every slot (position + pending order, at the last close, over its leverage) is within the account's
        equity = max(e.equity, 0.0)
        if any(ev["reason"] == "size cut to the exposure limit" and ev["size"] > 0 for ev in out.events):
            cut_rows += 1
        if any(o["status"] == "new" and o["reason"] in ("entry", "flip") for o in recs(out.orders)):
            slot_f, sym_f = st["slot_f"], st["sym_f"]
            committed = 0.0
            for jj in range(slot_f.shape[0]):
                size = abs(slot_f[jj, K.POS] + slot_f[jj, K.PEND])
                lev = slot_f[jj, K.PEND_LEV] if slot_f[jj, K.PEND] != 0 else slot_f[jj, K.LEV]
                committed += size * sym_f[jj % n_sym, K.LAST_CLOSE] / max(lev, 1.0) if size else 0.0
            assert committed <= risk.account_exposure * equity * (1 + 1e-9) + 1e-6, (i, committed, equity)

    # the walk must have exercised what it checks
    assert seen["entry"] > 300 and seen["stop_loss"] > 20 and seen["take_profit"] > 5
    assert seen["liquidation"] > 0 and cut_rows > 20
    for reason in (REJ_TARGET, REJ_LEVERAGE, REJ_STOP, REJ_RATE, "daily loss breaker tripped"):
        assert e.counts[reason] > 0, reason
    print(f"fills by reason {seen}; rows with an exposure cut: {cut_rows}")

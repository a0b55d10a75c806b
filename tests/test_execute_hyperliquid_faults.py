"""`varon execute --venue hyperliquid` against bad input and venue faults, through the real SDK.

What must hold whatever the venue or the signals do: the executor's saved
position equals the venue's, no position is ever doubled or left without its
stop (every open position has exactly one reduce-only stop trigger), and every
refusal, rejection, retry or adoption is logged with its reason: a stop the
venue refuses closes the position and raises an alarm; a partial fill is held
as filled; a rejected exit or entry changes nothing; a 5xx or a 429 is retried
without a duplicate; funding reaches the executor's account; a take profit or
a trailing stop keeps one stop in place; one strategy owns a coin; a stranger's
fill is adopted and protected; a NaN target never reaches the venue.

The last tests cover faults that once exposed bugs: a filled take profit
cancelled again, a stranger's fill loosening the strategy's stop, a stop
forgotten when its cancel stays unanswered, funding missed while the executor
was down.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from hl_support import (
    hyperliquid_fake,
    USER, LiveExecutor, audit, executor_position, fills, iocs, open_by_hand, orders, run_execute, saved_state,
    triggers, wait_until, write_signals,
)
from varon_cli.execution import kernel as K

pytestmark = pytest.mark.slow


fake = hyperliquid_fake  # the fixture, under the name these tests use


def _protected_once(fake) -> None:  # noqa: ANN001
    """Every open venue position has exactly one reduce-only stop covering all of it; flat means no trigger."""
    stops = [o for o in triggers(fake) if o["orderType"] == "Stop Market"]
    for coin, size in fake.positions().items():
        mine = [o for o in stops if o["coin"] == coin]
        assert len(mine) == 1, f"{coin} {size}: {len(mine)} stop triggers"
        assert mine[0]["reduceOnly"] is True and float(mine[0]["sz"]) == pytest.approx(abs(size))
        assert mine[0]["side"] == ("A" if size > 0 else "B")
    held = set(fake.positions())
    assert all(o["coin"] in held for o in triggers(fake)), "a trigger left behind on a flat coin"


def _in_step(fake, state: Path, name: str = "default") -> None:  # noqa: ANN001
    assert executor_position(state, name=name) == pytest.approx(fake.position("BTC"), abs=1e-12)


def _order_requests(fake, predicate) -> list[int]:  # noqa: ANN001
    """Indexes into fake.requests of order actions with an order matching `predicate`."""
    return [i for i, r in enumerate(fake.requests) if r.body["action"]["type"] == "order"
            and any(predicate(o) for o in r.body["action"]["orders"])]


# -- 1. the stop is refused right after the entry filled ------------------------------------------------------
def test_a_stop_the_venue_refuses_closes_the_position_at_once_and_alarms(fake, tmp_path: Path) -> None:
    fake.fail_next("reject", error="Invalid TP/SL price.", action_type="order", after=1)  # the entry goes through
    state = tmp_path / "state"
    done = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "s.arrows", [
        {"bar": 1, "target": 1.0, "sl": 59000.0}]))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    taken = iocs(fake)
    assert len(taken) == 2  # the entry, then the close
    entry, close = taken
    assert entry["b"] is True and entry["r"] is False
    assert close["b"] is False and close["r"] is True and close["s"] == entry["s"]
    critical = [line for line in err.splitlines() if " CRITICAL " in line]
    assert any("stop loss could not be placed" in line and "Invalid TP/SL price." in line for line in critical), err
    assert any("alarm" in r and "stop loss could not be placed" in r["alarm"] for r in audit(state))
    assert fake.position("BTC") == 0.0 and fake.open_orders(USER) == []
    _in_step(fake, state)
    reasons = sorted(r["reason"] for r in fills(tmp_path))
    assert reasons == ["entry", "stop_not_placed"]


# -- 2. a partly filled entry --------------------------------------------------------------------------------
def test_a_partly_filled_entry_holds_what_filled_and_its_stop_covers_exactly_that(fake, tmp_path: Path) -> None:
    fake.partial_fill_next(0.5)
    state = tmp_path / "state"
    done = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}]))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    asked = float(fake.actions("order")[0]["orders"][0]["s"])
    held = fake.position("BTC")
    assert 0 < held < asked and held == pytest.approx(asked / 2, abs=1e-5)
    assert f"filled {held:g} of {asked:g}" in err
    stops = triggers(fake)
    assert len(stops) == 1 and float(stops[0]["sz"]) == held
    _in_step(fake, state)
    _protected_once(fake)
    assert len(iocs(fake)) == 1


# -- 3. "Reduce only order would increase position." on an exit ---------------------------------------------
def test_a_reduce_only_rejection_on_an_exit_keeps_the_position_and_its_stop(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    try:
        live.send([{"bar": 1, "target": 1.0}])
        wait_until(lambda: len(triggers(fake)) == 1)
        held, stop = fake.position("BTC"), triggers(fake)
        fake.fail_next("reject", error="Reduce only order would increase position.", action_type="order")
        live.send([{"bar": 2, "target": 0.0}])
        wait_until(lambda: any(r.fault == "reject" for r in fake.requests))
        time.sleep(1.5)  # a sync with the venue, too
        # nothing changed: the same position, the same stop, and the executor agrees
        assert fake.position("BTC") == held and triggers(fake) == stop
        _in_step(fake, state, "live")
        _protected_once(fake)
        live.send([{"bar": 3, "target": 0.0}])  # the next exit goes through: the state was left consistent
        wait_until(lambda: fake.position("BTC") == 0.0 and fake.open_orders(USER) == [])
    finally:
        code, err = live.finish()
    assert code == 0, err
    assert "Reduce only order would increase position." in err
    rejected = [o for o in orders(tmp_path) if o["status"] == "rejected"]
    assert len(rejected) == 1 and "Reduce only order would increase position." in rejected[0]["reason"]
    assert rejected[0]["side"] == "sell" and rejected[0]["size"] == held
    assert "taking the venue's" not in err  # no disagreement for a sync to correct
    assert [r["reason"] for r in fills(tmp_path)] == ["entry", "exit"]
    _in_step(fake, state, "live")


# -- 4. a tick-size rejection of an entry --------------------------------------------------------------------
def test_a_tick_size_rejection_of_an_entry_is_logged_and_nothing_is_held(fake, tmp_path: Path) -> None:
    fake.fail_next("reject", error="Price must be divisible by tick size.", action_type="order")
    state = tmp_path / "state"
    done = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}]))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    rejected = [o for o in orders(tmp_path) if o["status"] == "rejected"]
    assert len(rejected) == 1 and "Price must be divisible by tick size." in rejected[0]["reason"]
    assert "Price must be divisible by tick size." in err
    assert fake.position("BTC") == 0.0 and fake.open_orders(USER) == [] and iocs(fake) == []
    assert fills(tmp_path) == []
    _in_step(fake, state)


# -- 5. HTTP 500 on an entry ---------------------------------------------------------------------------------
def test_an_http_500_on_an_entry_asks_by_cloid_and_takes_one_ioc(fake, tmp_path: Path) -> None:
    fake.fail_next("http_500", action_type="order")
    state = tmp_path / "state"
    done = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}]))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "HTTP 500" in err and "asking the venue for it by cloid" in err
    sent = [fake.requests[i] for i in _order_requests(fake, lambda o: "limit" in o["t"])]
    assert [r.status for r in sent] == [500, 200]
    assert sent[0].body["action"] == sent[1].body["action"]  # the same order, the same cloid
    assert len(iocs(fake)) == 1 and fake.position("BTC") > 0
    _in_step(fake, state)
    _protected_once(fake)


# -- 6. funding -----------------------------------------------------------------------------------------------
def test_funding_the_venue_charges_reaches_the_executors_account(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    try:
        live.send([{"bar": 1, "target": 1.0}])
        wait_until(lambda: len(triggers(fake)) == 1)
        wait_until(lambda: fake.ws_connections >= 1)
        time.sleep(0.5)  # the subscriptions are in
        paid = fake.settle_funding("BTC", 0.001)
        wait_until(lambda: any("funding" in r for r in audit(state, "live")))
    finally:
        code, err = live.finish()
    assert code == 0, err
    assert paid > 0
    charged = fake.fundings(USER)
    assert len(charged) == 1 and float(charged[0]["delta"]["usdc"]) == pytest.approx(-paid, abs=1e-6)
    acct = saved_state(state, "live")["executor"]["arrays"]["acct_f"]["data"]
    assert acct[K.FUNDING] == pytest.approx(paid, abs=1e-6)
    _in_step(fake, state, "live")
    _protected_once(fake)


# -- 7. a take profit ------------------------------------------------------------------------------------------
def test_a_take_profit_fires_once_and_its_stop_is_cancelled(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    try:
        live.send([{"bar": 1, "target": 1.0, "sl": 59000.0, "tp": 61000.0}])
        wait_until(lambda: len(triggers(fake)) == 2)
        placed = {o["orderType"]: float(o["triggerPx"]) for o in triggers(fake)}
        assert placed == {"Stop Market": 59000.0, "Take Profit Market": 61000.0}
        assert all(o["reduceOnly"] for o in triggers(fake))
        wait_until(lambda: fake.ws_connections >= 1)
        fake.set_mid("BTC", 61050.0)
        wait_until(lambda: fake.position("BTC") == 0.0)
        wait_until(lambda: fake.open_orders(USER) == [])
        time.sleep(1.2)  # a sync too
    finally:
        code, err = live.finish()
    assert code == 0, err
    assert [r["reason"] for r in fills(tmp_path)].count("take_profit") == 1
    assert fake.open_orders(USER) == [] and fake.position("BTC") == 0.0
    cancelled = [o for o in orders(tmp_path) if o["status"] == "cancelled" and o["reason"] == "stop_loss"]
    assert len(cancelled) == 1
    _in_step(fake, state, "live")


# -- 8. a trailing stop ----------------------------------------------------------------------------------------
def _stop_replacement(fake, tmp_path: Path, state: Path):  # noqa: ANN001, ANN202
    done = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "s.arrows", [
        {"bar": 1, "target": 1.0, "sl": 59000.0}, {"bar": 2, "target": 1.0, "sl": 59500.0}]))
    assert done.returncode == 0, done.stderr.decode()
    return done


def test_a_trailing_stop_places_the_new_trigger_before_cancelling_the_old(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    _stop_replacement(fake, tmp_path, state)
    stops = triggers(fake)
    assert len(stops) == 1 and float(stops[0]["triggerPx"]) == 59500.0
    requests = fake.requests
    old = _order_requests(fake, lambda o: o["t"].get("trigger", {}).get("triggerPx") == "59000")
    new = _order_requests(fake, lambda o: o["t"].get("trigger", {}).get("triggerPx") == "59500")
    assert len(old) == 1 and len(new) == 1
    old_oid = requests[old[0]].answer["response"]["data"]["statuses"][0]["resting"]["oid"]
    cancels = [i for i, r in enumerate(requests) if r.body["action"]["type"] == "cancel"
               and any(c["o"] == old_oid for c in r.body["action"]["cancels"])]
    assert cancels and old[0] < new[0] < cancels[0]  # never zero stops in between
    assert fake.order_status(old_oid)["order"]["status"] == "canceled"
    assert len(iocs(fake)) == 1
    _in_step(fake, state)
    _protected_once(fake)


# -- 9. two strategies, one coin -------------------------------------------------------------------------------
def test_a_second_strategy_on_a_held_coin_is_refused_naming_the_holder(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "s.arrows", [
        {"bar": 1, "target": 1.0}, {"bar": 2, "target": 1.0, "strategy": "s2"}]))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    taken = iocs(fake)
    assert len(taken) == 1 and fake.position("BTC") == float(taken[0]["s"])
    refused = [o for o in orders(tmp_path) if o["status"] == "rejected"]
    assert len(refused) == 1 and refused[0]["strategy"] == "s2"
    assert "s1 holds BTC" in refused[0]["reason"] and "nets one position per coin" in refused[0]["reason"]
    assert "s1 holds BTC" in err
    _in_step(fake, state)
    _protected_once(fake)


# -- 10. a fill for an order varon did not place -----------------------------------------------------------
def test_a_fill_varon_did_not_place_is_adopted_by_the_owner_and_the_stop_resized(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    try:
        live.send([{"bar": 1, "target": 1.0}])
        wait_until(lambda: len(triggers(fake)) == 1)
        wait_until(lambda: fake.ws_connections >= 1)
        held = fake.position("BTC")
        open_by_hand(fake, 0.01)
        total = fake.position("BTC")
        assert total == pytest.approx(held + 0.01)
        wait_until(lambda: [float(o["sz"]) for o in triggers(fake)] == [total])
        time.sleep(1.2)  # a sync too
    finally:
        code, err = live.finish()
    assert code == 0, err
    assert "did not place" in err
    external = [r for r in fills(tmp_path) if r["reason"] == "external"]
    assert len(external) == 1 and external[0]["strategy"] == "s1" and external[0]["size"] == 0.01
    _in_step(fake, state, "live")
    _protected_once(fake)
    assert "taking the venue's" not in err  # adopted from the fill, not corrected by a sync


# -- 11. a 429 on the cancel of the old stop ---------------------------------------------------------------
def test_a_429_on_cancelling_the_replaced_stop_is_retried(fake, tmp_path: Path) -> None:
    fake.fail_next("http_429", action_type="cancel")
    state = tmp_path / "state"
    done = _stop_replacement(fake, tmp_path, state)
    assert "429" in done.stderr.decode()
    cancels = [r for r in fake.requests if r.body["action"]["type"] == "cancel"]
    assert [r.status for r in cancels] == [429, 200] and cancels[0].body["action"] == cancels[1].body["action"]
    stops = triggers(fake)
    assert len(stops) == 1 and float(stops[0]["triggerPx"]) == 59500.0
    _in_step(fake, state)
    _protected_once(fake)


# -- 12. a NaN target -----------------------------------------------------------------------------------------
def test_a_nan_target_is_refused_by_the_risk_engine_and_nothing_is_sent(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "s.arrows", [
        {"bar": 1, "target": math.nan}]))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert fake.requests == [] and fake.position("BTC") == 0.0
    reason = K.REASONS[K.R_BAD_TARGET]
    assert any(r["kind"] == "risk" and r.get("reason") == reason for r in audit(state))
    refused = [o for o in orders(tmp_path) if o["status"] == "rejected"]
    assert [o["reason"] for o in refused] == [reason]
    _in_step(fake, state)


# -- faults that once exposed product bugs ------------------------------------------------------------------
def test_a_take_profit_that_filled_is_neither_cancelled_nor_reported_cancelled(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    try:
        live.send([{"bar": 1, "target": 1.0, "sl": 59000.0, "tp": 61000.0}])
        wait_until(lambda: len(triggers(fake)) == 2)
        tp_oid = next(o["oid"] for o in triggers(fake) if o["orderType"] == "Take Profit Market")
        wait_until(lambda: fake.ws_connections >= 1)
        fake.set_mid("BTC", 61050.0)
        wait_until(lambda: fake.position("BTC") == 0.0 and fake.open_orders(USER) == [])
        time.sleep(1.2)
    finally:
        code, err = live.finish()
    assert code == 0, err
    assert fake.order_status(tp_oid)["order"]["status"] == "filled"
    cancels_of_tp = [r for r in fake.requests if r.body["action"]["type"] == "cancel"
                     and any(c["o"] == tp_oid for c in r.body["action"]["cancels"])]
    reported = [o["status"] for o in orders(tmp_path) if o["venue_order_id"] == str(tp_oid)]
    assert cancels_of_tp == [] and "cancelled" not in reported


def test_a_fill_varon_did_not_place_keeps_the_strategys_stop_and_take_profit(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    try:
        live.send([{"bar": 1, "target": 1.0, "sl": 59000.0, "tp": 62000.0}])
        wait_until(lambda: len(triggers(fake)) == 2)
        wait_until(lambda: fake.ws_connections >= 1)
        open_by_hand(fake, 0.01)
        total = fake.position("BTC")
        wait_until(lambda: any(float(o["sz"]) == total for o in triggers(fake)))  # resized, whatever the prices
        time.sleep(1.2)
    finally:
        code, err = live.finish()
    assert code == 0, err
    _in_step(fake, state, "live")
    placed = sorted((o["orderType"], float(o["triggerPx"]), float(o["sz"])) for o in triggers(fake))
    assert placed == [("Stop Market", 59000.0, total), ("Take Profit Market", 62000.0, total)]


def test_an_old_stop_whose_cancel_keeps_failing_is_not_forgotten(fake, tmp_path: Path) -> None:
    fake.fail_next("http_429", action_type="cancel", count=4)  # every try of the first cancel (max_retries = 3)
    state = tmp_path / "state"
    _stop_replacement(fake, tmp_path, state)
    again = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "b.arrows", []))
    assert again.returncode == 0, again.stderr.decode()
    stops = triggers(fake)
    assert len(stops) == 1 and float(stops[0]["triggerPx"]) == 59500.0


def test_funding_charged_while_the_executor_was_down_is_booked_on_restart(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "a.arrows", [{"bar": 1, "target": 1.0}]))
    assert first.returncode == 0, first.stderr.decode()
    paid = fake.settle_funding("BTC", 0.001)
    assert paid > 0
    again = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "b.arrows", []))
    assert again.returncode == 0, again.stderr.decode()
    _in_step(fake, state)
    acct = saved_state(state)["executor"]["arrays"]["acct_f"]["data"]
    assert acct[K.FUNDING] == pytest.approx(paid, abs=1e-6)

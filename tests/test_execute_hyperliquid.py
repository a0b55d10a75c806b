"""`varon execute --venue hyperliquid` as a process against the fake venue, through the real SDK.

What must hold: every entry is an IOC within the slippage cap on the venue's
grid, leverage set first and never above the asset's maximum, followed at once
by its reduce-only stop; the venue's order ids and fees reach the fills stream
and the audit log, never the key; a restart or a crash never sends an order
twice; start-up reconciliation halts, adopts or flattens as configured; the
kill switch flattens on the venue.
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import pytest

from fakes.hyperliquid_venue import FakeHyperliquidVenue
from hl_support import (
    hyperliquid_fake,
    AGENT, AGENT_KEY, REPO, USER, LiveExecutor, audit, execute_args, executor_position, fills, hl_env, iocs,
    open_by_hand, orders, run_execute, triggers, wait_until, write_signals,
)
from varon_cli.execution.hyperliquid.rounding import valid_price

pytestmark = pytest.mark.slow


fake = hyperliquid_fake  # the fixture, under the name these tests use


def test_an_entry_is_an_ioc_with_leverage_first_and_its_stop_right_after(fake, tmp_path: Path) -> None:
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0, "leverage": 3.0, "sl": 59000.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals)
    assert done.returncode == 0, done.stderr.decode()
    kinds = [r.body["action"]["type"] for r in fake.requests]
    assert kinds[:3] == ["updateLeverage", "order", "order"]
    assert all(r.signer == AGENT.lower() for r in fake.requests)  # every action verified as signed by the agent
    lev = fake.actions("updateLeverage")[0]
    assert lev == {"type": "updateLeverage", "asset": 0, "isCross": False, "leverage": 3}
    entry = fake.actions("order")[0]["orders"][0]
    assert entry["t"] == {"limit": {"tif": "Ioc"}} and entry["b"] is True and entry["r"] is False
    limit = float(entry["p"])
    assert valid_price(limit, 5) and 60000.0 < limit <= 60000.0 * 1.005  # within 50 bps of the mid
    size = float(entry["s"])
    assert size == pytest.approx(0.2 * 10_000 * 3 / 60000, abs=1e-5) and round(size, 5) == size
    stop = fake.actions("order")[1]["orders"][0]
    assert stop["r"] is True and stop["b"] is False and float(stop["s"]) == size
    assert stop["t"] == {"trigger": {"isMarket": True, "triggerPx": "59000", "tpsl": "sl"}}
    assert fake.position("BTC") == pytest.approx(size)
    assert [o["orderType"] for o in triggers(fake)] == ["Stop Market"]
    # the venue's order id and real fee reach the fills stream and the audit log
    venue_fill = fake.fills(USER)[0]
    rows = fills(tmp_path)
    assert len(rows) == 1 and rows[0]["venue_order_id"] == str(venue_fill["oid"])
    assert rows[0]["fee"] == pytest.approx(float(venue_fill["fee"])) and rows[0]["price"] == float(venue_fill["px"])
    records = audit(tmp_path / "state")
    assert any(r["kind"] == "fill" and r.get("venue_order_id") == str(venue_fill["oid"]) and
               r.get("fee") == pytest.approx(float(venue_fill["fee"])) for r in records)
    everything = (tmp_path / "state" / "audit" / "default.jsonl").read_text() + done.stderr.decode()
    assert AGENT_KEY[2:] not in everything and AGENT_KEY[2:].upper() not in everything
    assert executor_position(tmp_path / "state") == pytest.approx(size)


def test_a_signal_for_100x_leverage_is_capped_by_the_asset_maximum(fake, tmp_path: Path) -> None:
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 0.1, "leverage": 100.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals, VARON_RISK__MAX_LEVERAGE="50")
    assert done.returncode == 0, done.stderr.decode()
    assert fake.actions("updateLeverage")[0]["leverage"] == 40  # BTC's maximum in meta, not 100 or 50
    assert any(r["kind"] == "risk" and r.get("reason") == "leverage capped" and r.get("value") == 40.0
               for r in audit(tmp_path / "state"))


def test_orders_under_the_ten_dollar_minimum_are_refused_locally(fake, tmp_path: Path) -> None:
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 0.0005, "leverage": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals, VARON_RISK__MIN_ORDER_NOTIONAL="0")
    assert done.returncode == 0, done.stderr.decode()
    assert fake.actions("order") == [] and fake.position("BTC") == 0.0
    refused = [o for o in orders(tmp_path) if o["status"] == "rejected"]
    assert len(refused) == 1 and "below the venue's $10 minimum" in refused[0]["reason"]
    assert "$10 minimum" in done.stderr.decode()


def test_a_venue_rejection_is_logged_and_changes_nothing(fake, tmp_path: Path) -> None:
    fake.fail_next("reject", error="Insufficient margin to place order.", action_type="order")
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}, {"bar": 2, "target": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals)
    assert done.returncode == 0, done.stderr.decode()
    rejected = [o for o in orders(tmp_path) if o["status"] == "rejected"]
    assert len(rejected) == 1 and "Insufficient margin to place order." in rejected[0]["reason"]
    assert "Insufficient margin" in done.stderr.decode()
    # the next bar asks again and fills: one position, one stop, and the executor agrees with the venue
    assert len(iocs(fake)) == 1 and fake.position("BTC") > 0
    assert len(triggers(fake)) == 1
    assert executor_position(tmp_path / "state") == pytest.approx(fake.position("BTC"))


def test_a_timeout_after_the_venue_acted_never_sends_a_second_order(fake, tmp_path: Path) -> None:
    fake.fail_next("timeout_after_apply", seconds=3.0, action_type="order")
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals)
    assert done.returncode == 0, done.stderr.decode()
    assert "asking the venue for it by cloid" in done.stderr.decode()
    assert len(iocs(fake)) == 1  # found by its cloid, not sent again
    assert fake.position("BTC") > 0 and len(triggers(fake)) == 1
    assert executor_position(tmp_path / "state") == pytest.approx(fake.position("BTC"))
    assert len([r for r in fills(tmp_path) if r["reason"] == "entry"]) == 1


def test_a_timeout_before_the_venue_acted_is_sent_again_with_the_same_cloid(fake, tmp_path: Path) -> None:
    fake.fail_next("timeout_before_apply", seconds=2.0, action_type="order")
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals)
    assert done.returncode == 0, done.stderr.decode()
    sent = [r.body for r in fake.requests if r.body["action"]["type"] == "order"
            and "limit" in r.body["action"]["orders"][0]["t"]]
    assert len(sent) == 2 and sent[0]["action"] == sent[1]["action"]  # same order, same cloid
    assert sent[1]["nonce"] > sent[0]["nonce"]
    assert len(iocs(fake)) == 1 and fake.position("BTC") > 0


def test_a_429_is_retried_without_duplicates(fake, tmp_path: Path) -> None:
    fake.fail_next("http_429", action_type="order")
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals)
    assert done.returncode == 0, done.stderr.decode()
    assert "429" in done.stderr.decode()
    assert len(iocs(fake)) == 1 and fake.position("BTC") > 0


def test_nonces_strictly_increase(fake, tmp_path: Path) -> None:
    rows = [{"bar": b, "target": t} for b, t in enumerate([1.0, 0.5, 1.0, -1.0, 0.0], start=1)]
    done = run_execute(fake.url, tmp_path, tmp_path / "state", write_signals(tmp_path / "s.arrows", rows))
    assert done.returncode == 0, done.stderr.decode()
    nonces = [r.body["nonce"] for r in fake.requests]
    assert len(nonces) > 8 and nonces == sorted(nonces) and len(set(nonces)) == len(nonces)
    assert fake.position("BTC") == 0.0 and triggers(fake) == []  # flat at the end, no stop left behind
    assert executor_position(tmp_path / "state") == 0.0


def test_a_restart_with_an_open_position_sends_nothing_twice(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "a.arrows", [{"bar": 1, "target": 1.0}]))
    assert first.returncode == 0, first.stderr.decode()
    held, stop = fake.position("BTC"), triggers(fake)
    assert held > 0 and len(stop) == 1
    requests_before = len(fake.requests)
    again = run_execute(fake.url, tmp_path, state, write_signals(tmp_path / "b.arrows", [
        {"bar": 1, "target": 1.0}, {"bar": 2, "target": 1.0}]))
    assert again.returncode == 0, again.stderr.decode()
    assert len(iocs(fake)) == 1 and fake.position("BTC") == held
    assert triggers(fake) == stop  # the same stop, not replaced
    assert len(fake.requests) == requests_before
    assert executor_position(state) == pytest.approx(held)


def test_a_crash_after_the_send_adopts_the_order_on_restart(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    crashed = run_execute(fake.url, tmp_path, state, signals, VARON_TEST_CRASH_AFTER_SEND="1")
    assert crashed.returncode == 137
    assert fake.position("BTC") > 0 and triggers(fake) == []  # filled, and the crash came before the stop
    again = run_execute(fake.url, tmp_path, state, signals)
    assert again.returncode == 0, again.stderr.decode()
    assert "adopting its fills" in again.stderr.decode()
    assert len(iocs(fake)) == 1  # never sent twice
    assert len(triggers(fake)) == 1  # and protected at once on restart
    assert executor_position(state) == pytest.approx(fake.position("BTC"))


def test_a_crash_before_the_send_sends_once_on_restart(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    crashed = run_execute(fake.url, tmp_path, state, signals, VARON_TEST_CRASH_AFTER_INTENT="1")
    assert crashed.returncode == 137 and fake.actions("order") == []
    again = run_execute(fake.url, tmp_path, state, signals)
    assert again.returncode == 0, again.stderr.decode()
    assert len(iocs(fake)) == 1 and fake.position("BTC") > 0 and len(triggers(fake)) == 1


def test_start_up_halts_on_a_position_it_does_not_know(fake, tmp_path: Path) -> None:
    open_by_hand(fake)
    done = run_execute(fake.url, tmp_path, tmp_path / "state", write_signals(tmp_path / "s.arrows", [
        {"bar": 1, "target": 1.0}]))
    assert done.returncode == 75
    last = done.stderr.decode().strip().splitlines()[-1]
    assert "executor holds 0, venue holds 0.01" in last and "on_mismatch = halt" in last
    assert len(iocs(fake)) == 1 and fake.position("BTC") == 0.01  # nothing sent


def test_start_up_adopts_a_position_and_protects_it(fake, tmp_path: Path) -> None:
    open_by_hand(fake)
    done = run_execute(fake.url, tmp_path, tmp_path / "state", write_signals(tmp_path / "s.arrows", []),
                       VARON_HYPERLIQUID__ON_MISMATCH="adopt")
    assert done.returncode == 0, done.stderr.decode()
    assert fake.position("BTC") == 0.01 and executor_position(tmp_path / "state") == pytest.approx(0.01)
    stop = triggers(fake)
    assert len(stop) == 1 and float(stop[0]["sz"]) == 0.01
    assert float(stop[0]["triggerPx"]) == pytest.approx(fake.entry_px("BTC") * 0.98, rel=1e-4)  # the default stop
    assert any(r["kind"] == "reconcile" and r.get("action") == "adopt" for r in audit(tmp_path / "state"))


def test_start_up_flattens_a_position_when_told_to(fake, tmp_path: Path) -> None:
    open_by_hand(fake)
    done = run_execute(fake.url, tmp_path, tmp_path / "state", write_signals(tmp_path / "s.arrows", []),
                       VARON_HYPERLIQUID__ON_MISMATCH="flatten")
    assert done.returncode == 0, done.stderr.decode()
    assert fake.position("BTC") == 0.0 and triggers(fake) == []
    assert executor_position(tmp_path / "state") == 0.0


def test_dry_run_signs_and_logs_but_sends_nothing(fake, tmp_path: Path) -> None:
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals, "--dry-run")
    assert done.returncode == 0, done.stderr.decode()
    assert fake.requests == [] and fake.position("BTC") == 0.0
    err = done.stderr.decode()
    assert "dry run, not sent" in err and '"tif":"Ioc"' in err and '"type":"updateLeverage"' in err
    assert [o["status"] for o in orders(tmp_path)] == ["dry_run"]
    assert not (tmp_path / "state" / "state" / "default.json").exists()  # the live executor's state is untouched


def test_a_wrong_key_gets_the_venue_error_and_a_clear_exit(fake, tmp_path: Path) -> None:
    from hl_support import OTHER_KEY

    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals, key=OTHER_KEY)
    assert done.returncode == 69
    last = done.stderr.decode().strip().splitlines()[-1]
    assert "does not exist" in last and "agent key approved" in last
    assert OTHER_KEY[2:] not in done.stderr.decode()
    assert fake.position("BTC") == 0.0


def test_a_key_file_readable_by_others_is_refused(fake, tmp_path: Path) -> None:
    key_file = tmp_path / "agent.key"
    key_file.write_text(AGENT_KEY)
    key_file.chmod(0o644)
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals, key=None,
                       VARON_HYPERLIQUID__KEY_FILE=str(key_file))
    assert done.returncode == 78
    assert "readable by group or others" in done.stderr.decode() and fake.requests == []
    key_file.chmod(0o600)
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals, key=None,
                       VARON_HYPERLIQUID__KEY_FILE=str(key_file))
    assert done.returncode == 0, done.stderr.decode()
    assert fake.position("BTC") > 0


def test_an_unknown_coin_is_refused_at_start(fake, tmp_path: Path) -> None:
    signals = write_signals(tmp_path / "s.arrows", [{"bar": 1, "target": 1.0}])
    done = run_execute(fake.url, tmp_path, tmp_path / "state", signals,
                       VARON_HYPERLIQUID__SYMBOLS='["BTC-USD", "NOPE-USD"]')
    assert done.returncode == 78
    assert "NOPE-USD (NOPE) is not listed by the venue" in done.stderr.decode()
    assert fake.requests == []


def test_a_stop_firing_while_the_websocket_is_down_is_caught_up(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    try:
        live.send([{"bar": 1, "target": 1.0, "sl": 59500.0}])
        wait_until(lambda: len(triggers(fake)) == 1)
        wait_until(lambda: fake.ws_connections >= 1)
        fake.drop_ws()
        fake.set_mid("BTC", 59000.0)  # the stop fires while the executor's socket is down
        wait_until(lambda: fake.position("BTC") == 0.0)
        time.sleep(2.5)  # reconnect + REST catch-up (and a sync)
    finally:
        code, err = live.finish()
    assert code == 0, err
    stops = [r for r in fills(tmp_path) if r["reason"] == "stop_loss"]
    assert len(stops) == 1  # exactly once, whether from the stream or the catch-up
    assert executor_position(state, name="live") == 0.0
    assert "user stream connected to" in err and "again" in err  # it reconnected by itself
    assert "reading fills since" in err  # and read what it missed over REST
    records = [r for r in audit(state, "live") if r["kind"] == "fill" and r.get("reason") == "stop_loss"]
    assert len(records) == 1


def test_a_liquidation_fill_without_an_order_is_applied(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    try:
        live.send([{"bar": 1, "target": 1.0}])
        wait_until(lambda: len(triggers(fake)) == 1)
        wait_until(lambda: fake.ws_connections >= 1)
        fake.liquidate("BTC")
        wait_until(lambda: fake.position("BTC") == 0.0)
        time.sleep(1.5)
    finally:
        code, err = live.finish()
    assert code == 0, err
    liquidations = [r for r in fills(tmp_path) if r["reason"] == "liquidation"]
    assert len(liquidations) == 1 and "liquidated" in err
    assert executor_position(state, name="live") == 0.0
    assert triggers(fake) == []


def test_the_kill_switch_flattens_on_the_venue(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state)
    proc = live.proc
    try:
        live.send([{"bar": 1, "target": 1.0}, {"bar": 1, "target": -1.0, "strategy": "s2", "symbol": "ETH-USD",
                                               "close": 3000.0}])
        wait_until(lambda: len(triggers(fake)) == 2)
        kill = subprocess.run([*execute_args(fake.url, tmp_path)[:4], "kill", "--reason", "test"], cwd=REPO,
                              env=hl_env(state), capture_output=True, timeout=30)
        assert kill.returncode == 0, kill.stderr.decode()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 3
    assert fake.positions() == {} or all(v == 0.0 for v in fake.positions().values())
    assert fake.open_orders(USER) == []
    assert any(r["kind"] == "kill" for r in audit(state, "live"))
    assert math.isclose(executor_position(state, "BTC-USD", "live"), 0.0, abs_tol=1e-12)


def test_no_builder_code_is_attached_unless_configured(fake, tmp_path: Path) -> None:
    done = run_execute(fake.url, tmp_path, tmp_path / "a", write_signals(tmp_path / "s.arrows", [
        {"bar": 1, "target": 1.0}]))
    assert done.returncode == 0, done.stderr.decode()
    assert all("builder" not in a for a in fake.actions("order"))
    builder = "0x" + "be" * 20
    done = run_execute(fake.url, tmp_path, tmp_path / "b", write_signals(tmp_path / "s2.arrows", [
        {"bar": 1, "target": 1.0, "strategy": "s2", "symbol": "ETH-USD", "close": 3000.0}]),
        VARON_HYPERLIQUID__BUILDER=builder, VARON_HYPERLIQUID__BUILDER_FEE="10",
        VARON_HYPERLIQUID__ON_MISMATCH="adopt")
    assert done.returncode == 0, done.stderr.decode()
    assert fake.actions("order")[-2]["builder"] == {"b": builder, "f": 10}


def test_orders_act_on_the_vault_when_one_is_configured(tmp_path: Path) -> None:
    vault = "0x" + "ca" * 20
    with FakeHyperliquidVenue(user=USER, agents={AGENT: USER}, vaults={vault}) as fake:
        done = run_execute(fake.url, tmp_path, tmp_path / "state", write_signals(tmp_path / "s.arrows", [
            {"bar": 1, "target": 1.0}]), VARON_HYPERLIQUID__VAULT_ADDRESS=vault)
        assert done.returncode == 0, done.stderr.decode()
        assert fake.position("BTC", account=vault) > 0 and fake.position("BTC") == 0.0
        assert all(r.body["vaultAddress"] == vault for r in fake.requests)
        assert len([o for o in fake.open_orders(vault) if o.get("isTrigger")]) == 1
        assert fake.errors == []


def test_a_gtc_entry_rests_then_fills_as_maker_and_gets_its_stop(fake, tmp_path: Path) -> None:
    state = tmp_path / "state"
    live = LiveExecutor(fake, tmp_path, state, VARON_HYPERLIQUID__ENTRY_ORDER="gtc",
                 VARON_HYPERLIQUID__LIMIT_OFFSET_BPS="10", VARON_HYPERLIQUID__LIMIT_TIMEOUT="1h")
    try:
        live.send([{"bar": 1, "target": 1.0}])
        wait_until(lambda: len(fake.open_orders(USER)) == 1)
        resting = fake.open_orders(USER)[0]
        assert resting["tif"] == "Gtc" and not resting["isTrigger"] and float(resting["limitPx"]) == 59940.0
        assert fake.position("BTC") == 0.0
        fake.set_mid("BTC", 59900.0)  # the market comes down to the resting bid
        wait_until(lambda: fake.position("BTC") > 0)
        wait_until(lambda: len(triggers(fake)) == 1)  # protected as soon as the fill is seen
    finally:
        code, err = live.finish()
    assert code == 0, err
    [entry] = [r for r in fills(tmp_path) if r["reason"] == "entry"]
    venue_fill = fake.fills(USER)[0]
    assert entry["venue_order_id"] == str(resting["oid"]) and venue_fill["crossed"] is False
    assert entry["price"] == 59940.0 and entry["fee"] == pytest.approx(float(venue_fill["fee"]))
    assert executor_position(state, name="live") == pytest.approx(fake.position("BTC"))


def test_an_unfilled_limit_entry_is_cancelled_by_cloid_after_its_timeout(fake, tmp_path: Path) -> None:
    live = LiveExecutor(fake, tmp_path, tmp_path / "state", VARON_HYPERLIQUID__ENTRY_ORDER="gtc",
                 VARON_HYPERLIQUID__LIMIT_OFFSET_BPS="20", VARON_HYPERLIQUID__LIMIT_TIMEOUT="1s")
    try:
        live.send([{"bar": 1, "target": 1.0}])
        wait_until(lambda: len(fake.open_orders(USER)) == 1)
        cloid = fake.open_orders(USER)[0]["cloid"]
        wait_until(lambda: fake.open_orders(USER) == [], timeout=10)
    finally:
        code, err = live.finish()
    assert code == 0, err
    assert fake.actions("cancelByCloid") and fake.actions("cancelByCloid")[0]["cancels"][0]["cloid"] == cloid
    assert fake.position("BTC") == 0.0 and "limit_timeout" in err
    assert any(o["status"] == "cancelled" and o["reason"] == "limit_timeout" for o in orders(tmp_path))


def test_a_post_only_entry_that_would_cross_is_refused_by_the_venue(tmp_path: Path) -> None:
    with FakeHyperliquidVenue(user=USER, agents={AGENT: USER}, spread_bps=0.0) as fake:
        done = run_execute(fake.url, tmp_path, tmp_path / "state", write_signals(tmp_path / "s.arrows", [
            {"bar": 1, "target": 1.0}]), VARON_HYPERLIQUID__ENTRY_ORDER="alo")
        assert done.returncode == 0, done.stderr.decode()
        assert fake.position("BTC") == 0.0 and fake.open_orders(USER) == []
        assert fake.errors == []
    [refused] = [o for o in orders(tmp_path) if o["status"] == "rejected"]
    assert "Post only order would have immediately matched" in refused["reason"]
    assert executor_position(tmp_path / "state") == 0.0

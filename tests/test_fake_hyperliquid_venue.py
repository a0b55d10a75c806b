"""The fake Hyperliquid venue (tests/fakes/hyperliquid_venue.py) against the real `hyperliquid` SDK."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.error import ClientError, ServerError
from hyperliquid.utils.signing import sign_l1_action
from hyperliquid.utils.types import Cloid
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fakes.hyperliquid_venue import FakeHyperliquidVenue, recover_l1_signer

USER_KEY = "0x" + "a1" * 32
AGENT_KEY = "0x" + "b2" * 32
STRANGER_KEY = "0x" + "c3" * 32
VAULT = "0x" + "5a" * 20
UNPROCESSABLE = "Failed to deserialize the JSON body into the target type"

# SDK tests/signing_test.py, via protocols.md §5
VECTOR_KEY = "0x0123456789012345678901234567890123456789012345678901234567890123"
VECTOR_ADDRESS = "0x14791697260E4c9A71f18484C9f997B308e59325"
VECTOR_ACTION = {"type": "order",  # key order matters: msgpack hashes it as sent
                 "orders": [{"a": 1, "b": True, "p": "100", "s": "100", "r": False, "t": {"limit": {"tif": "Gtc"}}}],
                 "grouping": "na"}
VECTOR_SIGS = {
    False: {"r": "0x82b2ba28e76b3d761093aaded1b1cdad4960b3af30212b343fb2e6cdfa4e3d54",
            "s": "0x6b53878fc99d26047f4d7e8c90eb98955a109f44209163f52d8dc4278cbbd9f5", "v": 27},
    True: {"r": "0xd65369825a9df5d80099e513cce430311d7d26ddf477f5b3a33d2806b100d78e",
           "s": "0x2b54116ff64054968aa237c20ca9ff68000f977c93289157748a3162b6ea940e", "v": 28},
}

IOC = {"limit": {"tif": "Ioc"}}
GTC = {"limit": {"tif": "Gtc"}}
ALO = {"limit": {"tif": "Alo"}}


def sl(trigger_px: float) -> dict[str, Any]:
    return {"trigger": {"isMarket": True, "triggerPx": trigger_px, "tpsl": "sl"}}


def statuses(answer: dict[str, Any]) -> list[Any]:
    assert answer["status"] == "ok", answer
    return answer["response"]["data"]["statuses"]


@pytest.fixture
def wallet() -> LocalAccount:
    return Account.from_key(USER_KEY)


@pytest.fixture
def venue(wallet: LocalAccount) -> Iterator[FakeHyperliquidVenue]:
    agent = Account.from_key(AGENT_KEY)
    with FakeHyperliquidVenue(user=wallet.address, agents={agent.address: wallet.address}, vaults={VAULT}) as v:
        yield v
    assert v.errors == []


@pytest.fixture
def ex(venue: FakeHyperliquidVenue, wallet: LocalAccount) -> Exchange:
    return Exchange(wallet, base_url=venue.url)


# ---------------------------------------------------------------- trading through the SDK
def test_ioc_buy_fills_at_the_ask_with_the_taker_fee(venue: FakeHyperliquidVenue, ex: Exchange,
                                                     wallet: LocalAccount) -> None:
    assert venue.bbo("BTC") == (59994.0, 60006.0)
    answer = ex.order("BTC", True, 0.001, 61000, IOC)
    [status] = statuses(answer)
    assert status == {"filled": {"totalSz": "0.001", "avgPx": "60006.0", "oid": status["filled"]["oid"]}}

    fee = round(60006 * 0.001 * 0.00045, 6)
    assert venue.position("BTC") == pytest.approx(0.001)
    assert venue.cash == pytest.approx(10_000 - fee)
    state = ex.info.user_state(wallet.address)
    pos = state["assetPositions"][0]["position"]
    assert state["assetPositions"][0]["type"] == "oneWay"
    assert (pos["coin"], pos["szi"], pos["entryPx"]) == ("BTC", "0.001", "60006.0")
    assert pos["leverage"] == {"type": "cross", "value": 20}
    assert pos["positionValue"] == "60.0" and pos["marginUsed"] == "3.0" and pos["unrealizedPnl"] == "-0.006"
    assert set(state["marginSummary"]) == {"accountValue", "totalMarginUsed", "totalNtlPos", "totalRawUsd"}
    assert float(state["marginSummary"]["accountValue"]) == pytest.approx(10_000 - fee - 0.006)
    assert float(state["withdrawable"]) == pytest.approx(10_000 - fee - 0.006 - 3.0)

    [fill] = ex.info.user_fills(wallet.address)
    assert fill == venue.fills()[0]
    assert fill["px"] == "60006.0" and fill["sz"] == "0.001" and fill["side"] == "B"
    assert fill["dir"] == "Open Long" and fill["startPosition"] == "0.0" and fill["crossed"] is True
    assert fill["fee"] == "0.027003" and fill["feeToken"] == "USDC" and fill["closedPnl"] == "0.0"
    assert fill["oid"] == status["filled"]["oid"] and fill["hash"].startswith("0x") and len(fill["hash"]) == 66
    [req] = venue.requests
    assert req.signer == wallet.address.lower() and req.status == 200 and req.applied
    assert venue.actions("order")[0]["orders"][0]["p"] == "61000"


def test_market_open_and_close_round_trip(venue: FakeHyperliquidVenue, ex: Exchange) -> None:
    opened = statuses(ex.market_open("ETH", False, 0.5))[0]["filled"]
    assert opened["avgPx"] == "2999.7" and venue.position("ETH") == pytest.approx(-0.5)
    venue.set_mid("ETH", 2900)
    closed = statuses(ex.market_close("ETH"))[0]["filled"]
    assert closed["avgPx"] == "2900.3" and venue.position("ETH") == 0
    last = venue.fills()[-1]
    assert last["dir"] == "Close Short" and last["closedPnl"] == "49.7"  # (2999.7 - 2900.3) * 0.5


def test_flip_direction_and_closed_pnl(venue: FakeHyperliquidVenue, ex: Exchange) -> None:
    ex.order("SOL", True, 1, 200, IOC)
    ex.order("SOL", False, 3, 100, IOC)
    first, flip = venue.fills()
    assert first["px"] == "150.02" and flip["px"] == "149.98"
    assert flip["dir"] == "Long > Short" and flip["startPosition"] == "1.0" and flip["closedPnl"] == "-0.04"
    assert venue.position("SOL") == pytest.approx(-2) and venue.entry_px("SOL") == pytest.approx(149.98)


def test_agent_and_vault_sign_for_the_user(venue: FakeHyperliquidVenue, wallet: LocalAccount) -> None:
    agent = Account.from_key(AGENT_KEY)
    by_agent = Exchange(agent, base_url=venue.url, account_address=wallet.address)
    assert "filled" in statuses(by_agent.order("BTC", True, 0.001, 61000, IOC))[0]
    assert venue.position("BTC") == pytest.approx(0.001)
    assert venue.requests[-1].signer == agent.address.lower()

    for_vault = Exchange(wallet, base_url=venue.url, vault_address=VAULT)
    assert "filled" in statuses(for_vault.order("ETH", True, 0.01, 3100, IOC))[0]
    assert venue.position("ETH", account=VAULT) == pytest.approx(0.01) and venue.position("ETH") == 0

    other = "0x" + "77" * 20
    bad_vault = Exchange(wallet, base_url=venue.url, vault_address=other)
    assert bad_vault.order("ETH", True, 0.01, 3100, IOC) == {
        "status": "err", "response": f"User or API Wallet {other} does not exist."}


def test_a_key_the_venue_does_not_know_is_refused(venue: FakeHyperliquidVenue) -> None:
    stranger = Account.from_key(STRANGER_KEY)
    answer = Exchange(stranger, base_url=venue.url).order("BTC", True, 0.001, 61000, IOC)
    assert answer == {"status": "err", "response": f"User or API Wallet {stranger.address.lower()} does not exist."}
    assert venue.position("BTC") == 0 and venue.fills() == [] and venue.nonces_seen == []


@pytest.mark.parametrize("mainnet", [False, True])
def test_sdk_signing_vector_recovers_and_trades(mainnet: bool) -> None:
    assert Account.from_key(VECTOR_KEY).address == VECTOR_ADDRESS
    body = {"action": VECTOR_ACTION, "nonce": 0, "signature": VECTOR_SIGS[mainnet], "vaultAddress": None,
            "expiresAfter": None}
    assert recover_l1_signer(body, is_mainnet=mainnet) == VECTOR_ADDRESS
    assert recover_l1_signer(body, is_mainnet=not mainnet) != VECTOR_ADDRESS
    # nonce 0 is only fresh for a venue whose clock reads 0
    with FakeHyperliquidVenue(user=VECTOR_ADDRESS, is_mainnet=mainnet, now_ms=lambda: 0) as v:
        answer = requests.post(v.url + "/exchange", data=json.dumps(body),
                               headers={"Content-Type": "application/json"}, timeout=5).json()
        assert statuses(answer) == [{"resting": {"oid": statuses(answer)[0]["resting"]["oid"]}}]
        assert v.open_orders()[0]["coin"] == "ETH" and v.nonces_seen == [0]


def test_nonces(venue: FakeHyperliquidVenue, ex: Exchange) -> None:
    now = int(time.time() * 1000)
    ok = {"status": "ok", "response": {"type": "default"}}
    assert ex.noop(now) == ok
    assert ex.noop(now) == {"status": "err", "response": "Invalid nonce: duplicate nonce"}
    assert ex.noop(now - 3 * 86_400_000)["response"].startswith("Invalid nonce")
    assert ex.noop(now + 2 * 86_400_000)["response"].startswith("Invalid nonce")
    for k in range(1, 100):  # 100 stored now: now .. now+99
        assert ex.noop(now + k) == ok
    assert ex.noop(now - 1)["response"].startswith("Invalid nonce")  # below the smallest of the 100 kept
    assert ex.noop(now + 1000) == ok  # evicts `now`
    assert ex.noop(now)["response"].startswith("Invalid nonce")
    assert venue.nonces_seen[:2] == [now, now + 1] and len(venue.actions("noop")) == 101


def test_order_validation_errors(venue: FakeHyperliquidVenue, ex: Exchange) -> None:
    orders = [
        {"coin": "BTC", "is_buy": True, "sz": 0.001, "limit_px": 60000.5, "order_type": GTC, "reduce_only": False},
        {"coin": "BTC", "is_buy": True, "sz": 0.000001, "limit_px": 60000, "order_type": GTC, "reduce_only": False},
        {"coin": "BTC", "is_buy": True, "sz": 0.0001, "limit_px": 59000, "order_type": GTC, "reduce_only": False},
        {"coin": "BTC", "is_buy": False, "sz": 0.001, "limit_px": 59000, "order_type": IOC, "reduce_only": True},
        {"coin": "BTC", "is_buy": True, "sz": 5, "limit_px": 61000, "order_type": IOC, "reduce_only": False},
        {"coin": "BTC", "is_buy": True, "sz": 0.001, "limit_px": 61000, "order_type": ALO, "reduce_only": False},
        {"coin": "BTC", "is_buy": True, "sz": 0.001, "limit_px": 59000, "order_type": IOC, "reduce_only": False},
        {"coin": "kPEPE", "is_buy": True, "sz": 1000, "limit_px": 0.0120012, "order_type": GTC, "reduce_only": False},
        {"coin": "ETH", "is_buy": True, "sz": 0.01, "limit_px": 2000, "order_type": ALO, "reduce_only": False},
    ]
    got = statuses(ex.bulk_orders(orders))
    assert got[:8] == [
        {"error": "Price must be divisible by tick size. asset=0"},
        {"error": "Order has invalid size. asset=0"},
        {"error": "Order must have minimum value of $10. asset=0"},
        {"error": "Reduce only order would increase position. asset=0"},
        {"error": "Insufficient margin to place order. asset=0"},
        {"error": "Post only order would have immediately matched, bbo was 59994.0@60006.0. asset=0"},
        {"error": "Order could not immediately match against any resting orders. asset=0"},
        {"error": "Price must be divisible by tick size. asset=3"},
    ]
    assert "resting" in got[8]
    assert [o["coin"] for o in venue.open_orders()] == ["ETH"] and venue.fills() == []

    trigger_not_reduce = ex.order("BTC", False, 0.001, 50000, sl(55000), reduce_only=False)
    assert trigger_not_reduce == {"status": "err", "response": "Trigger orders must be reduce only."}


def test_leverage_sets_margin(venue: FakeHyperliquidVenue, ex: Exchange, wallet: LocalAccount) -> None:
    ok = {"status": "ok", "response": {"type": "default"}}
    assert ex.update_leverage(41, "BTC") == {"status": "err", "response": "Invalid leverage value."}
    assert ex.update_leverage(1, "BTC") == ok
    # 0.2 BTC at 60006 needs 12001 at 1x but only 600 at 20x
    assert statuses(ex.order("BTC", True, 0.2, 61000, IOC)) == [
        {"error": "Insufficient margin to place order. asset=0"}]
    assert ex.update_leverage(10, "BTC", is_cross=False) == ok
    assert "filled" in statuses(ex.order("BTC", True, 0.2, 61000, IOC))[0]
    pos = ex.info.user_state(wallet.address)["assetPositions"][0]["position"]
    assert pos["leverage"]["type"] == "isolated" and pos["leverage"]["value"] == 10
    assert float(pos["marginUsed"]) == pytest.approx(0.2 * 60006 / 10 + 0.2 * (60000 - 60006), abs=1e-6)
    assert venue.actions("updateLeverage")[-1] == {"type": "updateLeverage", "asset": 0, "isCross": False,
                                                   "leverage": 10}


def test_gtc_rests_then_fills_as_maker_when_the_market_moves(venue: FakeHyperliquidVenue, ex: Exchange,
                                                             wallet: LocalAccount) -> None:
    [resting] = statuses(ex.order("BTC", True, 0.001, 59000, GTC))
    oid = resting["resting"]["oid"]
    [open_order] = ex.info.open_orders(wallet.address)
    assert open_order == {"coin": "BTC", "limitPx": "59000.0", "oid": oid, "side": "B", "sz": "0.001",
                          "timestamp": open_order["timestamp"]}
    venue.set_mid("BTC", 59010)  # ask 59016: not yet
    assert venue.fills() == []
    venue.set_mid("BTC", 58990)  # ask 58996 <= 59000
    [fill] = venue.fills()
    assert (fill["px"], fill["crossed"], fill["fee"], fill["oid"]) == ("59000.0", False, "0.00885", oid)
    assert ex.info.open_orders(wallet.address) == []
    assert ex.info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "filled"


def test_stop_trigger_fires_on_the_mark_and_closes_the_position(venue: FakeHyperliquidVenue, ex: Exchange,
                                                                wallet: LocalAccount) -> None:
    ex.order("BTC", True, 0.01, 61000, IOC)
    [resting] = statuses(ex.order("BTC", False, 0.01, 50000, sl(57000), reduce_only=True))
    oid = resting["resting"]["oid"]
    [trigger] = ex.info.frontend_open_orders(wallet.address)
    assert trigger["isTrigger"] and trigger["orderType"] == "Stop Market" and trigger["triggerPx"] == "57000.0"
    assert trigger["triggerCondition"] == "Price below 57000.0" and trigger["reduceOnly"] is True
    assert ex.info.open_orders(wallet.address)[0]["oid"] == oid
    venue.set_mid("BTC", 57500)
    assert venue.position("BTC") == pytest.approx(0.01)
    venue.set_mid("BTC", 56900)  # bid 56894
    assert venue.position("BTC") == 0
    fill = venue.fills()[-1]
    assert (fill["dir"], fill["px"], fill["sz"], fill["crossed"], fill["oid"]) == (
        "Close Long", "56894.0", "0.01", True, oid)
    assert fill["closedPnl"] == "-31.12"  # (56894 - 60006) * 0.01
    assert ex.info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "filled"
    assert venue.open_orders() == []


def test_cancel_and_cancel_by_cloid(venue: FakeHyperliquidVenue, ex: Exchange) -> None:
    cloid = Cloid.from_int(7)
    oid = statuses(ex.order("BTC", True, 0.001, 59000, GTC))[0]["resting"]["oid"]
    assert statuses(ex.order("ETH", True, 0.01, 2900, GTC, cloid=cloid))[0]["resting"]["cloid"] == cloid.to_raw()
    assert statuses(ex.cancel("BTC", oid)) == ["success"]
    assert statuses(ex.cancel("BTC", oid)) == [
        {"error": "Order was never placed, already canceled, or filled. asset=0"}]
    answer = ex.cancel_by_cloid("ETH", cloid)
    assert answer == {"status": "ok", "response": {"type": "cancel", "data": {"statuses": ["success"]}}}
    assert statuses(ex.cancel_by_cloid("ETH", cloid)) == [
        {"error": "Order was never placed, already canceled, or filled. asset=1"}]
    assert venue.open_orders() == []
    assert venue.order_status(oid)["order"]["status"] == "canceled"


def test_order_status_by_cloid(venue: FakeHyperliquidVenue, ex: Exchange, wallet: LocalAccount) -> None:
    cloid = Cloid("0x" + "ab" * 16)
    [filled] = statuses(ex.order("BTC", True, 0.001, 61000, IOC, cloid=cloid))
    assert filled["filled"]["cloid"] == cloid.to_raw()
    status = ex.info.query_order_by_cloid(wallet.address, cloid)
    assert status["status"] == "order" and status["order"]["status"] == "filled"
    order = status["order"]["order"]
    assert (order["cloid"], order["oid"], order["origSz"], order["sz"], order["tif"]) == (
        cloid.to_raw(), filled["filled"]["oid"], "0.001", "0.0", "Ioc")
    assert venue.fills()[0]["cloid"] == cloid.to_raw()
    assert ex.info.query_order_by_cloid(wallet.address, Cloid.from_int(99)) == {"status": "unknownOid"}
    assert ex.info.query_order_by_oid(wallet.address, 1) == {"status": "unknownOid"}
    assert statuses(ex.order("BTC", True, 0.001, 61000, IOC, cloid=cloid)) == [
        {"error": "Order has duplicate cloid. asset=0"}]


def test_user_fills_by_time(wallet: LocalAccount) -> None:
    clock = [int(time.time() * 1000)]
    t0 = clock[0]
    with FakeHyperliquidVenue(user=wallet.address, now_ms=lambda: clock[0]) as venue:
        ex = Exchange(wallet, base_url=venue.url)
        for k in range(3):
            clock[0] = t0 + 1000 * k
            ex.order("BTC", True, 0.001, 61000, IOC)
        assert [f["time"] for f in ex.info.user_fills_by_time(wallet.address, t0 + 500)] == [t0 + 1000, t0 + 2000]
        assert [f["time"] for f in ex.info.user_fills_by_time(wallet.address, t0, t0 + 1000)] == [t0, t0 + 1000]
        assert [f["time"] for f in ex.info.user_fills(wallet.address)] == [t0 + 2000, t0 + 1000, t0]


def test_funding_and_liquidation(venue: FakeHyperliquidVenue, ex: Exchange, wallet: LocalAccount) -> None:
    ex.order("BTC", True, 0.01, 61000, IOC)
    ex.order("BTC", False, 0.01, 50000, sl(50000), reduce_only=True)
    cash = venue.cash
    assert venue.settle_funding("BTC", 0.0001) == pytest.approx(0.06)
    assert venue.cash == pytest.approx(cash - 0.06)
    [funding] = ex.info.post("/info", {"type": "userFunding", "user": wallet.address, "startTime": 0})
    assert funding["delta"]["usdc"] == "-0.06" and funding["delta"]["szi"] == "0.01"
    pos = ex.info.user_state(wallet.address)["assetPositions"][0]["position"]
    assert pos["cumFunding"]["sinceOpen"] == "0.06"

    venue.set_mid("BTC", 55000)
    fill = venue.liquidate("BTC")
    assert fill is not None and venue.position("BTC") == 0
    assert fill["liquidation"] == {"liquidatedUser": wallet.address.lower(), "markPx": "55000.0", "method": "market"}
    assert fill["dir"] == "Liquidated Cross Long" and fill["px"] == "55000.0" and fill["side"] == "A"
    assert ex.info.user_fills(wallet.address)[0] == fill
    assert venue.open_orders() == []  # the stop was cancelled with the position
    assert venue.liquidate("BTC") is None


# ---------------------------------------------------------------- faults
def test_timeout_after_apply_acts_although_the_client_times_out(venue: FakeHyperliquidVenue,
                                                                wallet: LocalAccount) -> None:
    ex = Exchange(wallet, base_url=venue.url, timeout=0.5)
    venue.fail_next("timeout_after_apply", seconds=1.0)
    with pytest.raises(requests.exceptions.Timeout):
        ex.order("BTC", True, 0.001, 61000, IOC, cloid=Cloid.from_int(1))
    assert venue.position("BTC") == pytest.approx(0.001)
    [req] = venue.requests
    assert req.fault == "timeout_after_apply" and req.applied and req.status == 200
    assert ex.info.query_order_by_cloid(wallet.address, Cloid.from_int(1))["order"]["status"] == "filled"
    assert "filled" in statuses(ex.order("BTC", True, 0.001, 61000, IOC))[0]  # the next one is answered


def test_timeout_before_apply_does_nothing(venue: FakeHyperliquidVenue, wallet: LocalAccount) -> None:
    ex = Exchange(wallet, base_url=venue.url, timeout=0.5)
    venue.fail_next("timeout_before_apply", seconds=0.8)
    with pytest.raises(requests.exceptions.Timeout):
        ex.order("BTC", True, 0.001, 61000, IOC, cloid=Cloid.from_int(1))
    assert venue.position("BTC") == 0 and venue.nonces_seen == []
    assert ex.info.query_order_by_cloid(wallet.address, Cloid.from_int(1)) == {"status": "unknownOid"}
    assert "filled" in statuses(ex.order("BTC", True, 0.001, 61000, IOC, cloid=Cloid.from_int(1)))[0]


def test_http_429_and_500_raise_in_the_sdk(venue: FakeHyperliquidVenue, ex: Exchange) -> None:
    venue.fail_next("http_429")
    with pytest.raises(ClientError) as err:
        ex.order("BTC", True, 0.001, 61000, IOC)
    assert err.value.status_code == 429 and err.value.error_message == "Too many requests"
    venue.fail_next("http_500")
    with pytest.raises(ServerError):
        ex.order("BTC", True, 0.001, 61000, IOC)
    assert venue.position("BTC") == 0 and [r.status for r in venue.requests] == [429, 500]


def test_reject_fault_and_filters(venue: FakeHyperliquidVenue, ex: Exchange) -> None:
    venue.fail_next("reject", action_type="cancel")
    venue.fail_next("reject", error="Insufficient margin to place order.", action_type="order", after=1)
    assert "filled" in statuses(ex.order("BTC", True, 0.001, 61000, IOC))[0]  # let through
    assert statuses(ex.order("ETH", True, 0.01, 3100, IOC)) == [
        {"error": "Insufficient margin to place order. asset=1"}]
    assert venue.position("ETH") == 0
    oid = statuses(ex.order("BTC", True, 0.001, 59000, GTC))[0]["resting"]["oid"]
    assert "error" in statuses(ex.cancel("BTC", oid))[0]
    assert statuses(ex.cancel("BTC", oid)) == ["success"]


def test_partial_fill(venue: FakeHyperliquidVenue, ex: Exchange) -> None:
    venue.partial_fill_next(0.5)
    [status] = statuses(ex.order("BTC", True, 0.003, 61000, IOC))
    assert status["filled"]["totalSz"] == "0.0015" and venue.position("BTC") == pytest.approx(0.0015)
    assert venue.order_status(status["filled"]["oid"])["order"]["status"] == "canceled"
    assert statuses(ex.order("BTC", True, 0.003, 61000, IOC))[0]["filled"]["totalSz"] == "0.003"


def test_malformed_requests_get_422(venue: FakeHyperliquidVenue) -> None:
    for path in ("/info", "/exchange"):
        r = requests.post(venue.url + path, data=b"{not json", headers={"Content-Type": "application/json"},
                          timeout=5)
        assert (r.status_code, r.text) == (422, UNPROCESSABLE) and r.headers["Content-Type"].startswith("text/plain")
    r = requests.post(venue.url + "/info", json={"type": "noSuchThing"}, timeout=5)
    assert r.status_code == 422
    r = requests.post(venue.url + "/exchange", json={"action": {"type": "order"}, "nonce": 1}, timeout=5)
    assert r.status_code == 422


# ---------------------------------------------------------------- /info
def test_info_answers(venue: FakeHyperliquidVenue, wallet: LocalAccount) -> None:
    info = Info(base_url=venue.url, skip_ws=True)
    meta = info.meta()
    assert [a["name"] for a in meta["universe"]][:4] == ["BTC", "ETH", "SOL", "kPEPE"]
    assert info.spot_meta() == {"universe": [], "tokens": []}
    assert info.all_mids() == {"BTC": "60000.0", "ETH": "3000.0", "SOL": "150.0", "kPEPE": "0.012"}
    ctx_meta, ctxs = info.meta_and_asset_ctxs()
    assert ctx_meta == meta and ctxs[0]["markPx"] == "60000.0" and ctxs[0]["impactPxs"] == ["59994.0", "60006.0"]
    book = info.l2_snapshot("kPEPE")
    assert book["levels"][0][0]["px"] == "0.011998" and book["levels"][1][0]["px"] == "0.012002"
    assert book["levels"][1][1]["px"] == "0.012003"
    fees = info.user_fees(wallet.address)
    assert fees["feeSchedule"] == {"cross": "0.00045", "add": "0.00015"} and fees["userCrossRate"] == "0.00045"
    empty = info.user_state("0x" + "99" * 20)
    assert empty["assetPositions"] == [] and empty["marginSummary"]["accountValue"] == "0.0"
    r = requests.post(venue.url + "/info", json={"type": "allMids"}, timeout=5)
    assert r.headers["Connection"] == "keep-alive"


# ---------------------------------------------------------------- WebSocket
def recv_json(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def test_ws_streams_fills_and_order_updates_then_drops(venue: FakeHyperliquidVenue, ex: Exchange,
                                                       wallet: LocalAccount) -> None:
    ex.order("BTC", True, 0.001, 61000, IOC)
    user = wallet.address  # checksummed, as a client may send it
    with connect(venue.url.replace("http", "ws") + "/ws") as ws:
        assert ws.recv(timeout=5) == "Websocket connection established."
        ws.send(json.dumps({"method": "ping"}))
        assert recv_json(ws) == {"channel": "pong"}
        ws.send(json.dumps({"method": "subscribe", "subscription": {"type": "userFills", "user": user}}))
        ack = recv_json(ws)
        assert ack["channel"] == "subscriptionResponse" and ack["data"]["subscription"]["user"] == user
        snapshot = recv_json(ws)
        assert snapshot["channel"] == "userFills" and snapshot["data"]["isSnapshot"] is True
        assert snapshot["data"]["user"] == user and snapshot["data"]["fills"] == venue.fills()
        ws.send(json.dumps({"method": "subscribe", "subscription": {"type": "orderUpdates", "user": user}}))
        assert recv_json(ws)["channel"] == "subscriptionResponse"

        oid = statuses(ex.order("BTC", True, 0.001, 59000, GTC))[0]["resting"]["oid"]
        opened = recv_json(ws)
        assert opened["channel"] == "orderUpdates" and opened["data"][0]["status"] == "open"
        assert opened["data"][0]["order"]["oid"] == oid
        venue.set_mid("BTC", 58990)
        fill_msg, done = recv_json(ws), recv_json(ws)
        assert fill_msg == {"channel": "userFills", "data": {"user": user, "fills": [venue.fills()[-1]]}}
        assert done["data"][0]["status"] == "filled" and done["data"][0]["order"]["sz"] == "0.0"

        ws.send(json.dumps({"method": "bogus"}))
        assert recv_json(ws)["channel"] == "error"
        assert venue.drop_ws() == 1
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        ex.order("BTC", True, 0.001, 61000, IOC)  # meant for nobody now: simply lost
        assert venue.ws_connections == 0


def test_sdk_info_subscription_receives_a_fill(venue: FakeHyperliquidVenue, ex: Exchange,
                                               wallet: LocalAccount) -> None:
    info = Info(base_url=venue.url, skip_ws=False)
    got: list[dict[str, Any]] = []
    fresh = threading.Event()

    def on_fills(msg: dict[str, Any]) -> None:
        got.append(msg)
        if not msg["data"].get("isSnapshot"):
            fresh.set()

    try:
        info.subscribe({"type": "userFills", "user": wallet.address}, on_fills)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:  # the snapshot says the subscription is live
            time.sleep(0.01)
        assert got and got[0]["data"]["isSnapshot"] is True
        ex.order("BTC", True, 0.001, 61000, IOC)
        assert fresh.wait(5)
        assert got[-1]["data"]["fills"][0]["px"] == "60006.0"
    finally:
        info.disconnect_websocket()


def test_ws_user_events_all_mids_and_post(venue: FakeHyperliquidVenue, ex: Exchange, wallet: LocalAccount) -> None:
    user = wallet.address.lower()
    ex.order("BTC", True, 0.01, 61000, IOC)
    with connect(venue.url.replace("http", "ws") + "/ws") as ws:
        ws.recv(timeout=5)
        for sub in ({"type": "userEvents", "user": user}, {"type": "allMids"}):
            ws.send(json.dumps({"method": "subscribe", "subscription": sub}))
            assert recv_json(ws)["channel"] == "subscriptionResponse"
        assert recv_json(ws)["data"]["mids"]["BTC"] == "60000.0"  # allMids right after subscribing
        ws.send(json.dumps({"method": "subscribe", "subscription": {"type": "allMids"}}))
        assert recv_json(ws) == {"channel": "error", "data": 'Already subscribed: {"type":"allMids"}'}
        venue.set_mid("BTC", 59000)
        assert recv_json(ws)["data"]["mids"]["BTC"] == "59000.0"
        venue.settle_funding("BTC", 0.0001)
        funding = recv_json(ws)
        assert funding["channel"] == "user" and funding["data"]["funding"]["usdc"] == "-0.059"
        venue.liquidate("BTC")
        fills, liquidation = recv_json(ws), recv_json(ws)
        assert fills["data"]["fills"][0]["liquidation"]["liquidatedUser"] == user
        assert liquidation["data"]["liquidation"]["liquidated_user"] == user

        ws.send(json.dumps({"method": "post", "id": 7, "request": {"type": "info", "payload": {"type": "allMids"}}}))
        answer = recv_json(ws)
        assert answer["channel"] == "post" and answer["data"]["id"] == 7
        assert answer["data"]["response"]["payload"]["data"]["BTC"] == "59000.0"
        nonce = int(time.time() * 1000) + 5
        action = {"type": "noop"}
        signature = sign_l1_action(wallet, action, None, nonce, None, False)
        payload = {"action": action, "nonce": nonce, "signature": signature, "vaultAddress": None, "expiresAfter": None}
        ws.send(json.dumps({"method": "post", "id": 8, "request": {"type": "action", "payload": payload}}))
        answer = recv_json(ws)
        assert answer["data"] == {"id": 8, "response": {"type": "action",
                                                        "payload": {"status": "ok", "response": {"type": "default"}}}}
        ws.send(json.dumps({"method": "unsubscribe", "subscription": {"type": "allMids"}}))
        assert recv_json(ws)["data"]["method"] == "unsubscribe"
        ws.send(json.dumps({"method": "unsubscribe", "subscription": {"type": "allMids"}}))
        assert recv_json(ws) == {"channel": "error", "data": 'Already unsubscribed: {"type":"allMids"}'}


def test_depth_caps_what_a_taker_order_takes(wallet: LocalAccount) -> None:
    with FakeHyperliquidVenue(user=wallet.address, depth={"BTC": 0.002}) as venue:
        ex = Exchange(wallet, base_url=venue.url)
        assert statuses(ex.order("BTC", True, 0.005, 61000, IOC))[0]["filled"]["totalSz"] == "0.002"
        [rest] = statuses(ex.order("BTC", True, 0.005, 61000, GTC))
        assert "resting" in rest and venue.position("BTC") == pytest.approx(0.004)
        assert venue.open_orders()[0]["sz"] == "0.003" and venue.open_orders()[0]["origSz"] == "0.005"

"""Hyperliquid normaliser: trades, full-snapshot books and polled funding contexts."""

from __future__ import annotations

import json

import pytest

from helpers import plain_rows
from varon_cli.errors import UsageError
from varon_cli.feeds.hyperliquid import HyperliquidFeed, coin_of, info_url_for

ALL = frozenset({"trades", "book", "funding"})


def trades_frame(*trades: dict) -> str:
    return json.dumps({"channel": "trades", "data": list(trades)})


def trade(tid: int, side: str = "B", coin: str = "BTC", time: int = 1788490042052, px: str = "80639.0") -> dict:
    return {"coin": coin, "side": side, "px": px, "sz": "0.00022", "time": time, "hash": "0x" + "0" * 64,
            "tid": tid, "users": ["0xa", "0xb"]}


def test_symbols_map_to_coins_and_back() -> None:
    feed = HyperliquidFeed(["BTC", "ETH-USD"], ALL)
    assert feed.coins == ["BTC", "ETH"] and feed.symbols == ["BTC-USD", "ETH-USD"]
    with pytest.raises(UsageError):
        coin_of("BTC-EUR")
    assert info_url_for("wss://api.hyperliquid.xyz/ws") == "https://api.hyperliquid.xyz"
    assert info_url_for("ws://127.0.0.1:9000/ws") == "http://127.0.0.1:9000"


def test_trades_use_the_aggressor_side_and_millisecond_times() -> None:
    feed = HyperliquidFeed(["BTC"], ALL)
    feed.on_connect(0)
    feed.on_frame("Websocket connection established.", 1)
    feed.on_frame(trades_frame(trade(5, "A", time=1788490042053), trade(4, "B")), 2)
    rows = plain_rows(feed.take_batches()[0])
    assert [(r["trade_id"], r["side"], r["ts"]) for r in rows] == [
        ("4", "buy", 1788490042052 * 10**6), ("5", "sell", 1788490042053 * 10**6)]
    assert rows[0]["symbol"] == "BTC-USD" and rows[0]["venue"] == "hyperliquid" and rows[0]["seq"] is None
    assert feed.stats.malformed == 0


def test_the_subscription_snapshot_after_a_reconnect_repeats_nothing() -> None:
    feed = HyperliquidFeed(["BTC"], ALL)
    feed.on_connect(0)
    feed.on_frame(trades_frame(trade(1), trade(2, time=1788490042060)), 1)
    feed.on_connect(2)
    feed.on_frame(trades_frame(trade(2, time=1788490042060), trade(3, time=1788490042070)), 3)
    assert [r["trade_id"] for r in plain_rows(feed.take_batches()[0])] == ["1", "2", "3"]
    assert feed.stats.duplicates == 1


def test_every_book_push_is_a_snapshot() -> None:
    feed = HyperliquidFeed(["BTC"], ALL)
    feed.on_frame(json.dumps({"channel": "l2Book", "data": {"coin": "BTC", "time": 1677700000000, "levels": [
        [{"px": "19900.0", "sz": "1.0", "n": 1}, {"px": "19899.0", "sz": "2.0", "n": 3}],
        [{"px": "20100.0", "sz": "1.5", "n": 1}]]}}), 5)
    rows = plain_rows(feed.take_batches()[1])
    assert [(r["side"], r["price"], r["size"]) for r in rows] == [("bid", 19900.0, 1.0), ("bid", 19899.0, 2.0),
                                                                  ("ask", 20100.0, 1.5)]
    assert all(r["snapshot"] and r["ts"] == 1677700000000 * 10**6 for r in rows)


def test_funding_rows_come_from_meta_and_asset_contexts() -> None:
    feed = HyperliquidFeed(["ETH"], ALL)
    body = json.dumps([{"universe": [{"name": "BTC", "szDecimals": 5}, {"name": "ETH", "szDecimals": 4}]},
                       [{"funding": "0.0000125", "openInterest": "10", "markPx": "60000", "oraclePx": "60001",
                         "premium": None, "midPx": None, "impactPxs": None, "dayNtlVlm": "1"},
                        {"funding": "-0.00002", "openInterest": "688.11", "markPx": "3000.5", "oraclePx": "3000.1",
                         "premium": "0.0003", "midPx": "3000.4", "dayNtlVlm": "5"}]]).encode()
    feed.on_rest("metaAndAssetCtxs", body, 42)
    rows = plain_rows(feed.take_batches()[2])
    assert rows == [{"ts": 42, "recv_ts": 42, "venue": "hyperliquid", "symbol": "ETH-USD", "funding_rate": -0.00002,
                     "premium": 0.0003, "mark_price": 3000.5, "oracle_price": 3000.1, "open_interest": 688.11}]


@pytest.mark.parametrize("frame, counter", [
    ('{"channel":"trades","data":[{"coin":"BTC"', "malformed"),
    ('{"channel":"error","data":"Invalid subscription {\\"type\\":\\"trades\\",\\"coin\\":\\"NOPE\\"}"}', "errors"),
    ('{"channel":"weird","data":{}}', "unknown"),
    (trades_frame({"coin": "BTC", "side": "B", "px": "1"}), "malformed"),
    (trades_frame(trade(1, px="abc")), "bad_values"),
    (trades_frame(trade(1, side="X")), "bad_values"),
    (trades_frame(trade(1, coin="DOGE")), "unknown"),
])
def test_bad_frames_are_counted_and_skipped(frame: str, counter: str) -> None:
    feed = HyperliquidFeed(["BTC"], ALL)
    feed.on_frame(frame, 1)
    assert getattr(feed.stats, counter) == 1
    assert feed.take_batches()[0] is None


def test_subscriptions_and_keepalive() -> None:
    feed = HyperliquidFeed(["BTC", "ETH"], frozenset({"trades", "book"}))
    subs = [json.loads(m) for m in feed.subscribe_messages()]
    assert {(s["subscription"]["type"], s["subscription"]["coin"]) for s in subs} == {
        ("trades", "BTC"), ("trades", "ETH"), ("l2Book", "BTC"), ("l2Book", "ETH")}
    assert all(s["method"] == "subscribe" for s in subs)
    assert json.loads(feed.keepalive_message()) == {"method": "ping"}

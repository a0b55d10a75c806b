"""Coinbase normalisers: wire frames in, the trades/book contract out, every problem counted."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import plain_rows
from varon_cli.feeds.coinbase import CoinbaseAdvanced, CoinbaseExchange

# the first 3,000 lines of cryptofeed's real Coinbase Exchange capture (see data/PROVENANCE.md)
CAPTURE = Path(__file__).resolve().parent / "data" / "coinbase-exchange-capture-head.txt.zst"
TRADES_BOOK = frozenset({"trades", "book"})


def at_frame(seq: int, channel: str, events: list, ts: str = "2026-04-07T14:30:00.123456789Z") -> str:
    return json.dumps({"channel": channel, "client_id": "", "timestamp": ts, "sequence_num": seq, "events": events})


def at_trade(tid: int, product: str = "BTC-USD", price: str = "100.5", side: str = "BUY",
             time: str = "2026-04-07T14:30:00.5Z") -> dict:
    return {"trade_id": str(tid), "product_id": product, "price": price, "size": "0.25", "side": side, "time": time}


def trades_of(norm) -> list[dict]:
    return plain_rows(norm.take_batches()[0])


def test_advanced_trades_carry_the_taker_side_event_time_and_sequence() -> None:
    norm = CoinbaseAdvanced(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(at_frame(0, "market_trades", [{"type": "update", "trades": [
        at_trade(7, side="BUY"), at_trade(8, side="SELL", time="2026-04-07T14:30:01.000000001Z")]}]), 99)
    rows = trades_of(norm)
    assert [r["trade_id"] for r in rows] == ["7", "8"]
    assert [r["side"] for r in rows] == ["sell", "buy"]  # the wire side is the maker's
    assert rows[1]["ts"] == int(datetime(2026, 4, 7, 14, 30, 1, tzinfo=timezone.utc).timestamp()) * 10**9 + 1 and rows[0]["recv_ts"] == 99
    assert all(r["venue"] == "coinbase" and r["seq"] == 0 for r in rows)


def test_advanced_snapshot_is_emitted_oldest_first_and_repeats_after_reconnect_are_removed() -> None:
    norm = CoinbaseAdvanced(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(at_frame(0, "market_trades", [{"type": "snapshot", "trades": [at_trade(3), at_trade(2), at_trade(1)]}]), 1)
    norm.on_connect(2)  # reconnect: the new snapshot overlaps what we had
    norm.on_frame(at_frame(0, "market_trades", [{"type": "snapshot", "trades": [at_trade(5), at_trade(4), at_trade(3)]}]), 3)
    assert [r["trade_id"] for r in trades_of(norm)] == ["1", "2", "3", "4", "5"]
    assert norm.stats.duplicates == 1
    assert norm.stats.trade_gaps == {}


def test_advanced_sequence_gap_is_counted_and_asks_for_a_reconnect() -> None:
    norm = CoinbaseAdvanced(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(at_frame(0, "market_trades", [{"type": "update", "trades": [at_trade(1)]}]), 1)
    norm.on_frame(at_frame(3, "market_trades", [{"type": "update", "trades": [at_trade(2)]}]), 2)
    assert norm.stats.sequence_gaps == 1
    requests = norm.take_requests()
    assert [r.action for r in requests] == ["reconnect"]
    # the frame after the gap still counts: its trade is real
    assert [r["trade_id"] for r in trades_of(norm)] == ["1", "2"]
    # an old frame is ignored, not a gap
    norm.on_frame(at_frame(2, "market_trades", [{"type": "update", "trades": [at_trade(9)]}]), 3)
    assert trades_of(norm) == [] and norm.stats.sequence_gaps == 1


def test_advanced_trade_id_gap_is_counted_per_product() -> None:
    norm = CoinbaseAdvanced(["BTC-USD", "ETH-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(at_frame(0, "market_trades", [{"type": "update", "trades": [at_trade(1), at_trade(50, "ETH-USD")]}]), 1)
    norm.on_frame(at_frame(1, "market_trades", [{"type": "update", "trades": [at_trade(4), at_trade(51, "ETH-USD")]}]), 2)
    assert norm.stats.trade_gaps == {"BTC-USD": 1}
    assert norm.stats.missed_trades == {"BTC-USD": 2}


def test_advanced_heartbeat_counter_jump_is_counted_and_string_counters_accepted() -> None:
    norm = CoinbaseAdvanced(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    for seq, counter in enumerate(["10", 11, 14]):
        norm.on_frame(at_frame(seq, "heartbeats", [{"current_time": "x", "heartbeat_counter": counter}]), seq)
    assert norm.stats.heartbeat_gaps == 1


def test_advanced_book_snapshot_then_updates_and_no_updates_without_a_snapshot() -> None:
    norm = CoinbaseAdvanced(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    update = {"type": "update", "product_id": "BTC-USD", "updates": [
        {"side": "offer", "event_time": "2026-04-07T14:30:01Z", "price_level": "101", "new_quantity": "0"}]}
    norm.on_frame(at_frame(0, "l2_data", [update]), 1)  # before any snapshot: ignored
    snapshot = {"type": "snapshot", "product_id": "BTC-USD", "updates": [
        {"side": "bid", "event_time": "1970-01-01T00:00:00Z", "price_level": "100", "new_quantity": "2"},
        {"side": "offer", "event_time": "1970-01-01T00:00:00Z", "price_level": "101", "new_quantity": "3"}]}
    norm.on_frame(at_frame(1, "l2_data", [snapshot]), 2)
    norm.on_frame(at_frame(2, "l2_data", [update]), 3)
    book = plain_rows(norm.take_batches()[1])
    assert [(r["side"], r["price"], r["size"], r["snapshot"]) for r in book] == [
        ("bid", 100.0, 2.0, True), ("ask", 101.0, 3.0, True), ("ask", 101.0, 0.0, False)]
    # the 1970 event_time of a snapshot is replaced by the frame's timestamp
    assert book[0]["ts"] == 1775572200123456789


@pytest.mark.parametrize("frame, counter", [
    ('{"channel": "market_trades", "events": [', "malformed"),
    ('{"channel": "rfq_matches", "sequence_num": 0, "events": []}', "unknown"),
    ('{"type": "error", "message": "Failed to subscribe", "reason": "XRP-USD is not a valid product"}', "errors"),
    (at_frame(0, "market_trades", [{"type": "update", "trades": [{"trade_id": "1", "product_id": "BTC-USD"}]}]), "malformed"),
])
def test_advanced_bad_frames_are_counted_and_skipped(frame: str, counter: str) -> None:
    norm = CoinbaseAdvanced(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(frame, 1)
    assert getattr(norm.stats, counter) == 1
    norm.on_frame(at_frame(1, "market_trades", [{"type": "update", "trades": [at_trade(1)]}]), 2)
    assert len(trades_of(norm)) == 1  # and the collector carries on


def test_advanced_bad_price_and_unknown_product_skip_only_that_trade() -> None:
    norm = CoinbaseAdvanced(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(at_frame(0, "market_trades", [{"type": "update", "trades": [
        at_trade(1, price="abc"), at_trade(2, price="nan"), at_trade(3, product="XRP-USD"), at_trade(4)]}]), 1)
    assert [r["trade_id"] for r in trades_of(norm)] == ["4"]
    assert norm.stats.bad_values == 2 and norm.stats.unknown == 1


def test_advanced_subscribes_one_channel_per_message_with_heartbeats() -> None:
    messages = [json.loads(m) for m in CoinbaseAdvanced(["BTC-USD", "ETH-USD"], TRADES_BOOK).subscribe_messages()]
    assert messages == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"},
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "subscribe", "channel": "heartbeats"},
    ]


def _capture_frames() -> list[tuple[int, bytes]]:
    frames = []
    import zstandard

    for line in zstandard.ZstdDecompressor().decompress(CAPTURE.read_bytes()).splitlines():
        if not line.strip() or line.startswith(b"wss://"):
            continue
        stamp, _, frame = line.partition(b": ")
        frames.append((int(float(stamp) * 1e9), frame))
    return frames


def test_exchange_feed_normalises_the_real_capture_exactly() -> None:
    frames = _capture_frames()
    products = sorted({json.loads(f)["product_id"] for _, f in frames if b'"product_id"' in f})
    norm = CoinbaseExchange(products, TRADES_BOOK)
    norm.on_connect(0)
    for recv, frame in frames:
        norm.on_frame(frame, recv)
    trades, book, _ = norm.take_batches()
    # the expectation, computed independently with the json module
    messages = [json.loads(f) for _, f in frames]
    matches = [m for m in messages if m["type"] in ("match", "last_match")]
    levels = sum(len(m["changes"]) for m in messages if m["type"] == "l2update")
    levels += sum(len(m["bids"]) + len(m["asks"]) for m in messages if m["type"] == "snapshot")
    assert trades.num_rows == len(matches) == 31
    assert book.num_rows == levels
    assert trades.column("trade_id").to_pylist() == [str(m["trade_id"]) for m in matches]
    assert trades.column("side").to_pylist() == [{"buy": "sell", "sell": "buy"}[m["side"]] for m in matches]
    assert trades.column("price").to_pylist() == [float(m["price"]) for m in matches]
    assert norm.stats.malformed == norm.stats.unknown == norm.stats.bad_values == 0
    assert norm.stats.trade_gaps == {}


def ex_match(tid: int, seq: int, product: str = "BTC-USD", kind: str = "match") -> str:
    return json.dumps({"type": kind, "trade_id": tid, "sequence": seq, "maker_order_id": "a", "taker_order_id": "b",
                       "time": "2014-11-07T08:19:27.028459Z", "product_id": product, "size": "5.23512",
                       "price": "400.23", "side": "sell"})


def test_exchange_trade_gap_refreshes_only_that_product() -> None:
    norm = CoinbaseExchange(["BTC-USD", "ETH-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(ex_match(10, 100, kind="last_match"), 1)
    norm.on_frame(ex_match(500, 7, "ETH-USD"), 2)
    norm.on_frame(ex_match(13, 130), 3)
    norm.on_frame(ex_match(501, 9, "ETH-USD"), 4)
    assert norm.stats.trade_gaps == {"BTC-USD": 1} and norm.stats.missed_trades == {"BTC-USD": 2}
    requests = norm.take_requests()
    assert [(r.action, r.product) for r in requests] == [("resubscribe", "BTC-USD")]
    unsub, sub = (json.loads(m) for m in norm.resubscribe_messages("BTC-USD"))
    assert unsub["type"] == "unsubscribe" and sub["type"] == "subscribe"
    assert all(c["product_ids"] == ["BTC-USD"] for c in sub["channels"])


def test_exchange_heartbeat_ahead_of_matches_is_a_gap() -> None:
    norm = CoinbaseExchange(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(ex_match(10, 100), 1)
    norm.on_frame(json.dumps({"type": "heartbeat", "sequence": 120, "last_trade_id": 10, "product_id": "BTC-USD",
                              "time": "2014-11-07T08:19:28.464459Z"}), 2)
    assert norm.stats.trade_gaps == {}
    norm.on_frame(json.dumps({"type": "heartbeat", "sequence": 130, "last_trade_id": 12, "product_id": "BTC-USD",
                              "time": "2014-11-07T08:19:29.464459Z"}), 3)
    assert norm.stats.trade_gaps == {"BTC-USD": 1} and norm.stats.missed_trades == {"BTC-USD": 2}


def test_exchange_repeated_last_match_after_resubscribe_is_removed() -> None:
    norm = CoinbaseExchange(["BTC-USD"], TRADES_BOOK)
    norm.on_connect(0)
    norm.on_frame(ex_match(10, 100), 1)
    norm.on_connect(2)
    norm.on_frame(ex_match(10, 100, kind="last_match"), 3)
    norm.on_frame(ex_match(11, 110), 4)
    assert [r["trade_id"] for r in trades_of(norm)] == ["10", "11"]
    assert norm.stats.duplicates == 1

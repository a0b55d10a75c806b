"""Tests of the fake exchange WebSocket servers themselves, with a plain client.

They pin the wire shapes (so the real clients are tested against the real
protocols), the sequence numbering, each fault, and the sent-trade accounting
the collector tests rely on.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from fakes.coinbase_ws import AdvancedTradeFake, CoinbaseWsFake, ExchangeFeedFake, Fault, iso_micro
from fakes.hyperliquid_ws import GREETING, HyperliquidWsFake
from fakes.tape import SyntheticBook, price_decimals, synthetic_tape, tape_from_parquet

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "btcusdt-trades.parquet"
RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
ISO_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
GO_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? \+0000 UTC m=\+\d+\.\d{9}$")
HEX = lambda n: re.compile(rf"^0x[0-9a-f]{{{n}}}$")  # noqa: E731


# ------------------------------------------------------------------ client helpers


def send(ws: ClientConnection, msg: dict[str, Any]) -> None:
    ws.send(json.dumps(msg))


def recv(ws: ClientConnection, timeout: float = 2.0) -> Any:
    text = ws.recv(timeout=timeout)
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_until(ws: ClientConnection, done: Callable[[list[Any]], bool], timeout: float = 5.0) -> list[Any]:
    """Frames received until `done(frames)` holds; fails with what arrived if it never does."""
    frames: list[Any] = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        left = deadline - time.monotonic()
        assert left > 0, f"gave up after {timeout}s; last frames: {frames[-5:]}"
        try:
            frames.append(recv(ws, timeout=left))
        except TimeoutError:
            continue
    return frames


def read_quiet(ws: ClientConnection, quiet: float = 0.2, limit: float = 3.0) -> list[Any]:
    """Frames received until none arrives for `quiet` seconds (or `limit` passes)."""
    frames = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            frames.append(recv(ws, timeout=quiet))
        except TimeoutError:
            break
    return frames


def at_trades(frames: list[Any]) -> list[dict[str, Any]]:
    return [t for f in frames if isinstance(f, dict) and f.get("channel") == "market_trades"
            for e in f["events"] for t in e["trades"]]


def ids(tape: list[Any], product: str) -> list[int]:
    return [t.trade_id for t in tape if t.product == product]


def book_strings(fake: Any, product: str, bid: str, ask: str) -> dict[tuple[str, str], str]:
    book = fake.books[product]
    bids, asks = book.levels()
    return {**{(bid, book.price(px)): f"{sz:.8f}" for px, sz in bids},
            **{(ask, book.price(px)): f"{sz:.8f}" for px, sz in asks}}


# ------------------------------------------------------------------------- tape


def test_synthetic_tape_is_deterministic_with_contiguous_ids() -> None:
    a = synthetic_tape(["BTC-USD", "ETH-USD"], 100, seed=7)
    assert a == synthetic_tape(["BTC-USD", "ETH-USD"], 100, seed=7)
    assert a != synthetic_tape(["BTC-USD", "ETH-USD"], 100, seed=8)
    assert [t.time_ns for t in a] == sorted(t.time_ns for t in a)
    btc, eth = ids(a, "BTC-USD"), ids(a, "ETH-USD")
    assert btc == list(range(btc[0], btc[0] + 100)) and eth == list(range(eth[0], eth[0] + 100))
    assert not set(btc) & set(eth)
    assert {t.taker_side for t in a} == {"buy", "sell"}
    assert all(t.price > 0 and t.size > 0 for t in a)


def test_tape_from_parquet_replays_the_bundled_prints() -> None:
    tape = tape_from_parquet(SAMPLE, "BTC-USD")
    assert len(tape) == 2001
    assert [t.trade_id for t in tape] == list(range(553287559, 553287559 + 2001))
    first = tape[0]
    assert (first.product, first.price, first.size, first.taker_side) == ("BTC-USD", 39432.48, 0.000263, "sell")
    assert first.time_ns == 1_610_064_000_278_000_000  # 2021-01-08T00:00:00.278Z
    assert price_decimals(tape) == 2


def test_book_follows_trades_uncrossed_touching_few_levels() -> None:
    tape = synthetic_tape(["BTC-USD"], 300, seed=3)
    book = SyntheticBook(price_decimals(tape), depth=10, seed=1)
    book.seed(tape[0].price)
    mirror = {("bid", px): sz for px, sz in book.bids.items()} | {("ask", px): sz for px, sz in book.asks.items()}
    prev = tape[0]
    for trade in tape:
        changes = book.apply(trade)
        move = abs(book.ticks(trade.price) - book.ticks(prev.price))
        if move == 0 and trade.taker_side == prev.taker_side:
            assert len(changes) == 1  # the same touch traded again: only its size changes
        assert 1 <= len(changes) <= 4 * (move + 1) + 1, changes
        prev = trade
        for side, px, sz in changes:
            if sz == 0:
                del mirror[(side, px)]
            else:
                mirror[(side, px)] = sz
        bids, asks = book.levels()
        assert len(bids) == len(asks) == 10
        assert bids[0][0] < asks[0][0]
        maker_best = asks[0][0] if trade.taker_side == "buy" else bids[0][0]
        assert maker_best == book.ticks(trade.price)
        assert mirror == {("bid", px): sz for px, sz in bids} | {("ask", px): sz for px, sz in asks}


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("explode", after_trades=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault("drop")
    with pytest.raises(ValueError):
        Fault("malformed", after_frames=1, variant="nonsense")
    with pytest.raises(ValueError):
        Fault("reject_subscription")


# ------------------------------------------------------------ market clock


def test_market_runs_without_clients_and_wait_done() -> None:
    tape = synthetic_tape(["BTC-USD"], 20)
    with CoinbaseWsFake("advanced", tape, rate=200, start="serve") as fake:
        fake.wait_done(2)  # nobody connected: released is enough
        assert fake.released == 20 and fake.connections == 0
        assert fake.sent_trade_ids("BTC-USD") == set()
    with CoinbaseWsFake("exchange", tape, rate=200, start="manual") as fake:
        with connect(fake.url) as ws:
            send(ws, {"type": "subscribe", "channels": [{"name": "matches", "product_ids": ["BTC-USD"]}]})
            time.sleep(0.1)
            assert fake.released == 0
            with pytest.raises(TimeoutError, match="released 0/20"):
                fake.wait_done(0.1)
            fake.start_market()
            fake.wait_done(2)
            assert fake.sent_trade_ids("BTC-USD") == set(ids(tape, "BTC-USD"))
            frames = read_until(ws, lambda fs: sum(f["type"] == "match" for f in fs) == 20)
            assert frames[0] == {"type": "subscriptions", "channels": [{"name": "matches", "product_ids": ["BTC-USD"]}]}


# ------------------------------------------------------------ Advanced Trade


def test_advanced_trade_stream_shapes_sequence_and_accounting() -> None:
    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 40, seed=1)
    history = tape[:10]
    fake = CoinbaseWsFake("advanced", tape, rate=400, heartbeat_interval=0.05, history=10, snapshot_trades=3)
    assert isinstance(fake, AdvancedTradeFake)
    with fake, connect(fake.url) as ws:
        send(ws, {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"})
        send(ws, {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"})
        send(ws, {"type": "subscribe", "channel": "heartbeats"})
        fake.wait_done(5)
        sent = fake.sent_trade_ids("BTC-USD") | fake.sent_trade_ids("ETH-USD")
        # A heartbeat after the last trade means the last l2_data update is in too.
        frames = read_until(ws, lambda fs: {int(t["trade_id"]) for t in at_trades(fs)} >= sent
                            and sum(f["channel"] == "heartbeats" for f in fs) >= 3
                            and fs[-1]["channel"] == "heartbeats")

    assert [f["sequence_num"] for f in frames] == list(range(len(frames)))
    for f in frames:
        assert list(f) == ["channel", "client_id", "timestamp", "sequence_num", "events"]
        assert f["client_id"] == "" and RFC3339_NANO.match(f["timestamp"]), f

    # The market_trades snapshots come first, before the ack (the observed order).
    assert [f["channel"] for f in frames[:3]] == ["market_trades", "market_trades", "subscriptions"]
    acks = [f["events"][0]["subscriptions"] for f in frames if f["channel"] == "subscriptions"]
    both = ["BTC-USD", "ETH-USD"]
    assert acks == [{"market_trades": both}, {"level2": both, "market_trades": both},
                    {"heartbeats": ["heartbeats"], "level2": both, "market_trades": both}]
    by_id = {(t.product, t.trade_id): t for t in tape}
    for f in frames[:2]:
        (event,) = f["events"]
        product = event["trades"][0]["product_id"]
        assert event["type"] == "snapshot"
        assert [int(t["trade_id"]) for t in event["trades"]] == ids(history, product)[-3:][::-1]

    # Trades: strings, maker side, exact values; every released trade after the snapshot arrives once.
    trades = at_trades(frames)
    for t in trades:
        assert list(t) == ["trade_id", "product_id", "price", "size", "side", "time"]
        src = by_id[(t["product_id"], int(t["trade_id"]))]
        assert t["side"] == {"buy": "SELL", "sell": "BUY"}[src.taker_side]
        assert float(t["price"]) == src.price and float(t["size"]) == src.size
        assert ISO_MICRO.match(t["time"]) and t["time"] == iso_micro(src.time_ns)
    got = [int(t["trade_id"]) for t in trades]
    assert len(got) == len(set(got))
    expected = {t.trade_id for t in tape} - {i for p in both for i in ids(history, p)[:-3]}
    assert set(got) == sent == expected

    # level2 arrives on l2_data; snapshot + updates rebuild the fake's book.
    for product in both:
        mirror: dict[tuple[str, str], str] = {}
        events = [e for f in frames if f["channel"] == "l2_data" for e in f["events"] if e["product_id"] == product]
        assert events[0]["type"] == "snapshot" and {e["type"] for e in events[1:]} == {"update"}
        for e in events:
            for u in e["updates"]:
                assert list(u) == ["side", "event_time", "price_level", "new_quantity"]
                if float(u["new_quantity"]) == 0:
                    mirror.pop((u["side"], u["price_level"]))
                else:
                    mirror[(u["side"], u["price_level"])] = u["new_quantity"]
        assert mirror == book_strings(fake, product, "bid", "offer")

    beats = [f["events"][0] for f in frames if f["channel"] == "heartbeats"]
    assert [b["heartbeat_counter"] for b in beats] == list(range(1, len(beats) + 1))
    assert all(GO_TIME.match(b["current_time"]) for b in beats), beats[0]


def test_advanced_trade_options_errors_and_unsubscribe() -> None:
    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 200, seed=2)
    with CoinbaseWsFake("advanced", tape, rate=100, snapshot_first=False, client_id=False) as fake:
        fake.reject_subscription("ETH-USD")
        with connect(fake.url) as ws:
            send(ws, {"type": "subscribe", "product_ids": ["BTC-USD", "XRP-USD", "ETH-USD"], "channel": "market_trades"})
            first = [recv(ws) for _ in range(4)]
            assert first[:2] == [
                {"type": "error", "message": "Failed to subscribe", "reason": "XRP-USD is not a valid product"},
                {"type": "error", "message": "Failed to subscribe", "reason": "ETH-USD is not a valid product"},
            ]
            ack, snapshot = first[2:]
            assert "client_id" not in ack and ack["sequence_num"] == 0  # errors take no sequence number
            assert ack["events"] == [{"subscriptions": {"market_trades": ["BTC-USD"]}}]
            assert snapshot["channel"] == "market_trades" and snapshot["sequence_num"] == 1
            assert fake.faults_done["reject_subscription"] == 1
            live = read_until(ws, lambda fs: len(at_trades(fs)) >= 3)
            assert {t["product_id"] for t in at_trades(live)} == {"BTC-USD"}
            send(ws, {"type": "unsubscribe", "channel": "market_trades"})
            tail = read_until(ws, lambda fs: fs and fs[-1]["channel"] == "subscriptions")
            assert tail[-1]["events"] == [{"subscriptions": {}}]
            released = fake.released
            time.sleep(0.15)
            assert fake.released > released  # the market goes on...
            assert read_quiet(ws, 0.1) == []  # ...but nothing is sent any more


def test_advanced_trade_closes_a_silent_connection() -> None:
    with CoinbaseWsFake("advanced", synthetic_tape(n_per_product=5), subscribe_timeout=0.2) as fake:
        with connect(fake.url) as silent, connect(fake.url) as active:
            send(active, {"type": "subscribe", "channel": "heartbeats"})
            t0 = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                silent.recv(timeout=2)
            assert 0.15 < time.monotonic() - t0 < 1.5
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert recv(active)["channel"] == "subscriptions"
            active.send('{"type":"subscribe","channel":"heartbeats"}')  # still open
            assert recv(active)["channel"] == "subscriptions"


def test_advanced_trade_skip_sequence_leaves_a_real_gap() -> None:
    tape = synthetic_tape(["BTC-USD"], 30)
    with CoinbaseWsFake("advanced", tape, plan=[Fault("skip_sequence", after_trades=10)]) as fake:
        with connect(fake.url) as ws:
            send(ws, {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
            fake.wait_done(3)
            frames = read_until(ws, lambda fs: any(t["trade_id"] == str(tape[-1].trade_id) for t in at_trades(fs)))
    seqs = [f["sequence_num"] for f in frames]
    gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
    assert len(gaps) == 1 and gaps[0][1] == gaps[0][0] + 2
    skipped = tape[10].trade_id
    assert [int(t["trade_id"]) for t in at_trades(frames)] == [t.trade_id for t in tape if t.trade_id != skipped]
    assert fake.sent_trade_ids("BTC-USD") == {t.trade_id for t in tape} - {skipped}
    assert fake.faults_done["skip_sequence"] == 1


def test_skip_sequence_method_skips_an_update_not_a_heartbeat() -> None:
    tape = synthetic_tape(["BTC-USD"], 10)
    with CoinbaseWsFake("advanced", tape, start="manual", heartbeat_interval=0.03) as fake, connect(fake.url) as ws:
        send(ws, {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
        send(ws, {"type": "subscribe", "channel": "heartbeats"})
        frames = read_until(ws, lambda fs: sum(f["channel"] == "subscriptions" for f in fs) == 2)
        assert fake.skip_sequence() == 1
        frames += read_until(ws, lambda fs: sum(f["channel"] == "heartbeats" for f in fs) >= 3)
        fake.start_market()
        fake.wait_done(2)
        frames += read_until(ws, lambda fs: str(tape[-1].trade_id) in {t["trade_id"] for t in at_trades(fs)})
    seqs = [f["sequence_num"] for f in frames]
    gaps = [i for i, (a, b) in enumerate(zip(seqs, seqs[1:]), 1) if b != a + 1]
    assert len(gaps) == 1 and frames[gaps[0]]["channel"] == "market_trades"  # heartbeats went through
    assert [int(t["trade_id"]) for t in at_trades(frames)] == ids(tape, "BTC-USD")[1:]


def test_advanced_trade_batches_trades_per_frame() -> None:
    tape = synthetic_tape(["BTC-USD"], 50)
    with CoinbaseWsFake("advanced", tape, trades_per_frame=5) as fake, connect(fake.url) as ws:
        send(ws, {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
        frames = read_until(ws, lambda fs: len(at_trades(fs)) == 50)
    updates = [f["events"][0]["trades"] for f in frames if f["channel"] == "market_trades"
               and f["events"][0]["type"] == "update"]
    assert [len(u) for u in updates] == [5] * 10
    assert [int(t["trade_id"]) for u in updates for t in u] == ids(tape, "BTC-USD")


def test_drop_mid_stream_then_reconnect_misses_trades() -> None:
    tape = synthetic_tape(["BTC-USD"], 80)
    plan = [Fault("drop", after_trades=20, connection=0)]
    with CoinbaseWsFake("advanced", tape, rate=200, snapshot_trades=5, plan=plan) as fake:
        sub = {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"}
        first: list[Any] = []
        with connect(fake.url) as ws:
            send(ws, sub)
            with pytest.raises(ConnectionClosedError) as dropped:
                while True:
                    first.append(recv(ws))
            assert dropped.value.rcvd is None  # no close frame: an abrupt drop
        got1 = [int(t["trade_id"]) for t in at_trades(first)]
        assert got1 == ids(tape, "BTC-USD")[:20]  # everything up to the fault, nothing after
        time.sleep(0.15)  # trades keep printing while we are away
        with connect(fake.url) as ws:
            send(ws, sub)
            fake.wait_done(3)
            second = read_until(ws, lambda fs: str(tape[-1].trade_id) in {t["trade_id"] for t in at_trades(fs)})
        got2 = [int(t["trade_id"]) for t in at_trades(second)]
        snapshot = second[0]["events"][0]
        assert snapshot["type"] == "snapshot" and len(snapshot["trades"]) == 5
        missed = set(ids(tape, "BTC-USD")) - set(got1) - set(got2)
        assert missed and min(missed) == 20 + tape[0].trade_id
        assert fake.sent_trade_ids("BTC-USD") == set(got1) | set(got2)
        assert fake.faults_done["drop"] == 1 and fake.connections == 2


def test_stall_holds_frames_and_heartbeats_then_flushes() -> None:
    tape = synthetic_tape(["BTC-USD"], 60)
    with CoinbaseWsFake("advanced", tape, rate=60, heartbeat_interval=0.05) as fake, connect(fake.url) as ws:
        send(ws, {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
        send(ws, {"type": "subscribe", "channel": "heartbeats"})
        frames = read_until(ws, lambda fs: len(at_trades(fs)) >= 3)
        assert fake.stall(0.5) == 1
        t0 = time.monotonic()
        frames += read_quiet(ws, 0.15)  # at most what was already in flight
        assert time.monotonic() - t0 < 0.4
        frames.append(recv(ws))
        assert time.monotonic() - t0 >= 0.45  # nothing at all during the stall
        burst = read_quiet(ws, 0.01)
        assert len(at_trades(frames[-1:] + burst)) >= 10  # the queued trades, all at once
        # A stalled server makes no heartbeats (rather than queueing ten of them).
        assert sum(f["channel"] == "heartbeats" for f in frames[-1:] + burst) <= 2
        frames += burst
        assert fake.faults_done["stall"] == 1
    assert [f["sequence_num"] for f in frames] == list(range(len(frames)))  # a stall is not a gap
    beats = [f["events"][0]["heartbeat_counter"] for f in frames if f["channel"] == "heartbeats"]
    assert beats == list(range(1, len(beats) + 1))


def test_sent_accounting_is_exact_when_a_backed_up_connection_drops() -> None:
    """A client that stops reading backs frames up inside the fake; dropping it
    loses those. sent_trade_ids must be exactly what the client can still read."""
    tape = synthetic_tape(["BTC-USD"], 3000)
    with CoinbaseWsFake("advanced", tape, start="manual", send_buffer=4096) as fake:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", fake.port))
        with connect(fake.url, sock=sock, max_queue=1) as ws:
            send(ws, {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
            assert [recv(ws)["channel"] for _ in range(2)] == ["market_trades", "subscriptions"]
            fake.start_market()  # the client reads nothing from here on
            deadline = time.monotonic() + 5
            while fake.released < 3000 and time.monotonic() < deadline:
                time.sleep(0.02)
            with pytest.raises(TimeoutError, match="connection 0"):
                fake.wait_done(0.2)  # frames are stuck in the fake
            assert fake.drop() == 1
            got: set[int] = set()
            with pytest.raises(ConnectionClosedError):
                while True:
                    got |= {int(t["trade_id"]) for t in recv(ws)["events"][0]["trades"]}
        sent = fake.sent_trade_ids("BTC-USD")
        assert sent == got and 0 < len(sent) < 3000
        fake.wait_done(1)  # nobody is left to push to


# ------------------------------------------------------------------ Exchange


def test_exchange_stream_shapes_sequence_and_heartbeats() -> None:
    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 30, seed=5)
    history = tape[:6]
    fake = CoinbaseWsFake("exchange", tape, rate=400, heartbeat_interval=0.05, history=6)
    assert isinstance(fake, ExchangeFeedFake)
    both = ["BTC-USD", "ETH-USD"]
    with fake, connect(fake.url) as ws:
        send(ws, {"type": "subscribe", "channels": [
            {"name": "matches", "product_ids": both}, {"name": "level2_batch", "product_ids": ["BTC-USD"]},
            {"name": "heartbeat", "product_ids": both}]})
        fake.wait_done(5)
        last = {p: ids(tape, p)[-1] for p in both}
        frames = read_until(ws, lambda fs: sum(f["type"] == "heartbeat" and f["last_trade_id"] == last[f["product_id"]]
                                               for f in fs) >= 2)

    # last_match per product, then the ack, then the book snapshot.
    assert [f["type"] for f in frames[:4]] == ["last_match", "last_match", "subscriptions", "snapshot"]
    for f in frames[:2]:
        assert f["trade_id"] == ids(history, f["product_id"])[-1]
    assert frames[2] == {"type": "subscriptions", "channels": [
        {"name": "matches", "product_ids": both}, {"name": "level2_batch", "product_ids": ["BTC-USD"]},
        {"name": "heartbeat", "product_ids": both}]}
    by_id = {(t.product, t.trade_id): t for t in tape}
    for product in both:
        matches = [f for f in frames if f["type"] in ("match", "last_match") and f["product_id"] == product]
        assert [m["trade_id"] for m in matches] == ids(tape, product)[len(ids(history, product)) - 1:]
        seqs = [m["sequence"] for m in matches]
        assert {b - a for a, b in zip(seqs, seqs[1:])} == {2}  # an l2update sits between matches
        for m in matches:
            assert list(m) == ["type", "trade_id", "maker_order_id", "taker_order_id", "side", "size", "price",
                               "product_id", "sequence", "time"]
            src = by_id[(product, m["trade_id"])]
            assert m["side"] == {"buy": "sell", "sell": "buy"}[src.taker_side]
            assert isinstance(m["price"], str) and float(m["price"]) == src.price and float(m["size"]) == src.size
            assert uuid.UUID(m["maker_order_id"]) != uuid.UUID(m["taker_order_id"])
            assert ISO_MICRO.match(m["time"])
        beat = [f for f in frames if f["type"] == "heartbeat" and f["product_id"] == product][-1]
        assert list(beat) == ["type", "sequence", "last_trade_id", "product_id", "time"]
        assert beat["sequence"] == fake.sequence[product] == seqs[-1] + 1
        assert beat["last_trade_id"] == last[product]
    assert fake.sent_trade_ids("ETH-USD") == set(ids(tape, "ETH-USD")[len(ids(history, "ETH-USD")) - 1:])

    mirror: dict[tuple[str, str], str] = {}
    for f in frames:
        if f["type"] == "snapshot":
            mirror = {("buy", p): s for p, s in f["bids"]} | {("sell", p): s for p, s in f["asks"]}
        elif f["type"] == "l2update":
            assert f["product_id"] == "BTC-USD" and "sequence" not in f and ISO_MICRO.match(f["time"])
            for side, price, size in f["changes"]:
                if float(size) == 0:
                    mirror.pop((side, price))
                else:
                    mirror[(side, price)] = size
    assert mirror == book_strings(fake, "BTC-USD", "buy", "sell")


def test_exchange_root_product_ids_errors_and_skip() -> None:
    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 20)
    with CoinbaseWsFake("exchange", tape, plan=[Fault("skip_sequence", after_trades=7)]) as fake:
        with connect(fake.url) as ws:
            send(ws, {"type": "subscribe", "product_ids": ["XRP-USD"], "channels": ["matches"]})
            assert recv(ws) == {"type": "error", "message": "Failed to subscribe",
                                "reason": "XRP-USD is not a valid product"}
            assert recv(ws) == {"type": "subscriptions", "channels": []}
            send(ws, {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["matches", "heartbeat"]})
            assert recv(ws) == {"type": "subscriptions", "channels": [
                {"name": "matches", "product_ids": ["BTC-USD", "ETH-USD"]},
                {"name": "heartbeat", "product_ids": ["BTC-USD", "ETH-USD"]}]}
            fake.wait_done(3)
            frames = read_until(ws, lambda fs: {f["trade_id"] for f in fs} >= {ids(tape, p)[-1] for p in fake.products})
    skipped = tape[7]  # the first match after the 7th trade
    got = {(f["product_id"], f["trade_id"]) for f in frames if f["type"] == "match"}
    assert got == {(t.product, t.trade_id) for t in tape} - {(skipped.product, skipped.trade_id)}
    assert skipped.trade_id not in fake.sent_trade_ids(skipped.product)
    assert fake.faults_done["skip_sequence"] == 1


# ---------------------------------------------------------------- Hyperliquid


def test_hyperliquid_trades_book_ping_and_errors() -> None:
    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 30, seed=4)
    history = tape[:8]
    with HyperliquidWsFake(tape, rate=400, book_interval=0.05, history=8, snapshot_trades=2) as fake:
        assert fake.url.endswith("/ws")
        with connect(fake.url) as ws:
            assert ws.recv(timeout=2) == GREETING
            sub = {"type": "trades", "coin": "BTC"}
            send(ws, {"method": "subscribe", "subscription": sub})
            assert recv(ws) == {"channel": "subscriptionResponse", "data": {"method": "subscribe", "subscription": sub}}
            snapshot = recv(ws)
            assert snapshot["channel"] == "trades"
            assert [fake.wire_id(t) for t in history if t.product == "BTC-USD"][-2:] == [t["tid"] for t in snapshot["data"]]
            send(ws, {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "ETH"}})
            send(ws, {"method": "ping"})
            send(ws, {"method": "subscribe", "subscription": {"type": "trades", "coin": "DOGE"}})
            fake.wait_done(5)
            every_tid = {fake.wire_id(t) for t in tape if t.product == "BTC-USD"}
            frames = [snapshot] + read_until(
                ws, lambda fs: sum(f["channel"] == "l2Book" for f in fs) >= 3 and any(f["channel"] == "error" for f in fs)
                and {t["tid"] for f in fs if f["channel"] == "trades" for t in f["data"]} >= every_tid - {
                    fake.wire_id(t) for t in history})
            send(ws, {"method": "unsubscribe", "subscription": sub})
            send(ws, {"method": "unsubscribe", "subscription": sub})
            tail = read_until(ws, lambda fs: any(f["channel"] == "error" for f in fs))
        sent = fake.sent_trade_ids("BTC")
        assert sent == fake.sent_trade_ids("BTC-USD")

    channels = [f["channel"] for f in frames]
    assert "pong" in channels and {"channel": "pong"} in frames
    errors = [f for f in frames if f["channel"] == "error"]
    assert len(errors) == 1 and "DOGE" in errors[0]["data"]
    trades = [t for f in frames if f["channel"] == "trades" for t in f["data"]]
    btc = [t for t in tape if t.product == "BTC-USD"]
    by_tid = {fake.wire_id(t): t for t in btc}
    assert len(by_tid) == len(btc)
    assert [t["tid"] for t in trades] == [fake.wire_id(t) for t in btc[len(ids(history, "BTC-USD")) - 2:]]
    assert {t["tid"] for t in trades} == sent
    for t in trades:
        assert list(t) == ["coin", "side", "px", "sz", "time", "hash", "tid", "users"]
        src = by_tid[t["tid"]]
        assert 0 <= t["tid"] < 2**50
        assert t["coin"] == "BTC" and t["side"] == ("B" if src.taker_side == "buy" else "A")
        assert float(t["px"]) == src.price and float(t["sz"]) == src.size and t["time"] == src.time_ns // 1_000_000
        assert HEX(64).match(t["hash"]) and len(t["users"]) == 2 and all(HEX(40).match(u) for u in t["users"])
    books = [f["data"] for f in frames if f["channel"] == "l2Book"]
    for b in books:
        bids, asks = b["levels"]
        assert b["coin"] == "ETH" and isinstance(b["time"], int)
        assert [float(x["px"]) for x in bids] == sorted((float(x["px"]) for x in bids), reverse=True)
        assert [float(x["px"]) for x in asks] == sorted(float(x["px"]) for x in asks)
        assert float(bids[0]["px"]) < float(asks[0]["px"])
        assert all(isinstance(x["sz"], str) and isinstance(x["n"], int) and x["n"] >= 1 for x in bids + asks)
    assert tail[-2] == {"channel": "subscriptionResponse", "data": {"method": "unsubscribe", "subscription": sub}}
    assert tail[-1] == {"channel": "error", "data": 'Already unsubscribed: {"type":"trades","coin":"BTC"}'}


def test_hyperliquid_sdk_routes_the_fakes_frames() -> None:
    """The official SDK's WebsocketManager dispatches by channel and data keys: it
    calling our callbacks shows the frames have the names it expects."""
    from hyperliquid.websocket_manager import WebsocketManager

    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 20)
    trades: list[Any] = []
    books: list[Any] = []
    with HyperliquidWsFake(tape, rate=400, book_interval=0.05) as fake:
        sdk = WebsocketManager(f"http://127.0.0.1:{fake.port}")
        sdk.start()
        try:
            sdk.subscribe({"type": "trades", "coin": "BTC"}, trades.append)
            sdk.subscribe({"type": "l2Book", "coin": "ETH"}, books.append)
            fake.wait_done(5)
            deadline = time.monotonic() + 3
            while (sum(len(m["data"]) for m in trades) < 20 or not books) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            sdk.stop()
        assert {t["tid"] for m in trades for t in m["data"]} == fake.sent_trade_ids("BTC")
        assert len(fake.sent_trade_ids("BTC")) == 20
        assert books and books[0]["data"]["coin"] == "ETH"


def test_hyperliquid_idle_timeout_path_and_plan_drop() -> None:
    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 10)
    plan = [Fault("drop", after_frames=4, connection=1), Fault("reject_subscription", target="ETH")]
    with HyperliquidWsFake(tape, idle_timeout=0.3, plan=plan, greeting=False) as fake:
        with pytest.raises(InvalidStatus):
            connect(fake.url.replace("/ws", "/other")).close()
        with connect(fake.url) as pinger, connect(fake.url) as victim, connect(fake.url) as idle:
            send(pinger, {"method": "subscribe", "subscription": {"type": "trades", "coin": "BTC"}})
            send(victim, {"method": "subscribe", "subscription": {"type": "trades", "coin": "BTC"}})
            for _ in range(3):
                send(victim, {"method": "ping"})
            victim_frames: list[Any] = []
            with pytest.raises(ConnectionClosedError) as dropped:
                while True:
                    victim_frames.append(recv(victim))
            assert dropped.value.rcvd is None  # dropped right after its 4th frame
            assert len(victim_frames) == 4 and victim_frames[0]["channel"] == "subscriptionResponse"
            for _ in range(6):
                send(pinger, {"method": "ping"})
                time.sleep(0.1)
            with pytest.raises(ConnectionClosed) as closed:
                idle.recv(timeout=1)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
            frames = read_quiet(pinger, 0.05)
            assert frames.count({"channel": "pong"}) == 6  # the pinging client is still served
            send(pinger, {"method": "subscribe", "subscription": {"type": "trades", "coin": "ETH"}})
            assert recv(pinger)["channel"] == "error"
        assert fake.faults_done == {"drop": 1, "reject_subscription": 1}


# ---------------------------------------------------------------- malformed


FEEDS = {
    "advanced": (lambda tape: CoinbaseWsFake("advanced", tape, start="manual", history=3),
                 {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"}),
    "exchange": (lambda tape: CoinbaseWsFake("exchange", tape, start="manual", history=3),
                 {"type": "subscribe", "channels": [{"name": "matches", "product_ids": ["BTC-USD"]}]}),
    "hyperliquid": (lambda tape: HyperliquidWsFake(tape, start="manual", history=3, greeting=False),
                    {"method": "subscribe", "subscription": {"type": "trades", "coin": "BTC"}}),
}


@pytest.mark.parametrize("feed", FEEDS)
def test_malformed_variants(feed: str) -> None:
    make, subscribe = FEEDS[feed]
    with make(synthetic_tape(["BTC-USD"], 10)) as fake, connect(fake.url) as ws:
        send(ws, subscribe)
        read_quiet(ws, 0.1)
        sent = fake.sent_trade_ids("BTC-USD")
        got = {}
        for variant in ("truncated", "unknown_type", "missing_field", "bad_price"):
            assert fake.malformed(variant) == 1
            got[variant] = ws.recv(timeout=2)
        with pytest.raises(ValueError):
            json.loads(got["truncated"])
        parsed = {k: json.loads(v) for k, v in got.items() if k != "truncated"}
        if feed == "advanced":
            assert parsed["unknown_type"]["channel"] == "mystery_channel"
            trade = lambda k: parsed[k]["events"][0]["trades"][0]  # noqa: E731
            seqs = [parsed[k]["sequence_num"] for k in ("unknown_type", "missing_field", "bad_price")]
            assert seqs[0] >= 2 and seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]  # the truncated one took a number
        elif feed == "exchange":
            assert parsed["unknown_type"]["type"] == "mystery"
            trade = lambda k: parsed[k]  # noqa: E731
        else:
            assert parsed["unknown_type"]["channel"] == "mysteryChannel"
            trade = lambda k: parsed[k]["data"][0]  # noqa: E731
        price = "px" if feed == "hyperliquid" else "price"
        assert price not in trade("missing_field") and trade("bad_price")[price] == "abc"
        assert fake.faults_done["malformed"] == 4
        assert fake.sent_trade_ids("BTC-USD") == sent  # a malformed frame delivers nothing

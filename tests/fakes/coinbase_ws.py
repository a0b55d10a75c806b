"""Fake Coinbase market-data WebSocket servers: Advanced Trade and Exchange.

`CoinbaseWsFake(feed, tape, ...)` builds the server for either feed
(`feed="advanced"` gives an `AdvancedTradeFake`, `feed="exchange"` an
`ExchangeFeedFake`). Message shapes follow /work/shared/reference/protocols.md
§1, §2 and the notes on a real Advanced Trade capture; the Exchange shapes were
checked against a real capture (COINBASE.ws.28.0). What each feed serves:

Advanced Trade (`wss://advanced-trade-ws.coinbase.com`)
  - one channel per subscribe: ``market_trades``, ``level2`` (frames come on
    channel ``l2_data``), ``heartbeats`` (no product_ids); ``unsubscribe`` with
    or without product_ids; a ``subscriptions`` frame answers each, listing all
    active channels;
  - every frame is the envelope ``{"channel","client_id":"","timestamp",
    "sequence_num","events"}``, ``sequence_num`` one counter per connection from
    0 (``client_id=False`` leaves ``client_id`` out, as real frames do);
  - market_trades: one ``snapshot`` event per product (last `snapshot_trades`
    trades, newest first), by default *before* the subscriptions ack as observed
    live (``snapshot_first=False``: after), then ``update`` events of up to
    `trades_per_frame` trades; ``side`` is the maker's side, BUY/SELL;
  - level2: a full-book ``snapshot`` event per product, then ``update`` events
    (``new_quantity`` is the new size, 0 removes); the snapshot's
    ``event_time`` is 1970-01-01T00:00:00Z as in the official example;
  - heartbeats every `heartbeat_interval`, ``heartbeat_counter`` an int, +1 per
    heartbeat on the connection, from 1;
  - errors (unknown product or channel, bad message): AT's error shape is not
    documented, so the fake sends the Exchange one,
    ``{"type":"error","message":"Failed to subscribe","reason":...}``, outside
    the envelope and without a sequence_num;
  - no subscribe within `subscribe_timeout` seconds: the server closes (1008).

Exchange (`wss://ws-feed.exchange.coinbase.com`)
  - ``{"type":"subscribe","channels":[...]}`` with ``{name, product_ids}``
    objects or names plus root ``product_ids``; channels ``matches``,
    ``level2_batch`` (alias ``level2_50``) and ``heartbeat``;
  - matches: ``last_match`` per product first (before the ack by default, as in
    the capture), then one ``match`` per trade; ``sequence`` is per product and
    +1 for every match and every l2update of that product, shared by all
    connections, so consecutive matches skip numbers as on the real feed;
  - level2_batch: ``snapshot`` (bids, asks) after the ack, then ``l2update``
    with ``changes`` [side buy/sell, price, new size]; no sequence;
  - heartbeat: per product per interval, ``sequence`` = the product's current
    sequence, ``last_trade_id`` = its latest released trade.

Faults, the plan and the market clock are described in `_serve.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from typing import Any, Iterable, Literal

from ._serve import Conn, Fault, FakeExchange, Frame, StartMode, dumps
from .tape import BookChange, FakeTrade

__all__ = ["AdvancedTradeFake", "CoinbaseWsFake", "ExchangeFeedFake", "Fault"]

Feed = Literal["advanced", "exchange"]


# ----------------------------------------------------------------- time formats


def _utc(ns: int, sep: str = "T") -> tuple[str, int]:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime(f"%Y-%m-%d{sep}%H:%M:%S", time.gmtime(secs)), frac


def rfc3339_nano(ns: int) -> str:
    """Go's RFC3339Nano, trailing zeros trimmed: 2023-02-09T20:19:35.39625135Z."""
    base, frac = _utc(ns)
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def iso_micro(ns: int) -> str:
    """2014-11-07T08:19:27.028459Z (the Exchange feed and AT trade times)."""
    base, frac = _utc(ns)
    return f"{base}.{frac // 1000:06d}Z"


def go_time_string(ns: int, monotonic_s: float) -> str:
    """Go's time.Time.String(), as AT heartbeats carry it:
    2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105."""
    base, frac = _utc(ns, sep=" ")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}{'.' + digits if digits else ''} +0000 UTC m=+{monotonic_s:.9f}"


def fmt_size(size: float) -> str:
    """A trade size as the venue prints it: no trailing zeros (0.000263, 5)."""
    return f"{size:.8f}".rstrip("0").rstrip(".") or "0"


def _error(reason: str, message: str = "Failed to subscribe") -> Frame:
    return Frame({"type": "error", "message": message, "reason": reason}, "error")


def _order_id(trade: FakeTrade, role: str) -> str:
    digest = hashlib.blake2b(f"{trade.product}:{trade.trade_id}:{role}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


MAKER_SIDE = {"buy": "sell", "sell": "buy"}


class CoinbaseWsFake(FakeExchange):
    """Either Coinbase feed; `feed` picks the subclass (see the module docstring).

    Args:
        feed: "advanced" (Advanced Trade) or "exchange" (Exchange legacy feed).
        tape: the trades the market will print (`tape.synthetic_tape`, ...).
        rate: trades released per second (math.inf: as fast as possible).
        heartbeat_interval: seconds between heartbeats.
        snapshot_trades: trades in the AT market_trades snapshot.
        trades_per_frame: most trades in one AT update (the Exchange sends one
            match per trade; its l2update covers the same group).
        subscribe_timeout: close a connection that has not subscribed by then.
        plan: scripted `Fault`s.
        snapshot_first: send the market_trades snapshot / last_match before the
            subscriptions ack (the observed order) rather than after.
        client_id: AT only: include ``"client_id":""`` in the envelope.
        history: tape trades already printed when the server starts (they are
            in the first snapshots).
        start: when the clock starts: "first_subscribe" (first trades
            subscription), "serve" (at once) or "manual" (`start_market()`).
        book_depth: levels per side of the synthetic book.
        seed: seed of the book's sizes.
        send_buffer: SO_SNDBUF of each accepted socket (None: the OS default);
            small values make a client that stops reading back frames up here.
    """

    def __new__(cls, feed: Feed = "advanced", *args: Any, **kwargs: Any) -> "CoinbaseWsFake":
        if cls is CoinbaseWsFake:  # CoinbaseWsFake("exchange", ...) builds the Exchange fake
            if feed not in _FEEDS:
                raise ValueError(f"feed must be 'advanced' or 'exchange', not {feed!r}")
            cls = _FEEDS[feed]
        return super().__new__(cls)

    feed: Feed

    def __init__(
        self,
        feed: Feed = "advanced",
        tape: Iterable[FakeTrade] = (),
        rate: float = math.inf,
        *,
        heartbeat_interval: float = 1.0,
        snapshot_trades: int = 100,
        trades_per_frame: int = 1,
        subscribe_timeout: float = 5.0,
        plan: Iterable[Fault] = (),
        snapshot_first: bool = True,
        client_id: bool = True,
        history: int = 0,
        start: StartMode = "first_subscribe",
        book_depth: int = 10,
        seed: int = 0,
        send_buffer: int | None = None,
    ) -> None:
        super().__init__(
            tape, rate=rate, snapshot_trades=snapshot_trades, trades_per_frame=trades_per_frame,
            plan=plan, history=history, start=start, book_depth=book_depth, seed=seed,
            send_buffer=send_buffer,
        )
        self.heartbeat_interval = heartbeat_interval
        self.subscribe_timeout = subscribe_timeout
        self.snapshot_first = snapshot_first
        self.client_id = client_id
        self._t0 = time.monotonic()

    def _on_started(self) -> None:
        self._every(self.heartbeat_interval, self._heartbeat)

    def _on_connect(self, conn: Conn) -> None:
        self._later(conn, self._subscribe_deadline(conn))

    async def _subscribe_deadline(self, conn: Conn) -> None:
        await asyncio.sleep(self.subscribe_timeout)
        if not conn.subscribed and not conn.closed:
            await conn.ws.close(1008, "no subscribe received")

    def _price(self, trade: FakeTrade) -> str:
        book = self.books[trade.product]
        return book.price(book.ticks(trade.price))

    def _invalid(self, product: Any) -> Frame | None:
        """The error frame for a product nobody may subscribe to, else None.

        Advanced Trade's error frame is unconfirmed (protocols.md, "Unconfirmed"
        point 2): both feeds send the Exchange feed's captured shape.
        """
        if product not in self.products or self._refused(product):
            return _error(f"{product} is not a valid product")
        return None

    def _heartbeat(self) -> None:
        raise NotImplementedError


class AdvancedTradeFake(CoinbaseWsFake):
    """Coinbase Advanced Trade market data (see the module docstring)."""

    feed = "advanced"
    skippable_kinds = frozenset({"trades", "book"})
    CHANNELS = ("market_trades", "level2", "heartbeats")

    # --------------------------------------------------------------- frames

    def _envelope(self, channel: str, events: list[Any], kind: str,
                  trades: tuple[FakeTrade, ...] = ()) -> Frame:
        return Frame({"channel": channel, "timestamp": rfc3339_nano(time.time_ns()), "events": events}, kind, trades)

    def _render(self, conn: Conn, frame: Frame) -> str:
        body = frame.body
        if frame.kind == "error":
            return dumps(body)
        if frame.text is None:  # the events are the same for every connection
            frame.text = dumps(body["events"])
        client_id = '"client_id":"",' if self.client_id else ""
        seq, conn.seq = conn.seq, conn.seq + 1
        return (f'{{"channel":"{body["channel"]}",{client_id}"timestamp":"{body["timestamp"]}",'
                f'"sequence_num":{seq},"events":{frame.text}}}')

    def _on_skipped(self, conn: Conn, frame: Frame) -> None:
        conn.seq += 1  # a real gap: the number was used by the frame the client never got

    def _trade(self, t: FakeTrade) -> dict[str, str]:
        return {"trade_id": str(t.trade_id), "product_id": t.product, "price": self._price(t),
                "size": fmt_size(t.size), "side": MAKER_SIDE[t.taker_side].upper(), "time": iso_micro(t.time_ns)}

    def _ack(self, conn: Conn) -> Frame:
        active = {ch: sorted(conn.subs[ch]) for ch in sorted(conn.subs) if conn.subs[ch]}
        return self._envelope("subscriptions", [{"subscriptions": active}], "ack")

    def _trades_snapshot(self, product: str) -> Frame:
        trades = self._snapshot(product)[::-1]  # newest first
        event = {"type": "snapshot", "trades": [self._trade(t) for t in trades]}
        return self._envelope("market_trades", [event], "snapshot", tuple(trades))

    def _book_snapshot(self, product: str) -> Frame:
        book = self.books[product]
        bids, asks = book.levels()
        epoch = "1970-01-01T00:00:00Z"
        updates = [{"side": "bid", "event_time": epoch, "price_level": book.price(px), "new_quantity": f"{sz:.8f}"}
                   for px, sz in bids]
        updates += [{"side": "offer", "event_time": epoch, "price_level": book.price(px), "new_quantity": f"{sz:.8f}"}
                    for px, sz in asks]
        return self._envelope("l2_data", [{"type": "snapshot", "product_id": product, "updates": updates}], "snapshot")

    def _malformed_frame(self, variant: str) -> Frame:
        if variant == "unknown_type":
            return self._envelope("mystery_channel", [{"type": "update", "mystery": True}], "malformed")
        trade = self._trade(self._latest(self.products[0]))
        if variant == "missing_field":
            del trade["price"]
        elif variant == "bad_price":
            trade["price"] = "abc"
        frame = self._envelope("market_trades", [{"type": "update", "trades": [trade]}], "malformed")
        frame.truncate = variant == "truncated"
        return frame

    # ------------------------------------------------------------- market

    def _on_group(self, product: str, trades: tuple[FakeTrade, ...], changes: list[BookChange]) -> None:
        event = {"type": "update", "trades": [self._trade(t) for t in trades]}
        frame = self._envelope("market_trades", [event], "trades", trades)
        for conn in self._subscribers("market_trades", product):
            conn.push(frame)
        if not changes:
            return
        book, when = self.books[product], iso_micro(trades[-1].time_ns)
        updates = [{"side": "bid" if side == "bid" else "offer", "event_time": when,
                    "price_level": book.price(px), "new_quantity": f"{sz:.8f}"} for side, px, sz in changes]
        frame = self._envelope("l2_data", [{"type": "update", "product_id": product, "updates": updates}], "book")
        for conn in self._subscribers("level2", product):
            conn.push(frame)

    def _heartbeat(self) -> None:
        now = time.time_ns()
        for conn in self._conns:
            if "heartbeats" in conn.subs and not conn.stalled and not conn.closed:
                conn.heartbeats += 1
                event = {"current_time": go_time_string(now, time.monotonic() - self._t0),
                         "heartbeat_counter": conn.heartbeats}
                conn.push(self._envelope("heartbeats", [event], "heartbeat"))

    # ------------------------------------------------------------ messages

    def _on_message(self, conn: Conn, msg: Any) -> None:
        if not isinstance(msg, dict):
            conn.push(_error("message is not a JSON object", "Failed to parse message"))
            return
        kind, channel, products = msg.get("type"), msg.get("channel"), msg.get("product_ids")
        if kind not in ("subscribe", "unsubscribe"):
            conn.push(_error(f"unknown message type {kind!r}", "Failed to parse message"))
            return
        conn.subscribed = conn.subscribed or kind == "subscribe"
        if channel not in self.CHANNELS:  # includes an Exchange-style "channels" list
            conn.push(_error(f"{channel!r} is not a valid channel"))
            return
        if products is not None and not isinstance(products, list):
            conn.push(_error("product_ids must be a list"))
            return
        if kind == "unsubscribe":
            if products is None:
                conn.subs.pop(channel, None)
            else:
                conn.channel(channel).difference_update(products)
            conn.push(self._ack(conn))
            return
        if channel == "heartbeats":
            conn.subs["heartbeats"] = {"heartbeats"}
            conn.push(self._ack(conn))
            return
        if not products:
            conn.push(_error(f"{channel} needs product_ids"))
            return
        ok = []
        for product in products:
            error = self._invalid(product)
            if error is not None:
                conn.push(error)
            elif product not in ok:
                ok.append(product)
        conn.channel(channel).update(ok)
        if channel == "market_trades":
            snapshots = [self._trades_snapshot(p) for p in ok]
            frames = snapshots + [self._ack(conn)] if self.snapshot_first else [self._ack(conn)] + snapshots
            if ok:
                self._trades_subscribed()
        else:
            frames = [self._ack(conn)] + [self._book_snapshot(p) for p in ok]
        for frame in frames:
            conn.push(frame)


class ExchangeFeedFake(CoinbaseWsFake):
    """The Coinbase Exchange feed (see the module docstring)."""

    feed = "exchange"
    skippable_kinds = frozenset({"trades"})
    CHANNELS = ("matches", "level2_batch", "heartbeat")
    ALIASES = {"level2_50": "level2_batch"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per-product sequence, starting somewhere large as on the real feed.
        self.sequence = {p: 100_000_000 * (i + 1) for i, p in enumerate(self.products)}
        self._match_seq: dict[str, int] = {}  # sequence of the product's latest match

    def _match(self, t: FakeTrade, seq: int, kind: str = "match") -> dict[str, Any]:
        # Field order as in the real capture.
        return {"type": kind, "trade_id": t.trade_id, "maker_order_id": _order_id(t, "maker"),
                "taker_order_id": _order_id(t, "taker"), "side": MAKER_SIDE[t.taker_side],
                "size": fmt_size(t.size), "price": self._price(t), "product_id": t.product,
                "sequence": seq, "time": iso_micro(t.time_ns)}

    def _last_match(self, product: str) -> Frame | None:
        if not self.recent[product]:
            return None
        trade = self.recent[product][-1]
        return Frame(self._match(trade, self._match_seq[product], "last_match"), "snapshot", (trade,))

    def _book_snapshot(self, product: str) -> Frame:
        book = self.books[product]
        bids, asks = book.levels()
        return Frame({"type": "snapshot", "product_id": product,
                      "bids": [[book.price(px), f"{sz:.8f}"] for px, sz in bids],
                      "asks": [[book.price(px), f"{sz:.8f}"] for px, sz in asks]}, "snapshot")

    def _ack(self, conn: Conn) -> Frame:
        channels = [{"name": ch, "product_ids": sorted(ps)} for ch, ps in conn.subs.items() if ps]
        return Frame({"type": "subscriptions", "channels": channels}, "ack")

    def _malformed_frame(self, variant: str) -> Frame:
        product = self.products[0]
        if variant == "unknown_type":
            return Frame({"type": "mystery", "product_id": product, "time": iso_micro(time.time_ns())}, "malformed")
        trade = self._latest(product)
        body = self._match(trade, self._match_seq.get(product, self.sequence[product]))
        if variant == "missing_field":
            del body["price"]
        elif variant == "bad_price":
            body["price"] = "abc"
        return Frame(body, "malformed", truncate=variant == "truncated")

    # ------------------------------------------------------------- market

    def _on_group(self, product: str, trades: tuple[FakeTrade, ...], changes: list[BookChange]) -> None:
        matches = []
        for t in trades:
            self.sequence[product] += 1
            matches.append(Frame(self._match(t, self.sequence[product]), "trades", (t,)))
        self._match_seq[product] = self.sequence[product]
        for conn in self._subscribers("matches", product):
            for frame in matches:
                conn.push(frame)
        if not changes:
            return
        self.sequence[product] += 1
        book = self.books[product]
        side_name = {"bid": "buy", "ask": "sell"}
        update = Frame({"type": "l2update", "product_id": product,
                        "changes": [[side_name[side], book.price(px), f"{sz:.8f}"] for side, px, sz in changes],
                        "time": iso_micro(trades[-1].time_ns)}, "book")
        for conn in self._subscribers("level2_batch", product):
            conn.push(update)

    def _last_trade_id(self, product: str) -> int:
        done = self.recent[product]
        if done:
            return done[-1].trade_id
        return next(t.trade_id for t in self.tape if t.product == product) - 1

    def _heartbeat(self) -> None:
        now = iso_micro(time.time_ns())
        for conn in self._conns:
            if conn.stalled or conn.closed:
                continue
            for product in sorted(conn.subs.get("heartbeat", ())):
                conn.push(Frame({"type": "heartbeat", "sequence": self.sequence[product],
                                 "last_trade_id": self._last_trade_id(product), "product_id": product,
                                 "time": now}, "heartbeat"))

    # ------------------------------------------------------------ messages

    def _channels(self, msg: dict[str, Any]) -> list[tuple[str, list[str] | None]] | None:
        """[(channel, product_ids or None = every product)] of a (un)subscribe."""
        root = msg.get("product_ids")
        channels = msg.get("channels")
        if not isinstance(channels, list):
            return None
        out: list[tuple[str, list[str] | None]] = []
        for entry in channels:
            if isinstance(entry, str):
                out.append((entry, root))
            elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
                out.append((entry["name"], entry.get("product_ids", root)))
            else:
                return None
        return [(self.ALIASES.get(name, name), ps) for name, ps in out]

    def _on_message(self, conn: Conn, msg: Any) -> None:
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind not in ("subscribe", "unsubscribe"):
            conn.push(_error(f"unknown message type {kind!r}", "Failed to parse message"))
            return
        conn.subscribed = conn.subscribed or kind == "subscribe"
        wanted = self._channels(msg)
        if wanted is None:
            conn.push(_error("channels must be a list of names or {name, product_ids}"))
            return
        if kind == "unsubscribe":
            for name, products in wanted:
                if products is None:
                    conn.subs.pop(name, None)
                else:
                    conn.channel(name).difference_update(products)
            conn.push(self._ack(conn))
            return
        new: dict[str, list[str]] = {}
        for name, products in wanted:
            if name not in self.CHANNELS:
                conn.push(_error(f"{name} is not a valid channel"))
                continue
            if not products:
                conn.push(_error(f"{name} needs product_ids"))
                continue
            for product in products:
                error = self._invalid(product)
                if error is not None:
                    conn.push(error)
                elif product not in new.setdefault(name, []):
                    new[name].append(product)
        for name, products in new.items():
            conn.channel(name).update(products)
        last_matches = [f for f in map(self._last_match, new.get("matches", [])) if f is not None]
        ack = self._ack(conn)
        frames = last_matches + [ack] if self.snapshot_first else [ack] + last_matches
        frames += [self._book_snapshot(p) for p in new.get("level2_batch", [])]
        for frame in frames:
            conn.push(frame)
        if new.get("matches"):
            self._trades_subscribed()


_FEEDS: dict[str, type[CoinbaseWsFake]] = {"advanced": AdvancedTradeFake, "exchange": ExchangeFeedFake}

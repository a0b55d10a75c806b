"""Fake Hyperliquid WebSocket server (`wss://api.hyperliquid.xyz/ws`), served at /ws.

Shapes follow /work/shared/reference/protocols.md §6:

- on connect, optionally the text frame ``Websocket connection established.``
  (``greeting=False`` leaves it out);
- ``{"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}`` is
  answered by ``{"channel":"subscriptionResponse","data":{"method":"subscribe",
  "subscription":{...}}}``, then one ``trades`` message with the coin's last
  `snapshot_trades` trades (oldest first; possibly ``[]``), then live ``trades``
  messages of up to `trades_per_frame` trades;
- a trade is ``{"coin","side","px","sz","time","hash","tid","users"}``: side is
  the aggressor (B buy, A sell), px/sz strings, time in ms, tid a 50-bit id
  derived from the tape id (`wire_id`), users [buyer, seller];
- ``{"type":"l2Book","coin":"BTC"}`` gets a full book snapshot right away and
  every `book_interval` seconds: ``{"coin","time","levels":[bids desc, asks
  asc]}``, levels ``{"px","sz","n"}``;
- ``{"method":"ping"}`` -> ``{"channel":"pong"}``;
- unknown coin / type / method, or a repeated (un)subscribe -> ``{"channel":
  "error","data":"..."}`` (the "Already unsubscribed" text is the live one; the
  others are the fake's own wording);
- a connection whose client has sent nothing for `idle_timeout` seconds is
  closed (1000).

Coins are the tape products' base currency: product "BTC-USD" is coin "BTC".
`sent_trade_ids("BTC")` (or "BTC-USD") returns tids, the ids a client sees.
skip_sequence is accepted too: Hyperliquid has no sequence numbers, so the
skipped trades message is a silent loss. Faults and the plan are in `_serve.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any, Iterable

from ._serve import Conn, Fault, FakeExchange, Frame, StartMode, dumps
from .tape import BookChange, FakeTrade

__all__ = ["Fault", "HyperliquidWsFake", "coin_of"]

GREETING = "Websocket connection established."
TID_BITS = 50


def coin_of(product: str) -> str:
    """Hyperliquid coin of a tape product: BTC-USD -> BTC."""
    return product.split("-")[0]


def _hex(text: str, nbytes: int) -> str:
    return "0x" + hashlib.blake2b(text.encode(), digest_size=nbytes).hexdigest()


def fmt_decimal(value: str) -> str:
    """Hyperliquid's number strings: no trailing zeros but one decimal (80639.0)."""
    if "." in value:
        value = value.rstrip("0")
        return value + "0" if value.endswith(".") else value
    return value + ".0"


class HyperliquidWsFake(FakeExchange):
    """Hyperliquid trades and l2Book feeds (see the module docstring).

    Args:
        tape: the trades the market will print.
        rate: trades released per second (math.inf: as fast as possible).
        book_interval: seconds between l2Book snapshots.
        idle_timeout: close a connection whose client is silent this long.
        snapshot_trades: trades in the first trades message of a subscription.
        trades_per_frame: most trades in one live trades message.
        plan: scripted `Fault`s.
        greeting: send "Websocket connection established." on connect.
        history, start, book_depth, seed, send_buffer: as for the Coinbase fake.
    """

    path = "/ws"
    skippable_kinds = frozenset({"trades"})

    def __init__(
        self,
        tape: Iterable[FakeTrade],
        rate: float = math.inf,
        *,
        book_interval: float = 0.5,
        idle_timeout: float = 60.0,
        snapshot_trades: int = 20,
        trades_per_frame: int = 1,
        plan: Iterable[Fault] = (),
        greeting: bool = True,
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
        self.book_interval = book_interval
        self.idle_timeout = idle_timeout
        self.greeting = greeting
        self.coins: dict[str, str] = {coin_of(p): p for p in self.products}

    def wire_id(self, trade: FakeTrade) -> int:
        """The trade's tid: 50 bits of a hash of coin and tape id (deterministic)."""
        digest = hashlib.blake2b(f"{coin_of(trade.product)}:{trade.trade_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") & ((1 << TID_BITS) - 1)

    def _product_key(self, name: str) -> str:
        return super()._product_key(self.coins.get(name, name))

    # --------------------------------------------------------------- frames

    def _trade(self, t: FakeTrade) -> dict[str, Any]:
        coin = coin_of(t.product)
        book = self.books[t.product]
        key = f"{coin}:{t.trade_id}"
        return {"coin": coin, "side": "B" if t.taker_side == "buy" else "A",
                "px": fmt_decimal(book.price(book.ticks(t.price))), "sz": fmt_decimal(f"{t.size:.8f}"),
                "time": t.time_ns // 1_000_000, "hash": _hex(f"hash:{key}", 32), "tid": self.wire_id(t),
                "users": [_hex(f"buyer:{key}", 20), _hex(f"seller:{key}", 20)]}

    def _trades(self, trades: Iterable[FakeTrade], kind: str) -> Frame:
        trades = tuple(trades)
        return Frame({"channel": "trades", "data": [self._trade(t) for t in trades]}, kind, trades)

    def _book(self, product: str) -> Frame:
        book = self.books[product]
        bids, asks = book.levels()

        def level(px: int, sz: float) -> dict[str, Any]:
            return {"px": fmt_decimal(book.price(px)), "sz": fmt_decimal(f"{sz:.8f}"), "n": 1 + px % 5}

        done = self.recent[product]
        when = (done[-1] if done else next(t for t in self.tape if t.product == product)).time_ns // 1_000_000
        return Frame({"channel": "l2Book", "data": {"coin": coin_of(product), "time": when,
                      "levels": [[level(*x) for x in bids], [level(*x) for x in asks]]}}, "book")

    def _malformed_frame(self, variant: str) -> Frame:
        if variant == "unknown_type":
            return Frame({"channel": "mysteryChannel", "data": {"mystery": True}}, "malformed")
        trade = self._trade(self._latest(self.products[0]))
        if variant == "missing_field":
            del trade["px"]
        elif variant == "bad_price":
            trade["px"] = "abc"
        return Frame({"channel": "trades", "data": [trade]}, "malformed", truncate=variant == "truncated")

    @staticmethod
    def _error(text: str) -> Frame:
        return Frame({"channel": "error", "data": text}, "error")

    # ------------------------------------------------------------- market

    def _on_started(self) -> None:
        self._every(self.book_interval, self._push_books)

    def _on_group(self, product: str, trades: tuple[FakeTrade, ...], changes: list[BookChange]) -> None:
        frame = self._trades(trades, "trades")
        for conn in self._subscribers("trades", coin_of(product)):
            conn.push(frame)

    def _push_books(self) -> None:
        for product in self.products:
            subscribers = [c for c in self._subscribers("l2Book", coin_of(product)) if not c.stalled]
            if subscribers:
                frame = self._book(product)
                for conn in subscribers:
                    conn.push(frame)

    # ------------------------------------------------------------ messages

    def _on_connect(self, conn: Conn) -> None:
        if self.greeting:
            conn.push(Frame(GREETING, "greeting"))
        self._later(conn, self._idle_watch(conn))

    async def _idle_watch(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        while not conn.closed:
            left = conn.last_recv + self.idle_timeout - loop.time()
            if left <= 0:
                await conn.ws.close(1000, "idle")
                return
            await asyncio.sleep(left)

    def _on_message(self, conn: Conn, msg: Any) -> None:
        method = msg.get("method") if isinstance(msg, dict) else None
        if method == "ping":
            conn.push(Frame({"channel": "pong"}, "pong"))
        elif method in ("subscribe", "unsubscribe"):
            self._subscription(conn, method, msg.get("subscription"))
        else:
            conn.push(self._error(f"Error parsing JSON into valid websocket request: {dumps(msg)[:200]}"))

    def _subscription(self, conn: Conn, method: str, sub: Any) -> None:
        text = dumps(sub)
        if not isinstance(sub, dict) or sub.get("type") not in ("trades", "l2Book"):
            conn.push(self._error(f"Invalid subscription: {text}"))
            return
        channel, coin = sub["type"], sub.get("coin")
        if coin not in self.coins or (method == "subscribe" and self._refused(coin)):
            conn.push(self._error(f"Invalid subscription: unknown coin {coin!r}: {text}"))
            return
        active = conn.channel(channel)
        if method == "unsubscribe":
            if coin not in active:
                conn.push(self._error(f"Already unsubscribed: {text}"))
                return
            active.discard(coin)
            conn.push(Frame({"channel": "subscriptionResponse", "data": {"method": method, "subscription": sub}}, "ack"))
            return
        if coin in active:
            conn.push(self._error(f"Already subscribed: {text}"))
            return
        active.add(coin)
        conn.subscribed = True
        conn.push(Frame({"channel": "subscriptionResponse", "data": {"method": method, "subscription": sub}}, "ack"))
        product = self.coins[coin]
        if channel == "trades":
            conn.push(self._trades(self._snapshot(product), "snapshot"))
            self._trades_subscribed()
        else:
            conn.push(self._book(product))

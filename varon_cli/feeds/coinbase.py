"""Coinbase market data: the Advanced Trade WebSocket and the Exchange feed.

Wire facts (see ../shared/reference/protocols.md sections 1 and 2):
- Advanced Trade: one subscribe per channel; trades arrive on `market_trades`,
  the book on `l2_data` (subscribed as `level2`), liveness on `heartbeats`.
  `sequence_num` is one counter per connection over every frame, and
  `heartbeat_counter` counts heartbeats; a jump in either means frames were
  lost, and the only way back to a trustworthy book is a fresh snapshot, so the
  normaliser asks for a reconnect (trades lost meanwhile come back in the
  `market_trades` snapshot and repeats are removed by trade id).
- Exchange: `matches` (first a `last_match`), `level2_batch` (a snapshot then
  `l2update`s, no sequence) and per-product `heartbeat`s. Match `sequence`s
  are per product but not consecutive (they count every book event too), so
  gaps are found by trade ids, which are contiguous per product, and by the
  heartbeat's `last_trade_id`. A gap refreshes that product only.
- On both feeds `side` on a trade is the maker's; varon's trades carry the
  taker's side, the opposite.
"""

from __future__ import annotations

import logging
from typing import Union

import msgspec

from varon_cli.feeds.base import INF, Normaliser, Request, classify_failure
from varon_cli.feeds.timeparse import iso_to_ns

log = logging.getLogger("varon.collect")

ADVANCED_URL = "wss://advanced-trade-ws.coinbase.com"
EXCHANGE_URL = "wss://ws-feed.exchange.coinbase.com"
_TAKER_FROM_MAKER = {"BUY": "sell", "SELL": "buy", "buy": "sell", "sell": "buy"}
_BOOK_SIDE = {"bid": "bid", "offer": "ask", "ask": "ask", "buy": "bid", "sell": "ask"}


# -- Advanced Trade frames -------------------------------------------------------------------
class _ATTrade(msgspec.Struct):
    trade_id: str
    product_id: str
    price: str
    size: str
    side: str
    time: str


class _ATTradesEvent(msgspec.Struct):
    type: str
    trades: list[_ATTrade]


class _ATLevel(msgspec.Struct):
    side: str
    price_level: float  # sent as strings; decoded (strict=False) to floats in C
    new_quantity: float
    event_time: str = ""


class _ATBookEvent(msgspec.Struct):
    type: str
    product_id: str
    updates: list[_ATLevel]


class _ATHeartbeat(msgspec.Struct):
    heartbeat_counter: Union[int, str]
    current_time: str = ""


class _ATMarketTrades(msgspec.Struct, tag_field="channel", tag="market_trades"):
    timestamp: str
    sequence_num: int
    events: list[_ATTradesEvent]


class _ATL2(msgspec.Struct, tag_field="channel", tag="l2_data"):
    timestamp: str
    sequence_num: int
    events: list[_ATBookEvent]


class _ATHeartbeats(msgspec.Struct, tag_field="channel", tag="heartbeats"):
    sequence_num: int
    events: list[_ATHeartbeat]


class _ATSubscriptions(msgspec.Struct, tag_field="channel", tag="subscriptions"):
    sequence_num: int
    events: list[msgspec.Raw] = []


# strict=False lets msgspec parse the book's decimal strings as floats in C; a level that does
# not parse makes the frame malformed (logged, counted, skipped) rather than half-applied
_AT_DECODER = msgspec.json.Decoder(Union[_ATMarketTrades, _ATL2, _ATHeartbeats, _ATSubscriptions], strict=False)


def _trade_values(price_text: str, size_text: str, time_text: str, maker_side: str) -> tuple[int, float, float, str]:
    """(ts, price, size, taker side) of a Coinbase trade; ValueError/KeyError when a field is bad."""
    price, size = float(price_text), float(size_text)
    if not 0.0 < price < INF:
        raise ValueError(f"price {price_text!r}")
    if not 0.0 <= size < INF:
        raise ValueError(f"size {size_text!r}")
    return iso_to_ns(time_text), price, size, _TAKER_FROM_MAKER[maker_side]


def _int_id(trade_id: str) -> int | None:
    return int(trade_id) if trade_id.isdigit() else None


class CoinbaseAdvanced(Normaliser):
    """Coinbase Advanced Trade WebSocket: market_trades, level2, heartbeats."""

    venue = "coinbase"
    feed = "advanced"
    default_url = ADVANCED_URL
    channel_names = {"trades": "market_trades", "book": "level2", "heartbeat": "heartbeats"}
    _known = {"market_trades", "l2_data", "heartbeats", "subscriptions"}
    _ignored = frozenset({"ticker", "ticker_batch", "candles", "status", "user", "futures_balance_summary"})

    def __init__(self, symbols: list[str], channels: frozenset[str], watermark_delay_ns: int = 1_000_000_000) -> None:
        super().__init__(symbols, channels, watermark_delay_ns)
        self._symbol_set = set(self.symbols)
        self._last_seq: int | None = None
        self._last_heartbeat: int | None = None
        self._book_ready: set[str] = set()

    def subscribe_messages(self) -> list[str]:
        messages = []
        for channel in ("trades", "book"):
            if channel in self.channels:
                messages.append(msgspec.json.encode({"type": "subscribe", "product_ids": self.symbols,
                                                     "channel": self.channel_names[channel]}).decode())
        messages.append(msgspec.json.encode({"type": "subscribe", "channel": "heartbeats"}).decode())
        return messages

    def on_connect(self, recv_ns: int) -> None:
        super().on_connect(recv_ns)
        self._last_seq = None
        self._last_heartbeat = None
        self._book_ready.clear()

    def _parse(self, frame: bytes | str, recv_ns: int) -> None:
        try:
            msg = _AT_DECODER.decode(frame)
        except msgspec.DecodeError as exc:
            obj = classify_failure(self, frame, exc, "channel", self._known, self._ignored)
            seq = obj.get("sequence_num") if obj is not None else None
            if type(seq) is int:
                self._check_sequence(seq)  # a frame we cannot use still took its number
            return
        if not self._check_sequence(msg.sequence_num):
            return
        if type(msg) is _ATMarketTrades:
            for event in msg.events:
                self._on_trades(event, msg.sequence_num, recv_ns, frame)
        elif type(msg) is _ATL2:
            for event in msg.events:
                self._on_book(event, msg, recv_ns, frame)
        elif type(msg) is _ATHeartbeats:
            for event in msg.events:
                self._on_heartbeat(event, frame)

    def _check_sequence(self, seq: int) -> bool:
        last = self._last_seq
        if last is not None:
            if seq <= last:
                self.stats.duplicates += 1
                log.warning("coinbase: frame with sequence_num %d after %d ignored (old or repeated)", seq, last)
                return False
            if seq != last + 1:
                self.stats.sequence_gaps += 1
                log.warning("coinbase: sequence gap on the connection, %d frame(s) lost (%d after %d); reconnecting "
                            "for fresh snapshots", seq - last - 1, seq, last)
                self._book_ready.clear()
                self._resync(Request("reconnect", reason=f"sequence_num {seq} after {last}"))
        self._last_seq = seq
        return True

    def _on_heartbeat(self, event: _ATHeartbeat, frame: bytes | str) -> None:
        try:
            counter = int(event.heartbeat_counter)
        except ValueError:
            self._bad_value(frame, "heartbeat_counter")
            return
        last = self._last_heartbeat
        if last is not None and counter != last + 1 and counter > last:
            self.stats.heartbeat_gaps += 1
            log.warning("coinbase: heartbeat counter jumped from %d to %d", last, counter)
        self._last_heartbeat = counter

    def _on_trades(self, event: _ATTradesEvent, seq: int, recv_ns: int, frame: bytes | str) -> None:
        trades = event.trades
        if len(trades) > 1:
            # snapshots (and some updates) list newest first; emit in trade order
            trades = sorted(trades, key=lambda t: (_int_id(t.trade_id) or 0, t.time))
        rows = self.trades
        for t in trades:
            symbol = t.product_id
            if symbol not in self._symbol_set:
                self._unknown(frame, f"product {symbol!r}")
                continue
            try:
                ts, price, size, side = _trade_values(t.price, t.size, t.time, t.side)
            except (ValueError, KeyError) as exc:
                self._bad_value(frame, str(exc))
                continue
            if not self._first_sighting(symbol, t.trade_id):
                continue
            number = _int_id(t.trade_id)
            if number is not None:
                self._trade_id_gap(symbol, number)
            rows.add(ts, recv_ns, symbol, t.trade_id, price, size, side, seq)
            self.stats.trades += 1

    def _on_book(self, event: _ATBookEvent, msg: _ATL2, recv_ns: int, frame: bytes | str) -> None:
        symbol = event.product_id
        if symbol not in self._symbol_set:
            self._unknown(frame, f"product {symbol!r}")
            return
        snapshot = event.type == "snapshot"
        if snapshot:
            self._book_ready.add(symbol)
        elif symbol not in self._book_ready:
            return  # updates to a book whose snapshot is pending would corrupt it
        try:
            frame_ts = iso_to_ns(msg.timestamp)
        except ValueError:
            self._bad_value(frame, "timestamp")
            return
        rows = self.book
        for level in event.updates:
            price, size = level.price_level, level.new_quantity
            try:
                if not (0.0 < price < INF and 0.0 <= size < INF):
                    raise ValueError(f"price {price!r} size {size!r}")
                side = _BOOK_SIDE[level.side]
                ts = iso_to_ns(level.event_time) if level.event_time else frame_ts
            except (ValueError, KeyError) as exc:
                self._bad_value(frame, str(exc))
                continue
            if ts <= 0:
                ts = frame_ts  # snapshots carry event_time 1970-01-01
            rows.add(ts, recv_ns, symbol, side, price, size, snapshot, msg.sequence_num)
            self.stats.book_rows += 1


# -- Exchange frames -------------------------------------------------------------------------
class _EXMatch(msgspec.Struct, tag_field="type", tag="match"):
    trade_id: int
    sequence: int
    time: str
    product_id: str
    size: str
    price: str
    side: str


class _EXLastMatch(_EXMatch, tag="last_match"):
    pass


class _EXSnapshot(msgspec.Struct, tag_field="type", tag="snapshot"):
    product_id: str
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


class _EXL2Update(msgspec.Struct, tag_field="type", tag="l2update"):
    product_id: str
    time: str
    changes: list[tuple[str, float, float]]


class _EXHeartbeat(msgspec.Struct, tag_field="type", tag="heartbeat"):
    product_id: str
    sequence: int
    last_trade_id: int
    time: str = ""


class _EXSubscriptions(msgspec.Struct, tag_field="type", tag="subscriptions"):
    channels: list[msgspec.Raw] = []


_EX_DECODER = msgspec.json.Decoder(
    Union[_EXMatch, _EXLastMatch, _EXSnapshot, _EXL2Update, _EXHeartbeat, _EXSubscriptions], strict=False)


class CoinbaseExchange(Normaliser):
    """Coinbase Exchange feed: matches, level2_batch, heartbeat (all public)."""

    venue = "coinbase"
    feed = "exchange"
    default_url = EXCHANGE_URL
    channel_names = {"trades": "matches", "book": "level2_batch", "heartbeat": "heartbeat"}
    _known = {"match", "last_match", "snapshot", "l2update", "heartbeat", "subscriptions"}
    _ignored = frozenset({"ticker", "status", "received", "open", "done", "change", "activate"})

    def __init__(self, symbols: list[str], channels: frozenset[str], watermark_delay_ns: int = 1_000_000_000) -> None:
        super().__init__(symbols, channels, watermark_delay_ns)
        self._symbol_set = set(self.symbols)
        self._last_sequence: dict[str, int] = {}
        self._book_ready: set[str] = set()

    def _channels_for(self, products: list[str]) -> list[dict]:
        names = [self.channel_names[c] for c in ("trades", "book") if c in self.channels] + ["heartbeat"]
        return [{"name": name, "product_ids": products} for name in names]

    def subscribe_messages(self) -> list[str]:
        return [msgspec.json.encode({"type": "subscribe", "channels": self._channels_for(self.symbols)}).decode()]

    def resubscribe_messages(self, product: str) -> list[str]:
        channels = self._channels_for([product])
        return [msgspec.json.encode({"type": "unsubscribe", "channels": channels}).decode(),
                msgspec.json.encode({"type": "subscribe", "channels": channels}).decode()]

    def on_connect(self, recv_ns: int) -> None:
        super().on_connect(recv_ns)
        self._book_ready.clear()
        self._last_sequence.clear()

    def _parse(self, frame: bytes | str, recv_ns: int) -> None:
        try:
            msg = _EX_DECODER.decode(frame)
        except msgspec.DecodeError as exc:
            classify_failure(self, frame, exc, "type", self._known, self._ignored)
            return
        kind = type(msg)
        if kind is _EXL2Update:
            self._on_update(msg, recv_ns, frame)
        elif kind is _EXMatch or kind is _EXLastMatch:
            self._on_match(msg, recv_ns, frame)
        elif kind is _EXSnapshot:
            self._on_snapshot(msg, recv_ns, frame)
        elif kind is _EXHeartbeat:
            self._on_heartbeat(msg)

    def _known_symbol(self, symbol: str, frame: bytes | str) -> bool:
        if symbol in self._symbol_set:
            return True
        self._unknown(frame, f"product {symbol!r}")
        return False

    def _on_match(self, m: _EXMatch, recv_ns: int, frame: bytes | str) -> None:
        symbol = m.product_id
        if not self._known_symbol(symbol, frame):
            return
        last_seq = self._last_sequence.get(symbol)
        if last_seq is not None and m.sequence <= last_seq:
            self.stats.duplicates += 1
            return
        self._last_sequence[symbol] = m.sequence
        try:
            ts, price, size, side = _trade_values(m.price, m.size, m.time, m.side)
        except (ValueError, KeyError) as exc:
            self._bad_value(frame, str(exc))
            return
        trade_id = m.trade_id
        if not self._first_sighting(symbol, trade_id):
            return
        if self._trade_id_gap(symbol, trade_id):
            self._refresh(symbol, f"trade {trade_id} skipped ids")
        self.trades.add(ts, recv_ns, symbol, str(trade_id), price, size, side, m.sequence)
        self.stats.trades += 1

    def _on_heartbeat(self, hb: _EXHeartbeat) -> None:
        symbol = hb.product_id
        last = self._last_trade_id.get(symbol)
        if last is not None and hb.last_trade_id > last and "trades" in self.channels:
            self._trade_gap(symbol, hb.last_trade_id - last, f"heartbeat last_trade_id {hb.last_trade_id}, "
                                                             f"last match {last}")
            self._last_trade_id[symbol] = hb.last_trade_id
            self._refresh(symbol, "heartbeat ahead of matches")

    def _refresh(self, symbol: str, reason: str) -> None:
        self._book_ready.discard(symbol)
        self._resync(Request("resubscribe", symbol, reason))

    def _on_snapshot(self, snap: _EXSnapshot, recv_ns: int, frame: bytes | str) -> None:
        symbol = snap.product_id
        if not self._known_symbol(symbol, frame):
            return
        self._book_ready.add(symbol)
        rows = self.book
        for side, levels in (("bid", snap.bids), ("ask", snap.asks)):
            for price, size in levels:
                if not (0.0 < price < INF and 0.0 <= size < INF):
                    self._bad_value(frame, f"price {price!r} size {size!r}")
                    continue
                # the snapshot carries no time: its receive time is the best event time there is
                rows.add(recv_ns, recv_ns, symbol, side, price, size, True, None)
                self.stats.book_rows += 1

    def _on_update(self, up: _EXL2Update, recv_ns: int, frame: bytes | str) -> None:
        symbol = up.product_id
        if symbol not in self._book_ready:
            if symbol not in self._symbol_set:
                self._unknown(frame, f"product {symbol!r}")
            return
        try:
            ts = iso_to_ns(up.time)
        except ValueError:
            self._bad_value(frame, "time")
            return
        add = self.book.add
        added = 0
        for side_text, price, size in up.changes:
            side = _BOOK_SIDE.get(side_text)
            if side is None or not (0.0 < price < INF and 0.0 <= size < INF):
                self._bad_value(frame, f"side {side_text!r} price {price!r} size {size!r}")
                continue
            add(ts, recv_ns, symbol, side, price, size, False, None)
            added += 1
        self.stats.book_rows += added

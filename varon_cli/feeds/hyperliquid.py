"""Hyperliquid market data: trades and l2Book over WebSocket, funding over /info.

Wire facts (../shared/reference/protocols.md sections 4 and 6):
- Subscriptions are per coin (`BTC`); varon's canonical symbol is `BTC-USD`.
- Trade `side` is the aggressor's (`B` buy, `A` sell); `tid` is a hash, not a
  counter, so a trade is identified by (time, tid) and gaps cannot be seen in
  trade ids. The venue has no sequence numbers; after a reconnect the
  subscription's first message re-sends recent trades, and repeats are removed.
- Every l2Book push is a full snapshot (up to 20 levels a side), so a book is
  never corrupted by a lost message; each push becomes snapshot rows.
- The server drops a connection it has not heard from for 60 s: the session
  sends `{"method":"ping"}` (answered by a `pong`) to stay alive.
- Funding, mark, oracle price and open interest come from
  `{"type":"metaAndAssetCtxs"}` on the info endpoint, polled by the session.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Union

import msgspec

from varon_cli.errors import UsageError
from varon_cli.feeds.base import INF, Normaliser, classify_failure

log = logging.getLogger("varon.collect")

WS_URL = "wss://api.hyperliquid.xyz/ws"
TESTNET_WS_URL = "wss://api.hyperliquid-testnet.xyz/ws"
_HELLO = b"Websocket connection established."
_SIDE = {"B": "buy", "A": "sell"}


def coin_of(symbol: str) -> str:
    """`BTC-USD` (or `BTC`) to Hyperliquid's coin name `BTC`."""
    base, _, quote = symbol.upper().partition("-")
    if not base or (quote and quote not in ("USD", "USDC")):
        raise UsageError(f"Hyperliquid perpetuals are quoted in USD: cannot map symbol {symbol!r}")
    return base


def symbol_of(coin: str) -> str:
    return f"{coin}-USD"


def info_url_for(ws_url: str) -> str:
    """The HTTP info base that serves a WebSocket URL: wss://host/ws to https://host."""
    url = ws_url.rstrip("/")
    if url.endswith("/ws"):
        url = url[:-3]
    if url.startswith("wss://"):
        return "https://" + url[6:]
    if url.startswith("ws://"):
        return "http://" + url[5:]
    return url


class _HLTrade(msgspec.Struct):
    coin: str
    side: str
    px: str
    sz: str
    time: int
    tid: int


class _HLLevel(msgspec.Struct):
    px: str
    sz: str
    n: int = 0


class _HLBook(msgspec.Struct):
    coin: str
    time: int
    levels: list[list[_HLLevel]]


class _HLTrades(msgspec.Struct, tag_field="channel", tag="trades"):
    data: list[_HLTrade]


class _HLL2(msgspec.Struct, tag_field="channel", tag="l2Book"):
    data: _HLBook


class _HLAck(msgspec.Struct, tag_field="channel", tag="subscriptionResponse"):
    data: Any = None


class _HLPong(msgspec.Struct, tag_field="channel", tag="pong"):
    pass


_DECODER = msgspec.json.Decoder(Union[_HLTrades, _HLL2, _HLAck, _HLPong])


class _AssetMeta(msgspec.Struct):
    name: str


class _Meta(msgspec.Struct):
    universe: list[_AssetMeta]


class _AssetCtx(msgspec.Struct):
    funding: str
    openInterest: str
    markPx: str
    oraclePx: str
    premium: Optional[str] = None


_CTX_DECODER = msgspec.json.Decoder(tuple[_Meta, list[_AssetCtx]])


def _number(text: Optional[str]) -> float:
    return float(text) if text is not None else float("nan")


class HyperliquidFeed(Normaliser):
    """Hyperliquid WebSocket trades and books, plus polled asset contexts."""

    venue = "hyperliquid"
    feed = "ws"
    default_url = WS_URL
    _known = {"trades", "l2Book", "subscriptionResponse", "pong"}
    _ignored = frozenset({"allMids", "candle", "bbo", "activeAssetCtx", "notification", "post"})

    def __init__(self, symbols: list[str], channels: frozenset[str], watermark_delay_ns: int = 1_000_000_000) -> None:
        coins = [coin_of(s) for s in symbols]
        super().__init__([symbol_of(c) for c in coins], channels, watermark_delay_ns)
        self.coins = coins
        self._symbol_by_coin = {c: symbol_of(c) for c in coins}

    def subscribe_messages(self) -> list[str]:
        kinds = [k for c, k in (("trades", "trades"), ("book", "l2Book")) if c in self.channels]
        return [msgspec.json.encode({"method": "subscribe", "subscription": {"type": kind, "coin": coin}}).decode()
                for kind in kinds for coin in self.coins]

    def keepalive_message(self) -> str:
        return '{"method":"ping"}'

    def _parse(self, frame: bytes | str, recv_ns: int) -> None:
        try:
            msg = _DECODER.decode(frame)
        except msgspec.DecodeError as exc:
            raw = frame.encode() if isinstance(frame, str) else frame
            if raw.startswith(_HELLO):
                return
            classify_failure(self, frame, exc, "channel", self._known, self._ignored)
            return
        kind = type(msg)
        if kind is _HLTrades:
            self._on_trades(msg.data, recv_ns, frame)
        elif kind is _HLL2:
            self._on_book(msg.data, recv_ns, frame)

    def _on_trades(self, trades: list[_HLTrade], recv_ns: int, frame: bytes | str) -> None:
        if len(trades) > 1:
            trades = sorted(trades, key=lambda t: (t.time, t.tid))
        rows = self.trades
        for t in trades:
            symbol = self._symbol_by_coin.get(t.coin)
            if symbol is None:
                self._unknown(frame, f"coin {t.coin!r}")
                continue
            try:
                price, size = float(t.px), float(t.sz)
                side = _SIDE[t.side]
                if not (0.0 < price < INF and 0.0 <= size < INF):
                    raise ValueError(f"price {t.px!r} size {t.sz!r}")
            except (ValueError, KeyError) as exc:
                self._bad_value(frame, str(exc))
                continue
            if not self._first_sighting(symbol, (t.time, t.tid)):
                continue
            rows.add(t.time * 1_000_000, recv_ns, symbol, str(t.tid), price, size, side, None)
            self.stats.trades += 1

    def _on_book(self, book: _HLBook, recv_ns: int, frame: bytes | str) -> None:
        symbol = self._symbol_by_coin.get(book.coin)
        if symbol is None:
            self._unknown(frame, f"coin {book.coin!r}")
            return
        if len(book.levels) != 2:
            self._malformed(frame, "levels is not [bids, asks]")
            return
        ts = book.time * 1_000_000
        rows = self.book
        for side, levels in (("bid", book.levels[0]), ("ask", book.levels[1])):
            for level in levels:
                try:
                    price, size = float(level.px), float(level.sz)
                    if not (0.0 < price < INF and 0.0 <= size < INF):
                        raise ValueError(f"px {level.px!r} sz {level.sz!r}")
                except ValueError as exc:
                    self._bad_value(frame, str(exc))
                    continue
                rows.add(ts, recv_ns, symbol, side, price, size, True, None)
                self.stats.book_rows += 1

    def on_rest(self, what: str, body: bytes, recv_ns: int) -> None:
        if what != "metaAndAssetCtxs":
            super().on_rest(what, body, recv_ns)
            return
        try:
            meta, ctxs = _CTX_DECODER.decode(body)
        except msgspec.DecodeError as exc:
            self._malformed(body, f"metaAndAssetCtxs: {exc}")
            return
        rows = self.funding
        for asset, ctx in zip(meta.universe, ctxs):
            symbol = self._symbol_by_coin.get(asset.name)
            if symbol is None:
                continue
            try:
                rows.add(recv_ns, recv_ns, symbol, float(ctx.funding), _number(ctx.premium), float(ctx.markPx),
                         float(ctx.oraclePx), float(ctx.openInterest))
            except ValueError as exc:
                self._bad_value(body, f"{asset.name}: {exc}")
                continue
            self.stats.funding_rows += 1
        missing = set(self._symbol_by_coin) - {a.name for a in meta.universe}
        if missing and not getattr(self, "_warned_missing", False):
            self._warned_missing = True
            log.error("hyperliquid: unknown coin(s) %s: not in the venue's universe", ", ".join(sorted(missing)))

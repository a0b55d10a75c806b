"""Hyperliquid `POST /info`: candleSnapshot and fundingHistory for perpetuals.

Hyperliquid serves only its most recent 5000 candles of each interval, and a
time-range answer holds at most 500 items, continued from the last timestamp
+ 1. Requests weigh 20 of 1200 per minute plus a share per item returned
(candles per 60, funding per 20), charged once the answer shows the count.
Coins are meta's names (`BTC`, case kept: `kPEPE`); the canonical symbol is
`<coin>-USD`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence

import msgspec

from varon_cli.backfill.http import RestClient, RetryPolicy, TokenBucket
from varon_cli.backfill.rows import bars_table, funding_table, within
from varon_cli.backfill.source import Market, Page, base_quote
from varon_cli.errors import UsageError
from varon_cli.intervals import format_interval

VENUE = "hyperliquid"
MAINNET_URL = "https://api.hyperliquid.xyz"
TESTNET_URL = "https://api.hyperliquid-testnet.xyz"
QUOTE = "USD"
CANDLES_SERVED = 5000
PAGE_ITEMS = 500
CANDLE_PAGE_BUCKETS = 500
# Funding settles hourly: 480 entries per request stay under the 500 cap with room for jitter.
FUNDING_PAGE_NS = 480 * 3_600_000_000_000
# Near the 5000-candle edge our clock and the venue's may disagree on which candle
# is oldest: there, coverage starts at the first candle actually returned.
EDGE_GUARD_BUCKETS = 10
WEIGHT_PER_MINUTE = 1200
INFO_WEIGHT = 20
CANDLES_PER_WEIGHT = 60
FUNDING_PER_WEIGHT = 20
MS = 1_000_000
SECOND = 1_000_000_000
INTERVALS = {60: "1m", 180: "3m", 300: "5m", 900: "15m", 1800: "30m", 3600: "1h", 7200: "2h",
             14400: "4h", 28800: "8h", 43200: "12h", 86400: "1d"}


class Candle(msgspec.Struct):
    t: int
    T: int
    o: str
    h: str
    l: str  # noqa: E741 - the venue's field name
    c: str
    v: str
    n: int = 0


class Funding(msgspec.Struct):
    coin: str
    fundingRate: str
    premium: str
    time: int


class Asset(msgspec.Struct):
    name: str
    isDelisted: bool = False


class Meta(msgspec.Struct):
    universe: list[Asset]


_decode_candles = msgspec.json.Decoder(list[Candle]).decode
_decode_funding = msgspec.json.Decoder(list[Funding]).decode
_decode_meta = msgspec.json.Decoder(Meta).decode


def default_client(max_retries: int, timeout: float = 30.0) -> RestClient:
    bucket = TokenBucket(WEIGHT_PER_MINUTE / 60.0, capacity=6 * INFO_WEIGHT)
    return RestClient(VENUE, bucket, RetryPolicy(max_retries=max_retries), timeout)


def _ceil_ms(ns: int) -> int:
    return -(-ns // MS)


class Hyperliquid:
    """Candles and settled funding of Hyperliquid perpetuals."""

    venue = VENUE
    has_funding = True

    def __init__(self, client: RestClient, base_url: str = MAINNET_URL, network: str = "mainnet",
                 now: Callable[[], int] | None = None) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.network = network
        self._now = now or time.time_ns

    # -- requests ----------------------------------------------------------------
    def _info(self, body: dict, decode: Callable[[bytes], object], per_weight: int = 0) -> object:
        what = f"POST {self.base_url}/info {json.dumps(body, separators=(',', ':'))}"
        answer = self.client.request("POST", f"{self.base_url}/info", what, decode, json=body, cost=INFO_WEIGHT)
        if per_weight and isinstance(answer, list):
            self.client.bucket.charge(len(answer) // per_weight)
        return answer

    # -- Source --------------------------------------------------------------------
    def interval_code(self, interval_ns: int) -> str:
        code = INTERVALS.get(interval_ns // SECOND) if interval_ns % SECOND == 0 else None
        if code is None:
            offered = ", ".join(INTERVALS.values())
            raise UsageError(f"hyperliquid candles have no {format_interval(interval_ns)} interval; use one of {offered}")
        return code

    def markets(self, symbols: Sequence[str]) -> list[Market]:
        wanted = [self._coin_of(s) for s in symbols]
        meta = self._info({"type": "meta", "dex": ""}, _decode_meta)
        names = [a.name for a in meta.universe]
        exact = set(names)
        folded: dict[str, list[str]] = {}
        for name in names:
            folded.setdefault(name.lower(), []).append(name)
        out = []
        for text, coin in zip(symbols, wanted):
            if coin not in exact:
                matches = folded.get(coin.lower(), [])
                if len(matches) != 1:
                    shown = ", ".join(names[:12]) + (f", … ({len(names) - 12} more)" if len(names) > 12 else "")
                    raise UsageError(f"hyperliquid lists no perpetual {coin!r} (from {text!r}); it lists {shown}")
                coin = matches[0]
            out.append(Market(symbol=f"{coin}-{QUOTE}", venue_id=coin))
        return list(dict.fromkeys(out))

    @staticmethod
    def _coin_of(text: str) -> str:
        pair = base_quote(text)
        if pair is None:
            if text.isalnum():
                return text
            raise UsageError(f"{text!r} is not a Hyperliquid market: use BTC-USD or BTC")
        if pair[1].upper() != QUOTE:
            raise UsageError(f"{text!r}: Hyperliquid perpetuals are quoted in USD; use {pair[0]}-USD or {pair[0]}")
        return pair[0]

    def earliest_candle(self, interval_ns: int, now_ns: int) -> int | None:
        # The 5000 include the candle still forming.
        return (now_ns // interval_ns - (CANDLES_SERVED - 1)) * interval_ns

    def candle_pages(self, market: Market, interval_ns: int, lo: int, hi: int) -> Iterator[Page]:
        code = self.interval_code(interval_ns)
        guard = self.earliest_candle(interval_ns, self._now()) + EDGE_GUARD_BUCKETS * interval_ns
        cursor = lo
        while cursor < hi:
            window_hi = min(cursor + CANDLE_PAGE_BUCKETS * interval_ns, hi)
            body = {"type": "candleSnapshot", "req": {"coin": market.venue_id, "interval": code,
                                                      "startTime": cursor // MS, "endTime": window_hi // MS - 1}}
            candles = self._info(body, _decode_candles, CANDLES_PER_WEIGHT)
            rows = within(bars_table(VENUE, market.symbol, [c.t for c in candles], 1000,
                                     [c.o for c in candles], [c.h for c in candles], [c.l for c in candles],
                                     [c.c for c in candles], [c.v for c in candles], [c.n for c in candles]),
                          cursor, window_hi)
            covered_hi = window_hi
            if len(candles) >= PAGE_ITEMS and rows.num_rows:
                last = rows["ts"][-1].value + interval_ns
                covered_hi = min(max(last, cursor + interval_ns), window_hi)  # truncated: go on after the last
            covered_lo = cursor
            if cursor < guard:
                covered_lo = rows["ts"][0].value if rows.num_rows else covered_hi
            yield Page(rows, covered_lo, covered_hi)
            cursor = covered_hi

    def funding_pages(self, market: Market, lo: int, hi: int) -> Iterator[Page]:
        cursor = lo
        while cursor < hi:
            window_hi = min(cursor + FUNDING_PAGE_NS, hi)
            body = {"type": "fundingHistory", "coin": market.venue_id,
                    "startTime": _ceil_ms(cursor), "endTime": _ceil_ms(window_hi) - 1}
            entries = self._info(body, _decode_funding, FUNDING_PER_WEIGHT)
            rows = within(funding_table(VENUE, market.symbol, [e.time for e in entries],
                                        [e.fundingRate for e in entries], [e.premium for e in entries]),
                          cursor, window_hi)
            covered_hi = window_hi
            if len(entries) >= PAGE_ITEMS and rows.num_rows:
                covered_hi = min(rows["ts"][-1].value + MS, window_hi)  # truncated: the last time + 1 ms
            yield Page(rows, cursor, covered_hi)
            cursor = covered_hi

"""Coinbase Advanced Trade public candles: `GET /api/v3/brokerage/market/products/{id}/candles`.

The endpoint rejects (HTTP 400, not truncates) a span of more than 350
buckets, answers newest first with every value a string, and omits buckets
without trades. Each request here asks for 349 buckets and sets `end` one
second before the bucket after the page, so the page is whole whether the
venue reads `end` as inclusive or exclusive and never counts 350 buckets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from urllib.parse import quote, urlencode

import msgspec

from varon_cli.backfill.http import RequestRejected, RestClient, RetryPolicy, TokenBucket
from varon_cli.backfill.rows import bars_table, within
from varon_cli.backfill.source import Market, Page, base_quote
from varon_cli.errors import UsageError
from varon_cli.intervals import format_interval

VENUE = "coinbase"
DEFAULT_URL = "https://api.coinbase.com"
CANDLES_PATH = "/api/v3/brokerage/market/products/{product}/candles"
PAGE_BUCKETS = 349
# About 10 requests per second per IP for public endpoints (third-party reports).
RATE_PER_S = 10.0
BURST = 10.0
SECOND = 1_000_000_000
GRANULARITIES = {
    60: "ONE_MINUTE",
    300: "FIVE_MINUTE",
    900: "FIFTEEN_MINUTE",
    1800: "THIRTY_MINUTE",
    3600: "ONE_HOUR",
    7200: "TWO_HOUR",
    14400: "FOUR_HOUR",
    21600: "SIX_HOUR",
    86400: "ONE_DAY",
}


class Candle(msgspec.Struct):
    start: str
    low: str
    high: str
    open: str
    close: str
    volume: str


class CandlesResponse(msgspec.Struct):
    candles: list[Candle] = msgspec.field(default_factory=list)


_decode_candles = msgspec.json.Decoder(CandlesResponse).decode


def default_client(max_retries: int, timeout: float = 30.0) -> RestClient:
    return RestClient(VENUE, TokenBucket(RATE_PER_S, BURST), RetryPolicy(max_retries=max_retries), timeout)


class Coinbase:
    """Candles of Coinbase spot products (no funding: spot has none)."""

    venue = VENUE
    network = "mainnet"
    has_funding = False

    def __init__(self, client: RestClient, base_url: str = DEFAULT_URL) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    def interval_code(self, interval_ns: int) -> str:
        code = GRANULARITIES.get(interval_ns // SECOND) if interval_ns % SECOND == 0 else None
        if code is None:
            offered = ", ".join(format_interval(s * SECOND) for s in GRANULARITIES)
            raise UsageError(f"coinbase candles have no {format_interval(interval_ns)} interval; use one of {offered}")
        return code

    def markets(self, symbols: Sequence[str]) -> list[Market]:
        out = []
        for text in symbols:
            pair = base_quote(text)
            if pair is None:
                raise UsageError(f"{text!r} is not a Coinbase product id: use BASE-QUOTE, e.g. BTC-USD")
            product = f"{pair[0]}-{pair[1]}".upper()
            out.append(Market(symbol=product, venue_id=product))
        return list(dict.fromkeys(out))

    def earliest_candle(self, interval_ns: int, now_ns: int) -> int | None:
        return None

    def candle_pages(self, market: Market, interval_ns: int, lo: int, hi: int) -> Iterator[Page]:
        granularity = self.interval_code(interval_ns)
        url = self.base_url + CANDLES_PATH.format(product=quote(market.venue_id, safe="-"))
        step = PAGE_BUCKETS * interval_ns
        for page_lo in range(lo, hi, step):
            page_hi = min(page_lo + step, hi)
            params = {
                "start": str(page_lo // SECOND),
                "end": str(page_hi // SECOND - 1),
                "granularity": granularity,
                "limit": str(PAGE_BUCKETS),
            }
            what = f"GET {url}?{urlencode(params)}"
            try:
                answer = self.client.request("GET", url, what, _decode_candles, params=params)
            except RequestRejected as exc:
                if exc.status == 404 or (exc.status == 400 and "product" in exc.detail.lower()):
                    raise UsageError(f"coinbase does not know product {market.venue_id} ({what} answered "
                                     f"HTTP {exc.status} {exc.detail})") from None
                raise
            candles = answer.candles
            rows = bars_table(
                VENUE, market.symbol, [c.start for c in candles], 1,
                [c.open for c in candles], [c.high for c in candles], [c.low for c in candles],
                [c.close for c in candles], [c.volume for c in candles],
            )
            yield Page(within(rows, page_lo, page_hi), page_lo, page_hi)

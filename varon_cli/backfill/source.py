"""What a venue's REST history looks like to the backfill: markets, and pages that prove coverage.

A `Page` carries the rows a response held and the span [lo, hi) it proves
fetched. The span, not the rows, is what the store records: a bucket without
trades is absent from the rows yet covered by the span, so a rerun does not ask
for it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from varon_cli.backfill.http import RestClient
from varon_cli.errors import UsageError

_SYMBOL = re.compile(r"^([A-Za-z0-9]+)-([A-Za-z0-9]+)$")


@dataclass(frozen=True)
class Market:
    """One market to backfill: the canonical BASE-QUOTE symbol and the venue's own name for it."""

    symbol: str
    venue_id: str


@dataclass(frozen=True)
class Page:
    """Rows of one response, sorted and unique by ts, and the time span [lo, hi) they prove fetched."""

    rows: pa.Table
    lo: int
    hi: int


class Source(Protocol):
    """A venue's REST history of candles (and, for perpetuals, funding)."""

    venue: str
    network: str
    has_funding: bool
    client: RestClient

    def interval_code(self, interval_ns: int) -> str:
        """The venue's name for a bar interval; UsageError when it offers none."""

    def markets(self, symbols: Sequence[str]) -> list[Market]:
        """Map user symbols to markets; UsageError for one the venue does not list."""

    def earliest_candle(self, interval_ns: int, now_ns: int) -> int | None:
        """Open time of the oldest candle the venue still serves, or None when it serves all history."""

    def candle_pages(self, market: Market, interval_ns: int, lo: int, hi: int) -> Iterator[Page]:
        """Closed candles with open time in [lo, hi) (grid-aligned), page by page in time order."""

    def funding_pages(self, market: Market, lo: int, hi: int) -> Iterator[Page]:
        """Settled funding with time in [lo, hi), page by page in time order."""


def split_symbols(text: str | Sequence[str]) -> list[str]:
    """'BTC-USD, ETH-USD' -> ['BTC-USD', 'ETH-USD'], without duplicates, order kept."""
    parts = text.split(",") if isinstance(text, str) else [p for item in text for p in item.split(",")]
    symbols = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not symbols:
        raise UsageError("--symbols is empty: name at least one market, e.g. --symbols BTC-USD,ETH-USD")
    return symbols


def base_quote(symbol: str) -> tuple[str, str] | None:
    """('BTC', 'USD') for 'BTC-USD'; None when the text is not BASE-QUOTE."""
    match = _SYMBOL.match(symbol)
    return (match.group(1), match.group(2)) if match else None


def check_base_url(url: str) -> str:
    """A venue base URL without a trailing slash; UsageError for anything not http(s)."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise UsageError(f"--url {url!r}: expected http(s)://host[:port]")
    return url

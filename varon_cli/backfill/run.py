"""`collect backfill` from arguments to files: validate, plan what is missing, fetch it, store it.

Everything a user can get wrong (venue, interval, times, symbols, output) is
checked before the first candle request. The plan is the requested range minus
the coverage the output already records, cut to what is final (a bar still
forming, or funding not yet settled, is left for a later run) and, on
Hyperliquid, to the 5000 most recent candles the venue still serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from varon_cli.backfill import coinbase, hyperliquid
from varon_cli.backfill.http import RestClient
from varon_cli.backfill.progress import make_progress
from varon_cli.backfill.ranges import Range, clip, subtract, total
from varon_cli.backfill.source import Market, Source, check_base_url, split_symbols
from varon_cli.backfill.store import CoverageStore, StoreSpec, open_store
from varon_cli.backfill.times import iso, parse_time
from varon_cli.errors import UsageError
from varon_cli.intervals import format_interval, parse_interval
from varon_cli.schemas import BARS, FUNDING

log = logging.getLogger("varon.collect.backfill")

VENUES = ("coinbase", "hyperliquid")
# A bar is final once its interval closed this long ago (venues publish a closed
# candle within seconds; a bar fetched earlier could still change).
BAR_SETTLE_NS = 30_000_000_000
# Funding is settled hourly and published just after the hour.
FUNDING_SETTLE_NS = 300_000_000_000
NO_FUNDING = "none"
HOUR_NS = 3_600_000_000_000


@dataclass(frozen=True)
class BackfillRequest:
    """The command's arguments, as given (validated by `run_backfill`)."""

    venue: str
    symbols: str | Sequence[str]
    start: str
    output: str
    interval: str = "1m"
    end: str | None = None
    funding_out: str | None = None
    url: str | None = None
    testnet: bool = False
    max_retries: int = 8


@dataclass
class Summary:
    """What a run did, for the closing log line and for tests."""

    bars_written: int = 0
    funding_written: int = 0
    requests: int = 0
    retries: int = 0
    unavailable_before: int | None = None
    per_symbol: dict[str, int] = field(default_factory=dict)


def default_funding_path(output: str) -> Path:
    """`data/hl-1m` -> `data/hl-1m-funding`; `data/btc.parquet` -> `data/btc-funding.parquet`."""
    path = Path(output)
    if path.suffix.lower() == ".parquet":
        return path.with_name(f"{path.stem}-funding{path.suffix}")
    return path.with_name(f"{path.name}-funding")


def build_source(venue: str, url: str | None, testnet: bool, max_retries: int,
                 client: RestClient | None = None, now: Callable[[], int] = time.time_ns) -> Source:
    """The venue's REST source; `client` replaces the venue's default rate limit and retries."""
    if max_retries < 0:
        raise UsageError(f"--max-retries {max_retries}: must be 0 or more")
    if venue == "coinbase":
        if testnet:
            raise UsageError("--testnet is for hyperliquid; Coinbase public candles have no testnet")
        return coinbase.Coinbase(client or coinbase.default_client(max_retries),
                                 check_base_url(url or coinbase.DEFAULT_URL))
    if venue == "hyperliquid":
        default = hyperliquid.TESTNET_URL if testnet else hyperliquid.MAINNET_URL
        return hyperliquid.Hyperliquid(client or hyperliquid.default_client(max_retries),
                                       check_base_url(url or default), "testnet" if testnet else "mainnet", now)
    raise UsageError(f"unknown venue {venue!r}: use one of {', '.join(VENUES)}")


def run_backfill(request: BackfillRequest, client: RestClient | None = None,
                 now: Callable[[], int] = time.time_ns, tty: bool | None = None) -> Summary:
    """Fetch what the outputs lack for the requested range and store it; return what was done."""
    started = time.monotonic()
    source = build_source(request.venue.strip().lower(), request.url, request.testnet, request.max_retries, client, now)
    interval_ns = parse_interval(request.interval)
    source.interval_code(interval_ns)
    now_ns = now()
    start_ns = parse_time(request.start, "--start", now_ns)
    end_ns = parse_time(request.end or "now", "--end", now_ns)
    if start_ns >= end_ns:
        raise UsageError(f"--start {iso(start_ns)} is not before --end {iso(end_ns)}")
    interval = format_interval(interval_ns)
    first = -(-start_ns // interval_ns) * interval_ns
    last_end = end_ns // interval_ns * interval_ns
    if first >= last_end:
        raise UsageError(f"no whole {interval} bar lies between --start {iso(start_ns)} and --end {iso(end_ns)}")
    bars_store = open_store(request.output, StoreSpec(BARS, source.venue, source.network, interval))
    funding_path = _funding_path(request, source)
    funding_store = open_store(funding_path, StoreSpec(FUNDING, source.venue, source.network)) if funding_path else None
    markets = source.markets(split_symbols(request.symbols))

    summary = Summary()
    final_end = min(last_end, (now_ns - BAR_SETTLE_NS) // interval_ns * interval_ns)
    if final_end < last_end:
        log.info("%s bars from %s on are not final yet: a later run fetches them", interval, iso(max(final_end, first)))
    with bars_store:
        plan = _plan(bars_store, markets, first, final_end)
        earliest = source.earliest_candle(interval_ns, now_ns)
        if earliest is not None:
            plan, lost = _cut_to_served(plan, earliest, source.venue, interval, first)
            summary.unavailable_before = earliest if lost else None
        _fetch(bars_store, plan, f"{source.venue} {interval} bars", "bars", interval_ns, summary,
               lambda m, lo, hi: source.candle_pages(m, interval_ns, lo, hi), tty)
    summary.bars_written = bars_store.rows_written  # counted once the store has flushed on leaving
    if funding_store is not None:
        with funding_store:
            plan = _plan(funding_store, markets, start_ns, min(end_ns, now_ns - FUNDING_SETTLE_NS))
            _fetch(funding_store, plan, f"{source.venue} funding", "hours", HOUR_NS, summary, source.funding_pages, tty)
        summary.funding_written = funding_store.rows_written
    summary.requests = source.client.requests_sent
    summary.retries = source.client.retries
    funding = f", {summary.funding_written} funding rows to {funding_path}" if funding_store is not None else ""
    log.info("done: %d %s bars to %s%s; %d requests, %d retries, %.1f s", summary.bars_written, interval,
             request.output, funding, summary.requests, summary.retries, time.monotonic() - started)
    return summary


def _funding_path(request: BackfillRequest, source: Source) -> Path | None:
    if not source.has_funding:
        if request.funding_out and request.funding_out.lower() != NO_FUNDING:
            raise UsageError(f"--funding-out: {source.venue} candles are spot; there is no funding to write")
        return None
    if request.funding_out and request.funding_out.lower() == NO_FUNDING:
        return None
    path = Path(request.funding_out) if request.funding_out else default_funding_path(request.output)
    if path.resolve() == Path(request.output).resolve():
        raise UsageError(f"--funding-out {path} is the bars output too; funding needs its own place")
    return path


def _plan(store: CoverageStore, markets: list[Market], lo: int, hi: int) -> list[tuple[Market, list[Range]]]:
    """Per market, the parts of [lo, hi) the store does not cover yet."""
    if lo >= hi:
        return [(m, []) for m in markets]
    return [(m, subtract((lo, hi), store.covered(m.symbol, lo, hi))) for m in markets]


def _cut_to_served(plan: list[tuple[Market, list[Range]]], earliest: int, venue: str, interval: str,
                   first: int) -> tuple[list[tuple[Market, list[Range]]], list[str]]:
    """Drop what the venue no longer serves, say so once, and name the symbols that lost some."""
    lost = [m.symbol for m, missing in plan if missing and missing[0][0] < earliest]
    if lost:
        log.warning("%s serves only its most recent %d %s candles, from %s: %s before that cannot be backfilled "
                    "over REST (asked from %s); fetching what exists. Record live with `varon collect %s` "
                    "to keep history from now on.", venue, hyperliquid.CANDLES_SERVED, interval, iso(earliest),
                    ", ".join(lost), iso(first), venue)
    return [(m, clip(missing, earliest, 2**63 - 1)) for m, missing in plan], lost


def _fetch(store: CoverageStore, plan: list[tuple[Market, list[Range]]], label: str, unit: str, unit_ns: int,
           summary: Summary, pages: Callable, tty: bool | None) -> None:
    """Fetch every missing range page by page into `store`, with progress."""
    todo = sum(total(missing) for _, missing in plan)
    if not todo:
        log.info("%s: nothing left to fetch in the range", label)
        return
    progress = make_progress(label, -(-todo // unit_ns), unit, tty)
    done_lines: list[str] = []
    try:
        for market, missing in plan:
            rows = 0
            for lo, hi in missing:
                done = lo
                for page in pages(market, lo, hi):
                    store.add(market.symbol, page)
                    rows += page.rows.num_rows
                    progress.advance((page.hi - done) // unit_ns, f"{market.symbol} {iso(page.hi)}")
                    done = page.hi
            if missing:
                done_lines.append(f"{label} {market.symbol}: {rows} rows fetched over "
                                  f"{iso(missing[0][0])}..{iso(missing[-1][1])}")
            summary.per_symbol[f"{label} {market.symbol}"] = rows
    finally:
        progress.close()
        for line in done_lines:  # after the bar is gone, so lines and bar do not mix
            log.info("%s", line)

"""`varon collect`: wire a venue's normaliser to its outputs, live or from a capture.

The venue table below is the only place that knows which class serves which
venue and feed; everything else works on the `Normaliser` interface.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from varon_cli.config import CollectConfig
from varon_cli.errors import UsageError
from varon_cli.feeds.base import Normaliser
from varon_cli.feeds.capture import CaptureHeader, CaptureWriter, read_capture
from varon_cli.feeds.coinbase import CoinbaseAdvanced, CoinbaseExchange
from varon_cli.feeds.hyperliquid import HyperliquidFeed, info_url_for
from varon_cli.feeds.pipeline import Emitted, FeedPipeline
from varon_cli.feeds.session import LiveSession, SessionSettings
from varon_cli.intervals import parse_duration
from varon_cli.schemas import BOOK, FUNDING, TRADES
from varon_cli.sinks import Sink
from varon_cli.status.metrics import track_feed, track_sink  # [status hook]
from varon_cli.streamio import STDIO, _format_of, open_output

log = logging.getLogger("varon.collect")

FEEDS: dict[tuple[str, str], type[Normaliser]] = {
    ("coinbase", "advanced"): CoinbaseAdvanced,
    ("coinbase", "exchange"): CoinbaseExchange,
    ("hyperliquid", "ws"): HyperliquidFeed,
}


def make_normaliser(venue: str, feed: str, symbols: list[str], channels: frozenset[str],
                    watermark_delay_ns: int) -> Normaliser:
    try:
        cls = FEEDS[(venue, feed)]
    except KeyError:
        known = ", ".join(f"{v}/{f}" for v, f in FEEDS)
        raise UsageError(f"unknown feed {venue}/{feed}; known: {known}") from None
    return cls(symbols, channels, watermark_delay_ns)


def parse_symbols(text: str) -> list[str]:
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not symbols:
        raise UsageError("--symbols is empty; give e.g. --symbols BTC-USD,ETH-USD")
    if len(set(symbols)) != len(symbols):
        raise UsageError(f"--symbols lists a symbol twice: {text}")
    return symbols


def open_feed_sink(path: str, schema: pa.Schema) -> Sink:
    """A dataset directory records durably (hourly files, <= 1 s lost on kill -9); anything else as usual."""
    if path not in (None, STDIO) and _format_of(path) == "dataset" and (Path(path).is_dir() or not Path(path).exists()):
        from varon_cli.recorder import RecordingSink

        return RecordingSink(Path(path), schema)
    return open_output(path, schema)


class FeedOutputs:
    """The trades, book and funding sinks of one collector; writes what a flush emitted."""

    def __init__(self, trades: Sink | None, book: Sink | None, funding: Sink | None) -> None:
        self.sinks = [s for s in (trades, book, funding) if s is not None]
        self._trades, self._book, self._funding = trades, book, funding

    def sync(self) -> None:
        """Make what recording sinks hold durable (called by the writer about twice a second)."""
        for sink in self.sinks:
            sync = getattr(sink, "sync", None)
            if sync is not None:
                sync()

    def write(self, emitted: Emitted) -> None:
        if emitted.watermark is not None:
            for sink in self.sinks:
                sink.watermark(emitted.watermark)
            return
        for sink, batch in ((self._trades, emitted.trades), (self._book, emitted.book), (self._funding, emitted.funding)):
            if sink is not None and batch is not None:
                sink.write(batch)


@contextlib.contextmanager
def feed_outputs(trades_out: str | None, book_out: str | None, funding_out: str | None) -> Iterator[FeedOutputs]:
    """Open the requested outputs; each commits on success or interruption (see Sink)."""
    with contextlib.ExitStack() as stack:
        sinks = []
        for path, kind in ((trades_out, TRADES), (book_out, BOOK), (funding_out, FUNDING)):
            sinks.append(stack.enter_context(open_feed_sink(path, kind.schema_with())) if path else None)
        yield FeedOutputs(*sinks)


@dataclass(frozen=True)
class LiveRequest:
    """One `collect coinbase|hyperliquid` run as the command understood it."""

    venue: str
    feed: str
    symbols: list[str]
    url: str
    info_url: str
    trades_out: str
    book_out: str | None
    funding_out: str | None
    raw_out: str | None
    max_retries: int | None


def channels_for(request: LiveRequest) -> frozenset[str]:
    channels = {"trades"}
    if request.book_out:
        channels.add("book")
    if request.funding_out:
        channels.add("funding")
    return frozenset(channels)


def collect_live(request: LiveRequest, cfg: CollectConfig) -> Normaliser:
    """Run a live collector until interrupted (or out of retries); returns it for its counters."""
    delay_ns = parse_duration(cfg.watermark_delay, "watermark delay")
    channels = channels_for(request)
    normaliser = make_normaliser(request.venue, request.feed, request.symbols, channels, delay_ns)
    max_retries = request.max_retries if request.max_retries is not None else (cfg.max_retries or None)
    settings = SessionSettings(
        url=request.url,
        watchdog_s=parse_duration(cfg.watchdog, "watchdog") / 1e9,
        backoff_initial_s=parse_duration(cfg.backoff_initial, "backoff") / 1e9,
        backoff_max_s=parse_duration(cfg.backoff_max, "backoff") / 1e9,
        max_retries=max_retries or None,
        buffer_rows=cfg.buffer_rows,
        info_url=request.info_url or (info_url_for(request.url) if request.venue == "hyperliquid" else ""),
        funding_interval_s=parse_duration(cfg.funding_interval, "funding interval") / 1e9,
    )
    with feed_outputs(request.trades_out, request.book_out, request.funding_out) as outputs:
        capture = None
        if request.raw_out:
            header = CaptureHeader(venue=normaliser.venue, feed=normaliser.feed, symbols=normaliser.symbols,
                                   channels=sorted(channels), url=request.url, watermark_delay_ns=delay_ns,
                                   started_ns=time.time_ns())
            capture = CaptureWriter(Path(request.raw_out), header)
        session = LiveSession(normaliser, settings, outputs.write, capture, periodic=outputs.sync)
        try:
            session.run()
        finally:
            log.info("%s %s: %s", normaliser.venue, normaliser.feed, normaliser.stats.summary())
    return normaliser


def replay_capture(path: Path, speed: float | None, trades_out: str, book_out: str | None,
                   funding_out: str | None) -> Normaliser:
    """Re-normalise a capture through the live code path; `speed` None = as fast as possible."""
    header, lines = read_capture(path)
    normaliser = make_normaliser(header.venue, header.feed, header.symbols, frozenset(header.channels),
                                 header.watermark_delay_ns)
    with feed_outputs(trades_out, book_out, funding_out) as outputs:
        pipeline = FeedPipeline(normaliser, track_feed(normaliser, outputs.write))  # [status hook]
        pace = _Pacer(speed)
        try:
            if speed is None:
                frame, replay_line = pipeline.frame, pipeline.replay_line
                for line in lines:
                    if type(line) is tuple:
                        frame(line[0], line[1])
                    else:
                        replay_line(line)
            else:
                for line in lines:
                    pace.wait(line[0] if type(line) is tuple else line.t)
                    pipeline.replay_line(line)
        finally:
            pipeline.flush(0)
            log.info("replay of %s: %s", path, normaliser.stats.summary())
    return normaliser


class _Pacer:
    """Sleeps so that recorded times are reproduced at `speed` times real time."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._origin: tuple[int, float] | None = None

    def wait(self, t_ns: int) -> None:
        if self.speed is None:
            return
        if self._origin is None:
            self._origin = (t_ns, time.monotonic())
            return
        due = self._origin[1] + (t_ns - self._origin[0]) / 1e9 / self.speed
        delay = due - time.monotonic()
        if delay > 0.0005:
            time.sleep(delay)


def parse_speed(text: str) -> float | None:
    if text.lower() in ("max", "inf"):
        return None
    try:
        speed = float(text.rstrip("x"))
    except ValueError:
        raise UsageError(f"--speed {text!r}: give a multiple of real time (1, 10, 0.5) or max") from None
    if not speed > 0:
        raise UsageError(f"--speed {text!r}: must be positive")
    return speed


def replay_trades(path: str, speed: float | None, trades_out: str, tick_s: float = 0.25) -> int:
    """Replay a trades file with its timing; watermarks follow the replay clock through quiet spells."""
    import numpy as np

    from varon_cli.runtime import Watermark
    from varon_cli.streamio import open_input

    rows = 0
    with open_input(path, expect=(TRADES,)) as src, open_output(trades_out, TRADES.schema_with()) as dst:
        dst = track_sink(dst)  # [status hook] rows out and lag of a replay for `varon status`
        origin: tuple[int, float] | None = None
        for item in src:
            if isinstance(item, Watermark):
                dst.watermark(item)
                continue
            batch = item
            if speed is None or batch.num_rows == 0:
                dst.write(batch)
                rows += batch.num_rows
                continue
            ts = batch.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
            if origin is None:
                origin = (int(ts[0]), time.monotonic())
            due = origin[1] + (ts - origin[0]) / 1e9 / speed
            start = 0
            while start < len(ts):
                now = time.monotonic()
                stop = int(np.searchsorted(due, now, side="right"))
                if stop > start:
                    dst.write(batch.slice(start, stop - start))
                    rows += stop - start
                    start = stop
                    continue
                wait = due[start] - now
                if wait > tick_s:
                    time.sleep(tick_s)
                    clock = origin[0] + int((time.monotonic() - origin[1]) * speed * 1e9)
                    dst.watermark(Watermark(min(clock, int(ts[start]) - 1)))
                else:
                    time.sleep(max(wait, 0))
    return rows

"""What every feed normaliser shares: counters, gap bookkeeping, dedupe, flushes.

A normaliser is a pure function of the events it is fed: connection opened,
frame received (with its receive time), REST answer received, timer tick, flush.
The live session and `collect replay` feed it the same events in the same order,
so a replay of a capture produces the live output byte for byte. The normaliser
never touches a socket; when the data says the connection is no longer
trustworthy (a sequence gap) it files a request that the live session carries
out and a replay ignores (its capture already holds what happened next).
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from dataclasses import dataclass, field

import msgspec
import pyarrow as pa

from varon_cli.feeds.rows import BookRows, FundingRows, TradeRows
from varon_cli.runtime import Watermark

log = logging.getLogger("varon.collect")

MAX_PENDING_ROWS = 65_536
INF = float("inf")
_ANY_DECODER = msgspec.json.Decoder()
FRAME_EXCERPT = 200


def excerpt(frame: bytes | str) -> str:
    """The start of an offending frame for a log line (never a whole book)."""
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    text = text.replace("\n", "\\n")
    return text if len(text) <= FRAME_EXCERPT else text[:FRAME_EXCERPT] + "..."


@dataclass
class FeedStats:
    """Counters a collector reports when it stops (and publishes while running)."""

    frames: int = 0
    trades: int = 0
    book_rows: int = 0
    funding_rows: int = 0
    duplicates: int = 0
    malformed: int = 0
    unknown: int = 0
    bad_values: int = 0
    errors: int = 0
    connections: int = 0
    stalls: int = 0
    buffer_full: int = 0
    sequence_gaps: int = 0
    heartbeat_gaps: int = 0
    trade_gaps: dict[str, int] = field(default_factory=dict)
    missed_trades: dict[str, int] = field(default_factory=dict)
    resyncs: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        gaps = sum(self.trade_gaps.values())
        return (f"{self.frames} frames, {self.trades} trades, {self.book_rows} book rows, {self.funding_rows} funding rows; "
                f"{self.connections} connections, {self.stalls} stalls, {self.sequence_gaps} sequence gaps, {self.heartbeat_gaps} heartbeat gaps, "
                f"{gaps} trade-id gaps, {self.duplicates} duplicates removed, {self.malformed} malformed, "
                f"{self.unknown} unknown, {self.bad_values} bad values, {self.errors} venue errors, "
                f"{self.buffer_full} times the output buffer was full")


@dataclass(frozen=True)
class Request:
    """Something the normaliser needs the live session to do.

    action: "reconnect" (the whole connection is suspect) or "resubscribe"
    (refresh one product's channels; the others are left alone).
    """

    action: str
    product: str = ""
    reason: str = ""


class RecentIds:
    """Trade ids seen lately for one product, to drop repeats after a reconnect.

    Bounded: a reconnect snapshot reaches back at most a few hundred trades, so
    remembering the last `capacity` ids is enough and memory stays flat.
    """

    __slots__ = ("_seen", "_order", "_capacity")

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: set = set()
        self._order: deque = deque()
        self._capacity = capacity

    def add(self, key: object) -> bool:
        """Remember `key`; False when it was already there (a duplicate)."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self._capacity:
            self._seen.discard(self._order.popleft())
        return True


class Normaliser(abc.ABC):
    """Base class: one venue feed's frames in, trades/book/funding rows out."""

    venue: str = ""
    feed: str = ""

    def __init__(self, symbols: list[str], channels: frozenset[str], watermark_delay_ns: int = 1_000_000_000) -> None:
        self.symbols = list(symbols)
        self.channels = channels
        self.watermark_delay_ns = watermark_delay_ns
        self.stats = FeedStats()
        self.trades = TradeRows(self.venue)
        self.book = BookRows(self.venue)
        self.funding = FundingRows(self.venue)
        self.requests: list[Request] = []
        self._recent: dict[str, RecentIds] = {}
        self._last_trade_id: dict[str, int] = {}
        self._last_frame_ns = 0
        self._watermark_ns = 0
        self._anchor_ts = 0  # latest event time emitted ...
        self._anchor_recv = 0  # ... and when it was received
        self._emitted_since_watermark = False
        self.last_frame_json = True

    # -- events -------------------------------------------------------------------------------
    def on_connect(self, recv_ns: int) -> None:
        """A new connection: per-connection counters start again."""
        self.stats.connections += 1

    def on_frame(self, frame: bytes | str, recv_ns: int) -> None:
        """Normalise one WebSocket frame; bad frames are logged, counted and skipped."""
        self.stats.frames += 1
        self._last_frame_ns = recv_ns
        self.last_frame_json = True
        self._parse(frame, recv_ns)

    @abc.abstractmethod
    def _parse(self, frame: bytes | str, recv_ns: int) -> None:
        """The venue's parser: append rows, count problems, file requests."""

    def on_rest(self, what: str, body: bytes, recv_ns: int) -> None:
        """A REST answer the session fetched for this feed (funding polls)."""
        self.stats.unknown += 1
        log.warning("%s: unexpected REST answer %r ignored", self.venue, what)

    def on_tick(self, now_ns: int) -> Watermark | None:
        """Timer tick: when nothing was emitted since the last watermark, advance it.

        The watermark is event time, estimated without trusting the local clock
        against the venue's: the latest event time seen, plus the local time
        that has passed between receiving that event and the last frame of any
        kind (heartbeats included), minus `watermark_delay_ns`. It only moves
        while the venue is talking to us, so after a silent drop it never runs
        ahead of trades a reconnect snapshot will still deliver, and a replayed
        capture of old prints gets watermarks in their own time.
        """
        if self._emitted_since_watermark:
            self._emitted_since_watermark = False
            return None
        if not self._anchor_ts:
            return None
        candidate = self._anchor_ts + (self._last_frame_ns - self._anchor_recv) - self.watermark_delay_ns
        if candidate <= self._watermark_ns:
            return None
        self._watermark_ns = candidate
        return Watermark(candidate)

    def take_batches(self) -> tuple[pa.RecordBatch | None, pa.RecordBatch | None, pa.RecordBatch | None]:
        """Trades, book and funding rows accumulated since the last flush."""
        # event time is read from the trades (what bars are made of); from the book only without trades
        for rows in ((self.trades,) if "trades" in self.channels else (self.book,)):
            if rows.ts:
                latest = max(rows.ts)
                if latest > self._anchor_ts:
                    self._anchor_ts = latest
                    self._anchor_recv = max(self._anchor_recv, rows.recv_ts[-1])
        trades, book, funding = self.trades.take_batch(), self.book.take_batch(), self.funding.take_batch()
        if trades is not None or book is not None or funding is not None:
            self._emitted_since_watermark = True
        return trades, book, funding

    @property
    def pending_rows(self) -> int:
        return len(self.trades) + len(self.book) + len(self.funding)

    def take_requests(self) -> list[Request]:
        requests, self.requests = self.requests, []
        return requests

    # -- what the live session sends ----------------------------------------------------------
    @abc.abstractmethod
    def subscribe_messages(self) -> list[str]:
        """JSON texts to send right after connecting."""

    def resubscribe_messages(self, product: str) -> list[str]:
        """JSON texts that refresh one product's channels (unsubscribe, then subscribe)."""
        return []

    def keepalive_message(self) -> str | None:
        """A text to send periodically when the venue wants client traffic (Hyperliquid's ping)."""
        return None

    # -- helpers for subclasses ---------------------------------------------------------------
    def _first_sighting(self, symbol: str, key: object) -> bool:
        recent = self._recent.get(symbol)
        if recent is None:
            recent = self._recent[symbol] = RecentIds()
        if recent.add(key):
            return True
        self.stats.duplicates += 1
        return False

    def _trade_id_gap(self, symbol: str, number: int) -> bool:
        """Follow a venue's contiguous per-product trade ids; True (logged, counted) when some were skipped."""
        last = self._last_trade_id.get(symbol)
        if last is None or number > last:
            self._last_trade_id[symbol] = number
        if last is not None and number > last + 1:
            self._trade_gap(symbol, number - last - 1, f"trade {number} after {last}")
            return True
        return False

    def _malformed(self, frame: bytes | str, why: str) -> None:
        self.stats.malformed += 1
        if why.startswith("not JSON"):
            self.last_frame_json = False
        log.warning("%s: malformed frame skipped (%s): %s", self.venue, why, excerpt(frame))

    def _unknown(self, frame: bytes | str, what: str) -> None:
        self.stats.unknown += 1
        log.warning("%s: unknown message %s skipped: %s", self.venue, what, excerpt(frame))

    def _bad_value(self, frame: bytes | str, why: str) -> None:
        self.stats.bad_values += 1
        log.warning("%s: bad value skipped (%s): %s", self.venue, why, excerpt(frame))

    def _trade_gap(self, symbol: str, missed: int, detail: str) -> None:
        self.stats.trade_gaps[symbol] = self.stats.trade_gaps.get(symbol, 0) + 1
        self.stats.missed_trades[symbol] = self.stats.missed_trades.get(symbol, 0) + missed
        log.warning("%s %s: trade-id gap, %d trade(s) missing (%s)", self.venue, symbol, missed, detail)

    def _resync(self, request: Request) -> None:
        key = request.product or "*"
        self.stats.resyncs[key] = self.stats.resyncs.get(key, 0) + 1
        self.requests.append(request)


def classify_failure(norm: Normaliser, frame: bytes | str, exc: Exception, tag_field: str, known: set[str],
                      ignored: frozenset[str] = frozenset()) -> dict | None:
    """Tell apart a venue error, an unknown message type and a malformed frame.

    Returns the frame as a plain dict when it is a JSON object, so a caller can
    still account for its sequence number.
    """
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        norm._malformed(frame, "not JSON")
        return None
    try:
        obj = _ANY_DECODER.decode(frame)
    except msgspec.DecodeError:
        norm._malformed(frame, "not JSON")
        return None
    if not isinstance(obj, dict):
        norm._malformed(frame, "not a JSON object")
        return None
    if obj.get("type") == "error" or obj.get("channel") == "error":
        norm.stats.errors += 1
        detail = obj.get("reason") or obj.get("message") or obj.get("data") or ""
        log.error("%s: venue error: %s", norm.venue, excerpt(str(detail)))
        return obj
    tag = obj.get(tag_field)
    if tag in ignored:
        return obj  # a real message type of a channel varon does not use (e.g. ticker)
    if tag not in known:
        norm._unknown(frame, f"{tag_field}={tag!r}")
        return obj
    norm._malformed(frame, str(exc))
    return obj

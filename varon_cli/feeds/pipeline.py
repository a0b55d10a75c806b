"""The one path every collector event takes: record it, normalise it, emit the result.

The live session and `collect replay` both drive a `FeedPipeline` with the same
calls (connect, frame, rest, flush, tick, close). Live, each call is also written
to the raw capture; on replay the calls come from that capture. Output is a
pure function of this call sequence, so the replay of a capture reproduces the
live output byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from varon_cli.feeds.base import MAX_PENDING_ROWS, Normaliser
from varon_cli.feeds.capture import CaptureLine, CaptureWriter, frame_of
from varon_cli.runtime import Watermark


@dataclass(frozen=True)
class Emitted:
    """What one flush produced: a batch per output kind, or a watermark."""

    trades: pa.RecordBatch | None = None
    book: pa.RecordBatch | None = None
    funding: pa.RecordBatch | None = None
    watermark: Watermark | None = None


Emit = Callable[[Emitted], None]


class FeedPipeline:
    """A normaliser with its capture and its output callback."""

    def __init__(self, normaliser: Normaliser, emit: Emit, capture: CaptureWriter | None = None,
                 max_pending_rows: int = MAX_PENDING_ROWS) -> None:
        self.normaliser = normaliser
        self.capture = capture
        self._emit = emit
        self._max_pending = max_pending_rows
        self._frames = 0

    def connect(self, t: int) -> None:
        if self.capture:
            self.capture.event(t, "connect")
        self.normaliser.on_connect(t)

    def frame(self, t: int, frame: str | bytes) -> None:
        """One frame in; every 64 frames, flushes on its own when the pending rows reach the cap."""
        normaliser = self.normaliser
        normaliser.on_frame(frame, t)
        if self.capture:
            self.capture.frame(t, frame, normaliser.last_frame_json)
        self._frames += 1
        if not self._frames & 63 and normaliser.pending_rows >= self._max_pending:
            self.flush(t)

    def rest(self, t: int, what: str, body: bytes) -> None:
        if self.capture:
            self.capture.rest(t, what, body)
        self.normaliser.on_rest(what, body, t)

    def flush(self, t: int) -> None:
        """Emit what the normaliser holds (recorded even when empty is skipped)."""
        if not self.normaliser.pending_rows:
            return
        if self.capture:
            self.capture.event(t, "flush")
        trades, book, funding = self.normaliser.take_batches()
        self._emit(Emitted(trades, book, funding))

    def tick(self, t: int) -> None:
        """Timer: pending rows go first, then a watermark if the market was idle."""
        self.flush(t)
        if self.capture:
            self.capture.event(t, "tick")
        watermark = self.normaliser.on_tick(t)
        if watermark is not None:
            self._emit(Emitted(watermark=watermark))

    def close(self, t: int, reason: str) -> None:
        self.flush(t)
        if self.capture:
            self.capture.event(t, "close", reason)

    def replay_line(self, line: CaptureLine | tuple[int, bytes]) -> None:
        """Apply one capture line exactly as the live session applied the event."""
        if type(line) is tuple:
            self.frame(*line)
            return
        command = line.c
        if command is None:
            frame = frame_of(line)
            if frame is not None:
                self.frame(line.t, frame)
        elif command == "flush":
            self.flush(line.t)
        elif command == "tick":
            self.tick(line.t)
        elif command == "connect":
            self.connect(line.t)
        elif command == "rest":
            self.rest(line.t, line.what or "", (line.s or "").encode())
        elif command == "close":
            self.close(line.t, line.reason or "")

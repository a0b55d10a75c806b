"""Raw captures: everything a collector received, with its receive time, as zstd JSON lines.

A capture is the complete input of a normaliser, clock included, so
`collect replay` can rebuild the live output byte for byte. One JSON object
per line:

    {"t":<recv ns>,"c":"open","venue":..,"feed":..,"symbols":[..],"channels":[..],"url":..,"watermark_delay_ns":..}
    {"t":<ns>,"c":"connect"}                      a connection opened (per-connection counters restart)
    {"t":<ns>,"m":<frame>}                         a WebSocket text frame that is one line of JSON, verbatim
    {"t":<ns>,"s":"<frame text>"}                  any other text frame, as a JSON string
    {"t":<ns>,"b":"<base64>"}                      a binary frame
    {"t":<ns>,"c":"rest","what":"..","s":"<body>"}  a REST answer fetched for the feed (funding polls)
    {"t":<ns>,"c":"flush"}                         the collector emitted what it held
    {"t":<ns>,"c":"tick"}                          a timer tick (watermarks when idle)
    {"t":<ns>,"c":"close","reason":".."}           the connection ended

The compressor is flushed to a complete zstd block at least once a second, so
a `kill -9` loses at most the last second; the reader stops quietly at a torn
tail.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import msgspec
import zstandard

from varon_cli.errors import InputError, UsageError

log = logging.getLogger("varon.collect")
CAPTURE_VERSION = 1
SYNC_INTERVAL_NS = 1_000_000_000


class CaptureLine(msgspec.Struct, omit_defaults=True):
    t: int
    c: Optional[str] = None
    s: Optional[str] = None
    m: Optional[msgspec.Raw] = None
    b: Optional[str] = None
    what: Optional[str] = None
    reason: Optional[str] = None


@dataclass(frozen=True)
class CaptureHeader:
    """What a replay needs to rebuild the normaliser the live collector used."""

    venue: str
    feed: str
    symbols: list[str]
    channels: list[str]
    url: str
    watermark_delay_ns: int
    started_ns: int


_LINE_DECODER = msgspec.json.Decoder(CaptureLine)
_encode_str = msgspec.json.encode


class CaptureWriter:
    """Appends capture lines to a zstd stream; flushes a block at least every second."""

    def __init__(self, path: Path, header: CaptureHeader) -> None:
        if path.exists():
            raise UsageError(f"capture {path} exists; choose a new name (captures are never overwritten)")
        self.path = path
        self._file = open(path, "xb")
        self._writer = zstandard.ZstdCompressor(level=3).stream_writer(self._file, closefd=False)
        self._last_sync = header.started_ns
        self._dirty = False
        meta = {"t": header.started_ns, "c": "open", "version": CAPTURE_VERSION, "venue": header.venue,
                "feed": header.feed, "symbols": header.symbols, "channels": header.channels, "url": header.url,
                "watermark_delay_ns": header.watermark_delay_ns}
        self._writer.write(msgspec.json.encode(meta) + b"\n")
        self.sync(header.started_ns)

    def frame(self, recv_ns: int, frame: str | bytes, is_json: bool = False) -> None:
        """Record a frame; one-line JSON is embedded as is, so replay can slice it out without decoding."""
        if isinstance(frame, str):
            raw = frame.encode()
            if is_json and b"\n" not in raw and b"\r" not in raw:
                line = b'{"t":%d,"m":%b}\n' % (recv_ns, raw)
            else:
                line = b'{"t":%d,"s":%b}\n' % (recv_ns, _encode_str(frame))
        else:
            line = b'{"t":%d,"b":"%b"}\n' % (recv_ns, base64.b64encode(frame))
        self._writer.write(line)
        self._dirty = True
        if recv_ns - self._last_sync >= SYNC_INTERVAL_NS:
            self.sync(recv_ns)

    def rest(self, recv_ns: int, what: str, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        self._writer.write(b'{"t":%d,"c":"rest","what":%b,"s":%b}\n' % (recv_ns, _encode_str(what), _encode_str(text)))
        self._dirty = True

    def event(self, recv_ns: int, name: str, reason: str | None = None) -> None:
        if reason is None:
            self._writer.write(b'{"t":%d,"c":"%b"}\n' % (recv_ns, name.encode()))
        else:
            self._writer.write(b'{"t":%d,"c":"%b","reason":%b}\n' % (recv_ns, name.encode(), _encode_str(reason)))
        self._dirty = True
        if recv_ns - self._last_sync >= SYNC_INTERVAL_NS:
            self.sync(recv_ns)

    def sync(self, now_ns: int | None = None) -> None:
        """Push everything written so far to the file as a complete zstd block."""
        self._writer.flush(zstandard.FLUSH_BLOCK)
        self._file.flush()
        self._last_sync = now_ns if now_ns is not None else time.time_ns()
        self._dirty = False

    def close(self) -> None:
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def read_capture(path: Path) -> tuple[CaptureHeader, Iterator[CaptureLine | tuple[int, bytes]]]:
    """The header and an iterator over the remaining lines (a torn tail ends it with a warning)."""
    if not path.exists():
        raise UsageError(f"no such capture: {path}")
    lines = _lines(path)
    try:
        first = next(lines)
    except StopIteration:
        raise InputError(f"{path}: empty capture") from None
    try:
        meta = msgspec.json.decode(first)
        header = CaptureHeader(venue=meta["venue"], feed=meta["feed"], symbols=list(meta["symbols"]),
                               channels=list(meta["channels"]), url=meta.get("url", ""),
                               watermark_delay_ns=int(meta["watermark_delay_ns"]), started_ns=int(meta["t"]))
        if meta.get("c") != "open" or int(meta.get("version", 0)) != CAPTURE_VERSION:
            raise ValueError("not a varon capture header")
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a varon capture (first line: {exc})") from None
    return header, _decode(path, lines)


_FRAME_PREFIX = b'{"t":'
_FRAME_MARK = b',"m":'


def _decode(path: Path, lines: Iterator[bytes]) -> Iterator[CaptureLine | tuple[int, bytes]]:
    """Capture lines; a verbatim frame comes as a plain (recv ns, frame bytes) pair.

    The pair is the fast path: the frame is sliced out of its line instead of
    being decoded twice (once as a line, once by the normaliser).
    """
    decode = _LINE_DECODER.decode
    for number, raw in enumerate(lines, start=2):
        mark = raw.find(_FRAME_MARK, 5, 30)
        if mark > 0 and raw.startswith(_FRAME_PREFIX) and raw.endswith(b"}"):
            stamp = raw[5:mark]
            if stamp.isdigit():
                yield int(stamp), raw[mark + 5:-1]
                continue
        try:
            yield decode(raw)
        except msgspec.DecodeError as exc:
            raise InputError(f"{path}:{number}: bad capture line ({exc})") from None


def _lines(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
        rest = b""
        while True:
            try:
                data = reader.read(chunk)
            except zstandard.ZstdError as exc:
                log.warning("%s: capture ends in a torn block (%s); replaying what precedes it", path, exc)
                break
            if not data:
                break
            data = rest + data
            parts = data.split(b"\n")
            rest = parts.pop()
            yield from parts
        if rest:
            log.warning("%s: last line is incomplete (the collector was killed); it is skipped", path)


def frame_of(line: CaptureLine) -> str | bytes | None:
    """The frame a capture line holds, None for events."""
    if line.m is not None:
        return bytes(line.m)
    if line.s is not None and line.c is None:
        return line.s
    if line.b is not None:
        return base64.b64decode(line.b)
    return None

"""The live collector: a WebSocket session that survives the network.

Two threads with one job each. The network thread runs asyncio: it connects,
subscribes, receives, and drives the `FeedPipeline`; it reconnects with
exponential backoff and jitter, a watchdog drops a connection that has gone
silent (not even a heartbeat), and Hyperliquid's info endpoint is polled for
funding. The main thread writes what the pipeline emits to the outputs and
owns signals, so SIGINT/SIGTERM end the run with every received frame
normalised and written.

Between them sits a bounded buffer. When the reader of stdout is slower than
the market the buffer fills; the network thread then stops reading (the venue
sees a slow consumer, and at worst disconnects, which the reconnect and its
snapshots recover), with a loud warning and a counter. Nothing is dropped
silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import requests
import websockets
from websockets.asyncio.client import connect

from varon_cli.errors import VaronError
from varon_cli.feeds.base import Normaliser
from varon_cli.feeds.pipeline import Emitted, FeedPipeline
from varon_cli.status.metrics import feed_failed, track_feed  # [status hook]

log = logging.getLogger("varon.collect")


@dataclass(frozen=True)
class SessionSettings:
    """Network behaviour of a live collector (all from config or flags)."""

    url: str
    watchdog_s: float = 10.0
    tick_s: float = 0.25
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    healthy_after_s: float = 5.0
    max_retries: int | None = None
    buffer_rows: int = 1_000_000
    open_timeout_s: float = 10.0
    keepalive_s: float = 20.0
    info_url: str = ""
    funding_interval_s: float = 60.0


class SessionFailed(VaronError):
    """The venue stayed unreachable for --max-retries attempts."""


class OutputBuffer:
    """A bounded hand-off from the network thread to the writing thread, in rows."""

    def __init__(self, max_rows: int, on_full: Callable[[], None]) -> None:
        self._items: deque = deque()
        self._rows = 0
        self._max_rows = max_rows
        self._cond = threading.Condition()
        self._on_full = on_full
        self.closed = False
        self.peak_rows = 0

    def put(self, item: object, rows: int) -> None:
        with self._cond:
            if self._rows and self._rows + rows > self._max_rows:
                self._on_full()
                while self._rows and self._rows + rows > self._max_rows and not self.closed:
                    self._cond.wait(0.5)
            self._items.append((item, rows))
            self._rows += rows
            self.peak_rows = max(self.peak_rows, self._rows)
            self._cond.notify_all()

    def get(self, timeout: float) -> object | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    return None
            item, rows = self._items.popleft()
            self._rows -= rows
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


_DONE = object()


class _Reconnect(Exception):
    pass


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: a random delay in [d/2, d], d = initial * 2^attempt (capped)."""
    ceiling = min(max_s, initial_s * (2 ** min(attempt, 30)))
    return rng.uniform(ceiling / 2, ceiling)


def _queued_frames(ws: object) -> int:
    """Frames websockets has received but we have not read yet (0 when unknown: flush at once)."""
    try:
        return len(ws.recv_messages.frames)  # type: ignore[attr-defined]
    except AttributeError:
        return 0


class LiveSession:
    """Run a normaliser against its venue until stopped or out of retries."""

    def __init__(self, normaliser: Normaliser, settings: SessionSettings,
                 write: Callable[[Emitted], None], capture=None,  # noqa: ANN001 - CaptureWriter | None
                 periodic: Callable[[], None] | None = None) -> None:
        self.normaliser = normaliser
        self._periodic = periodic
        self.settings = settings
        self._write = track_feed(normaliser, write, settings.watchdog_s)  # [status hook] counters, lag, feed-lost alerts
        self._buffer = OutputBuffer(settings.buffer_rows, self._buffer_full)
        self.pipeline = FeedPipeline(normaliser, self._emit, capture)
        self._capture = capture
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ws = None
        self._close_reason = ""
        self._thread = threading.Thread(target=self._thread_main, name="varon-collect-net", daemon=True)
        self._failure: BaseException | None = None
        self._rng = random.Random()
        self._last_full_warning = 0.0

    # -- main thread ------------------------------------------------------------------------------
    def run(self) -> None:
        """Block, writing output, until the session ends; re-raises a network-thread failure."""
        sys.setswitchinterval(0.0005)  # hand batches to the writer promptly
        self._thread.start()
        try:
            next_periodic = time.monotonic() + 0.5
            while True:
                item = self._buffer.get(0.25)
                if self._periodic is not None and time.monotonic() >= next_periodic:
                    self._periodic()  # e.g. make recorded rows durable at least once a second
                    next_periodic = time.monotonic() + 0.5
                if item is None:
                    continue
                if item is _DONE:
                    break
                self._write(item)  # type: ignore[arg-type]
        finally:
            self.stop()
            self._buffer.close()  # a put blocked on a full buffer may proceed: we drain below
            self._thread.join(timeout=10)
            self._drain()
        if self._failure is not None:
            feed_failed(self._failure)  # [status hook] --on-alert: the collector gives up
            raise self._failure

    def _drain(self) -> None:
        """Write what the network thread emitted after the writer loop stopped."""
        while True:
            item = self._buffer.get(0)
            if item is None:
                return
            if item is not _DONE:
                self._write(item)  # type: ignore[arg-type]

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._request_stop)
            except RuntimeError:
                pass

    # -- network thread ---------------------------------------------------------------------------
    def _emit(self, emitted: Emitted) -> None:
        rows = sum(b.num_rows for b in (emitted.trades, emitted.book, emitted.funding) if b is not None)
        self._buffer.put(emitted, rows)

    def _buffer_full(self) -> None:
        self.normaliser.stats.buffer_full += 1
        now = time.monotonic()
        if now - self._last_full_warning > 5:
            self._last_full_warning = now
            log.warning("output buffer full (%d rows): the reader of the output is slower than the market; "
                        "pausing reads from the venue (full %d time(s) so far)", self.settings.buffer_rows,
                        self.normaliser.stats.buffer_full)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._failure = exc
        finally:
            try:
                self.pipeline.flush(time.time_ns())
                if self._capture is not None:
                    self._capture.close()
            except BaseException as exc:  # noqa: BLE001
                self._failure = self._failure or exc
            self._buffer.put(_DONE, 0)

    def _request_stop(self) -> None:
        assert self._stop is not None
        self._stop.set()
        self._close_reason = self._close_reason or "stopped"
        ws = self._ws
        if ws is not None:
            asyncio.ensure_future(self._drain_and_close(ws))

    async def _drain_and_close(self, ws) -> None:  # noqa: ANN001
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(ws.close(), timeout=1.0)
        except (TimeoutError, websockets.WebSocketException, OSError):
            if ws.transport is not None:
                ws.transport.abort()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ticker = asyncio.create_task(self._ticker())
        poller = None
        if "funding" in self.normaliser.channels and self.settings.info_url:
            poller = asyncio.create_task(self._poll_funding())
        try:
            await self._connect_loop()
        finally:
            ticker.cancel()
            if poller is not None:
                poller.cancel()

    async def _connect_loop(self) -> None:
        settings = self.settings
        attempt = 0
        failures = 0
        assert self._stop is not None
        while not self._stop.is_set():
            opened = time.monotonic()
            connected = False
            reason = ""
            try:
                async with connect(settings.url, open_timeout=settings.open_timeout_s, max_size=2 ** 24,
                                   ping_interval=settings.keepalive_s, ping_timeout=settings.watchdog_s,
                                   close_timeout=1.0) as ws:
                    connected = True
                    self._ws = ws
                    self._close_reason = ""
                    self.pipeline.connect(time.time_ns())
                    log.info("connected to %s; subscribing %s", settings.url, ", ".join(self.normaliser.symbols))
                    for message in self.normaliser.subscribe_messages():
                        await ws.send(message)
                    await self._receive(ws)
                    reason = self._close_reason or "closed"
            except _Reconnect as exc:
                reason = str(exc)
            except websockets.ConnectionClosed as exc:
                reason = self._close_reason or f"connection closed ({exc})"
            except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            finally:
                self._ws = None
            if connected:
                self.pipeline.close(time.time_ns(), reason)
            if self._stop.is_set():
                return
            if connected and time.monotonic() - opened >= settings.healthy_after_s:
                attempt = failures = 0
            else:
                failures += 1
            if settings.max_retries is not None and failures > settings.max_retries:
                raise SessionFailed(f"{settings.url}: giving up after {failures} failed attempt(s); last: {reason}")
            delay = backoff_delay(attempt, settings.backoff_initial_s, settings.backoff_max_s, self._rng)
            attempt += 1
            log.warning("%s: %s; reconnecting in %.2f s (attempt %d)", settings.url, reason, delay, attempt)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _receive(self, ws) -> None:  # noqa: ANN001
        pipeline = self.pipeline
        normaliser = self.normaliser
        watchdog = asyncio.create_task(self._watchdog(ws))
        keepalive_text = normaliser.keepalive_message()
        keepalive = asyncio.create_task(self._keepalive(ws, keepalive_text)) if keepalive_text else None
        self._last_frame = time.monotonic()
        try:
            async for frame in ws:
                now = time.time_ns()
                self._last_frame = time.monotonic()
                pipeline.frame(now, frame)
                if normaliser.requests:
                    for request in normaliser.take_requests():
                        if request.action == "reconnect":
                            raise _Reconnect(f"resynchronising: {request.reason}")
                        log.warning("%s: refreshing %s (%s)", normaliser.venue, request.product, request.reason)
                        for message in normaliser.resubscribe_messages(request.product):
                            await ws.send(message)
                if not _queued_frames(ws):
                    pipeline.flush(now)
        finally:
            watchdog.cancel()
            if keepalive is not None:
                keepalive.cancel()

    async def _watchdog(self, ws) -> None:  # noqa: ANN001
        limit = self.settings.watchdog_s
        while True:
            await asyncio.sleep(min(limit / 4, 1.0))
            silent = time.monotonic() - self._last_frame
            if silent > limit:
                self.normaliser.stats.stalls += 1
                self._close_reason = f"no data for {silent:.1f} s (watchdog {limit:g} s)"
                log.warning("%s: %s; dropping the connection", self.settings.url, self._close_reason)
                if ws.transport is not None:
                    ws.transport.abort()
                return

    async def _keepalive(self, ws, text: str) -> None:  # noqa: ANN001
        interval = min(self.settings.keepalive_s, self.settings.watchdog_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await ws.send(text)
            except websockets.ConnectionClosed:
                return

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            self.pipeline.tick(time.time_ns())

    async def _poll_funding(self) -> None:
        settings = self.settings
        url = settings.info_url.rstrip("/") + "/info"
        session = requests.Session()
        attempt = 0
        while True:
            try:
                body = await asyncio.to_thread(_post_json, session, url, {"type": "metaAndAssetCtxs"})
            except (requests.RequestException, VaronError) as exc:
                delay = backoff_delay(attempt, settings.backoff_initial_s, settings.funding_interval_s, self._rng)
                attempt += 1
                log.warning("funding poll %s failed (%s); retrying in %.1f s", url, exc, delay)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            now = time.time_ns()
            self.pipeline.rest(now, "metaAndAssetCtxs", body)
            self.pipeline.flush(now)
            await asyncio.sleep(settings.funding_interval_s)


def _post_json(session: requests.Session, url: str, payload: dict) -> bytes:
    response = session.post(url, json=payload, timeout=10)
    if response.status_code != 200:
        raise VaronError(f"HTTP {response.status_code}: {response.text[:200]}")
    return response.content

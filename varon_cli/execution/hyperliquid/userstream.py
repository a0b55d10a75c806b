"""The account's live events from Hyperliquid's WebSocket: fills, mids, funding and liquidations.

Why not the SDK's WebsocketManager: it neither reconnects nor resubscribes, and
Hyperliquid does not replay what happened while a socket was down. This thread
keeps one connection up (exponential backoff with jitter, a JSON ping every
20 s, a silence watchdog), resubscribes after every reconnect and then puts a
`reconnected` event in the queue: the executor answers it by reading the
fills it may have missed over REST (`userFillsByTime`). Duplicates between the
snapshot, the stream and the catch-up are removed downstream by fill identity.

Events reach the executor's main thread through a queue; this thread never
touches executor state.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from varon_cli.feeds.session import backoff_delay

log = logging.getLogger("varon.execute.hyperliquid")


@dataclass(frozen=True)
class UserEvent:
    """kind: fills | funding | liquidation | connected | reconnected | lost."""

    kind: str
    data: Any = None
    recv_ns: int = 0


class UserStream(threading.Thread):
    """A daemon thread holding the account's WebSocket subscriptions."""

    def __init__(self, base_url: str, user: str, events: queue.Queue, *, ping_s: float = 20.0,
                 silence_s: float = 60.0, backoff_initial_s: float = 0.2, backoff_max_s: float = 10.0) -> None:
        super().__init__(name="hyperliquid-user-stream", daemon=True)
        self.url = "ws" + base_url.rstrip("/")[len("http"):] + "/ws"
        self.user = user
        self.events = events
        self.ping_s = ping_s
        self.silence_s = silence_s
        self.backoff = (backoff_initial_s, backoff_max_s)
        self.connects = 0
        self.reconnects = 0
        # the latest mids, written by this thread and read by the executor's (a dict swap is atomic)
        self.mids: dict[str, float] = {}
        self.mids_ns = 0
        self._halt = threading.Event()
        self._ws = None
        self._rng = random.Random()

    def stop(self) -> None:
        self._halt.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - closing a socket that is already gone
                pass

    def run(self) -> None:
        attempt = 0
        while not self._halt.is_set():
            try:
                with connect(self.url, open_timeout=5, close_timeout=1, ping_interval=None,
                             max_size=1 << 24) as ws:
                    self._ws = ws
                    self._subscribe(ws)
                    self.connects += 1
                    first = self.connects == 1
                    if not first:
                        self.reconnects += 1
                    self.events.put(UserEvent("connected" if first else "reconnected", recv_ns=time.time_ns()))
                    log.info("user stream connected to %s%s", self.url, "" if first else " again")
                    attempt = 0
                    self._receive(ws)
            except (OSError, WebSocketException, TimeoutError) as exc:
                if self._halt.is_set():
                    break
                log.warning("user stream %s: %s", self.url, type(exc).__name__ if not str(exc) else exc)
            except Exception:  # noqa: BLE001 - a bug here must not silently end the stream: say so, reconnect
                log.exception("user stream %s: unexpected error", self.url)
            finally:
                self._ws = None
            if self._halt.is_set():
                break
            self.events.put(UserEvent("lost", recv_ns=time.time_ns()))
            delay = backoff_delay(attempt, *self.backoff, self._rng)
            attempt += 1
            self._halt.wait(delay)

    def _subscribe(self, ws) -> None:  # noqa: ANN001
        for sub in ({"type": "userFills", "user": self.user}, {"type": "userEvents", "user": self.user},
                    {"type": "allMids"}):
            ws.send(json.dumps({"method": "subscribe", "subscription": sub}))

    def _receive(self, ws) -> None:  # noqa: ANN001
        last_ping = last_heard = time.monotonic()
        while not self._halt.is_set():
            now = time.monotonic()
            if now - last_ping >= self.ping_s:
                ws.send('{"method":"ping"}')
                last_ping = now
            if now - last_heard > self.silence_s:
                raise TimeoutError(f"silent for {self.silence_s:.0f}s")
            try:
                text = ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            last_heard = time.monotonic()
            self._dispatch(text)

    def _dispatch(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if not text.startswith("{"):
            return  # "Websocket connection established."
        try:
            msg = json.loads(text)
        except ValueError:
            log.warning("user stream: frame is not JSON: %.120s", text)
            return
        channel, data, now = msg.get("channel"), msg.get("data"), time.time_ns()
        if channel == "userFills" and isinstance(data, dict):
            if str(data.get("user", "")).lower() == self.user.lower():
                self.events.put(UserEvent("fills", list(data.get("fills") or []), now))
        elif channel == "allMids" and isinstance(data, dict):
            try:
                mids = {str(c): float(p) for c, p in (data.get("mids") or {}).items()}
            except (TypeError, ValueError):
                log.warning("user stream: allMids with a bad price: %.120s", text)
                return
            self.mids = {**self.mids, **mids}
            self.mids_ns = now
        elif channel == "user" and isinstance(data, dict):
            if data.get("funding"):
                self.events.put(UserEvent("funding", data["funding"], now))
            if data.get("liquidation"):
                self.events.put(UserEvent("liquidation", data["liquidation"], now))
            # fills also arrive here; the userFills channel is the one used, so they are not counted twice
        elif channel == "error":
            log.warning("user stream: venue error: %.200s", data)

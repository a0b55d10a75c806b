"""A local fake of Coinbase Advanced Trade public candles, with faults on request.

`FakeCoinbaseRest` serves `GET /api/v3/brokerage/market/products/{id}/candles`
from a deterministic synthetic history: the same (product, granularity, bucket)
always gives the same candle, about one bucket in sixteen has no trades and is
omitted (as the real endpoint omits empty buckets), answers are newest first
with every value a string, and a span of more than 350 buckets is rejected
with the real HTTP 400 body. `history()` gives the expected candles, so a test
can compare a backfill with the truth.

`FakeRestServer` is the shared machinery (also used by the Hyperliquid fake):
a ThreadingHTTPServer on 127.0.0.1 with an OS-chosen port in a background
thread, a log of every request, and faults for the next requests: an HTTP
status (429 with or without Retry-After, 500, 503), a stall, or a connection
reset.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

JSON = "application/json"
Reply = tuple[int, dict[str, str], bytes]


# -- deterministic synthetic prices ----------------------------------------------
def unit(*key: object) -> float:
    """A uniform number in [0, 1) fixed by `key` (stable across processes, unlike hash())."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


BASE_PRICES = {"BTC": 95_000.0, "ETH": 3_300.0, "SOL": 190.0, "DOGE": 0.32, "kPEPE": 0.018, "LOOM": 0.05}


def price_at(base: str, t_s: float) -> float:
    """A smooth, deterministic price path: a weekly wave and a daily wiggle around the base price."""
    p0 = BASE_PRICES.get(base, 100.0)
    return p0 * (1 + 0.04 * math.sin(2 * math.pi * t_s / (7 * 86400)) + 0.01 * math.sin(2 * math.pi * t_s / 86400))


def synthetic_ohlcv(base: str, t_s: int, width_s: int, salt: str) -> tuple[float, float, float, float, float, int]:
    """(open, high, low, close, volume, trades) of the bucket [t_s, t_s + width_s)."""
    o, c = price_at(base, t_s), price_at(base, t_s + width_s)
    c *= 1 + 0.002 * (unit(salt, base, width_s, t_s, "c") - 0.5)
    h = max(o, c) * (1 + 0.001 * unit(salt, base, width_s, t_s, "h"))
    low = min(o, c) * (1 - 0.001 * unit(salt, base, width_s, t_s, "l"))
    n = 1 + int(200 * unit(salt, base, width_s, t_s, "n"))
    v = n * 0.013 * (1 + unit(salt, base, width_s, t_s, "v"))
    return o, h, low, c, v, n


def decimals(price: float) -> int:
    return max(2, 5 - int(math.floor(math.log10(abs(price)))) if price else 2)


# -- the server machinery ------------------------------------------------------------
@dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it, and the status it answered (0 for a reset)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    at: float


@dataclass
class _Fault:
    kind: str  # "status", "stall" or "reset"
    left: int | None  # None: every request from now on
    skip: int = 0
    status: int = 500
    headers: dict[str, str] | None = None
    body: bytes | None = None
    seconds: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.fake._serve(self)  # type: ignore[attr-defined]

    def do_POST(self) -> None:  # noqa: N802
        self.server.fake._serve(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # resets and clients that time out are the point of the faults


class FakeRestServer:
    """Base of the fakes: a threaded HTTP server, a request log, and scheduled faults.

    Subclasses implement `handle(method, path, query, raw_body) -> (status, headers, body)`.
    Faults apply to the next requests in the order they were scheduled; `after`
    lets that many requests through first (e.g. fail from the 5th request on).
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle --
    def start(self) -> FakeRestServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeRestServer:
        return self.start()

    def __exit__(self, et: type | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first (use it as a context manager)"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- faults --
    def fail_next(self, n: int | None = 1, status: int = 500, retry_after: str | float | None = None,
                  body: bytes | str | None = None, after: int = 0) -> None:
        """Answer the next `n` requests (None: all from now on) with `status`, optionally with Retry-After."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        raw = body.encode() if isinstance(body, str) else body
        self._schedule(_Fault("status", n, after, status=status, headers=headers, body=raw))

    def stall_next(self, n: int | None = 1, seconds: float = 5.0, after: int = 0) -> None:
        """Hold the next `n` requests for `seconds` before answering (a client timeout should fire first)."""
        self._schedule(_Fault("stall", n, after, seconds=seconds))

    def reset_next(self, n: int | None = 1, after: int = 0) -> None:
        """Drop the connection of the next `n` requests with a TCP reset, answering nothing."""
        self._schedule(_Fault("reset", n, after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _schedule(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.skip:
                fault.skip -= 1
                return None
            if fault.left is not None:
                fault.left -= 1
                if fault.left <= 0:
                    self._faults.popleft()
            return fault

    # -- request log helpers --
    def count(self, path_part: str = "", status: int | None = None) -> int:
        """Requests whose path contains `path_part` (and answered `status`, if given)."""
        with self._lock:
            return sum(1 for r in self.requests if path_part in r.path and (status is None or r.status == status))

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- serving --
    def handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Reply:
        raise NotImplementedError

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        fault = self._take_fault()
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.seconds)
            fault = None
        if fault is not None and fault.kind == "reset":
            self._record(h.command, parts.path, query, body, 0)
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()
            return
        if fault is not None:
            status, headers = fault.status, dict(fault.headers or {})
            payload = fault.body if fault.body is not None else _default_error(status)
            headers.setdefault("Content-Type", JSON if payload[:1] in (b"{", b"[") else "text/plain")
        else:
            status, headers, payload = self.handle(h.command, parts.path, query, raw)
        self._record(h.command, parts.path, query, body, status)
        try:
            h.send_response(status)
            for key, value in headers.items():
                h.send_header(key, value)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except OSError:
            h.close_connection = True

    def _record(self, method: str, path: str, query: dict[str, str], body: Any, status: int) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, query, body, status, time.time()))


def _default_error(status: int) -> bytes:
    if status == 429:
        return b'{"message":"Too Many Requests"}'
    return json.dumps({"message": f"fake error {status}"}).encode()


def json_reply(value: Any, status: int = 200) -> Reply:
    return status, {"Content-Type": JSON}, json.dumps(value, separators=(",", ":")).encode()


# -- Coinbase --------------------------------------------------------------------------
CANDLES_PATH = re.compile(r"^/api/v3/brokerage/market/products/([^/]+)/candles$")
GRANULARITY_S = {"ONE_MINUTE": 60, "FIVE_MINUTE": 300, "FIFTEEN_MINUTE": 900, "THIRTY_MINUTE": 1800,
                 "ONE_HOUR": 3600, "TWO_HOUR": 7200, "FOUR_HOUR": 14400, "SIX_HOUR": 21600, "ONE_DAY": 86400}
TOO_MANY = {"error": "INVALID_ARGUMENT",
            "error_details": "start and end argument is invalid - number of candles requested should be less than 350",
            "message": "start and end argument is invalid - number of candles requested should be less than 350"}


def _invalid(details: str) -> Reply:
    return json_reply({"error": "INVALID_ARGUMENT", "error_details": details, "message": details}, 400)


class FakeCoinbaseRest(FakeRestServer):
    """The Advanced Trade public candles endpoint over a synthetic history.

    products: the product ids it lists (others answer 404 NOT_FOUND).
    now_s: the fake's clock in UNIX seconds (None: the real clock); buckets
      after it do not exist and the bucket holding it is still forming.
    empty_every: about one bucket in this many has no trades and is omitted.
    max_candles: spans of more buckets than this are rejected with HTTP 400.
    """

    def __init__(self, products: tuple[str, ...] = ("BTC-USD", "ETH-USD", "SOL-USD"), now_s: float | None = None,
                 empty_every: int = 16, max_candles: int = 350) -> None:
        super().__init__()
        self.products = set(products)
        self.now_s = now_s
        self.empty_every = empty_every
        self.max_candles = max_candles

    def _now(self) -> float:
        return time.time() if self.now_s is None else self.now_s

    def candle(self, product: str, granularity_s: int, start_s: int) -> dict[str, str] | None:
        """The candle of one bucket as the venue would send it, or None when the bucket is empty."""
        if unit("coinbase-empty", product, granularity_s, start_s) < 1 / self.empty_every:
            return None
        base = product.split("-")[0]
        o, h, low, c, v, _ = synthetic_ohlcv(base, start_s, granularity_s, "coinbase")
        now = self._now()
        if start_s + granularity_s > now:  # still forming: only part of the bucket so far
            c = o + (c - o) * max(now - start_s, 0) / granularity_s
            v *= max(now - start_s, 0) / granularity_s
        d = decimals(o)
        return {"start": str(start_s), "low": f"{low:.{d}f}", "high": f"{h:.{d}f}", "open": f"{o:.{d}f}",
                "close": f"{c:.{d}f}", "volume": f"{v:.8f}"}

    def history(self, product: str, granularity_s: int, start_s: int, end_s: int) -> list[dict[str, str]]:
        """Every non-empty candle lying wholly in [start_s, end_s), oldest first (the expected backfill)."""
        first = -(-start_s // granularity_s) * granularity_s
        out = []
        for t in range(first, end_s // granularity_s * granularity_s, granularity_s):
            candle = self.candle(product, granularity_s, t)
            if candle is not None:
                out.append(candle)
        return out

    def handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Reply:
        match = CANDLES_PATH.match(path)
        if method != "GET" or not match:
            return json_reply({"error": "NOT_FOUND", "message": "Not Found"}, 404)
        product = match.group(1)
        if product not in self.products:
            return json_reply({"error": "NOT_FOUND", "error_details": "ProductID is invalid",
                               "message": "ProductID is invalid"}, 404)
        try:
            start, end = int(query["start"]), int(query["end"])
        except (KeyError, ValueError):
            return _invalid("start and end argument is invalid")
        granularity = GRANULARITY_S.get(query.get("granularity", ""))
        if granularity is None:
            return _invalid("granularity argument is invalid")
        try:
            limit = int(query.get("limit") or self.max_candles)
        except ValueError:
            return _invalid("limit argument is invalid")
        if limit > self.max_candles or limit < 1:
            return _invalid(f"limit argument is invalid - should be less than {self.max_candles + 1}")
        if end < start:
            return _invalid("start and end argument is invalid - end must be after start")
        first = -(-start // granularity) * granularity
        if (end - first) // granularity + 1 > self.max_candles:
            return json_reply(TOO_MANY, 400)
        last = min(end, int(self._now()))
        candles = [c for t in range(first, last + 1, granularity)
                   if (c := self.candle(product, granularity, t)) is not None]
        candles.reverse()  # newest first, as the venue answers
        return json_reply({"candles": candles[:limit]})

    def candle_requests(self, product: str | None = None) -> list[Recorded]:
        """Candle requests answered 200 (optionally for one product)."""
        with self._lock:
            return [r for r in self.requests if r.status == 200 and "/candles" in r.path
                    and (product is None or f"/products/{product}/" in r.path)]

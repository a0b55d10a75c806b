"""A polite REST client: a token-bucket rate limit, and retries with backoff.

Backfills run unattended (cron), so transient trouble (HTTP 429, 5xx, resets,
timeouts) is waited out with exponential backoff and jitter, honouring
Retry-After, while a request the venue rejects for good (another 4xx) stops the
run at once with one line naming the request. Every failure is a `VaronError`,
so the CLI reports it without a traceback and the coverage fetched so far is
kept for the next run.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests

from varon_cli import __version__
from varon_cli.errors import UsageError, VaronError

log = logging.getLogger("varon.collect.backfill")

T = TypeVar("T")
USER_AGENT = f"varon/{__version__} (backfill)"
RETRYABLE_EXCEPTIONS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
DETAIL_CHARS = 200


class FetchError(VaronError):
    """The venue stayed unavailable (retries exhausted) or answered something unusable."""

    exit_code = 69  # EX_UNAVAILABLE


class RequestRejected(VaronError):
    """The venue refused a request for good (a 4xx other than 429)."""

    exit_code = 76  # EX_PROTOCOL

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class TokenBucket:
    """Tokens refill at `rate` per second up to `capacity`; a request waits for its cost.

    `charge` takes tokens without waiting (the bucket may go negative): Hyperliquid
    weighs a response by the items it returns, which is known only afterwards.
    """

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self, cost: float = 1.0) -> float:
        """Block until `cost` tokens are available and take them; return the seconds waited."""
        cost = min(cost, self.capacity)
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= cost:
                    self._tokens -= cost
                    return waited
                pause = (cost - self._tokens) / self.rate
            self._sleep(pause)
            waited += pause

    def charge(self, cost: float) -> None:
        """Take `cost` tokens now, going into debt if need be."""
        with self._lock:
            self._refill()
            self._tokens -= cost


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: equal-jitter exponential backoff, or Retry-After."""

    max_retries: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds (fractions accepted) or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def response_detail(resp: requests.Response) -> str:
    """The useful part of an error body: a JSON message if there is one, else its first line."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "error_details", "message") if body.get(k)]
        text = ": ".join(dict.fromkeys(parts))  # the same text often sits under two keys
    else:
        text = (resp.text or "").strip().splitlines()[0] if (resp.text or "").strip() else ""
    text = " ".join(text.split())
    return text[:DETAIL_CHARS] + ("…" if len(text) > DETAIL_CHARS else "")


class RestClient:
    """One venue's HTTP session: rate-limited, retried, errors as one-line `VaronError`s.

    `request` returns the decoded body of a 2xx answer. `decode` turns bytes into
    a typed value and raises ValueError (msgspec's errors are ValueErrors) when
    the shape is wrong: that is not retried, a venue that changed its format
    will not change it back in a second.
    """

    def __init__(self, venue: str, bucket: TokenBucket, retry: RetryPolicy, timeout: float = 30.0,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.venue = venue
        self.bucket = bucket
        self.retry = retry
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.requests_sent = 0
        self.retries = 0
        self._sleep = sleep
        self._rng = rng or random.Random()

    def request(self, method: str, url: str, what: str, decode: Callable[[bytes], T], *,
                params: dict[str, Any] | None = None, json: Any = None, cost: float = 1.0) -> T:
        """Send until a 2xx arrives (or retries run out) and return `decode(body)`."""
        for attempt in range(self.retry.max_retries + 1):
            self.bucket.acquire(cost)
            retry_after: float | None = None
            try:
                self.requests_sent += 1
                resp = self.session.request(method, url, params=params, json=json, timeout=self.timeout)
            except RETRYABLE_EXCEPTIONS as exc:
                reason = _exception_reason(exc)
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidSchema) as exc:
                raise UsageError(f"{self.venue}: invalid URL {url!r}: {exc}") from None
            else:
                if 200 <= resp.status_code < 300:
                    try:
                        return decode(resp.content)
                    except ValueError as exc:
                        raise FetchError(f"{self.venue}: {what}: unexpected response: {str(exc)[:DETAIL_CHARS]}") from None
                detail = response_detail(resp)
                reason = f"HTTP {resp.status_code}" + (f" {detail}" if detail else "")
                if resp.status_code != 429 and resp.status_code < 500:
                    raise RequestRejected(f"{self.venue}: {what}: {reason}", resp.status_code, detail)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if attempt == self.retry.max_retries:
                tries = f"{attempt} retr{'y' if attempt == 1 else 'ies'}"
                raise FetchError(f"{self.venue}: {what}: gave up after {tries}: {reason}")
            pause = self.retry.delay(attempt + 1, retry_after, self._rng)
            self.retries += 1
            log.warning("%s: %s: %s; retry %d/%d in %.2f s", self.venue, what, reason, attempt + 1,
                        self.retry.max_retries, pause)
            self._sleep(pause)
        raise AssertionError("unreachable")


def _exception_reason(exc: Exception) -> str:
    """A short cause for logs: urllib3 wraps the useful words deep inside a long message."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    text = str(exc).lower()
    for marker in ("connection reset", "connection refused", "connection aborted", "remote end closed"):
        if marker in text:
            return f"connection error ({marker})"
    return f"connection error ({type(exc).__name__})"

"""Signed requests to Hyperliquid through the official SDK: reads, orders, cancels, leverage.

The SDK's `Info` does the reads and its signing helpers (`sign_l1_action`, the
order wire format) build every action; this module owns what the SDK leaves to
its caller:

- nonces strictly increasing per signer (the SDK stamps each action with the
  wall clock in ms, so two actions in one millisecond would collide);
- retries that never duplicate an order: after a timeout, a 429 or a 5xx the
  venue is first asked for the order by its cloid, and only an order it has
  never seen is sent again (same cloid, new nonce);
- `--dry-run`: every action is built and signed, logged, and not sent;
- plain outcomes (`OrderOutcome`) instead of nested status JSON.

Errors that mean the venue cannot be used at all (unreachable at start-up, an
unknown signer) raise `VenueError`, a one-line error for the command.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import requests
import urllib3
from eth_account.signers.local import LocalAccount
from hyperliquid.api import API
from hyperliquid.info import Info
from hyperliquid.utils.error import ClientError, ServerError
from hyperliquid.utils.signing import OrderRequest, order_request_to_order_wire, order_wires_to_order_action
from hyperliquid.utils.types import Cloid

from varon_cli.errors import VaronError
from varon_cli.execution.hyperliquid.signer import L1Signer

log = logging.getLogger("varon.execute.hyperliquid")
MAINNET_URL = "https://api.hyperliquid.xyz"


class VenueError(VaronError):
    """The venue cannot be used: unreachable, refusing the signer, or answering nonsense."""

    exit_code = 69  # EX_UNAVAILABLE


class Transient(Exception):
    """A request whose fate is unknown or that may succeed later: timeout, connection loss, 429, 5xx."""


@dataclass(frozen=True)
class Asset:
    """One perpetual from `meta`: the index orders use, its lot size and its leverage limit."""

    coin: str
    index: int
    sz_decimals: int
    max_leverage: int
    only_isolated: bool = False


@dataclass(frozen=True)
class OrderSpec:
    """One order as varon means it, before the wire format."""

    asset: Asset
    is_buy: bool
    size: float
    price: float
    reduce_only: bool
    cloid: str
    tif: str = "Ioc"  # Ioc | Gtc | Alo
    trigger_px: float | None = None  # set: a market trigger order (stop loss or take profit)
    tpsl: str = "sl"

    def request(self) -> OrderRequest:
        order_type: dict[str, Any]
        if self.trigger_px is None:
            order_type = {"limit": {"tif": self.tif}}
        else:
            order_type = {"trigger": {"isMarket": True, "triggerPx": self.trigger_px, "tpsl": self.tpsl}}
        return {"coin": self.asset.coin, "is_buy": self.is_buy, "sz": self.size, "limit_px": self.price,
                "order_type": order_type, "reduce_only": self.reduce_only, "cloid": Cloid(self.cloid)}


@dataclass(frozen=True)
class OrderOutcome:
    """What the venue did with one order. status: filled | resting | error | dry_run | unknown."""

    status: str
    oid: int | None = None
    filled: float = 0.0
    avg_px: float = 0.0
    error: str = ""


class NonceClock:
    """Millisecond nonces, strictly increasing for this signer even within one millisecond."""

    def __init__(self, last: int = 0) -> None:
        self.last = last
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.last = max(int(time.time() * 1000), self.last + 1)
            return self.last


class HyperliquidClient:
    """Reads and signed actions against one Hyperliquid API base URL, for one account."""

    def __init__(self, base_url: str, account: str, signer: LocalAccount | None, *, vault: str = "",
                 timeout_s: float = 5.0, max_retries: int = 3, dry_run: bool = False,
                 builder: dict[str, Any] | None = None, nonces: NonceClock | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.account = account.lower()
        self.signer = signer
        self.vault = vault.lower() or None
        self.user = self.vault or self.account  # whose positions and orders these are
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.dry_run = dry_run
        self.builder = builder
        self.nonces = nonces or NonceClock()
        self.is_mainnet = self.base_url == MAINNET_URL  # as the SDK decides: any other URL signs as testnet
        self._l1 = L1Signer(signer, self.is_mainnet) if signer is not None else None
        self._api = API(self.base_url, timeout_s)
        _direct(self._api.session, self.base_url)
        self._exchange = _ExchangeLine(self.base_url, timeout_s)
        self.info: Info | None = None
        self.assets: dict[str, Asset] = {}
        self.requests_sent = 0

    # -- reads -------------------------------------------------------------------------------------
    def connect(self) -> dict[str, Asset]:
        """Read `meta` once (assets by coin) and build the SDK's Info on it without further calls."""
        meta = self._read(lambda: self._api.post("/info", {"type": "meta", "dex": ""}), "meta")
        if not isinstance(meta, dict) or not isinstance(meta.get("universe"), list):
            raise VenueError(f"{self.base_url}: meta answered {str(meta)[:120]!r}, not a universe")
        self.info = Info(self.base_url, skip_ws=True, meta=meta, spot_meta={"universe": [], "tokens": []},
                         timeout=self.timeout_s)
        _direct(self.info.session, self.base_url)
        self.assets = {a["name"]: Asset(a["name"], i, int(a["szDecimals"]), int(a.get("maxLeverage", 1)),
                                        bool(a.get("onlyIsolated", False)))
                       for i, a in enumerate(meta["universe"]) if not a.get("isDelisted")}
        return self.assets

    def _read(self, fn, what: str) -> Any:  # noqa: ANN001
        """A read with retries on transient failures; VenueError when the venue stays away."""
        delay = 0.2
        for attempt in range(self.max_retries + 1):
            try:
                return fn()
            except (requests.RequestException, ServerError, ClientError) as exc:
                if isinstance(exc, ClientError) and exc.status_code != 429:
                    raise VenueError(f"{self.base_url}: {what}: HTTP {exc.status_code} {exc.error_message}") from None
                if attempt == self.max_retries:
                    raise VenueError(f"{self.base_url}: {what} failed after {attempt + 1} tries: "
                                     f"{_describe(exc)}") from None
                log.warning("%s: %s (retrying in %.1fs)", what, _describe(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def user_state(self) -> dict[str, Any]:
        return self._read(lambda: self.info.user_state(self.user), "clearinghouseState")

    def open_orders(self) -> list[dict[str, Any]]:
        return self._read(lambda: self.info.frontend_open_orders(self.user), "frontendOpenOrders")

    def mids(self) -> dict[str, float]:
        raw = self._read(lambda: self.info.all_mids(), "allMids")
        return {coin: float(px) for coin, px in raw.items()}

    def fills_since(self, start_ms: int) -> list[dict[str, Any]]:
        """Every fill from `start_ms` on, oldest first, paging past the 2000-per-answer limit."""
        out: list[dict[str, Any]] = []
        while True:
            page = self._read(lambda s=start_ms: self.info.user_fills_by_time(self.user, s), "userFillsByTime")
            if not isinstance(page, list):
                raise VenueError(f"{self.base_url}: userFillsByTime answered {str(page)[:120]!r}")
            out.extend(page)
            if len(page) < 2000:
                return out
            start_ms = max(int(f["time"]) for f in page)  # the next page starts at the last time (repeats dropped later)

    def funding_since(self, start_ms: int) -> list[dict[str, Any]]:
        """The account's funding payments from `start_ms` on (userFunding), oldest first."""
        page = self._read(lambda: self.info.user_funding_history(self.user, start_ms), "userFunding")
        return page if isinstance(page, list) else []

    def order_status(self, cloid: str) -> dict[str, Any] | None:
        """The venue's record of the order with this cloid, or None if it never saw one."""
        answer = self._read(lambda: self.info.query_order_by_cloid(self.user, Cloid(cloid)), "orderStatus")
        if isinstance(answer, dict) and answer.get("status") == "order":
            return answer["order"]
        return None

    # -- actions -----------------------------------------------------------------------------------
    def signed_payload(self, action: dict[str, Any]) -> dict[str, Any]:
        """The /exchange body for `action`: a fresh nonce, signed by the agent key (source b off mainnet)."""
        if self._l1 is None:
            raise VenueError("no signing key loaded")
        nonce = self.nonces.next()
        signature = self._l1.sign(action, self.vault, nonce)
        return {"action": action, "nonce": nonce, "signature": signature, "vaultAddress": self.vault,
                "expiresAfter": None}

    def send(self, action: dict[str, Any]) -> dict[str, Any]:
        """Sign and post one action; Transient when its fate is unknown or it was throttled."""
        payload = self.signed_payload(action)
        if self.dry_run:
            log.info("dry run, not sent: %s (nonce %d)", json.dumps(action, separators=(",", ":")), payload["nonce"])
            return {"status": "dry_run"}
        self.requests_sent += 1
        answer = self._exchange.post(payload)
        if isinstance(answer, dict) and answer.get("status") == "err":
            text = str(answer.get("response"))
            if "does not exist" in text or "Must deposit" in text:
                raise VenueError(f"/exchange: {text} (is the agent key approved for {self.account}?)")
            return answer
        return answer

    def place(self, specs: list[OrderSpec]) -> list[OrderOutcome]:
        """Place orders in one action; retried without duplicates (see the module docstring)."""
        builder = self.builder
        action = order_wires_to_order_action([order_request_to_order_wire(s.request(), s.asset.index) for s in specs],
                                             builder)
        delay = 0.25
        for attempt in range(self.max_retries + 1):
            try:
                answer = self.send(action)
            except Transient as exc:
                log.warning("order %s: %s; asking the venue for it by cloid before any retry",
                            ", ".join(s.cloid for s in specs), exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                known = self._known_outcomes(specs)
                if known is not None:
                    return known
                if attempt < self.max_retries:
                    continue
                return [OrderOutcome("unknown", error=str(exc)) for _ in specs]
            return _order_outcomes(answer, len(specs))
        raise AssertionError("unreachable")

    def _known_outcomes(self, specs: list[OrderSpec]) -> list[OrderOutcome] | None:
        """Outcomes from the venue's own records when it saw every order of a batch, else None (send again)."""
        outcomes = []
        for spec in specs:
            try:
                record = self.order_status(spec.cloid)
            except VenueError as exc:
                log.warning("cannot ask for order %s: %s", spec.cloid, exc.message)
                return None
            if record is None:
                if outcomes:
                    log.error("order batch partly seen by the venue: %s is unknown", spec.cloid)
                return None
            outcomes.append(self.outcome_of(record))
        return outcomes

    def outcome_of(self, record: dict[str, Any]) -> OrderOutcome:
        """An orderStatus record as an outcome; a fill's size and price come from the account's fills."""
        order, status = record.get("order", {}), record.get("status", "")
        oid = int(order.get("oid", 0)) or None
        filled_sz = float(order.get("origSz", 0) or 0) - float(order.get("sz", 0) or 0)
        if filled_sz > 0 and oid is not None:
            fills = [f for f in self.fills_since(int(order.get("timestamp", 0)) - 1) if int(f.get("oid", -1)) == oid]
            size = sum(float(f["sz"]) for f in fills)
            if size > 0:
                avg = sum(float(f["sz"]) * float(f["px"]) for f in fills) / size
                return OrderOutcome("filled", oid, size, avg)
        if status in ("open", "triggered"):
            return OrderOutcome("resting", oid)
        return OrderOutcome("error", oid, error=f"order {status}")

    def cancel(self, orders: list[tuple[Asset, int]]) -> list[str]:
        """Cancel by venue order id; per order "success" or the venue's error text."""
        if not orders:
            return []
        action = {"type": "cancel", "cancels": [{"a": asset.index, "o": int(oid)} for asset, oid in orders]}
        return self._statuses(action, len(orders))

    def cancel_by_cloid(self, orders: list[tuple[Asset, str]]) -> list[str]:
        if not orders:
            return []
        action = {"type": "cancelByCloid", "cancels": [{"asset": asset.index, "cloid": c} for asset, c in orders]}
        return self._statuses(action, len(orders))

    def _statuses(self, action: dict[str, Any], n: int) -> list[str]:
        delay = 0.25
        for attempt in range(self.max_retries + 1):
            try:
                answer = self.send(action)
                break
            except Transient as exc:  # cancelling twice is harmless: retry as is
                if attempt == self.max_retries:
                    return [f"unknown: {exc}"] * n
                log.warning("%s: %s; retrying", action["type"], exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if answer.get("status") == "dry_run":
            return ["dry_run"] * n
        if answer.get("status") != "ok":
            return [str(answer.get("response"))] * n
        statuses = answer["response"]["data"]["statuses"]
        return [s if isinstance(s, str) else str(s.get("error", s)) for s in statuses]

    def update_leverage(self, asset: Asset, leverage: int, cross: bool) -> str:
        """Set leverage and margin mode for an asset; "" on success, else the venue's error."""
        action = {"type": "updateLeverage", "asset": asset.index, "isCross": cross, "leverage": int(leverage)}
        delay = 0.25
        for attempt in range(self.max_retries + 1):
            try:
                answer = self.send(action)
            except Transient as exc:
                if attempt == self.max_retries:
                    return str(exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if answer.get("status") in ("ok", "dry_run"):
                return ""
            return str(answer.get("response"))
        return "unreachable"


def _order_outcomes(answer: dict[str, Any], n: int) -> list[OrderOutcome]:
    if answer.get("status") == "dry_run":
        return [OrderOutcome("dry_run") for _ in range(n)]
    if answer.get("status") != "ok":
        return [OrderOutcome("error", error=str(answer.get("response"))) for _ in range(n)]
    statuses = answer.get("response", {}).get("data", {}).get("statuses", [])
    out = []
    for i in range(n):
        s = statuses[i] if i < len(statuses) else {"error": "no status for this order"}
        if isinstance(s, dict) and "filled" in s:
            f = s["filled"]
            out.append(OrderOutcome("filled", int(f["oid"]), float(f["totalSz"]), float(f["avgPx"])))
        elif isinstance(s, dict) and "resting" in s:
            out.append(OrderOutcome("resting", int(s["resting"]["oid"])))
        elif isinstance(s, dict) and "error" in s:
            out.append(OrderOutcome("error", error=str(s["error"])))
        else:  # "waitingForTrigger", "waitingForFill": accepted, not yet an order book entry
            out.append(OrderOutcome("resting", error=str(s)))
    return out


class _ExchangeLine:
    """POST /exchange over one kept-alive connection (urllib3, the layer under requests).

    Why not the SDK's `API.post`: requests prepares each request in ~0.5 ms
    (hooks, cookies, environment merging), a quarter of the budget from signal
    to wire. The answers are read as `API.post` reads them: JSON on 2xx, a 429
    or a 5xx is worth a retry, any other 4xx is the request's fault.
    """

    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urllib3.util.parse_url(base_url)
        self.path = (parts.path or "").rstrip("/") + "/exchange"
        proxy = requests.utils.get_environ_proxies(base_url).get(parts.scheme or "https")
        timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        if proxy:
            self._pool = urllib3.ProxyManager(proxy, timeout=timeout, retries=False)
            self._url = base_url.rstrip("/") + "/exchange"
        else:
            self._pool = urllib3.connection_from_url(base_url, maxsize=2, block=False, timeout=timeout, retries=False)
            self._url = self.path
        self._headers = {"Content-Type": "application/json"}

    def post(self, payload: dict[str, Any]) -> Any:
        body = msgspec.json.encode(payload)  # keeps the action's key order, which its hash depends on
        try:
            response = self._pool.urlopen("POST", self._url, body=body, headers=self._headers, retries=False,
                                          preload_content=True)
        except urllib3.exceptions.TimeoutError:
            raise Transient("timed out") from None
        except urllib3.exceptions.HTTPError as exc:
            raise Transient(f"connection failed ({type(exc).__name__})") from None
        status, text = response.status, response.data.decode("utf-8", "replace")
        if status == 429:
            raise Transient("HTTP 429 (rate limited)")
        if status >= 500:
            raise Transient(f"HTTP {status}")
        if status >= 400:
            raise VenueError(f"/exchange refused the request: HTTP {status} {text[:200]}")
        try:
            return json.loads(text)
        except ValueError:
            raise VenueError(f"/exchange answered something that is not JSON: {text[:120]!r}") from None


def _direct(session: requests.Session, url: str) -> None:
    """Proxies from the environment once, at start; not re-read (with ~/.netrc) on every order, a ~0.5 ms saving."""
    session.proxies.update(requests.utils.get_environ_proxies(url))
    session.trust_env = False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, ServerError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, ClientError):
        return f"HTTP {exc.status_code} {exc.error_message}"
    return type(exc).__name__

"""A fake Hyperliquid perpetuals venue: `POST /info`, `POST /exchange` and WS `/ws` on one port.

`FakeHyperliquidVenue` serves 127.0.0.1 on a port the OS picks, so the real
`hyperliquid` SDK (`Exchange`, `Info`, with ``base_url=venue.url``) and any
other client can trade against it. The HTTP/1.1 server is hand-written on
`asyncio.start_server` (keep-alive, Content-Length bodies); `GET /ws` is
upgraded with websockets' sans-I/O `ServerProtocol`. The asyncio loop runs in
a daemon thread, and every public method runs on that loop (or directly once
the venue has stopped), so the test thread may call them at any time.

The market is one price per coin: the mid (`set_mid`), the best bid and ask
`spread_bps` apart around it (rounded outwards to valid prices), unlimited
depth unless `depth[coin]` caps what one taker order can take. Mark = oracle =
mid. Accounts: `user` (plus every user an agent in `agents` trades for, and
every `vaults` address) start with `balance` USDC.

/exchange (facts from /work/shared/reference/protocols.md §4-§5):
- the signer is recovered from the L1 signature exactly as the SDK signs
  (`recover_l1_signer`); unknown signers get the real
  ``User or API Wallet 0x.. does not exist.``;
- nonces: the 100 highest per signer, a new one must be above the smallest
  stored, unused, and within (now - 2 days, now + 1 day);
- `order` (limit Gtc/Ioc/Alo and trigger tp/sl), `cancel`, `cancelByCloid`,
  `updateLeverage`, and the no-ops `scheduleCancel`, `noop`,
  `updateIsolatedMargin`; per-order errors use the real strings with
  `` asset=N`` appended;
- fills are recorded as `userFills` entries and move positions, entry price,
  cash (realised pnl - fee - builder fee);
- malformed JSON or an action that does not deserialize: HTTP 422 text/plain.

/info: meta, spotMeta, perpDexs, metaAndAssetCtxs, allMids, l2Book (5 levels),
clearinghouseState, openOrders (newest first), frontendOpenOrders, userFills
(newest first, 2000 at most), userFillsByTime (oldest first, 2000 at most),
orderStatus (oid or cloid), userFees, userFunding/userFundingHistory,
fundingHistory (the rates given to `settle_funding`); anything else: 422.

WS /ws: the greeting text, ping/pong, subscribe/unsubscribe acks, and the
channels allMids, l2Book, trades, userFills (snapshot first), orderUpdates and
userEvents (channel "user": fills, funding, liquidation, nonUserCancel);
`{"method":"post"}` requests (info and action) are answered too, without
faults. Each connection has its own outbox, written one frame at a time
behind `drain()`; what is queued for a dropped connection is lost.

Faults for /exchange (`fail_next`): ``timeout_after_apply`` (act, answer
late), ``timeout_before_apply`` (hang, close, do nothing), ``http_429``,
``http_500``, ``reject`` (every order/cancel of the request gets `error`);
`partial_fill_next(fraction)` makes the next crossing order fill partly.

Texts that are the fake's own choice (the real wording is unknown):
- ``Asset index N is out of range.`` (unknown asset),
- ``Trading is halted for this asset. asset=N`` (delisted coin / no mid),
- ``Invalid nonce: duplicate nonce`` / ``Invalid nonce: nonce too small`` /
  ``Invalid nonce: nonce outside the allowed time window``,
- ``Trigger orders must be reduce only.`` (whole request),
- ``Order has duplicate cloid. asset=N``,
- ``Invalid leverage value.``, ``Unknown action type.``, ``Action expired.``,
  ``Invalid signature.``,
- for an unknown `vaultAddress`: ``User or API Wallet 0x<vault> does not exist.``,
- the `bbo was {bid}@{ask}` rendering in the post-only error,
- WS error frames other than ``Already unsubscribed: ...``.

Other guesses: `depth` caps each taker order on its own (nothing is
consumed); the margin check counts positions only, not resting orders, and
prices the added exposure at the fill price (crossing) or the limit (resting);
a GTC that fills partly and rests answers `resting`; for orders that trade
at once only the final state is pushed (no "open" first); a partly filled
IOC ends "canceled"; funding and liquidation use the mid as mark; a
trigger whose condition already holds when placed fires right away; a trigger
that fires with no position left ends "reduceOnlyCanceled"; a resting order
that no longer has margin when it would fill ends "marginCanceled"; the
liquidation fill's `dir` is "Liquidated Cross Long" / "Liquidated Isolated
Short" etc. and costs the taker fee; rejected orders get no oid and leave no
trace; the WS userFills snapshot lists fills oldest first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from http import HTTPStatus
from types import TracebackType
from typing import Any, Callable, TypeVar

import msgpack
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from .hyperliquid_info import MARGIN_TABLES, UNIVERSE, UNPROCESSABLE

__all__ = ["FAULTS", "ExchangeRequest", "FakeHyperliquidVenue", "recover_l1_signer"]

T = TypeVar("T")

GREETING = "Websocket connection established."
FAULTS = ("timeout_after_apply", "timeout_before_apply", "http_429", "http_500", "reject")
DEFAULT_MIDS = {"BTC": 60000.0, "ETH": 3000.0, "SOL": 150.0, "kPEPE": 0.012}
NONCES_KEPT = 100
DAY_MS = 86_400_000
MAX_FILLS_ANSWERED = 2000
MIN_ORDER_VALUE = Decimal(10)
DEFAULT_LEVERAGE = 20
FIRST_OID = 1_000_000
FIRST_TID = 900_000_000_000_000
ZERO = Decimal(0)
MICRO = Decimal("0.000001")
NULL_ADDRESS = "0x" + "0" * 40

OPEN_STATES = ("open", "triggered")
SUBSCRIPTION_TYPES = ("allMids", "l2Book", "trades", "userFills", "orderUpdates", "userEvents")
USER_SUBSCRIPTIONS = ("userFills", "orderUpdates", "userEvents")
COIN_SUBSCRIPTIONS = ("l2Book", "trades")


# ------------------------------------------------------------------ signatures
def _l1_typed_data(connection_id: bytes, is_mainnet: bool) -> dict[str, Any]:
    return {
        "domain": {"chainId": 1337, "name": "Exchange", "verifyingContract": NULL_ADDRESS, "version": "1"},
        "types": {
            "Agent": [{"name": "source", "type": "string"}, {"name": "connectionId", "type": "bytes32"}],
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
        },
        "primaryType": "Agent",
        "message": {"source": "a" if is_mainnet else "b", "connectionId": connection_id},
    }


def recover_l1_signer(body: dict[str, Any], is_mainnet: bool = False) -> str:
    """The address that signed an /exchange L1 body (checksummed), as the venue recovers it.

    The action is packed as parsed, so JSON key order and value types must be
    what the client hashed (json.loads keeps both).
    """
    vault, expires = body.get("vaultAddress"), body.get("expiresAfter")
    data = msgpack.packb(body["action"]) + int(body["nonce"]).to_bytes(8, "big")
    data += b"\x00" if vault is None else b"\x01" + bytes.fromhex(vault.removeprefix("0x"))
    if expires is not None:
        data += b"\x00" + int(expires).to_bytes(8, "big")
    sig = body["signature"]
    message = encode_typed_data(full_message=_l1_typed_data(keccak(data), is_mainnet))
    return Account.recover_message(message, vrs=(int(sig["v"]), int(sig["r"], 16), int(sig["s"], 16)))


# ------------------------------------------------------------------ numbers
def _dec(x: float | int | str | Decimal) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(repr(x) if isinstance(x, float) else str(x))


def wire(d: Decimal) -> str:
    """Hyperliquid's price/size strings: plain decimal, no exponent, at least one decimal ("60006.0")."""
    if d == 0:
        return "0.0"
    text = format(d.normalize(), "f")
    return text if "." in text else text + ".0"


def money(d: Decimal) -> str:
    """A USD amount rounded to 6 decimals."""
    return wire(d.quantize(MICRO, ROUND_HALF_UP))


def _sig_figs(d: Decimal) -> int:
    return len(d.normalize().as_tuple().digits)


def _decimals(d: Decimal) -> int:
    exponent = d.normalize().as_tuple().exponent
    return max(0, -int(exponent))


def valid_price(px: Decimal, sz_decimals: int) -> bool:
    """Integers always; otherwise at most 5 significant figures and 6 - szDecimals decimals."""
    if not px.is_finite() or px <= 0:
        return False
    if px == px.to_integral_value():
        return True
    return _sig_figs(px) <= 5 and _decimals(px) <= 6 - sz_decimals


def valid_size(sz: Decimal, sz_decimals: int) -> bool:
    return sz.is_finite() and sz > 0 and _decimals(sz) <= sz_decimals


def round_price(px: Decimal, sz_decimals: int, up: bool) -> Decimal:
    """The nearest valid price above (up) or below `px`."""
    if px <= 0:
        return ZERO
    if px >= 100_000:
        quantum = Decimal(1)
    else:
        quantum = Decimal(1).scaleb(max(px.adjusted() - 4, -(6 - sz_decimals)))
    steps = (px / quantum).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR)
    return (steps * quantum).normalize()


def _tick(px: Decimal, sz_decimals: int) -> Decimal:
    if px >= 100_000:
        return Decimal(1)
    return Decimal(1).scaleb(max(px.adjusted() - 4, -(6 - sz_decimals)))


def _floor_to(sz: Decimal, decimals: int) -> Decimal:
    return sz.quantize(Decimal(1).scaleb(-decimals), ROUND_FLOOR)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ------------------------------------------------------------------ records
@dataclass
class ExchangeRequest:
    """One /exchange request as the venue saw it.

    body: the parsed JSON (None if it was not JSON); signer: recovered address,
    lowercase (None if not recovered); status: HTTP status answered, 0 when the
    connection was closed without an answer; answer: the JSON answered (or the
    text body); fault: the fault that hit it, if any; applied: the action took effect.
    """

    body: Any
    signer: str | None = None
    status: int = 0
    answer: Any = None
    fault: str | None = None
    applied: bool = False
    time_ms: int = 0


@dataclass
class _Fault:
    kind: str
    action_type: str | None
    left: int
    after: int
    seconds: float
    error: str


@dataclass
class _Order:
    oid: int
    account: str
    coin: str
    asset: int
    is_buy: bool
    limit_px: Decimal
    sz: Decimal  # remaining
    orig_sz: Decimal
    reduce_only: bool
    tif: str | None  # None for trigger orders
    trigger: dict[str, Any] | None  # {"isMarket": bool, "triggerPx": Decimal, "tpsl": str}
    cloid: str | None
    timestamp: int
    status: str = "open"
    status_ts: int = 0
    armed: bool = False  # a trigger that has not fired yet
    builder: dict[str, Any] | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES

    @property
    def side(self) -> str:
        return "B" if self.is_buy else "A"


@dataclass
class _Position:
    szi: Decimal = ZERO
    entry: Decimal = ZERO
    funding_all: Decimal = ZERO
    funding_open: Decimal = ZERO
    funding_change: Decimal = ZERO


@dataclass
class _Account:
    address: str
    cash: Decimal
    positions: dict[str, _Position] = field(default_factory=dict)
    leverage: dict[int, tuple[str, int]] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    fundings: list[dict[str, Any]] = field(default_factory=list)

    def szi(self, coin: str) -> Decimal:
        pos = self.positions.get(coin)
        return pos.szi if pos else ZERO


class _Unprocessable(Exception):
    """The body does not deserialize into the venue's types: HTTP 422."""


class _WsConn:
    """One upgraded connection: the sans-I/O protocol, its socket, its subscriptions, its outbox."""

    def __init__(self, protocol: ServerProtocol, writer: asyncio.StreamWriter) -> None:
        self.protocol = protocol
        self.writer = writer
        self.subs: list[dict[str, Any]] = []
        self.outbox: deque[str] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.fragments: list[bytes] = []

    def send(self, text: str) -> None:
        if not self.closed:
            self.outbox.append(text)
            self.wake.set()

    def flush_protocol(self) -> None:
        """Write whatever the protocol has queued (pongs, close frames, handshake)."""
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.writer.write(chunk)
            elif self.writer.can_write_eof():
                self.writer.write_eof()

    def abort(self) -> None:
        self.closed = True
        self.outbox.clear()
        self.wake.set()
        self.writer.transport.abort()


def _http(status: int, body: bytes, content_type: str, keep_alive: bool = True) -> bytes:
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode("latin-1") + body


def _json_reply(obj: Any) -> tuple[int, bytes, str]:
    return 200, _dumps(obj).encode(), "application/json"


def _text_reply(status: int, text: str) -> tuple[int, bytes, str]:
    return status, text.encode(), "text/plain; charset=utf-8"


def _err(text: str) -> dict[str, Any]:
    return {"status": "err", "response": text}


DEFAULT_OK = {"status": "ok", "response": {"type": "default"}}


# ------------------------------------------------------------------ the venue
class FakeHyperliquidVenue:
    """A fake Hyperliquid perps venue on one loopback port (see the module docstring).

    Args:
        user: the account address (0x..., any case).
        agents: approved API wallet -> the user it trades for.
        vaults: addresses an authorised signer may act for through `vaultAddress`.
        balance: starting USDC cash of every account.
        mids: initial mid per coin (defaults: BTC 60000, ETH 3000, SOL 150, kPEPE 0.012).
        spread_bps: best bid/ask distance around the mid.
        depth: most base size one taker order can take at the best price, per coin.
        taker_fee, maker_fee: fee rates.
        is_mainnet: verify signatures as mainnet (source "a"); the SDK signs
            testnet ("b") for any URL but the mainnet one.
        now_ms: the clock (default: real time) for nonces, order and fill times.
    """

    def __init__(
        self,
        *,
        user: str = "0x" + "11" * 20,
        agents: dict[str, str] | None = None,
        vaults: set[str] | None = None,
        balance: float = 10_000.0,
        mids: dict[str, float] | None = None,
        spread_bps: float = 2.0,
        depth: dict[str, float] | None = None,
        taker_fee: float = 0.00045,
        maker_fee: float = 0.00015,
        is_mainnet: bool = False,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.user = user.lower()
        self.agents = {k.lower(): v.lower() for k, v in (agents or {}).items()}
        self.vaults = {v.lower() for v in (vaults or set())}
        self.spread_bps = _dec(spread_bps)
        self.depth = {c: _dec(v) for c, v in (depth or {}).items()}
        self.taker_fee = _dec(taker_fee)
        self.maker_fee = _dec(maker_fee)
        self.is_mainnet = is_mainnet
        self._clock = now_ms or (lambda: int(time.time() * 1000))
        self._universe = [dict(a) for a in UNIVERSE]
        self._asset_of = {a["name"]: i for i, a in enumerate(self._universe)}
        self._mids: dict[str, Decimal] = {c: _dec(p) for c, p in {**DEFAULT_MIDS, **(mids or {})}.items()}
        owners = {self.user, *self.agents.values()}
        self._accounts = {a: _Account(a, _dec(balance)) for a in owners | self.vaults}
        self._orders: dict[int, _Order] = {}
        self._by_cloid: dict[tuple[str, str], _Order] = {}
        self._nonces: dict[str, list[int]] = {}
        self._nonces_seen: list[int] = []
        self._requests: list[ExchangeRequest] = []
        self._faults: list[_Fault] = []
        self._partials: deque[Decimal] = deque()
        self._funding_rates: dict[str, list[dict[str, Any]]] = {}
        self._next_oid = FIRST_OID
        self._next_tid = FIRST_TID
        self._next_lid = 1
        self._ws: list[_WsConn] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.errors: list[str] = []  # unexpected exceptions inside the server, for debugging
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop_event: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self.port = 0

    # ---------------------------------------------------------------- life cycle
    def start(self, timeout: float = 5.0) -> FakeHyperliquidVenue:
        self._thread = threading.Thread(target=self._run, name="fake-hyperliquid-venue", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"FakeHyperliquidVenue did not start in {timeout}s")
        if self._start_error is not None:
            raise RuntimeError("FakeHyperliquidVenue failed to start") from self._start_error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or stop is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> FakeHyperliquidVenue:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (no trailing slash; the SDK appends /info, /exchange, /ws)."""
        assert self.port, "start the venue first (use it as a context manager)"
        return f"http://127.0.0.1:{self.port}"

    def _call(self, fn: Callable[..., T], *args: Any, timeout: float = 5.0) -> T:
        """Run fn on the server loop (or right here when the loop is not running) and return its result."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or not thread.is_alive() or threading.current_thread() is thread:
            return fn(*args)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to the calling thread
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    # ---------------------------------------------------------------- market control
    def set_mid(self, coin: str, px: float) -> None:
        """Move the market: fill resting orders it crosses, fire triggers, push allMids/l2Book."""
        self._call(self._set_mid, coin, _dec(px))

    def settle_funding(self, coin: str, rate: float) -> float:
        """Pay funding on every open `coin` position (cash -= szi * mark * rate); returns what `user` paid."""
        return float(self._call(self._settle_funding, coin, _dec(rate)))

    def liquidate(self, coin: str, account: str | None = None) -> dict[str, Any] | None:
        """Close the position at the mid with a liquidation fill; returns the fill (None: no position)."""
        return copy.deepcopy(self._call(self._liquidate, coin, (account or self.user).lower()))

    def drop_ws(self) -> int:
        """Abort every WebSocket connection at TCP level (no close frame); returns how many."""
        return self._call(self._drop_ws)

    def bbo(self, coin: str) -> tuple[float, float]:
        """(best bid, best ask) now."""
        bid, ask = self._call(self._bbo, coin)
        return float(bid), float(ask)

    def mid(self, coin: str) -> float:
        return float(self._call(lambda: self._mids[coin]))

    # ---------------------------------------------------------------- faults
    def fail_next(self, kind: str, *, seconds: float = 5.0, error: str = "Insufficient margin to place order.",
                  action_type: str | None = None, count: int = 1, after: int = 0) -> None:
        """Make the next `count` /exchange requests (of `action_type`, after letting `after` through) fail.

        kind: "timeout_after_apply" (act, answer after `seconds`), "timeout_before_apply"
        (wait `seconds`, close the connection, do nothing), "http_429", "http_500"
        (not applied), "reject" (every order/cancel gets `error` + " asset=N").
        """
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULTS}")
        fault = _Fault(kind, action_type, count, after, seconds, error)
        self._call(self._faults.append, fault)

    def partial_fill_next(self, fraction: float, count: int = 1) -> None:
        """The next `count` crossing orders fill only `fraction` of their size (IOC: the rest is cancelled)."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be in [0, 1]")
        self._call(self._partials.extend, [_dec(fraction)] * count)

    def clear_faults(self) -> None:
        self._call(lambda: (self._faults.clear(), self._partials.clear()))

    # ---------------------------------------------------------------- the truth, for tests
    def position(self, coin: str, account: str | None = None) -> float:
        """Signed size (szi) of the position in `coin`."""
        return float(self._call(lambda: self._account(account).szi(coin)))

    def positions(self, account: str | None = None) -> dict[str, float]:
        """coin -> signed size, open positions only."""
        return self._call(lambda: {c: float(p.szi) for c, p in self._account(account).positions.items() if p.szi})

    def entry_px(self, coin: str, account: str | None = None) -> float | None:
        def get() -> float | None:
            pos = self._account(account).positions.get(coin)
            return float(pos.entry) if pos and pos.szi else None
        return self._call(get)

    def open_orders(self, account: str | None = None) -> list[dict[str, Any]]:
        """Open orders (triggers included) in the frontendOpenOrders shape, oldest first."""
        addr = (account or self.user).lower()
        return self._call(lambda: [self._frontend(o) for o in self._orders.values() if o.account == addr and o.is_open])

    def order_status(self, oid_or_cloid: int | str, account: str | None = None) -> dict[str, Any]:
        """What `orderStatus` answers."""
        return self._call(self._order_status, (account or self.user).lower(), oid_or_cloid)

    def fills(self, account: str | None = None) -> list[dict[str, Any]]:
        """userFills entries, oldest first."""
        return self._call(lambda: copy.deepcopy(self._account(account).fills))

    def fundings(self, account: str | None = None) -> list[dict[str, Any]]:
        """Funding payments as userFunding entries, oldest first."""
        return self._call(lambda: copy.deepcopy(self._account(account).fundings))

    @property
    def cash(self) -> float:
        """`user`'s USDC cash: balance + realised pnl - fees - funding paid."""
        return float(self._call(lambda: self._account(None).cash))

    @property
    def requests(self) -> list[ExchangeRequest]:
        """Every /exchange request so far, in arrival order."""
        return self._call(lambda: copy.deepcopy(self._requests))

    def actions(self, kind: str) -> list[dict[str, Any]]:
        """Actions of type `kind` that the venue accepted (answered status "ok")."""
        return self._call(lambda: [copy.deepcopy(r.body["action"]) for r in self._requests
                                   if r.applied and r.body["action"].get("type") == kind])

    @property
    def nonces_seen(self) -> list[int]:
        """Nonces the venue accepted, in arrival order."""
        return self._call(lambda: list(self._nonces_seen))

    @property
    def ws_connections(self) -> int:
        return self._call(lambda: sum(1 for c in self._ws if not c.closed))

    # ================================================================ on the loop from here
    def _now(self) -> int:
        return int(self._clock())

    def _account(self, address: str | None) -> _Account:
        addr = (address or self.user).lower()
        if addr not in self._accounts:
            raise KeyError(f"no account {addr}")
        return self._accounts[addr]

    def _meta(self) -> dict[str, Any]:
        return {"universe": copy.deepcopy(self._universe), "marginTables": copy.deepcopy(MARGIN_TABLES),
                "collateralToken": 0}

    def _sz_decimals(self, coin: str) -> int:
        return int(self._universe[self._asset_of[coin]]["szDecimals"])

    def _max_leverage(self, asset: int) -> int:
        return int(self._universe[asset]["maxLeverage"])

    def _tradable(self, coin: str) -> bool:
        return coin in self._mids and not self._universe[self._asset_of[coin]].get("isDelisted")

    def _bbo(self, coin: str) -> tuple[Decimal, Decimal]:
        mid, szd = self._mids[coin], self._sz_decimals(coin)
        half = self.spread_bps / Decimal(20_000)
        bid = round_price(mid * (1 - half), szd, up=False)
        ask = round_price(mid * (1 + half), szd, up=True)
        return min(bid, ask), ask

    def _leverage(self, acct: _Account, asset: int) -> tuple[str, int]:
        return acct.leverage.get(asset, ("cross", min(DEFAULT_LEVERAGE, self._max_leverage(asset))))

    # ---------------------------------------------------------------- server
    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop_event.wait()
        server.close()
        for conn in self._ws:
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    def _track(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._track()
        try:
            await self._serve_http(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # the venue is stopping (re-raising makes asyncio's stream callback log an error)
        except Exception as exc:  # keep serving other clients; the test can look at .errors
            self.errors.append(repr(exc))
        finally:
            writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            path = target.split("?", 1)[0]
            if headers.get("upgrade", "").lower() == "websocket":
                await self._serve_ws(reader, writer, head, path)
                return
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            keep_alive = headers.get("connection", "").lower() != "close"
            reply = await self._route(method, path, body, writer)
            if reply is None:  # the fault closed the connection unanswered
                return
            status, payload, ctype = reply
            writer.write(_http(status, payload, ctype, keep_alive))
            await writer.drain()
            if not keep_alive:
                return

    async def _route(self, method: str, path: str, raw: bytes,
                     writer: asyncio.StreamWriter) -> tuple[int, bytes, str] | None:
        if path not in ("/info", "/exchange"):
            return _text_reply(404, "Not Found")
        if method != "POST":
            return _text_reply(405, "Method Not Allowed")
        if path == "/info":
            try:
                return _json_reply(self._info(json.loads(raw)))
            except (ValueError, KeyError, TypeError, IndexError, _Unprocessable):
                return _text_reply(422, UNPROCESSABLE)
        return await self._exchange_http(raw)

    # ---------------------------------------------------------------- /exchange
    async def _exchange_http(self, raw: bytes) -> tuple[int, bytes, str] | None:
        try:
            body = json.loads(raw)
        except ValueError:
            self._requests.append(ExchangeRequest(None, status=422, answer=UNPROCESSABLE, time_ms=self._now()))
            return _text_reply(422, UNPROCESSABLE)
        rec = ExchangeRequest(copy.deepcopy(body), time_ms=self._now())
        self._requests.append(rec)
        action_type = None
        if isinstance(body, dict) and isinstance(body.get("action"), dict):
            action_type = body["action"].get("type")
        fault = self._take_fault(action_type)
        rec.fault = fault.kind if fault else None
        if fault is not None and fault.kind in ("http_429", "http_500"):
            rec.status = 429 if fault.kind == "http_429" else 500
            rec.answer = "Too many requests" if fault.kind == "http_429" else "Internal Server Error"
            return _text_reply(rec.status, rec.answer)
        if fault is not None and fault.kind == "timeout_before_apply":
            await asyncio.sleep(fault.seconds)
            return None
        try:
            answer = self._exchange(body, rec, fault.error if fault and fault.kind == "reject" else None)
        except _Unprocessable:
            rec.status, rec.answer = 422, UNPROCESSABLE
            return _text_reply(422, UNPROCESSABLE)
        rec.status, rec.answer = 200, copy.deepcopy(answer)
        if fault is not None and fault.kind == "timeout_after_apply":
            await asyncio.sleep(fault.seconds)
        return _json_reply(answer)

    def _take_fault(self, action_type: str | None) -> _Fault | None:
        chosen = None
        for fault in self._faults:
            if fault.action_type is not None and fault.action_type != action_type:
                continue
            if fault.after > 0:
                fault.after -= 1
            elif chosen is None:
                chosen = fault
        if chosen is not None:
            chosen.left -= 1
            if chosen.left <= 0:
                self._faults.remove(chosen)
        return chosen

    def _exchange(self, body: Any, rec: ExchangeRequest, reject: str | None) -> dict[str, Any]:
        """Authenticate, check the nonce, run the action; the JSON answer (raises _Unprocessable)."""
        self._check_envelope(body)
        try:
            signer = recover_l1_signer(body, self.is_mainnet).lower()
        except Exception:
            return _err("Invalid signature.")  # fake's choice
        rec.signer = signer
        owner = signer if signer in self._accounts and signer not in self.vaults else self.agents.get(signer)
        if owner is None:
            return _err(f"User or API Wallet {signer} does not exist.")
        account = owner
        vault = body.get("vaultAddress")
        if vault is not None:
            if vault.lower() not in self.vaults:
                return _err(f"User or API Wallet {vault.lower()} does not exist.")  # fake's choice
            account = vault.lower()
        expires = body.get("expiresAfter")
        if expires is not None and self._now() > expires:
            return _err("Action expired.")  # fake's choice
        nonce_error = self._use_nonce(signer, body["nonce"])
        if nonce_error:
            return _err(nonce_error)
        answer = self._act(self._accounts[account], body["action"], reject)
        rec.applied = answer.get("status") == "ok"
        return answer

    @staticmethod
    def _check_envelope(body: Any) -> None:
        ok = (isinstance(body, dict) and isinstance(body.get("action"), dict)
              and isinstance(body["action"].get("type"), str)
              and isinstance(body.get("nonce"), int) and not isinstance(body.get("nonce"), bool)
              and isinstance(body.get("signature"), dict))
        if not ok:
            raise _Unprocessable
        sig = body["signature"]
        try:
            int(sig["r"], 16), int(sig["s"], 16), int(sig["v"])
        except (KeyError, TypeError, ValueError):
            raise _Unprocessable from None
        vault = body.get("vaultAddress")
        if vault is not None and not (isinstance(vault, str) and _is_hex(vault, 20)):
            raise _Unprocessable
        expires = body.get("expiresAfter")
        if expires is not None and not isinstance(expires, int):
            raise _Unprocessable

    def _use_nonce(self, signer: str, nonce: int) -> str | None:
        """Record `nonce` for `signer`, or say why it is refused (the texts are the fake's choice)."""
        now = self._now()
        if not now - 2 * DAY_MS < nonce < now + DAY_MS:
            return "Invalid nonce: nonce outside the allowed time window"
        kept = self._nonces.setdefault(signer, [])
        if nonce in kept:
            return "Invalid nonce: duplicate nonce"
        if len(kept) >= NONCES_KEPT and nonce <= kept[0]:
            return "Invalid nonce: nonce too small"
        kept.append(nonce)
        kept.sort()
        del kept[:-NONCES_KEPT]
        self._nonces_seen.append(nonce)
        return None

    def _act(self, acct: _Account, action: dict[str, Any], reject: str | None) -> dict[str, Any]:
        kind = action["type"]
        if kind == "order":
            return self._act_order(acct, action, reject)
        if kind in ("cancel", "cancelByCloid"):
            return self._act_cancel(acct, action, reject)
        if reject is not None:
            return _err(reject)
        if kind == "updateLeverage":
            return self._act_leverage(acct, action)
        if kind in ("scheduleCancel", "noop", "updateIsolatedMargin"):
            return copy.deepcopy(DEFAULT_OK)
        return _err("Unknown action type.")  # fake's choice

    # ---------------------------------------------------------------- orders
    def _act_order(self, acct: _Account, action: dict[str, Any], reject: str | None) -> dict[str, Any]:
        orders = action.get("orders")
        if not isinstance(orders, list) or action.get("grouping", "na") not in ("na", "normalTpsl", "positionTpsl"):
            raise _Unprocessable
        for w in orders:
            self._check_order_wire(w)
        builder = action.get("builder")
        if builder is not None and not (isinstance(builder, dict) and isinstance(builder.get("b"), str)
                                        and isinstance(builder.get("f"), int)):
            raise _Unprocessable
        if any("trigger" in w["t"] and not w["r"] for w in orders):
            return _err("Trigger orders must be reduce only.")  # fake's choice (pre-validation)
        if reject is not None:
            statuses: list[Any] = [{"error": f"{reject} asset={w['a']}"} for w in orders]
        else:
            statuses = [self._place(acct, w, builder) for w in orders]
            for coin in {self._universe[w["a"]]["name"] for w in orders if 0 <= w["a"] < len(self._universe)}:
                if coin in self._mids:
                    self._fire_triggers(coin)
        return {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}

    @staticmethod
    def _check_order_wire(w: Any) -> None:
        ok = (isinstance(w, dict) and isinstance(w.get("a"), int) and isinstance(w.get("b"), bool)
              and isinstance(w.get("p"), str) and isinstance(w.get("s"), str) and isinstance(w.get("r"), bool)
              and isinstance(w.get("t"), dict) and len(w["t"]) == 1)
        if not ok:
            raise _Unprocessable
        t = w["t"]
        if "limit" in t:
            if not isinstance(t["limit"], dict) or t["limit"].get("tif") not in ("Gtc", "Ioc", "Alo", "FrontendMarket"):
                raise _Unprocessable
        elif "trigger" in t:
            trig = t["trigger"]
            if not (isinstance(trig, dict) and isinstance(trig.get("isMarket"), bool)
                    and isinstance(trig.get("triggerPx"), str) and trig.get("tpsl") in ("tp", "sl")):
                raise _Unprocessable
        else:
            raise _Unprocessable
        cloid = w.get("c")
        if cloid is not None and not (isinstance(cloid, str) and _is_hex(cloid, 16)):
            raise _Unprocessable

    def _place(self, acct: _Account, w: dict[str, Any], builder: dict[str, Any] | None) -> dict[str, Any]:
        """Validate and execute one order wire; its entry in `statuses`."""
        asset = w["a"]
        if not 0 <= asset < len(self._universe):
            return {"error": f"Asset index {asset} is out of range."}  # fake's choice
        coin, szd = self._universe[asset]["name"], int(self._universe[asset]["szDecimals"])

        def error(text: str) -> dict[str, Any]:
            return {"error": f"{text} asset={asset}"}

        if not self._tradable(coin):
            return error("Trading is halted for this asset.")  # fake's choice
        px, sz = _parse_dec(w["p"]), _parse_dec(w["s"])
        trigger = w["t"].get("trigger")
        trigger_px = _parse_dec(trigger["triggerPx"]) if trigger else None
        if not valid_price(px, szd) or (trigger_px is not None and not valid_price(trigger_px, szd)):
            return error("Price must be divisible by tick size.")
        if not valid_size(sz, szd):
            return error("Order has invalid size.")
        cloid = w.get("c")
        if cloid is not None and (acct.address, cloid.lower()) in self._by_cloid:
            return error("Order has duplicate cloid.")  # fake's choice
        is_buy, pos = w["b"], acct.szi(coin)
        if w["r"]:
            if pos == 0 or (pos > 0) == is_buy:
                return error("Reduce only order would increase position.")
            sz = min(sz, abs(pos))
        elif sz * px < MIN_ORDER_VALUE:
            return error("Order must have minimum value of $10.")
        order = _Order(0, acct.address, coin, asset, is_buy, px, sz, sz, w["r"],
                       None if trigger else w["t"]["limit"]["tif"],
                       {"isMarket": trigger["isMarket"], "triggerPx": trigger_px, "tpsl": trigger["tpsl"]}
                       if trigger else None,
                       cloid.lower() if cloid else None, self._now(), builder=builder)
        if trigger:
            order.armed = True
            return self._accept(order, "open")
        return self._place_limit(acct, order, error)

    def _place_limit(self, acct: _Account, order: _Order,
                     error: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        bid, ask = self._bbo(order.coin)
        crosses = order.limit_px >= ask if order.is_buy else order.limit_px <= bid
        tif = "Ioc" if order.tif == "FrontendMarket" else order.tif
        if tif == "Alo" and crosses:
            return error(f"Post only order would have immediately matched, bbo was {wire(bid)}@{wire(ask)}.")
        take = self._takeable(order) if crosses else ZERO
        if tif == "Ioc" and take == 0:
            return error("Order could not immediately match against any resting orders.")
        px_for_margin = (ask if order.is_buy else bid) if crosses else order.limit_px
        if not order.reduce_only and not self._margin_ok(acct, order.coin, order.is_buy, order.sz, px_for_margin):
            return error("Insufficient margin to place order.")
        if take == 0:
            return self._accept(order, "open")
        self._assign_oid(order)
        self._fill(acct, order, ask if order.is_buy else bid, take, crossed=True)
        order.sz -= take
        if order.sz == 0:
            self._set_status(order, "filled")
        elif tif == "Ioc":
            self._set_status(order, "canceled")
        else:
            self._set_status(order, "open")
            return {"resting": self._ids(order)}
        return {"filled": {"totalSz": wire(take), "avgPx": wire(ask if order.is_buy else bid), **self._ids(order)}}

    def _takeable(self, order: _Order) -> Decimal:
        """How much of a crossing order fills now: depth cap and a scheduled partial fill."""
        take = order.sz
        if order.coin in self.depth:
            take = min(take, _floor_to(self.depth[order.coin], self._sz_decimals(order.coin)))
        if self._partials:
            take = _floor_to(take * self._partials.popleft(), self._sz_decimals(order.coin))
        return max(take, ZERO)

    def _margin_ok(self, acct: _Account, coin: str, is_buy: bool, sz: Decimal, px: Decimal) -> bool:
        """Margin for the exposure the order adds (|new| - |old|) at px / leverage must be available."""
        pos = acct.szi(coin)
        added = abs(pos + (sz if is_buy else -sz)) - abs(pos)
        if added <= 0:
            return True
        _, lev = self._leverage(acct, self._asset_of[coin])
        summary = self._summary(acct)
        available = summary["accountValue"] - summary["totalMarginUsed"]
        return added * px / lev <= available

    def _assign_oid(self, order: _Order) -> None:
        order.oid = self._next_oid
        self._next_oid += 1
        self._orders[order.oid] = order
        if order.cloid:
            self._by_cloid[(order.account, order.cloid)] = order

    def _accept(self, order: _Order, status: str) -> dict[str, Any]:
        self._assign_oid(order)
        self._set_status(order, status)
        return {"resting": self._ids(order)}

    @staticmethod
    def _ids(order: _Order) -> dict[str, Any]:
        return {"oid": order.oid, "cloid": order.cloid} if order.cloid else {"oid": order.oid}

    def _set_status(self, order: _Order, status: str) -> None:
        order.status, order.status_ts = status, self._now()
        self._push_user("orderUpdates", order.account, lambda sub: [self._ws_order_update(order)])

    def _ws_order_update(self, order: _Order) -> dict[str, Any]:
        basic = {"coin": order.coin, "side": order.side, "limitPx": wire(order.limit_px), "sz": wire(order.sz),
                 "oid": order.oid, "timestamp": order.timestamp, "origSz": wire(order.orig_sz)}
        if order.cloid:
            basic["cloid"] = order.cloid
        return {"order": basic, "status": order.status, "statusTimestamp": order.status_ts}

    # ---------------------------------------------------------------- cancels and leverage
    def _act_cancel(self, acct: _Account, action: dict[str, Any], reject: str | None) -> dict[str, Any]:
        by_cloid = action["type"] == "cancelByCloid"
        cancels = action.get("cancels")
        if not isinstance(cancels, list) or not all(isinstance(c, dict) for c in cancels):
            raise _Unprocessable
        statuses: list[Any] = []
        for c in cancels:
            asset = c.get("asset") if by_cloid else c.get("a")
            ref = c.get("cloid") if by_cloid else c.get("o")
            if not isinstance(asset, int) or not (isinstance(ref, str) if by_cloid else isinstance(ref, int)):
                raise _Unprocessable
            missing = {"error": f"Order was never placed, already canceled, or filled. asset={asset}"}
            if reject is not None:
                statuses.append({"error": f"{reject} asset={asset}"})
                continue
            order = self._by_cloid.get((acct.address, ref.lower())) if by_cloid else self._orders.get(ref)
            if order is None or order.account != acct.address or order.asset != asset or not order.is_open:
                statuses.append(missing)
                continue
            self._set_status(order, "canceled")
            statuses.append("success")
        return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}

    def _act_leverage(self, acct: _Account, action: dict[str, Any]) -> dict[str, Any]:
        asset, is_cross, leverage = action.get("asset"), action.get("isCross"), action.get("leverage")
        if not isinstance(asset, int) or not isinstance(is_cross, bool) or not isinstance(leverage, int):
            raise _Unprocessable
        if not 0 <= asset < len(self._universe):
            return _err(f"Asset index {asset} is out of range.")  # fake's choice
        if not 1 <= leverage <= self._max_leverage(asset):
            return _err("Invalid leverage value.")  # fake's choice
        acct.leverage[asset] = ("cross" if is_cross else "isolated", leverage)
        return copy.deepcopy(DEFAULT_OK)

    # ---------------------------------------------------------------- fills
    def _fill(self, acct: _Account, order: _Order | None, px: Decimal, sz: Decimal, crossed: bool,
              liquidation: dict[str, Any] | None = None, oid: int | None = None) -> dict[str, Any]:
        """Trade `sz` at `px` for `acct` (side from `order`, or the liquidation's): update and publish."""
        coin = order.coin if order else liquidation["coin"]  # type: ignore[index]
        is_buy = order.is_buy if order else liquidation["is_buy"]  # type: ignore[index]
        pos = acct.positions.setdefault(coin, _Position())
        start = pos.szi
        signed = sz if is_buy else -sz
        closed = min(abs(start), sz) if start and (start > 0) != is_buy else ZERO
        closed_pnl = closed * (px - pos.entry) * (1 if start > 0 else -1) if closed else ZERO
        new = start + signed
        if new == 0:
            pos.entry, pos.funding_open = ZERO, ZERO
        elif start == 0 or (start > 0) != (new > 0):
            pos.entry, pos.funding_open = px, ZERO
        elif abs(new) > abs(start):
            pos.entry = (pos.entry * abs(start) + px * sz) / abs(new)
        pos.szi = new
        pos.funding_change = ZERO
        fee = (px * sz * (self.taker_fee if crossed else self.maker_fee)).quantize(MICRO, ROUND_HALF_UP)
        builder = order.builder if order else None
        builder_fee = ZERO
        if builder and builder.get("f"):
            builder_fee = (px * sz * Decimal(builder["f"]) / Decimal(100_000)).quantize(MICRO, ROUND_HALF_UP)
        acct.cash += closed_pnl - fee - builder_fee
        tid = self._next_tid
        self._next_tid += 1
        if liquidation:
            side_word = "Long" if start > 0 else "Short"
            direction = f"Liquidated {liquidation['mode']} {side_word}"
        else:
            direction = _direction(start, new)
        entry = {
            "coin": coin, "px": wire(px), "sz": wire(sz), "side": "B" if is_buy else "A", "time": self._now(),
            "startPosition": wire(start), "dir": direction, "closedPnl": money(closed_pnl),
            "hash": "0x" + hashlib.blake2b(f"fill-{tid}".encode(), digest_size=32).hexdigest(),
            "oid": order.oid if order else oid, "crossed": crossed, "fee": money(fee), "tid": tid,
            "feeToken": "USDC",
        }
        if builder_fee:
            entry["builderFee"] = money(builder_fee)
        if order and order.cloid:
            entry["cloid"] = order.cloid
        if liquidation:
            entry["liquidation"] = {"liquidatedUser": acct.address, "markPx": wire(self._mids[coin]),
                                    "method": "market"}
        acct.fills.append(entry)
        self._publish_fill(acct, entry)
        return entry

    def _publish_fill(self, acct: _Account, entry: dict[str, Any]) -> None:
        self._push_user("userFills", acct.address,
                        lambda sub: {"user": sub["user"], "fills": [copy.deepcopy(entry)]})
        self._push_user("userEvents", acct.address, lambda sub: {"fills": [copy.deepcopy(entry)]})
        buyer, seller = (acct.address, NULL_ADDRESS) if entry["side"] == "B" else (NULL_ADDRESS, acct.address)
        trade = {"coin": entry["coin"], "side": entry["side"] if entry["crossed"] else _flip(entry["side"]),
                 "px": entry["px"], "sz": entry["sz"], "time": entry["time"], "hash": entry["hash"],
                 "tid": entry["tid"], "users": [buyer, seller]}
        self._push("trades", lambda sub: sub["coin"] == entry["coin"], lambda sub: [trade])

    # ---------------------------------------------------------------- market moves
    def _set_mid(self, coin: str, px: Decimal) -> None:
        if coin not in self._asset_of:
            raise KeyError(f"{coin!r} is not in the universe")
        if px <= 0:
            raise ValueError("a mid must be positive")
        self._mids[coin] = px
        self._push("allMids", lambda sub: True, lambda sub: {"mids": self._all_mids()})
        self._match_resting(coin)
        self._fire_triggers(coin)
        self._push("l2Book", lambda sub: sub["coin"] == coin, lambda sub: self._l2(coin))

    def _match_resting(self, coin: str) -> None:
        """Resting limit orders the new best price went through fill at their limit, as maker."""
        bid, ask = self._bbo(coin)
        for order in sorted(self._orders.values(), key=lambda o: o.oid):
            if order.coin != coin or not order.is_open or order.armed:
                continue
            if (ask <= order.limit_px) if order.is_buy else (bid >= order.limit_px):
                self._fill_resting(order, order.limit_px, crossed=False)

    def _fill_resting(self, order: _Order, px: Decimal, crossed: bool) -> None:
        acct = self._accounts[order.account]
        pos, size = acct.szi(order.coin), order.sz
        if order.reduce_only:
            if pos == 0 or (pos > 0) == order.is_buy:
                self._set_status(order, "reduceOnlyCanceled")
                return
            size = min(size, abs(pos))
        elif not self._margin_ok(acct, order.coin, order.is_buy, size, px):
            self._set_status(order, "marginCanceled")
            return
        self._fill(acct, order, px, size, crossed=crossed)
        order.sz = ZERO  # a clipped reduce-only order is done too
        self._set_status(order, "filled")

    def _fire_triggers(self, coin: str) -> None:
        """Triggers whose condition holds at the mark (= mid) fire: "triggered", then fill or rest."""
        mark = self._mids[coin]
        for order in sorted(self._orders.values(), key=lambda o: o.oid):
            if order.coin != coin or not order.armed or not order.is_open:
                continue
            if not _trigger_hit(order, mark):
                continue
            order.armed = False
            self._set_status(order, "triggered")
            bid, ask = self._bbo(coin)
            best = ask if order.is_buy else bid
            crosses = order.limit_px >= ask if order.is_buy else order.limit_px <= bid
            if order.trigger["isMarket"] or crosses:  # type: ignore[index]
                self._fill_resting(order, best, crossed=True)
            # else: it now rests as a limit order and fills as maker when the market reaches it

    def _settle_funding(self, coin: str, rate: Decimal) -> Decimal:
        now, mark = self._now(), self._mids[coin]
        self._funding_rates.setdefault(coin, []).append(
            {"coin": coin, "fundingRate": format(rate.normalize(), "f"), "premium": "0.0", "time": now})
        paid_by_user = ZERO
        for acct in self._accounts.values():
            pos = acct.positions.get(coin)
            if not pos or not pos.szi:
                continue
            payment = pos.szi * mark * rate
            acct.cash -= payment
            pos.funding_all += payment
            pos.funding_open += payment
            pos.funding_change += payment
            delta = {"type": "funding", "coin": coin, "usdc": money(-payment), "szi": wire(pos.szi),
                     "fundingRate": format(rate.normalize(), "f"), "nSamples": None}
            digest = hashlib.blake2b(f"funding-{coin}-{now}-{acct.address}".encode(), digest_size=32).hexdigest()
            acct.fundings.append({"time": now, "hash": "0x" + digest, "delta": delta})
            event = {"time": now, "coin": coin, "usdc": delta["usdc"], "szi": delta["szi"],
                     "fundingRate": delta["fundingRate"]}
            self._push_user("userEvents", acct.address, lambda sub, e=event: {"funding": dict(e)})
            if acct.address == self.user:
                paid_by_user = payment
        return paid_by_user

    def _liquidate(self, coin: str, address: str) -> dict[str, Any] | None:
        acct = self._account(address)
        pos = acct.szi(coin)
        if pos == 0:
            return None
        summary = self._summary(acct)
        mode = self._leverage(acct, self._asset_of[coin])[0]
        oid = self._next_oid
        self._next_oid += 1
        liquidation = {"coin": coin, "is_buy": pos < 0, "mode": "Cross" if mode == "cross" else "Isolated"}
        fill = self._fill(acct, None, self._mids[coin], abs(pos), crossed=True, liquidation=liquidation, oid=oid)
        lid = self._next_lid
        self._next_lid += 1
        event = {"lid": lid, "liquidator": NULL_ADDRESS, "liquidated_user": acct.address,
                 "liquidated_ntl_pos": money(abs(pos) * self._mids[coin]),
                 "liquidated_account_value": money(summary["accountValue"])}
        self._push_user("userEvents", acct.address, lambda sub: {"liquidation": dict(event)})
        cancelled = []
        for order in sorted(self._orders.values(), key=lambda o: o.oid):
            if order.account == acct.address and order.coin == coin and order.armed and order.is_open:
                self._set_status(order, "liquidatedCanceled")
                cancelled.append({"coin": coin, "oid": order.oid})
        if cancelled:
            self._push_user("userEvents", acct.address, lambda sub: {"nonUserCancel": list(cancelled)})
        return fill

    # ---------------------------------------------------------------- account views
    def _summary(self, acct: _Account) -> dict[str, Any]:
        """Numbers behind clearinghouseState (Decimals), positions included."""
        positions = []
        upnl_all = ntl_all = margin_all = szi_mark_all = ZERO
        iso_equity = cross_margin = cross_ntl = cross_szi_mark = cross_mm = ZERO
        for coin, pos in acct.positions.items():
            if not pos.szi:
                continue
            asset = self._asset_of[coin]
            mark, (kind, lev) = self._mids[coin], self._leverage(acct, asset)
            ntl, upnl = abs(pos.szi) * mark, pos.szi * (mark - pos.entry)
            initial = abs(pos.szi) * pos.entry / lev
            raw_usd = -pos.szi * pos.entry + initial
            margin = ntl / lev if kind == "cross" else raw_usd + pos.szi * mark
            upnl_all, ntl_all, margin_all = upnl_all + upnl, ntl_all + ntl, margin_all + margin
            szi_mark_all += pos.szi * mark
            mm = ntl / (2 * self._max_leverage(asset))
            if kind == "cross":
                cross_margin, cross_ntl, cross_mm = cross_margin + margin, cross_ntl + ntl, cross_mm + mm
                cross_szi_mark += pos.szi * mark
            else:
                iso_equity += margin
            positions.append((coin, pos, asset, kind, lev, mark, ntl, upnl, initial, raw_usd, margin, mm))
        account_value = acct.cash + upnl_all
        cross_value = account_value - iso_equity
        return {"accountValue": account_value, "totalMarginUsed": margin_all, "totalNtlPos": ntl_all,
                "totalRawUsd": account_value - szi_mark_all, "crossAccountValue": cross_value,
                "crossMarginUsed": cross_margin, "crossNtlPos": cross_ntl, "crossRawUsd": cross_value - cross_szi_mark,
                "crossMaintenance": cross_mm, "positions": positions}

    def _clearinghouse(self, address: str) -> dict[str, Any]:
        acct = self._accounts.get(address.lower())
        if acct is None:
            acct = _Account(address.lower(), ZERO)
        s = self._summary(acct)
        asset_positions = []
        for coin, pos, asset, kind, lev, mark, ntl, upnl, initial, raw_usd, margin, mm in s["positions"]:
            m = Decimal(1) / (2 * self._max_leverage(asset))
            if kind == "cross":
                liq = (pos.szi * mark - (s["crossAccountValue"] - (s["crossMaintenance"] - mm))) \
                    / (pos.szi - abs(pos.szi) * m)
                leverage: dict[str, Any] = {"type": "cross", "value": lev}
            else:
                liq = -raw_usd / (pos.szi - abs(pos.szi) * m)
                leverage = {"type": "isolated", "value": lev, "rawUsd": money(raw_usd)}
            asset_positions.append({"position": {
                "coin": coin,
                "cumFunding": {"allTime": money(pos.funding_all), "sinceChange": money(pos.funding_change),
                               "sinceOpen": money(pos.funding_open)},
                "entryPx": wire(pos.entry.quantize(MICRO, ROUND_HALF_UP)),
                "leverage": leverage,
                "liquidationPx": wire(liq.quantize(Decimal("0.00000001"), ROUND_HALF_UP)) if liq > 0 else None,
                "marginUsed": money(margin),
                "maxLeverage": self._max_leverage(asset),
                "positionValue": money(ntl),
                "returnOnEquity": money(upnl / initial) if initial else "0.0",
                "szi": wire(pos.szi),
                "unrealizedPnl": money(upnl),
            }, "type": "oneWay"})
        return {
            "assetPositions": asset_positions,
            "crossMaintenanceMarginUsed": money(s["crossMaintenance"]),
            "crossMarginSummary": {"accountValue": money(s["crossAccountValue"]),
                                   "totalMarginUsed": money(s["crossMarginUsed"]),
                                   "totalNtlPos": money(s["crossNtlPos"]), "totalRawUsd": money(s["crossRawUsd"])},
            "marginSummary": {"accountValue": money(s["accountValue"]), "totalMarginUsed": money(s["totalMarginUsed"]),
                              "totalNtlPos": money(s["totalNtlPos"]), "totalRawUsd": money(s["totalRawUsd"])},
            "time": self._now(),
            "withdrawable": money(max(ZERO, s["crossAccountValue"] - s["crossMarginUsed"])),
        }

    def _frontend(self, order: _Order) -> dict[str, Any]:
        trig = order.trigger
        if trig:
            market = "Market" if trig["isMarket"] else "Limit"
            order_type = f"{'Stop' if trig['tpsl'] == 'sl' else 'Take Profit'} {market}"
            above = (trig["tpsl"] == "sl") == order.is_buy
            condition = f"Price {'above' if above else 'below'} {wire(trig['triggerPx'])}"
            if not order.armed:
                condition = "Triggered"
        else:
            order_type, condition = "Limit", "N/A"
        return {
            "coin": order.coin, "side": order.side, "limitPx": wire(order.limit_px), "sz": wire(order.sz),
            "oid": order.oid, "timestamp": order.timestamp, "triggerCondition": condition,
            "isTrigger": trig is not None, "triggerPx": wire(trig["triggerPx"]) if trig else "0.0",
            "children": [], "isPositionTpsl": False, "reduceOnly": order.reduce_only, "orderType": order_type,
            "origSz": wire(order.orig_sz), "tif": order.tif, "cloid": order.cloid,
        }

    def _order_status(self, address: str, ref: Any) -> dict[str, Any]:
        if isinstance(ref, str):
            order = self._by_cloid.get((address, ref.lower()))
        elif isinstance(ref, int) and not isinstance(ref, bool):
            order = self._orders.get(ref)
        else:
            raise _Unprocessable
        if order is None or order.account != address:
            return {"status": "unknownOid"}
        return {"status": "order", "order": {"order": self._frontend(order), "status": order.status,
                                             "statusTimestamp": order.status_ts}}

    # ---------------------------------------------------------------- /info
    def _info(self, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            raise _Unprocessable
        kind = body["type"]
        handler = getattr(self, "_info_" + kind, None)
        if handler is None:
            raise _Unprocessable
        return handler(body)

    def _user_arg(self, body: dict[str, Any]) -> str:
        user = body["user"]
        if not isinstance(user, str) or not _is_hex(user, 20):
            raise _Unprocessable
        return user.lower()

    def _user_fills(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        acct = self._accounts.get(self._user_arg(body))
        return acct.fills if acct else []

    def _info_meta(self, body: dict[str, Any]) -> Any:
        if body.get("dex", "") not in ("", None):
            raise _Unprocessable
        return self._meta()

    def _info_spotMeta(self, body: dict[str, Any]) -> Any:  # noqa: N802 - named after the request type
        return {"universe": [], "tokens": []}

    def _info_perpDexs(self, body: dict[str, Any]) -> Any:  # noqa: N802
        return [None]

    def _info_metaAndAssetCtxs(self, body: dict[str, Any]) -> Any:  # noqa: N802
        ctxs = []
        for a in self._universe:
            coin = a["name"]
            mid = self._mids.get(coin)
            rates = self._funding_rates.get(coin)
            live = mid is not None and not a.get("isDelisted")
            px = wire(mid) if mid is not None else "0.0"
            bid_ask = [wire(x) for x in self._bbo(coin)] if live else None
            ctxs.append({"funding": rates[-1]["fundingRate"] if rates else "0.0000125", "openInterest": "0.0",
                         "prevDayPx": px, "dayNtlVlm": "0.0", "premium": "0.0" if live else None, "oraclePx": px,
                         "markPx": px, "midPx": px if live else None, "impactPxs": bid_ask, "dayBaseVlm": "0.0"})
        return [self._meta(), ctxs]

    def _all_mids(self) -> dict[str, str]:
        return {a["name"]: wire(self._mids[a["name"]]) for a in self._universe if self._tradable(a["name"])}

    def _info_allMids(self, body: dict[str, Any]) -> Any:  # noqa: N802
        return self._all_mids()

    def _l2(self, coin: str, levels: int = 5) -> dict[str, Any]:
        bid, ask = self._bbo(coin)
        szd = self._sz_decimals(coin)
        size = wire(self.depth[coin]) if coin in self.depth else "1000000.0"
        bids, asks = [], []
        for i in range(levels):
            b = bid - i * _tick(bid, szd)
            if b > 0:
                bids.append({"px": wire(b), "sz": size, "n": 1})
            asks.append({"px": wire(ask + i * _tick(ask, szd)), "sz": size, "n": 1})
        return {"coin": coin, "time": self._now(), "levels": [bids, asks]}

    def _info_l2Book(self, body: dict[str, Any]) -> Any:  # noqa: N802
        coin = body["coin"]
        if coin not in self._asset_of or not self._tradable(coin):
            raise _Unprocessable
        return self._l2(coin)

    def _info_clearinghouseState(self, body: dict[str, Any]) -> Any:  # noqa: N802
        return self._clearinghouse(self._user_arg(body))

    def _info_openOrders(self, body: dict[str, Any]) -> Any:  # noqa: N802
        user = self._user_arg(body)
        return [{"coin": o.coin, "limitPx": wire(o.limit_px), "oid": o.oid, "side": o.side, "sz": wire(o.sz),
                 "timestamp": o.timestamp}
                for o in sorted(self._orders.values(), key=lambda o: -o.oid) if o.account == user and o.is_open]

    def _info_frontendOpenOrders(self, body: dict[str, Any]) -> Any:  # noqa: N802
        user = self._user_arg(body)
        return [self._frontend(o) for o in sorted(self._orders.values(), key=lambda o: -o.oid)
                if o.account == user and o.is_open]

    def _info_userFills(self, body: dict[str, Any]) -> Any:  # noqa: N802
        return copy.deepcopy(self._user_fills(body)[::-1][:MAX_FILLS_ANSWERED])

    def _info_userFillsByTime(self, body: dict[str, Any]) -> Any:  # noqa: N802
        start, end = body["startTime"], body.get("endTime")
        if not isinstance(start, int) or (end is not None and not isinstance(end, int)):
            raise _Unprocessable
        end = self._now() if end is None else end
        hits = [f for f in self._user_fills(body) if start <= f["time"] <= end]
        return copy.deepcopy(hits[:MAX_FILLS_ANSWERED])

    def _info_orderStatus(self, body: dict[str, Any]) -> Any:  # noqa: N802
        return self._order_status(self._user_arg(body), body["oid"])

    def _info_userFees(self, body: dict[str, Any]) -> Any:  # noqa: N802
        self._user_arg(body)
        taker, maker = format(self.taker_fee.normalize(), "f"), format(self.maker_fee.normalize(), "f")
        return {"dailyUserVlm": [], "feeSchedule": {"cross": taker, "add": maker}, "userCrossRate": taker,
                "userAddRate": maker, "activeReferralDiscount": "0.0"}

    def _info_userFunding(self, body: dict[str, Any]) -> Any:  # noqa: N802
        acct = self._accounts.get(self._user_arg(body))
        start, end = body.get("startTime", 0), body.get("endTime")
        end = self._now() if end is None else end
        return copy.deepcopy([f for f in (acct.fundings if acct else []) if start <= f["time"] <= end])

    _info_userFundingHistory = _info_userFunding

    def _info_fundingHistory(self, body: dict[str, Any]) -> Any:  # noqa: N802
        start, end = body["startTime"], body.get("endTime")
        end = self._now() if end is None else end
        return [dict(r) for r in self._funding_rates.get(body["coin"], []) if start <= r["time"] <= end]

    # ---------------------------------------------------------------- WebSocket
    async def _serve_ws(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                        path: str) -> None:
        protocol = ServerProtocol()
        protocol.receive_data(head)
        events = protocol.events_received()
        request = events[0] if events and isinstance(events[0], Request) else None
        if path != "/ws" or request is None:
            writer.write(_http(404, b"Not Found", "text/plain", keep_alive=False))
            await writer.drain()
            return
        response = protocol.accept(request)
        protocol.send_response(response)
        conn = _WsConn(protocol, writer)
        conn.flush_protocol()
        if response.status_code != 101:
            await writer.drain()
            return
        self._ws.append(conn)
        sender = asyncio.get_running_loop().create_task(self._ws_sender(conn))
        self._tasks.add(sender)
        conn.send(GREETING)
        try:
            await self._ws_receive(conn, reader)
        finally:
            conn.closed = True
            conn.wake.set()
            if conn in self._ws:
                self._ws.remove(conn)
            sender.cancel()
            self._tasks.discard(sender)

    async def _ws_receive(self, conn: _WsConn, reader: asyncio.StreamReader) -> None:
        while not conn.closed:
            data = await reader.read(65536)
            if not data:
                conn.protocol.receive_eof()
                return
            conn.protocol.receive_data(data)
            for event in conn.protocol.events_received():
                if isinstance(event, Frame):
                    self._ws_frame(conn, event)
            conn.flush_protocol()  # pongs and the close handshake
            if conn.protocol.close_expected():
                return

    def _ws_frame(self, conn: _WsConn, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.CONT) or (frame.opcode is Opcode.BINARY):
            conn.fragments.append(bytes(frame.data))
            if frame.fin:
                text = b"".join(conn.fragments).decode("utf-8", "replace")
                conn.fragments.clear()
                self._ws_message(conn, text)

    async def _ws_sender(self, conn: _WsConn) -> None:
        """Send the outbox in order, one frame at a time, waiting for the socket to drain."""
        try:
            while not conn.closed:
                if not conn.outbox:
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                conn.protocol.send_text(conn.outbox.popleft().encode())
                conn.flush_protocol()
                await conn.writer.drain()
        except (ConnectionError, InvalidState):  # the peer went away or started closing
            conn.closed = True

    def _ws_message(self, conn: _WsConn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            conn.send(_dumps({"channel": "error", "data": f"Invalid JSON: {text}"}))
            return
        method = msg.get("method") if isinstance(msg, dict) else None
        if method == "ping":
            conn.send(_dumps({"channel": "pong"}))
        elif method in ("subscribe", "unsubscribe"):
            self._ws_subscription(conn, method, msg.get("subscription"))
        elif method == "post":
            self._ws_post(conn, msg)
        else:
            conn.send(_dumps({"channel": "error", "data": f"Unknown method: {text}"}))

    def _ws_subscription(self, conn: _WsConn, method: str, sub: Any) -> None:
        if not self._valid_subscription(sub):
            conn.send(_dumps({"channel": "error", "data": f"Invalid subscription: {_dumps(sub)}"}))
            return
        sub = dict(sub)
        if sub["type"] == "userFills":
            sub.setdefault("aggregateByTime", False)
        key = _sub_key(sub)
        existing = next((s for s in conn.subs if _sub_key(s) == key), None)
        if method == "unsubscribe":
            if existing is None:
                conn.send(_dumps({"channel": "error", "data": f"Already unsubscribed: {_dumps(sub)}"}))
                return
            conn.subs.remove(existing)
        elif existing is not None:
            conn.send(_dumps({"channel": "error", "data": f"Already subscribed: {_dumps(sub)}"}))
            return
        else:
            conn.subs.append(sub)
        conn.send(_dumps({"channel": "subscriptionResponse", "data": {"method": method, "subscription": sub}}))
        if method == "subscribe":
            self._ws_snapshot(conn, sub)

    def _valid_subscription(self, sub: Any) -> bool:
        if not isinstance(sub, dict) or sub.get("type") not in SUBSCRIPTION_TYPES:
            return False
        if sub["type"] in USER_SUBSCRIPTIONS:
            return isinstance(sub.get("user"), str) and _is_hex(sub["user"], 20)
        if sub["type"] in COIN_SUBSCRIPTIONS:
            return sub.get("coin") in self._asset_of and self._tradable(sub["coin"])
        return True

    def _ws_snapshot(self, conn: _WsConn, sub: dict[str, Any]) -> None:
        if sub["type"] == "userFills":
            acct = self._accounts.get(sub["user"].lower())
            fills = copy.deepcopy(acct.fills[-MAX_FILLS_ANSWERED:]) if acct else []
            conn.send(_dumps({"channel": "userFills", "data": {"isSnapshot": True, "user": sub["user"],
                                                               "fills": fills}}))
        elif sub["type"] == "allMids":
            conn.send(_dumps({"channel": "allMids", "data": {"mids": self._all_mids()}}))
        elif sub["type"] == "l2Book":
            conn.send(_dumps({"channel": "l2Book", "data": self._l2(sub["coin"])}))

    def _ws_post(self, conn: _WsConn, msg: dict[str, Any]) -> None:
        """{"method":"post","id":N,"request":{"type":"info"|"action","payload":{...}}} (no faults apply)."""
        req = msg.get("request") if isinstance(msg.get("request"), dict) else {}
        kind, payload = req.get("type"), req.get("payload")
        try:
            if kind == "info":
                response = {"type": "info", "payload": {"type": payload["type"], "data": self._info(payload)}}
            elif kind == "action":
                rec = ExchangeRequest(copy.deepcopy(payload), time_ms=self._now())
                self._requests.append(rec)
                answer = self._exchange(payload, rec, None)
                rec.status, rec.answer = 200, copy.deepcopy(answer)
                response = {"type": "action", "payload": answer}
            else:
                raise _Unprocessable
        except (_Unprocessable, KeyError, TypeError, ValueError, IndexError):
            response = {"type": "error", "payload": UNPROCESSABLE}
        conn.send(_dumps({"channel": "post", "data": {"id": msg.get("id"), "response": response}}))

    def _push(self, sub_type: str, match: Callable[[dict[str, Any]], bool],
              make: Callable[[dict[str, Any]], Any]) -> None:
        """Queue `make(sub)` on channel `sub_type` (userEvents: "user") for every matching subscription."""
        channel = "user" if sub_type == "userEvents" else sub_type
        for conn in self._ws:
            if conn.closed:
                continue
            for sub in conn.subs:
                if sub["type"] == sub_type and match(sub):
                    conn.send(_dumps({"channel": channel, "data": make(sub)}))

    def _push_user(self, sub_type: str, address: str, make: Callable[[dict[str, Any]], Any]) -> None:
        self._push(sub_type, lambda sub: sub["user"].lower() == address, make)

    def _drop_ws(self) -> int:
        dropped = [c for c in self._ws if not c.closed]
        for conn in dropped:
            conn.abort()
        return len(dropped)


# ------------------------------------------------------------------ small helpers
def _is_hex(text: str, nbytes: int) -> bool:
    if not text.startswith("0x") or len(text) != 2 + 2 * nbytes:
        return False
    try:
        int(text[2:], 16)
    except ValueError:
        return False
    return True


def _parse_dec(text: str) -> Decimal:
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return Decimal("NaN")


def _direction(start: Decimal, new: Decimal) -> str:
    if start == 0 or (start > 0 and new > start) or (start < 0 and new < start):
        return "Open Long" if new > 0 else "Open Short"
    if (start > 0) == (new > 0) or new == 0:
        return "Close Long" if start > 0 else "Close Short"
    return "Long > Short" if start > 0 else "Short > Long"


def _flip(side: str) -> str:
    return "A" if side == "B" else "B"


def _trigger_hit(order: _Order, mark: Decimal) -> bool:
    """Sell sl: mark <= px; sell tp: mark >= px; buy sl: mark >= px; buy tp: mark <= px."""
    trig = order.trigger
    assert trig is not None
    px, is_sl = trig["triggerPx"], trig["tpsl"] == "sl"
    if order.is_buy:
        return mark >= px if is_sl else mark <= px
    return mark <= px if is_sl else mark >= px


def _sub_key(sub: dict[str, Any]) -> str:
    norm = {k: (v.lower() if k == "user" and isinstance(v, str) else v) for k, v in sub.items()}
    return json.dumps(norm, sort_keys=True)

"""Machinery shared by the fake exchange WebSocket servers.

`ServerThread` runs a `websockets` asyncio server on 127.0.0.1 (port chosen by
the OS) in a daemon thread with its own event loop, so a synchronous test (or a
CLI subprocess) can talk to it while the test thread keeps control.
`ServerThread.call` runs a function on that loop and returns its result: every
public method of a fake goes through it, which is what makes them thread-safe.

`FakeExchange` is the protocol-neutral part of a fake:

- the market clock: releases the tape at `rate` trades per second whether or not
  anyone is connected (so a client that reconnects has really missed trades),
  moves each product's `SyntheticBook`, and hands groups of up to
  `trades_per_frame` trades of one product to the protocol subclass;
- one outgoing queue and writer task per connection: frames go out in order, a
  stall pauses the writer (frames queue up), a drop aborts the TCP connection;
- accounting: a trade counts as sent once a frame carrying it (snapshot or
  update) has left the process for some client, i.e. all of the frame's bytes
  are past asyncio's write buffer and in the kernel, which delivers them even
  after a drop; frames still (partly) in the buffer when a connection is
  dropped are lost and do not count;
- faults, run from the test thread or from a declarative `plan` of `Fault`s.

Clock details: trade k (counting after `history`, the trades already printed
when the server starts) is released at t0 + (k + 1) / rate, where t0 is when a
client first subscribes to trades (``start="first_subscribe"``, the default),
when the server starts (``"serve"``) or `start_market()` (``"manual"``). A
group holds trades of one product released in the same clock step, so with
``trades_per_frame=1`` (default) or ``rate=math.inf`` (steps of 256 trades) the
framing is deterministic; with k > 1 at a finite rate it depends on timing.

Faults (`kind`, what it does, what `faults_done[kind]` counts):

- ``drop``: abort the TCP connection, no close frame (the client sees 1006).
  Counted per connection aborted.
- ``skip_sequence``: the next gap-detectable update frame (Coinbase AT:
  market_trades/l2_data update; Exchange: match; Hyperliquid: trades) is not
  sent, but any sequence number it would have used is consumed. Counted when
  the frame is actually skipped.
- ``stall``: send nothing at all (no heartbeats, no pongs) for `seconds`, keep
  the socket open; what is generated meanwhile is queued and sent afterwards
  (lost if the client goes away first). Counted when the stall starts.
- ``malformed``: send one bad frame, `variant` one of ``truncated`` (not valid
  JSON), ``unknown_type`` (unknown channel/type), ``missing_field`` (a trade
  without its price), ``bad_price`` (price "abc"). The bad trade repeats the
  latest released trade, and is never counted as sent. Counted when sent.
- ``reject_subscription``: from now on subscribing to `target` (a product, or a
  Hyperliquid coin) gets the venue's error frame. Counted per refused subscribe.

A `plan` entry fires once:

- ``Fault("drop", after_trades=50)``: when the 50th tape trade (history
  included) is released, on every open connection (or only `connection=i`,
  the i-th accepted, 0-based). The fault is queued behind the frames already
  generated, so frames for trades 1..50 go out first: deterministic.
- ``Fault("stall", after_frames=10, seconds=2)``: right after the 10th frame
  sent on a connection (the first to get there, or `connection=i`).
- ``Fault("reject_subscription", target="ETH-USD")``: with no trigger, from
  the start.

Calling a fault method from the test thread applies it to the open connections
at once (ahead of anything already queued).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import math
import socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Iterable, Literal, TypeVar

from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .tape import BookChange, FakeTrade, SyntheticBook, price_decimals

T = TypeVar("T")

FaultKind = Literal["drop", "skip_sequence", "stall", "malformed", "reject_subscription"]
FAULT_KINDS = ("drop", "skip_sequence", "stall", "malformed", "reject_subscription")
MALFORMED_VARIANTS = ("truncated", "unknown_type", "missing_field", "bad_price")
StartMode = Literal["first_subscribe", "serve", "manual"]


def dumps(obj: Any) -> str:
    """Compact JSON, as the venues send it."""
    return json.dumps(obj, separators=(",", ":"))


class ServerThread:
    """A websockets server on its own event loop in a daemon thread."""

    def __init__(
        self,
        handler: Callable[[ServerConnection], Any],
        *,
        on_start: Callable[[], None] = lambda: None,
        on_stop: Callable[[], None] = lambda: None,
        path: str | None = None,
        name: str = "fake-ws",
    ) -> None:
        self._handler = handler
        self._on_start = on_start
        self._on_stop = on_stop
        self._path = path
        self._name = name
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    def start(self, timeout: float = 5.0) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self._name} did not start in {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"{self._name} failed to start") from self._error

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (1001), stop the loop, join the thread."""
        if self._thread is None or self.loop is None or self._stop is None:
            return
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        self._thread = None

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 5.0) -> T:
        """Run `fn(*args)` on the server loop and return its result (or raise its error).

        Once the server has stopped nothing else touches the state, so `fn` runs
        right here: a test may inspect a fake after its `with` block.
        """
        if self.loop is None:
            raise RuntimeError(f"{self._name} was never started")
        thread = self._thread
        if thread is None or not thread.is_alive() or threading.current_thread() is thread:
            return fn(*args)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to the calling thread
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if self._path is not None and request.path.split("?")[0] != self._path:
            return conn.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,  # the venues keep alive at the application level
            close_timeout=1,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._on_start()
            self._ready.set()
            await self._stop.wait()
            self._on_stop()
            server.close()
            await server.wait_closed()


@dataclass(frozen=True)
class Fault:
    """One scripted fault: what, when, where. See the module docstring."""

    kind: FaultKind
    after_trades: int | None = None
    after_frames: int | None = None
    connection: int | None = None
    seconds: float = 1.0
    variant: str = "truncated"
    target: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.after_trades is not None and self.after_frames is not None:
            raise ValueError("give after_trades or after_frames, not both")
        if self.kind == "reject_subscription":
            if not self.target:
                raise ValueError("reject_subscription needs target=<product or coin>")
        elif self.after_trades is None and self.after_frames is None:
            raise ValueError(f"{self.kind} needs after_trades=N or after_frames=N")
        if self.kind == "malformed" and self.variant not in MALFORMED_VARIANTS:
            raise ValueError(f"unknown malformed variant {self.variant!r}; expected one of {MALFORMED_VARIANTS}")


@dataclass(eq=False, slots=True)
class Frame:
    """One outgoing message. `trades` are what it delivers (for accounting); `kind`
    says what it is ("trades"/"book" updates are what skip_sequence may skip)."""

    body: Any
    kind: str
    trades: tuple[FakeTrade, ...] = ()
    truncate: bool = False
    text: str | None = None  # rendered once when it is the same for every connection


@dataclass(frozen=True, slots=True)
class _Control:
    kind: str  # "drop" | "skip_sequence" | "stall"
    seconds: float = 0.0


@dataclass(eq=False)
class Conn:
    """Server-side state of one client connection."""

    index: int
    ws: ServerConnection
    queue: deque[Frame | _Control] = field(default_factory=deque)
    urgent: deque[Frame | _Control] = field(default_factory=deque)  # faults from the test thread
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: Frame | None = None  # being written (send() may wait for the buffer to drain)
    pending: deque[tuple[int, Frame]] = field(default_factory=deque)  # (end offset, frame) not yet out
    written: int = 0  # bytes handed to the transport so far
    subs: dict[str, set[str]] = field(default_factory=dict)  # channel -> products/coins
    subscribed: bool = False  # has ever sent a valid subscribe
    frames_sent: int = 0
    seq: int = 0  # Coinbase AT: next sequence_num
    heartbeats: int = 0
    skip: int = 0  # frames still to skip (skip_sequence)
    stalled: bool = False
    closed: bool = False
    last_recv: float = 0.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # watchdogs, cancelled at the end

    def push(self, item: Frame | _Control, front: bool = False) -> None:
        """Queue `item`; `front` puts it ahead of the normal queue (still in call order)."""
        if self.closed:
            return
        (self.urgent if front else self.queue).append(item)
        self.wake.set()

    def pop(self) -> Frame | _Control | None:
        if self.urgent:
            return self.urgent.popleft()
        return self.queue.popleft() if self.queue else None

    def channel(self, name: str) -> set[str]:
        return self.subs.setdefault(name, set())


class FakeExchange:
    """Market clock, connections, faults and accounting; subclasses speak a protocol.

    Use as a context manager (or `start()`/`stop()`); `url` is where clients connect.
    """

    path: str | None = None  # serve only this request path (None: any path)
    skippable_kinds: frozenset[str] = frozenset({"trades"})

    def __init__(
        self,
        tape: Iterable[FakeTrade],
        *,
        rate: float = math.inf,
        snapshot_trades: int = 100,
        trades_per_frame: int = 1,
        plan: Iterable[Fault] = (),
        history: int = 0,
        start: StartMode = "first_subscribe",
        book_depth: int = 10,
        seed: int = 0,
        send_buffer: int | None = None,
    ) -> None:
        self.tape: list[FakeTrade] = list(tape)
        if not self.tape:
            raise ValueError("empty tape")
        if not rate > 0:
            raise ValueError("rate must be > 0 (math.inf: as fast as possible)")
        if trades_per_frame < 1:
            raise ValueError("trades_per_frame must be >= 1")
        if not 0 <= history <= len(self.tape):
            raise ValueError("history must be within the tape")
        self.rate = rate
        self.snapshot_trades = snapshot_trades
        self.trades_per_frame = trades_per_frame
        self.plan: list[Fault] = list(plan)
        self.start_mode = start
        # A small kernel send buffer makes a client that stops reading back frames
        # up inside the fake quickly (slow-consumer tests; accounting under drops).
        self.send_buffer = send_buffer
        self.products: list[str] = list(dict.fromkeys(t.product for t in self.tape))
        decimals = price_decimals(self.tape)
        self.books: dict[str, SyntheticBook] = {}
        for product in self.products:
            book = SyntheticBook(decimals, book_depth, seed=f"{seed}:{product}")
            book.seed(next(t.price for t in self.tape if t.product == product))
            self.books[product] = book
        self.recent: dict[str, list[FakeTrade]] = {p: [] for p in self.products}

        self.connections = 0  # accepted so far
        self.received: list[Any] = []  # every client message, parsed (raw text if not JSON)
        self.faults_done: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []  # bugs in the fake itself; stop() raises if any
        # Untriggered reject_subscription entries apply from the start.
        self.rejected: set[str] = {
            f.target for f in self.plan
            if f.kind == "reject_subscription" and f.target and f.after_trades is None and f.after_frames is None
        }
        self._next = 0  # index of the next tape trade to release
        self._groups: dict[str, tuple[list[FakeTrade], dict[tuple[str, int], float]]] = {}
        self._sent: dict[str, dict[int, FakeTrade]] = {p: {} for p in self.products}
        self._conns: list[Conn] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._clock_task: asyncio.Task[None] | None = None
        self._fired: set[int] = set()
        self._server = ServerThread(
            self._handle, on_start=self._started, on_stop=self._stopping, path=self.path,
            name=type(self).__name__,
        )
        self._history = history

    # ----------------------------------------------------------- public (test thread)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.port}{self.path or ''}"

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def released(self) -> int:
        """How many tape trades the market has released so far."""
        return self._next

    @property
    def open_connections(self) -> int:
        return self._server.call(lambda: sum(not c.closed for c in self._conns))

    def start(self) -> "FakeExchange":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self.errors:
            raise RuntimeError(f"{type(self).__name__} failed:\n" + "\n".join(self.errors))

    def __enter__(self) -> "FakeExchange":
        return self.start()

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._server.stop()
        if self.errors and exc_type is None:
            raise RuntimeError(f"{type(self).__name__} failed:\n" + "\n".join(self.errors))

    def start_market(self) -> None:
        """Start the clock now (the only way with start="manual"); idempotent."""
        self._server.call(self._start_clock)

    def wait_done(self, timeout: float = 10.0) -> None:
        """Return once the whole tape is released and every open connection has
        been sent all the trade frames meant for it; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self._server.call(self._busy)
            if busy is None:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{type(self).__name__} not done after {timeout}s: {busy}")
            time.sleep(0.01)

    def sent_trade_ids(self, product: str) -> set[int]:
        """Wire ids of `product`'s trades that went out in at least one frame."""
        key = self._product_key(product)
        return self._server.call(lambda: {self.wire_id(t) for t in self._sent_now(key)})

    def sent_trades(self, product: str) -> list[FakeTrade]:
        """The tape trades behind `sent_trade_ids`, in id order."""
        key = self._product_key(product)
        return self._server.call(lambda: sorted(self._sent_now(key), key=lambda t: t.trade_id))

    def wire_id(self, trade: FakeTrade) -> int:
        """The id a client sees for `trade` (the tape id unless a venue hashes it)."""
        return trade.trade_id

    def drop(self, connection: int | None = None) -> int:
        """Abort open connections (or the `connection`-th) now; returns how many."""
        return self._server.call(self._fault_now, "drop", connection, 0.0, "")

    def skip_sequence(self, connection: int | None = None) -> int:
        """Skip the next gap-detectable update on open connections; returns how many."""
        return self._server.call(self._fault_now, "skip_sequence", connection, 0.0, "")

    def stall(self, seconds: float, connection: int | None = None) -> int:
        """Send nothing on open connections for `seconds`, then the backlog; returns how many."""
        return self._server.call(self._fault_now, "stall", connection, seconds, "")

    def malformed(self, variant: str = "truncated", connection: int | None = None) -> int:
        """Send one bad frame (see MALFORMED_VARIANTS) on open connections; returns how many."""
        if variant not in MALFORMED_VARIANTS:
            raise ValueError(f"unknown malformed variant {variant!r}; expected one of {MALFORMED_VARIANTS}")
        return self._server.call(self._fault_now, "malformed", connection, 0.0, variant)

    def reject_subscription(self, name: str) -> None:
        """Refuse every later subscribe for `name` (a product, or a Hyperliquid coin)."""
        self._server.call(self.rejected.add, name)

    # ---------------------------------------------------------------- subclass hooks

    def _on_connect(self, conn: Conn) -> None:
        """A client connected (send a greeting, start watchdogs)."""

    def _on_message(self, conn: Conn, msg: Any) -> None:
        raise NotImplementedError

    def _on_group(self, product: str, trades: tuple[FakeTrade, ...], changes: list[BookChange]) -> None:
        """Trades of one product were released; `changes` is what they did to its book."""
        raise NotImplementedError

    def _malformed_frame(self, variant: str) -> Frame:
        raise NotImplementedError

    def _render(self, conn: Conn, frame: Frame) -> str:
        if frame.text is None:
            frame.text = frame.body if isinstance(frame.body, str) else dumps(frame.body)
        return frame.text

    def _on_skipped(self, conn: Conn, frame: Frame) -> None:
        """A frame was skipped (consume its sequence number, where there is one)."""

    def _on_started(self) -> None:
        """The server is listening (start heartbeat and book tickers here)."""

    def _product_key(self, name: str) -> str:
        if name not in self._sent:
            raise KeyError(f"{name!r} is not on the tape ({', '.join(self.products)})")
        return name

    # --------------------------------------------------------------- helpers for subclasses

    def _every(self, interval: float, fn: Callable[[], None]) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                self._guard(fn)

        self._tasks.append(asyncio.get_running_loop().create_task(loop()))

    def _later(self, conn: Conn, coro: Any) -> None:
        """Run a per-connection watchdog; it is cancelled when the connection ends."""
        conn.tasks.append(asyncio.get_running_loop().create_task(coro))

    def _subscribers(self, channel: str, product: str) -> list[Conn]:
        return [c for c in self._conns if not c.closed and product in c.subs.get(channel, ())]

    def _snapshot(self, product: str, n: int | None = None) -> list[FakeTrade]:
        """The last `n` (default snapshot_trades) released trades of `product`, oldest first."""
        n = self.snapshot_trades if n is None else n
        return self.recent[product][-n:] if n > 0 else []

    def _latest(self, product: str) -> FakeTrade:
        """The latest released trade of `product`, or its first tape trade (for malformed frames)."""
        done = self.recent[product]
        return done[-1] if done else next(t for t in self.tape if t.product == product)

    def _refused(self, name: str) -> bool:
        if name in self.rejected:
            self.faults_done["reject_subscription"] += 1
            return True
        return False

    def _start_clock(self) -> None:
        if self._clock_task is None:
            self._clock_task = asyncio.get_running_loop().create_task(self._clock())

    def _trades_subscribed(self) -> None:
        """Subclasses call this when a client subscribes to trades."""
        if self.start_mode == "first_subscribe":
            self._start_clock()

    # ----------------------------------------------------------------------- internals

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            self.errors.append(traceback.format_exc())
            return None

    def _started(self) -> None:
        self._release(self._history)  # trades that happened before the server came up
        if self.start_mode == "serve":
            self._start_clock()
        self._on_started()

    def _stopping(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._clock_task is not None:
            self._clock_task.cancel()

    async def _clock(self) -> None:
        """Release the tape: trade k (after history) at t0 + (k + 1) / rate."""
        loop = asyncio.get_running_loop()
        t0, first = loop.time(), self._next
        while self._next < len(self.tape):
            if math.isinf(self.rate):
                self._guard(self._release, min(len(self.tape), self._next + 256))
                await asyncio.sleep(0)
                continue
            due = first + int((loop.time() - t0) * self.rate)
            if due > self._next:
                self._guard(self._release, min(len(self.tape), due))
            next_at = t0 + (self._next - first + 1) / self.rate
            await asyncio.sleep(max(0.001, next_at - loop.time()))

    def _release(self, upto: int) -> None:
        while self._next < upto:
            trade = self.tape[self._next]
            self._next += 1
            changes = self.books[trade.product].apply(trade)
            self.recent[trade.product].append(trade)
            trades, book = self._groups.setdefault(trade.product, ([], {}))
            trades.append(trade)
            for side, px, size in changes:
                book[(side, px)] = size
            if len(trades) >= self.trades_per_frame:
                self._flush(trade.product)
            for i, fault in enumerate(self.plan):
                if fault.after_trades == self._next and i not in self._fired:
                    self._fired.add(i)
                    self._flush_all()
                    self._fire(fault, self._conns, front=False)
        self._flush_all()

    def _flush(self, product: str) -> None:
        trades, book = self._groups.pop(product)
        self._on_group(product, tuple(trades), [(side, px, size) for (side, px), size in book.items()])

    def _flush_all(self) -> None:
        for product in list(self._groups):
            self._flush(product)

    def _fire(self, fault: Fault, conns: Iterable[Conn], front: bool) -> None:
        if fault.kind == "reject_subscription":
            assert fault.target
            self.rejected.add(fault.target)
            return
        for conn in list(conns):
            if fault.connection is None or fault.connection == conn.index:
                self._apply(conn, fault.kind, fault.seconds, fault.variant, front)

    def _fault_now(self, kind: str, connection: int | None, seconds: float, variant: str) -> int:
        hit = [c for c in self._conns if not c.closed and connection in (None, c.index)]
        for conn in hit:
            self._apply(conn, kind, seconds, variant, front=True)
        return len(hit)

    def _apply(self, conn: Conn, kind: str, seconds: float, variant: str, front: bool) -> None:
        if kind == "drop" and front:
            self._drop(conn)
        elif kind == "malformed":
            conn.push(self._malformed_frame(variant), front)
        else:
            conn.push(_Control(kind, seconds), front)

    def _drop(self, conn: Conn) -> None:
        if conn.closed:
            return
        self._commit(conn)  # what reached the kernel will still be delivered...
        conn.closed = True
        conn.queue.clear()
        conn.urgent.clear()
        conn.pending.clear()  # ...what is still in asyncio's buffer dies with it
        conn.wake.set()
        self.faults_done["drop"] += 1
        conn.ws.transport.abort()

    def _sent_now(self, product: str) -> list[FakeTrade]:
        for conn in self._conns:  # a writer blocked on a full buffer has not looked lately
            self._commit(conn)
        return list(self._sent[product].values())

    def _busy(self) -> str | None:
        """Why the fake is not done yet (None: done)."""
        if self._next < len(self.tape):
            return f"released {self._next}/{len(self.tape)} trades"
        for conn in self._conns:
            if conn.closed:
                continue
            queued = sum(1 for f in conn.queue if isinstance(f, Frame) and f.trades)
            writing = conn.inflight is not None and conn.inflight.trades
            if queued or writing or any(f.trades for _, f in conn.pending):
                return f"connection {conn.index}: {queued} trade frames queued, {len(conn.pending)} unflushed"
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        conn = Conn(index=self.connections, ws=ws, last_recv=loop.time())
        if self.send_buffer is not None:
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        _count_writes(conn)
        self.connections += 1
        self._conns.append(conn)
        conn.tasks.append(loop.create_task(self._writer(conn)))
        try:
            self._guard(self._on_connect, conn)
            async for raw in ws:
                conn.last_recv = loop.time()
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = raw
                self.received.append(msg)
                if not conn.closed:
                    self._guard(self._on_message, conn, msg)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._conns.remove(conn)
            for task in conn.tasks:
                task.cancel()

    async def _writer(self, conn: Conn) -> None:
        try:
            while not conn.closed:
                item = conn.pop()
                if item is None:
                    self._commit(conn)
                    conn.wake.clear()
                    try:  # while frames may sit in the buffer, look again soon
                        await asyncio.wait_for(conn.wake.wait(), 0.02 if conn.pending else None)
                    except TimeoutError:
                        pass
                    continue
                if isinstance(item, _Control):
                    await self._control(conn, item)
                    continue
                if conn.skip and item.kind in self.skippable_kinds:
                    conn.skip -= 1
                    self._on_skipped(conn, item)
                    self.faults_done["skip_sequence"] += 1
                    continue
                text = self._render(conn, item)
                if item.truncate:
                    text = text[: len(text) // 2]
                if item.kind == "malformed":  # counted before the client can see it
                    self.faults_done["malformed"] += 1
                conn.inflight = item
                await conn.ws.send(text)
                conn.inflight = None
                conn.pending.append((conn.written, item))
                conn.frames_sent += 1
                self._commit(conn)
                for i, fault in enumerate(self.plan):
                    if (fault.after_frames == conn.frames_sent and i not in self._fired
                            and fault.connection in (None, conn.index)):
                        self._fired.add(i)
                        self._fire(fault, [conn], front=True)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors.append(traceback.format_exc())
        finally:
            conn.closed = True

    async def _control(self, conn: Conn, item: _Control) -> None:
        if item.kind == "drop":
            self._drop(conn)
        elif item.kind == "skip_sequence":
            conn.skip += 1
        elif item.kind == "stall":
            self._commit(conn)
            self.faults_done["stall"] += 1
            conn.stalled = True
            try:
                await asyncio.sleep(item.seconds)
            finally:
                conn.stalled = False

    def _commit(self, conn: Conn) -> None:
        """Count the trades of frames whose last byte has left asyncio's buffer."""
        if not conn.pending or conn.closed:
            return
        flushed = conn.written - conn.ws.transport.get_write_buffer_size()
        while conn.pending and conn.pending[0][0] <= flushed:
            _, frame = conn.pending.popleft()
            for t in frame.trades:
                self._sent[t.product][t.trade_id] = t


def _count_writes(conn: Conn) -> None:
    """Count the bytes websockets hands to the transport (compressed, framed),
    so `_commit` can tell which frames are out: written - still buffered."""
    transport = conn.ws.transport
    write = transport.write

    def counting_write(data: bytes | bytearray | memoryview) -> None:
        conn.written += len(data)
        write(data)

    transport.write = counting_write  # type: ignore[method-assign]

"""The long-running executor behind `varon execute`: inputs, state, audit, kill switch, outputs.

Per batch of signals, in this order, so a crash at any point neither loses a
fill nor sends an order twice:

1. the executor runs the batch on its state (risk engine + paper venue);
2. every new order intent is appended to the audit log and fsynced, with the
   client order id derived from it, before anything is "sent"; an intent
   already in the log (a batch replayed after a crash) is not recorded again;
3. the state, which for the paper venue is also the venue's book, is saved
   atomically: this is the send;
4. the rest of the audit trail (signals, risk notes, fills, breakers) and the
   output streams are written.

A restart loads the saved state, so signals it had already decided are refused
as duplicates and nothing is ordered twice; outputs of a batch cut short by a
crash are logged as a reconciliation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from varon_cli.config import VaronConfig
from varon_cli.errors import InputError, UsageError
from varon_cli.execution.audit import AuditLog, find_intents
from varon_cli.execution.engine import ExecOutput, Executor
from varon_cli.execution.killswitch import KillRequested, KillSwitch, consume_reset
from varon_cli.execution.statedir import StateDir
from varon_cli.intervals import parse_interval
from varon_cli.runtime import Watermark
from varon_cli.schemas import EQUITY, FILLS, INTERVAL_KEY, ORDERS, SIGNALS
from varon_cli.sinks import Sink
from varon_cli.status.metrics import alert, track_executor  # [status hook]
from varon_cli.streamio import open_input, open_output

log = logging.getLogger("varon.execute")
_END = object()
CRASH_HOOK = "VARON_TEST_CRASH_AFTER_INTENT"  # tests only: die after intents are durable, before the send


@dataclass(frozen=True)
class ExecuteRequest:
    inputs: list[str]
    fills_out: str
    orders_out: str | None
    equity_out: str | None
    name: str
    clock: str  # "wall" or "event"
    funding: str | None = None
    venue: str = "paper"  # paper | hyperliquid
    url: str | None = None  # hyperliquid: API base URL (default from config; --testnet picks testnet_url)
    testnet: bool = False
    dry_run: bool = False


class _Inputs:
    """Several signal streams read by threads into one queue, so the main thread stays responsive to signals."""

    def __init__(self, paths: list[str]) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=64)
        self.interval: int | None = None
        self._streams = [open_input(p, expect=(SIGNALS,)) for p in paths]
        self._open = 0
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> _Inputs:
        for stream in self._streams:
            stream.__enter__()
            raw = (stream.metadata or {}).get(INTERVAL_KEY)
            if raw is None:
                raise InputError(f"{stream.label}: signals without varon.interval metadata (use `varon signal`)")
            interval = parse_interval(raw.decode())
            if self.interval is not None and interval != self.interval:
                raise InputError(f"{stream.label}: bar interval differs from the other inputs'")
            self.interval = interval
        if len(self._streams) > 1 and all(stream.is_file for stream in self._streams):
            # research: several strategies' files merged in bar order, as they would have arrived live
            thread = threading.Thread(target=self._read_files_merged, daemon=True)
            thread.start()
            self._threads.append(thread)
            self._open = 1
            return self
        for stream in self._streams:
            thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
            thread.start()
            self._threads.append(thread)
            self._open += 1
        return self

    def _read_files_merged(self) -> None:
        try:
            tables = [stream.read_all() for stream in self._streams]
            merged = pa.concat_tables(tables, promote_options="permissive")
            order = pa.compute.sort_indices(merged, sort_keys=[("bar_ts", "ascending"), ("ts", "ascending")])
            for batch in merged.take(order).to_batches(max_chunksize=1 << 16):
                self.queue.put(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.queue.put(exc)
        finally:
            self.queue.put(_END)

    def _read(self, stream) -> None:  # noqa: ANN001
        try:
            for item in stream:
                if not isinstance(item, Watermark) and item.num_rows:
                    self.queue.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.queue.put(exc)
        finally:
            self.queue.put(_END)

    def batches(self, on_idle=None) -> Iterator[pa.RecordBatch]:  # noqa: ANN001
        """Batches as they come; `on_idle` runs whenever 0.2 s pass without one (a venue's own events)."""
        while self._open:
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                if on_idle is not None:
                    on_idle()
                continue
            if item is _END:
                self._open -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item

    def __exit__(self, *exc: object) -> None:
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.__exit__(None, None, None)


class LiveExecutor:
    """An `Executor` with its state directory, audit log, output sinks and (for a real venue) its adapter."""

    def __init__(self, cfg: VaronConfig, request: ExecuteRequest, interval_ns: int, state_dir: StateDir) -> None:
        self.request = request
        self.state_dir = state_dir
        self.venue = None
        self.sinks: list[Sink | None] = []
        if request.venue == "hyperliquid":
            from varon_cli.execution.hyperliquid.setup import make_venue

            self.venue = make_venue(cfg, request)
            self.executor = self.venue.build_executor(cfg.risk, interval_ns)
        else:
            self.executor = Executor(cfg.risk, cfg.paper, interval_ns)
        self.store = _store(cfg, request.name, state_dir)
        saved = state_dir.load_state(request.name)
        if self.store is not None:
            saved = self._rebuild(saved)
        if saved is not None:
            if saved.get("interval_ns") != interval_ns:
                raise UsageError(f"state '{request.name}' was kept for {saved.get('interval_ns')} ns bars, the input "
                                 f"has {interval_ns} ns bars; use another --name")
            if saved.get("venue", "paper") != request.venue:
                raise UsageError(f"state '{request.name}' belongs to the {saved.get('venue', 'paper')} venue; use "
                                 f"another --name for {request.venue}")
            self.executor.load_state_dict(saved["executor"])
            if self.venue is not None:
                self.venue.load_state_dict(saved.get("venue_state", {}))
            log.info("resumed '%s': equity %.2f, %d open position(s)", request.name, self.executor.equity,
                     len(self.executor.positions()))
        if request.funding and self.venue is None:
            from varon_cli.schemas import FUNDING

            with open_input(request.funding, expect=(FUNDING,)) as src:
                self.executor.set_funding(src.read_all())
        self.audit = AuditLog(state_dir.audit_path(request.name))
        if saved is not None and saved.get("audit_seq", 0) > self.audit.head[0]:
            from varon_cli.execution.audit import AuditError

            raise AuditError(f"{self.audit.path}: ends at record {self.audit.head[0]} but the state was saved after "
                             f"record {saved['audit_seq']}: the audit log was cut; refusing to trade on it")
        intents = find_intents(self.audit.path)
        self.intents = set(intents)
        self.interval_ns = interval_ns
        if self.store is not None:
            self.store.start_tail()
        if self.venue is not None:
            # intents written after the last save may have reached the venue before a crash: asked for by cloid
            saved_seq = saved.get("audit_seq", 0) if saved else 0
            self._unresolved = [r for r in intents.values() if int(r.get("seq", 0)) > saved_seq]
            self.venue.prior_intents = set(intents)
            self._fresh = saved is None

    def _rebuild(self, saved: dict | None) -> dict | None:
        """The database's state when the state directory has none or an older one (a new machine, a lost disk)."""
        db_state, db_seq = self.store.load()
        if db_state is None or (saved is not None and db_seq <= saved.get("audit_seq", 0)):
            return saved
        self.store.restore_audit()
        self.state_dir.save_state(self.request.name, db_state)
        log.warning("executor '%s' rebuilt from the database (state after audit record %d)", self.request.name,
                    db_seq)
        return db_state

    def record(self, orders: list[pa.Table] = (), fills: list[pa.Table] = (), equity: list[pa.Table] = ()) -> None:
        """Commit the executor's record to the database (state, positions, these rows, new audit records)."""
        if self.store is None:
            return
        state = self._state()
        self.store.save(state, state["audit_seq"], self.request.venue, self.executor.positions(), list(orders),
                        list(fills), list(equity))

    def start_venue(self) -> None:
        """Reconcile with the venue before the first signal (a real venue only)."""
        if self.venue is None:
            return
        out = self.venue.start(self._fresh, self._unresolved)
        self.save()
        self._emit_venue(out)

    def poll(self) -> None:
        """The venue's own events between signals: fills, stops firing, funding, reconnects."""
        if self.venue is None:
            return
        out = self.venue.poll()
        if out.fills or out.orders or out.audit:
            self.save()
            self._emit_venue(out)

    def finish(self) -> None:
        if self.venue is None:
            return
        out = self.venue.close()
        self.save()
        self._emit_venue(out)

    def _emit_venue(self, out, orders: list[pa.Table] = (), equity: list[pa.Table] = ()) -> None:  # noqa: ANN001
        """A venue step's audit records and stream rows (out: VenueOutput), then the database record."""
        for kind, fields in out.audit:
            self.audit.append(kind, **_fields(fields) if "ts" in fields else fields)
        self.audit.sync()
        from varon_cli.execution.hyperliquid.streams import rows_table

        tables = {kind.name: rows_table(kind, rows) if rows else None
                  for rows, kind in ((out.fills, FILLS), (out.orders, ORDERS))}
        for sink, kind in zip(self.sinks, (FILLS, ORDERS)):
            if sink is not None and tables[kind.name] is not None:
                for part in tables[kind.name].to_batches():
                    sink.write(part)
        self.record([*orders, *([tables["orders"]] if tables["orders"] is not None else [])],
                    [tables["fills"]] if tables["fills"] is not None else [], list(equity))

    def _state(self) -> dict:
        state = {"interval_ns": self.interval_ns, "audit_seq": self.audit.head[0], "venue": self.request.venue,
                 "executor": self.executor.state_dict()}
        if self.venue is not None:
            state["venue_state"] = self.venue.state_dict()
        return state

    def save(self) -> None:
        self.state_dir.save_state(self.request.name, self._state())

    def handle(self, batch: pa.RecordBatch, sinks: list[Sink | None]) -> None:
        if self.venue is not None and batch.num_rows > 1:
            # a real venue acts on each decision before the next is taken: the next row must see its fill
            for i in range(batch.num_rows):
                self.handle(batch.slice(i, 1), sinks)
            return
        now = None if self.request.clock == "event" else time.time_ns()
        before = {k: v.copy() for k, v in self.executor.state.items()}
        try:
            decided = self.executor.decide(batch, now)
            new_orders = decided.orders()
        except BaseException:
            self.executor.state = before  # nothing was sent: the batch leaves no trace
            raise
        new_intents = [e for e in new_orders if e["cloid"] not in self.intents]
        for event in new_intents:
            self.audit.append("order_intent", durable=False, **_fields(event))
            self.intents.add(event["cloid"])
        if new_intents:
            self.audit.sync()
            if self.store is not None:
                self.store.record_intents(new_intents)  # committed before the order is sent
            if os.environ.get(CRASH_HOOK):
                os._exit(137)
        if self.venue is None:
            out = decided.output()
            self.save()  # the send: the paper venue's book is this state
            self._audit_batch(batch, out)
            self._write(out, sinks)
            self.record([out.orders], [out.fills], [out.equity])
            return
        sent = self.venue.submit(new_orders)  # the send, and the fills the venue answered with
        out = decided.output()
        self.save()
        self._audit_batch(batch, out)
        # the kernel's "new" orders are replaced by what the venue did with them
        keep = pa.compute.not_equal(out.orders.column("status"), "new")
        self._write(ExecOutput(out.orders.filter(keep), out.fills, out.equity), sinks)
        self._emit_venue(sent, [out.orders.filter(keep)], [out.equity])

    def _audit_batch(self, batch: pa.RecordBatch, out: ExecOutput) -> None:
        for row in batch.select(["ts", "bar_ts", "symbol", "strategy", "target", "leverage", "stop_loss",
                                 "take_profit", "price"]).cast(pa.schema(
            [("ts", pa.int64()), ("bar_ts", pa.int64()), ("symbol", pa.string()), ("strategy", pa.string()),
             ("target", pa.float64()), ("leverage", pa.float64()), ("stop_loss", pa.float64()),
             ("take_profit", pa.float64()), ("price", pa.float64())])).to_pylist():
            self.audit.append("signal", **_fields(row))
        for event in out.events:
            kind = {"order": "order", "fill": "fill", "reject": "risk", "risk": "risk", "cancel": "order",
                    "breaker": "breaker"}[event["event"]]
            self.audit.append(kind, **_fields(event))
        self.audit.sync()

    @staticmethod
    def _write(out: ExecOutput, sinks: list[Sink | None]) -> None:
        for sink, table in zip(sinks, (out.fills, out.orders, out.equity)):
            if sink is not None and table.num_rows:
                for part in table.to_batches():
                    sink.write(part)

    def kill(self, reason: str, sinks: list[Sink | None]) -> None:
        if self.venue is not None:
            self.audit.append("kill", reason=reason, venue=self.request.venue, durable=True)
            sent = self.venue.kill(reason)
            self.save()
            self._emit_venue(sent)
            return
        self.executor.engage_kill()
        out = self.executor.flatten(time.time_ns())
        self.save()
        self.audit.append("kill", reason=reason, positions_closed=int(out.fills.num_rows), durable=True)
        for event in out.events:
            self.audit.append("fill" if event["event"] == "fill" else "order", **_fields(event))
        self.audit.sync()
        self._write(out, sinks)
        self.record([out.orders], [out.fills])


def _store(cfg: VaronConfig, name: str, state_dir: StateDir):  # noqa: ANN202 - ExecutorStore | None
    """The executor's database record when db.dsn names PostgreSQL (the embedded default keeps the state dir)."""
    if not cfg.db.dsn:
        return None
    from varon_cli.db.dsn import parse_dsn

    dsn = parse_dsn(cfg.db.dsn)
    if not dsn.is_postgres:
        return None
    from varon_cli.db.connect import policy_from
    from varon_cli.execution.dbstore import ExecutorStore

    return ExecutorStore(dsn, name, state_dir.audit_path(name), policy_from(cfg.db))


def _fields(record: dict) -> dict:
    """Audit fields: the log stamps its own `ts`, so the event's time travels as `event_ts`."""
    out = dict(record)
    out["event_ts"] = out.pop("ts")
    return out


def run_execute(request: ExecuteRequest, cfg: VaronConfig) -> Executor:
    """Run until the inputs end, a signal stops it, or the kill switch fires (KillRequested propagates)."""
    state_dir = StateDir(Path(cfg.execute.state_dir))
    with state_dir.lock(request.name):
        switch = KillSwitch(state_dir.path)
        switch.check()
        switch.install()  # before registering: a kill sent as soon as we are visible must find its handler
        with state_dir.register(request.name), _Inputs(request.inputs) as inputs:
            live = LiveExecutor(cfg, request, inputs.interval or 0, state_dir)
            if consume_reset(state_dir.path, request.name):
                live.executor.reset_breakers()
                live.audit.append("reset", durable=True)
                log.warning("breakers reset by `varon execute reset`")
            live.audit.append("start", name=request.name, clock=request.clock, equity=live.executor.equity,
                              positions=live.executor.positions(), durable=True)
            with contextlib.ExitStack() as stack:
                sinks: list[Sink | None] = [stack.enter_context(open_output(request.fills_out, FILLS.schema_with()))]
                for path, kind in ((request.orders_out, ORDERS), (request.equity_out, EQUITY)):
                    sinks.append(stack.enter_context(open_output(path, kind.schema_with())) if path else None)
                live.sinks = sinks
                try:
                    live.start_venue()
                    for batch in track_executor(live, inputs.batches(on_idle=live.poll)):  # [status hook]
                        if consume_reset(state_dir.path, request.name):
                            live.executor.reset_breakers()
                            live.audit.append("reset", durable=True)
                            log.warning("breakers reset by `varon execute reset`")
                        live.handle(batch, sinks)
                        live.poll()
                    live.finish()
                except KillRequested as exc:
                    alert("kill_switch", f"executor {request.name}: kill switch fired ({exc}); flattening and stopping")  # [status hook]
                    log.error("kill switch: %s; cancelling orders and flattening every position", exc)
                    live.kill(str(exc), sinks)
                    raise
                finally:
                    live.audit.append("stop", equity=live.executor.equity, counts=dict(live.executor.counts),
                                      durable=True)
                    if live.store is not None:
                        try:
                            live.record()
                        finally:
                            live.store.close()
    return live.executor


def summary(executor: Executor) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(executor.counts.items()))
    return f"equity {executor.equity:.2f}, fees {executor.fees:.2f}, funding {executor.funding:.2f}; {counts or 'no events'}"




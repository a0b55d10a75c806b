"""The metrics publisher: each long-running command describes itself in a small JSON file, once a second.

Life cycle (driven by `commands.common`): `arm(command)` when a command starts,
`configure(cfg)` once its config is loaded (this starts the publisher for
collect, bars, features, signal and execute when `status.publish` is on), and
`shutdown()` when it ends, which removes the file. A process killed with -9
leaves its file behind; `varon status` reports it as dead.

The file, STATUS_DIR/<pid>.json, is replaced atomically (temporary name, then
rename) by a daemon thread, so a reader sees the old state or the new one.
It holds the command, pid, start and heartbeat times, rows in and out with
their rates, the lag behind the market (now minus the event time of the last
row or watermark handled), the p50/p99 of the time spent on each batch (a
ring of the last 256; the first batch, which pays one-off start-up costs such
as loading compiled kernels, is not sampled), and, where they apply, the
feed's counters (collect) and the account (execute).

The hot path stays cheap: hooks count rows and keep a reference to the last
batch (attribute updates, no I/O, no Arrow calls); everything derived from
them (event times, percentiles, rates, the executor's positions) is computed
by the publisher thread.

Hooks, each a no-op when nothing publishes:
    track_stage(source, sink)        runtime.pump (bars, features, signal) and collect replay of a trades file
    track_feed(normaliser, write)    the live collector's writer, and collect replay of a capture
    feed_failed(exc)                 the live collector gave up
    track_executor(live, batches)    the executor's batch loop (breaker trips are checked after each batch)
    alert(kind, message)             the kill switch fired (a lost feed is noticed by the publisher thread)
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("varon.status")

VERSION = 1
PUBLISHED = frozenset({"collect", "bars", "features", "signal", "execute"})
INTERVAL_S = 1.0
RING = 256  # per-batch time samples kept (a power of two)
_MASK = RING - 1
PROMETHEUS_RETRY_S = 5.0


class Probe:
    """One stage's counters: written by the thread doing the work, read by the publisher."""

    __slots__ = ("rows_in", "rows_out", "batches", "last", "watermark", "ring", "samples", "done_ns", "sink")

    def __init__(self) -> None:
        self.rows_in = 0
        self.rows_out = 0
        self.batches = 0
        self.last: Any = None  # the last batch handled: its event time is read by the publisher
        self.watermark: Any = None  # the last watermark handled
        self.ring = [0] * RING  # ns spent per batch
        self.samples = 0
        self.done_ns = 0  # perf_counter_ns when the last batch was done
        self.sink: Any = None  # a Sink whose rows_written is the stage's output


def _tracked(probe: Probe, source: Iterable, timed: bool) -> Iterator:
    """Yield `source` unchanged; the time until the next item is asked for is the work done on this one."""
    clock = time.perf_counter_ns
    ring = probe.ring
    for item in source:
        rows = getattr(item, "num_rows", None)
        if rows is None:
            probe.watermark = item
            yield item
            continue
        probe.rows_in += rows
        probe.batches += 1
        probe.last = item
        start = clock()
        yield item
        end = clock()
        if timed and probe.batches > 1:  # the first batch pays one-off costs (compiled kernels load): not sampled
            ring[probe.samples & _MASK] = end - start
            probe.samples += 1
        probe.done_ns = end


# -- hooks ---------------------------------------------------------------------------------------------------
def track_stage(source: Iterable, sink: Any = None, latency: bool = True) -> Iterable:
    """A stage's input, counted and timed batch by batch; the sink's rows_written is its output."""
    pub = _publisher
    if pub is None:
        return source
    pub.probe.sink = sink
    return _tracked(pub.probe, source, latency)


class _TrackedSink:
    """A sink whose writes are counted and timed (what it passes on is untouched)."""

    def __init__(self, sink: Any, probe: Probe) -> None:
        self._sink = sink
        self._probe = probe

    def write(self, batch: Any) -> None:
        probe = self._probe
        start = time.perf_counter_ns()
        self._sink.write(batch)
        end = time.perf_counter_ns()
        probe.rows_in += batch.num_rows
        probe.rows_out += batch.num_rows
        probe.batches += 1
        probe.last = batch
        if probe.batches > 1:
            probe.ring[probe.samples & _MASK] = end - start
            probe.samples += 1
        probe.done_ns = end

    def watermark(self, watermark: Any) -> None:
        self._sink.watermark(watermark)
        self._probe.watermark = watermark

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)


def track_sink(sink: Any) -> Any:
    """A source command's output (collect replay of a trades file): rows, lag and write times."""
    pub = _publisher
    if pub is None:
        return sink
    return _TrackedSink(sink, pub.probe)


def track_feed(normaliser: Any, write: Callable[[Any], None], watchdog_s: float | None = None) -> Callable[[Any], None]:
    """The collector's writer, counted and timed; the normaliser's counters are published with it.

    `watchdog_s` (live only): nothing received for twice that long means the
    watchdog dropped the connection and reconnecting has not brought it back:
    the feed is lost (an alert, and `varon status` unhealthy) until frames flow again."""
    pub = _publisher
    if pub is None:
        return write
    pub.feed = _FeedWatch(normaliser, watchdog_s)
    probe = pub.probe
    ring = probe.ring
    clock = time.perf_counter_ns

    def tracked(emitted: Any) -> None:
        start = clock()
        write(emitted)
        end = clock()
        if emitted.watermark is not None:
            probe.watermark = emitted.watermark
            return
        rows = 0
        for batch in (emitted.trades, emitted.book, emitted.funding):
            if batch is not None:
                rows += batch.num_rows
        probe.rows_out += rows
        probe.batches += 1
        probe.last = emitted.trades if emitted.trades is not None else emitted.book
        if probe.batches > 1:
            ring[probe.samples & _MASK] = end - start
            probe.samples += 1
        probe.done_ns = end

    return tracked


def feed_failed(exc: BaseException) -> None:
    """The collector stopped for good (out of retries, or a failure in its network thread)."""
    pub = _publisher
    if pub is not None and pub.feed is not None:
        pub.feed.failed = str(exc) or type(exc).__name__
        pub.feed.state = "gave up"
    alert("feed_lost", f"{_feed_name(pub)}gave up: {exc}")


def track_executor(live: Any, batches: Iterable) -> Iterable:
    """The executor's signal batches, counted and timed; its account is published once a second."""
    pub = _publisher
    if pub is None:
        return batches
    watch = pub.executor = _ExecutorWatch(live)
    pub.probe.sink = (getattr(live, "sinks", None) or [None])[0]  # rows out = fills
    pub.label = f"execute {live.request.name}"
    return _tracked_executor(_tracked(pub.probe, batches, True), watch)


def _tracked_executor(batches: Iterable, watch: _ExecutorWatch) -> Iterator:
    """After each batch, whether a breaker tripped (two floats read; an alert on a trip)."""
    watch.check()
    for batch in batches:
        yield batch
        watch.check()


def alert(kind: str, message: str) -> None:
    """Log an alert and run the --on-alert command for it, without waiting (see alerts.py)."""
    from varon_cli.status.alerts import fire

    fire(kind, message)
    pub = _publisher
    if pub is not None:
        pub.alerts.append({"kind": kind, "message": message, "ts_ns": time.time_ns()})
        del pub.alerts[:-5]


# -- life cycle (commands.common) ---------------------------------------------------------------------------
_armed: list[str] = []
_publisher: Publisher | None = None


def arm(command: str) -> int:
    """A command starts; returns a token for `shutdown`. Publishing starts in `configure`."""
    _armed.append(command)
    return len(_armed)


def configure(cfg: Any) -> None:
    """The command's config is loaded: set up alerts, and start publishing if the command is long-running."""
    global _publisher
    from varon_cli.status import alerts

    status = cfg.status
    command = _armed[-1] if _armed else ""
    alerts.configure(status.on_alert, command)
    if _publisher is not None or not status.publish or command not in PUBLISHED:
        return
    pub = Publisher(command, cfg)
    try:
        pub.start()
    except OSError as exc:
        log.warning("status: cannot publish metrics in %s (%s); `varon status` will not see this process",
                    status.dir, exc.strerror or exc)
        return
    pub.token = len(_armed)
    _publisher = pub


def shutdown(token: int | None = None) -> None:
    """The command ends (any way but kill -9): stop publishing, remove the file, let pending alerts start."""
    global _publisher
    from varon_cli.status import alerts

    depth = 1 if token is None else token
    pub = _publisher
    if pub is not None and pub.token >= depth:
        _publisher = None
        pub.stop()
    del _armed[depth - 1:]
    if not _armed:
        alerts.flush()


def current() -> Publisher | None:
    return _publisher


# -- the publisher -------------------------------------------------------------------------------------------
class _FeedWatch:
    """A collector's counters and its connection as seen from the outside: frames arriving or not."""

    def __init__(self, normaliser: Any, watchdog_s: float | None) -> None:
        self.normaliser = normaliser
        self.watchdog_s = watchdog_s
        self.frames = -1
        self.last_frame = time.monotonic()
        self.state = "up" if watchdog_s else "replay"
        self.failed: str | None = None

    def observe(self, now: float) -> tuple[str, str] | None:
        """Update the connection state; an alert (kind, message) when the feed is lost or comes back."""
        stats = self.normaliser.stats
        if stats.frames != self.frames:
            self.frames = stats.frames
            self.last_frame = now
        if self.failed or not self.watchdog_s:
            return None
        silent = now - self.last_frame
        was = self.state
        if silent > 2 * self.watchdog_s:
            self.state = "lost"
        elif silent > self.watchdog_s:
            self.state = "down" if was != "lost" else "lost"
        else:
            self.state = "up"
        name = f"{self.normaliser.venue} {self.normaliser.feed} {','.join(self.normaliser.symbols)}"
        if self.state == "lost" and was != "lost":
            return "feed_lost", (f"collect {name}: nothing received for {silent:.0f} s (watchdog {self.watchdog_s:g} s): "
                                 f"the connection stays down; still reconnecting")
        if self.state == "up" and was == "lost":
            return "feed_restored", f"collect {name}: frames flow again"
        return None

    def snapshot(self, now: float) -> dict[str, Any]:
        stats = self.normaliser.stats
        return {
            "venue": self.normaliser.venue, "feed": self.normaliser.feed, "symbols": list(self.normaliser.symbols),
            "state": self.state, "failed": self.failed, "watchdog_s": self.watchdog_s,
            "silent_s": round(now - self.last_frame, 3),
            "frames": stats.frames, "trades": stats.trades, "book_rows": stats.book_rows,
            "funding_rows": stats.funding_rows, "connections": stats.connections,
            "reconnects": max(stats.connections - 1, 0), "stalls": stats.stalls,
            "gaps": stats.sequence_gaps + stats.heartbeat_gaps + sum(stats.trade_gaps.values()),
            "sequence_gaps": stats.sequence_gaps, "heartbeat_gaps": stats.heartbeat_gaps,
            "trade_gaps": sum(stats.trade_gaps.values()), "missed_trades": sum(stats.missed_trades.values()),
            "duplicates": stats.duplicates, "malformed": stats.malformed, "buffer_full": stats.buffer_full,
        }


class _ExecutorWatch:
    """A running executor's account, read from its arrays by the publisher thread (never written)."""

    NOTED = ("daily", "drawdown")

    def __init__(self, live: Any) -> None:
        self.live = live
        self.breakers: tuple[bool, bool] | None = None
        from varon_cli.execution import kernel as K

        self._flags = (K.DAILY_TRIPPED, K.DD_TRIPPED)

    def snapshot(self) -> dict[str, Any]:
        import numpy as np

        from varon_cli.execution import kernel as K
        from varon_cli.execution.killswitch import is_engaged

        live = self.live
        ex = live.executor
        st = ex.state
        acct, slot_f, sym_f, strat_f = (st["acct_f"].copy(), st["slot_f"].copy(), st["sym_f"].copy(),
                                        st["strat_f"].copy())
        strategies, symbols = list(ex.strategies), list(ex.symbols)
        n = len(symbols)
        equity = float(acct[K.EQUITY])
        positions = []
        margin = dict.fromkeys(strategies, 0.0)
        upnl = dict.fromkeys(strategies, 0.0)
        gross = 0.0
        for j in np.flatnonzero(slot_f[:, K.POS] != 0.0).tolist():
            k, s = divmod(j, n)
            if k >= len(strategies):
                continue  # a strategy being added this very moment
            row = slot_f[j]
            size, entry = float(row[K.POS]), float(row[K.ENTRY])
            mark = float(sym_f[s, K.LAST_CLOSE]) or entry
            lev = max(float(row[K.LEV]), 1.0)
            notional = size * mark
            gross += abs(notional)
            margin[strategies[k]] += abs(notional) / lev
            upnl[strategies[k]] += size * (mark - entry)
            positions.append({"strategy": strategies[k], "symbol": symbols[s], "size": size, "entry": entry,
                              "mark": mark, "notional": notional, "unrealised": size * (mark - entry),
                              "leverage": lev, "stop_loss": float(row[K.STOP]), "take_profit": float(row[K.TP])})
        risk = ex.risk
        per_strategy = {}
        for k, name in enumerate(strategies):
            if k < len(strat_f):
                per_strategy[name] = {"pnl": float(strat_f[k, K.PNL]) + upnl[name], "margin": margin[name],
                                      "exposure": margin[name] / equity if equity > 0 else None,
                                      "limit": float(strat_f[k, K.EXPOSURE])}
        peak, day_start = float(acct[K.PEAK]), float(acct[K.DAY_START])
        breakers = {"daily": bool(acct[K.DAILY_TRIPPED]), "drawdown": bool(acct[K.DD_TRIPPED]),
                    "killed": bool(acct[K.KILLED])}
        sinks = getattr(live, "sinks", None) or [None]
        return {
            "name": live.request.name, "venue": live.request.venue, "dry_run": bool(live.request.dry_run),
            "state_dir": str(live.state_dir.path),
            "equity": equity, "pnl": sum(v["pnl"] for v in per_strategy.values()),
            "day_pnl": equity - day_start, "drawdown": 1.0 - equity / peak if peak > 0 else 0.0,
            "fees": float(acct[K.FEES]), "funding": float(acct[K.FUNDING]),
            "positions": positions, "strategies": per_strategy,
            "exposure": {"margin": sum(margin.values()), "fraction": sum(margin.values()) / equity if equity > 0 else None,
                         "limit": risk.account_exposure},
            "leverage": {"gross": gross / equity if equity > 0 else None, "limit": risk.max_leverage},
            "limits": {"daily_loss_limit": risk.daily_loss_limit, "max_drawdown": risk.max_drawdown},
            "breakers": breakers, "kill_switch": is_engaged(live.state_dir.path),
            "fills": getattr(sinks[0], "rows_written", None),
            "counts": dict(ex.counts),
        }

    def check(self) -> None:
        """Alert on each breaker that tripped since the last look; the first look only sets the baseline."""
        acct = self.live.executor.state["acct_f"]
        now = (bool(acct[self._flags[0]]), bool(acct[self._flags[1]]))
        before, self.breakers = self.breakers, now
        if before is None:
            if any(now):
                log.warning("status: executor %s starts with its %s breaker engaged", self.live.request.name,
                            " and ".join(k for k, on in zip(self.NOTED, now) if on))
            return
        if now == before or not any(on and not was for on, was in zip(now, before)):
            return
        from varon_cli.execution import kernel as K

        equity, peak, day_start = (float(acct[K.EQUITY]), float(acct[K.PEAK]), float(acct[K.DAY_START]))
        risk = self.live.executor.risk
        for key, on, was in zip(self.NOTED, now, before):
            if on and not was:
                if key == "daily":
                    what = (f"daily loss breaker tripped (day P&L now {equity - day_start:+.2f}, limit "
                            f"{risk.daily_loss_limit:.1%} of the day's start); reduce-only until the next UTC day "
                            f"or `varon execute reset`")
                else:
                    what = (f"drawdown breaker tripped (drawdown {1 - equity / peak if peak > 0 else 0:.1%}, limit "
                            f"{risk.max_drawdown:.1%}); reduce-only until `varon execute reset`")
                alert("breaker", f"executor {self.live.request.name}: {what}; equity {equity:.2f}")


class Publisher:
    """Writes this process's metrics file once a second from a daemon thread."""

    def __init__(self, command: str, cfg: Any) -> None:
        self.command = command
        self.label = _label(command)
        self.cfg = cfg
        self.settings = cfg.status
        self.dir = directory = Path(cfg.status.dir)
        self.pid = os.getpid()
        self.path = directory / f"{self.pid}.json"
        self._tmp = directory / f".{self.pid}.json.tmp"
        self.started_ns = time.time_ns()
        self.probe = Probe()
        self.feed: _FeedWatch | None = None
        self.executor: _ExecutorWatch | None = None
        self.alerts: list[dict[str, Any]] = []
        self.token = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[float, int, int] | None = None
        self._endpoint = None
        self._next_bind = 0.0
        self._created: list[Path] = []
        from varon_cli.execution.statedir import _proc_start

        self._proc_start = _proc_start(self.pid)

    def start(self) -> None:
        missing = self.dir
        while not missing.exists() and missing != missing.parent:
            self._created.append(missing)  # removed again at exit when empty: a run leaves nothing behind
            missing = missing.parent
        self.dir.mkdir(parents=True, exist_ok=True)
        self.publish()
        self._thread = threading.Thread(target=self._loop, name="varon-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._endpoint is not None:
            self._endpoint.close()
        for path in (self.path, self._tmp):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.debug("status: cannot remove %s: %s", path, exc)
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break  # another process publishes there (or something else lives there): keep it

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            try:
                self.publish()
            except Exception:  # noqa: BLE001 - the publisher must never take the command down
                log.warning("status: publishing metrics failed", exc_info=True)

    def publish(self) -> None:
        if self.feed is not None:
            change = self.feed.observe(time.monotonic())
            if change is not None:
                alert(*change)
        snap = self.snapshot()
        data = json.dumps(_finite(snap), separators=(",", ":")).encode()
        try:
            handle = open(self._tmp, "wb")
        except FileNotFoundError:  # the folder was removed (by a process that left as we arrived)
            self.dir.mkdir(parents=True, exist_ok=True)
            handle = open(self._tmp, "wb")
        with handle:
            handle.write(data)
        os.replace(self._tmp, self.path)
        self._serve_prometheus()

    def snapshot(self) -> dict[str, Any]:
        """This process's numbers now (runs in the publisher thread, or once at start)."""
        probe = self.probe
        now_ns, mono = time.time_ns(), time.monotonic()
        sink = probe.sink
        rows_in = probe.rows_in
        rows_out = probe.rows_out or int(getattr(sink, "rows_written", 0) or 0)
        if self.feed is not None:
            rows_in = self.feed.normaliser.stats.frames
        rate_in = rate_out = None
        if self._last is not None:
            dt = mono - self._last[0]
            if dt > 0:
                rate_in, rate_out = (rows_in - self._last[1]) / dt, (rows_out - self._last[2]) / dt
        self._last = (mono, rows_in, rows_out)
        event_ns = max(_event_ns(probe.last), getattr(probe.watermark, "ts_ns", 0) or 0) or None
        samples = min(probe.samples, RING)
        times = sorted(probe.ring[:samples]) if samples else []
        idle = (time.perf_counter_ns() - probe.done_ns) / 1e9 if probe.done_ns else None
        snap: dict[str, Any] = {
            "version": VERSION, "pid": self.pid, "proc_start": self._proc_start, "host": socket.gethostname(),
            "command": self.command, "label": self.label, "argv": list(sys.argv),
            "started_ns": self.started_ns, "heartbeat_ns": now_ns, "interval_s": INTERVAL_S,
            "rows_in": rows_in, "rows_out": rows_out, "batches": probe.batches,
            "rate_in": rate_in, "rate_out": rate_out,
            "event_ns": event_ns, "lag_s": (now_ns - event_ns) / 1e9 if event_ns else None,
            "since_last_batch_s": idle,
            "latency_samples": samples,
            "latency_p50_s": _quantile(times, 0.50), "latency_p99_s": _quantile(times, 0.99),
            "alerts": list(self.alerts),
        }
        if self.feed is not None:
            snap["feed"] = self.feed.snapshot(mono)
        if self.executor is not None:
            try:
                snap["executor"] = self.executor.snapshot()
            except Exception:  # noqa: BLE001 - state mid-change; the next second will do
                log.debug("status: executor snapshot failed", exc_info=True)
        return snap

    def _serve_prometheus(self) -> None:
        port = self.settings.prometheus_port
        if not port or (self._endpoint is not None and self._endpoint.serving) or time.monotonic() < self._next_bind:
            return
        from varon_cli.status.prometheus import Endpoint
        from varon_cli.status.view import reader_for

        self._next_bind = time.monotonic() + PROMETHEUS_RETRY_S
        endpoint = Endpoint(self.settings.prometheus_host, port, reader_for(self.cfg))
        if endpoint.start():
            log.info("status: serving Prometheus metrics of every varon process on http://%s:%d/metrics",
                     self.settings.prometheus_host, port)
            self._endpoint = endpoint


# -- helpers ---------------------------------------------------------------------------------------------------
def _label(command: str) -> str:
    """`collect coinbase`, `collect replay`: the sub-command when argv names one."""
    argv = sys.argv
    if command == "collect":
        for i, word in enumerate(argv[:-1]):
            if word == "collect" and not argv[i + 1].startswith("-"):
                return f"collect {argv[i + 1]}"
    return command


def _feed_name(pub: Publisher | None) -> str:
    if pub is None or pub.feed is None:
        return "collect: "
    n = pub.feed.normaliser
    return f"collect {n.venue} {n.feed} {','.join(n.symbols)}: "


def _event_ns(batch: Any) -> int:
    """The latest event time (`ts`) in a batch, as ns since the epoch; 0 when it has none."""
    if batch is None or batch.num_rows == 0:
        return 0
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        index = batch.schema.get_field_index("ts")
        if index < 0:
            return 0
        column = batch.column(index)
        unit = getattr(column.type, "unit", "ns")
        value = pc.max(column.cast(pa.int64())).as_py()
        return int(value) * {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit] if value is not None else 0
    except Exception:  # noqa: BLE001 - a batch without a usable ts has no lag
        return 0


def _quantile(ordered: list[int], q: float) -> float | None:
    """Nearest-rank quantile of ns samples, in seconds."""
    if not ordered:
        return None
    rank = max(math.ceil(q * len(ordered)) - 1, 0)
    return ordered[rank] / 1e9


def _finite(node: Any) -> Any:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(node, float):
        return node if math.isfinite(node) else None
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_finite(v) for v in node]
    return node

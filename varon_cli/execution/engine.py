"""The executor as a library: signals in, orders, fills and equity out, the same for backtests and live.

`Executor` owns the names (strategies, the venue's symbols), the parameters
from `[risk]` and `[paper]`, and the kernel's state arrays; `process` runs the
compiled kernel (kernel.step) over a batch of signals and turns its events into
the orders, fills and equity streams of the contract. The state round-trips
through a plain dict so a restarted executor continues where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from varon_cli.config import MAX_LEVERAGE, PaperConfig, RiskConfig
from varon_cli.execution import kernel as K
from varon_cli.intervals import parse_duration
from varon_cli.schemas import EQUITY, FILLS, ORDERS, TS

log = logging.getLogger("varon.execute")
CHUNK_ROWS = 1 << 16


def cloid_for(strategy: str, symbol: str, bar_ns: int, what: str = "order") -> str:
    """A client order id derived from the intent (strategy, symbol, decision bar): the same decision, the same id."""
    digest = hashlib.blake2b(f"{strategy}|{symbol}|{bar_ns}|{what}".encode(), digest_size=16).hexdigest()
    return "0x" + digest


@dataclass
class ExecOutput:
    """What one call produced: the three streams, and the events for the audit log."""

    orders: pa.Table
    fills: pa.Table
    equity: pa.Table
    events: list[dict] = field(default_factory=list)
    #: signed position notional at the close, one per equity row (for exposure reports)
    notional: np.ndarray = field(default_factory=lambda: np.zeros(0))


class Executor:
    """Risk engine + paper venue over the kernel's arrays."""

    def __init__(self, risk: RiskConfig, paper: PaperConfig, interval_ns: int, log_events: bool = True,
                 keep_events: bool = True, external: bool = False) -> None:
        self.risk = risk
        self.log_events = log_events  # live: every rejection and breaker is logged; backtests count them
        self.keep_events = keep_events  # per-event dicts for the audit log (a backtest needs none)
        self.paper = paper
        self.interval_ns = interval_ns
        self.symbols = list(paper.symbols)
        self._symbol_index = {s: i for i, s in enumerate(self.symbols)}
        self.strategies: list[str] = []
        self.params = np.zeros(K.N_PARAMS)
        p = self.params
        p[K.P_TAKER] = paper.taker_fee
        p[K.P_SLIP] = paper.slippage_bps / 10_000
        p[K.P_FUNDING] = paper.funding_rate
        p[K.P_ACCOUNT_EXPOSURE] = risk.account_exposure
        p[K.P_DEFAULT_SL] = risk.default_stop_loss
        p[K.P_DEFAULT_TP] = risk.default_take_profit
        p[K.P_DAILY_LOSS] = risk.daily_loss_limit
        p[K.P_FLATTEN] = 1.0 if risk.flatten_on_breaker else 0.0
        p[K.P_MAX_DD] = risk.max_drawdown
        p[K.P_MIN_NOTIONAL] = risk.min_order_notional
        p[K.P_MAX_AGE] = parse_duration(risk.max_signal_age, "max_signal_age")
        p[K.P_MAX_SKEW] = parse_duration(risk.max_clock_skew, "max_clock_skew")
        p[K.P_INTERVAL] = interval_ns
        p[K.P_WINDOW] = risk.max_orders_per_minute
        p[K.P_REBALANCE] = risk.rebalance_band
        # a real venue fills orders and fires stops itself; its fills come back through apply_fill
        p[K.P_EXTERNAL] = 1.0 if external else 0.0
        self.external = external
        self.state = K.new_state(0, len(self.symbols), paper.initial_equity, risk.max_orders_per_minute)
        sym_f = self.state["sym_f"]
        for i, symbol in enumerate(self.symbols):
            venue_max = float(paper.max_leverage.get(symbol, paper.default_max_leverage))
            cap = float(risk.asset_leverage.get(symbol, risk.max_leverage))
            sym_f[i, K.MAX_LEV] = min(cap, risk.max_leverage, venue_max, MAX_LEVERAGE)
            sym_f[i, K.MMR] = 0.5 / venue_max  # maintenance margin: half the initial margin at maximum leverage
        self.counts: Counter[str] = Counter()
        self.set_funding(None)

    def set_funding(self, funding: pa.Table | None) -> None:
        """Hourly rates per symbol from a funding stream (settlement times rounded to the hour); None = paper.funding_rate."""
        n_sym = len(self.symbols)
        if funding is None or funding.num_rows == 0:
            self._funding = (np.zeros(n_sym + 1, np.int64), np.zeros(0, np.int64), np.zeros(0))
            return
        hours = funding.column("ts").cast(pa.int64()).to_numpy()
        hours = (hours + K.HOUR_NS // 2) // K.HOUR_NS * K.HOUR_NS
        sym = np.array([self._symbol_index.get(str(v), -1) for v in funding.column("symbol").to_pylist()], np.int64)
        rate = funding.column("funding_rate").to_numpy(zero_copy_only=False).astype(np.float64)
        keep = (sym >= 0) & np.isfinite(rate)
        order = np.lexsort((hours[keep], sym[keep]))
        sym, hours, rate = sym[keep][order], hours[keep][order], rate[keep][order]
        offsets = np.searchsorted(sym, np.arange(n_sym + 1)).astype(np.int64)
        self._funding = (offsets, np.ascontiguousarray(hours), np.ascontiguousarray(rate))

    # -- names ---------------------------------------------------------------------------------------
    def strategy_index(self, name: str) -> int:
        """The index of a strategy, adding its slots (and its limits) the first time it is seen."""
        try:
            return self.strategies.index(name)
        except ValueError:
            pass
        st = self.state
        n_sym = len(self.symbols)
        slot_f = np.zeros((n_sym, K.SLOT_F))
        slot_f[:, K.STOP] = slot_f[:, K.TP] = slot_f[:, K.PEND_SL] = slot_f[:, K.PEND_TP] = np.nan
        slot_i = np.full((n_sym, K.SLOT_I), -1, np.int64)
        slot_i[:, K.PEND_SEQ] = 0
        slot_i[:, K.KNOWN] = 0
        st["slot_f"] = np.vstack([st["slot_f"], slot_f])
        st["slot_i"] = np.vstack([st["slot_i"], slot_i])
        limits = self.risk.strategies.get(name, {})
        row = np.zeros((1, K.STRAT_F))
        row[0, K.EXPOSURE] = float(limits.get("exposure", self.risk.strategy_exposure))
        row[0, K.STRAT_MAX_LEV] = min(float(limits.get("max_leverage", self.risk.max_leverage)), self.risk.max_leverage)
        st["strat_f"] = np.vstack([st["strat_f"], row])
        self.strategies.append(name)
        return len(self.strategies) - 1

    # -- processing ----------------------------------------------------------------------------------
    def process(self, batch: pa.RecordBatch | pa.Table, now_ns: int | None = None) -> ExecOutput:
        """Run a batch of signals through the risk engine and the paper venue.

        `now_ns` is the executor's clock for stale/future checks (live: wall time
        at receipt); None uses each signal's own time (backtests, replays).
        """
        return self.decide(batch, now_ns).output()

    def decide(self, batch: pa.RecordBatch | pa.Table, now_ns: int | None = None) -> Decided:
        """The risk engine's pass over a batch, with its streams built only when asked for: a real venue sends
        the new orders first (`Decided.orders`) and builds the streams and the audit events after the send."""
        n = batch.num_rows
        if n == 0:
            return Decided(self, None)
        if n == 1 and isinstance(batch, pa.RecordBatch) and not any(
                batch.column(c).null_count for c in ("ts", "bar_ts", "strategy", "symbol")):
            args = self._one_row(batch, now_ns)  # live: a signal at a time, without the columnar set-up
        else:
            args = self._columns(batch, now_ns)
        symbols = batch.column("symbol")
        symbols = symbols.combine_chunks() if isinstance(symbols, pa.ChunkedArray) else symbols
        ev_parts_i, ev_parts_f, eq_parts_i, eq_parts_f = [], [], [], []
        st = self.state
        start = 0
        worst = 2 * st["slot_f"].shape[0] + 8
        while start < n:
            rows = min(n - start, CHUNK_ROWS)
            ev_i = np.empty((rows * 2 + worst * 4, K.EV_I), np.int64)
            ev_f = np.empty((rows * 2 + worst * 4, K.EV_F))
            eq_i = np.empty((rows, 3), np.int64)
            eq_f = np.empty((rows, 5))
            nxt, n_ev, n_eq = K.step(st["acct_f"], st["acct_i"], st["slot_f"], st["slot_i"], st["sym_f"],
                                     st["sym_bar"], st["strat_f"], st["ring"], self.params, *args, start,
                                     ev_i, ev_f, eq_i, eq_f, *self._funding)
            if nxt == start:
                raise RuntimeError("executor kernel made no progress")  # a sizing bug, never bad input
            start = nxt
            ev_parts_i.append(ev_i[:n_ev])
            ev_parts_f.append(ev_f[:n_ev])
            eq_parts_i.append(eq_i[:n_eq])
            eq_parts_f.append(eq_f[:n_eq])
        ev_i = np.concatenate(ev_parts_i) if ev_parts_i else np.empty((0, K.EV_I), np.int64)
        ev_f = np.concatenate(ev_parts_f) if ev_parts_f else np.empty((0, K.EV_F))
        eq_i, eq_f = np.concatenate(eq_parts_i), np.concatenate(eq_parts_f)
        return Decided(self, (ev_i, ev_f, eq_i, eq_f, symbols))

    def _columns(self, batch: pa.RecordBatch | pa.Table, now_ns: int | None) -> tuple:
        """The kernel's arguments for a batch, column by column."""
        n = batch.num_rows
        names = batch.column("strategy")
        names = names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names
        encoded = names.dictionary_encode()
        k_map = np.array([self.strategy_index(str(v)) for v in encoded.dictionary.to_pylist()], np.int64)
        k_idx = k_map[encoded.indices.to_numpy(zero_copy_only=False)]
        symbols = batch.column("symbol")
        symbols = symbols.combine_chunks() if isinstance(symbols, pa.ChunkedArray) else symbols
        sym_enc = symbols.dictionary_encode()
        s_map = np.array([self._symbol_index.get(str(v), -1) for v in sym_enc.dictionary.to_pylist()], np.int64)
        s_idx = s_map[sym_enc.indices.to_numpy(zero_copy_only=False)]

        def f64(name: str) -> np.ndarray:
            return np.ascontiguousarray(batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

        def i64(name: str) -> np.ndarray:
            return np.ascontiguousarray(batch.column(name).cast(pa.int64()).to_numpy(zero_copy_only=False))

        ts, bar_ts = i64("ts"), i64("bar_ts")
        now = ts if now_ns is None else np.full(n, now_ns, np.int64)
        return (ts, now, bar_ts, k_idx, s_idx, f64("target"), f64("leverage"), f64("stop_loss"), f64("take_profit"),
                f64("bar_open"), f64("bar_high"), f64("bar_low"), f64("price"))

    def _one_row(self, batch: pa.RecordBatch, now_ns: int | None) -> tuple:
        """The kernel's arguments for a one-row batch, read as scalars: the values `_columns` gives, 5x sooner."""
        column = batch.column

        def f64(name: str) -> np.ndarray:
            value = column(name)[0].as_py()
            return np.array([np.nan if value is None else value], np.float64)

        ts, bar_ts = column("ts")[0].value, column("bar_ts")[0].value
        k = self.strategy_index(str(column("strategy")[0].as_py()))
        s = self._symbol_index.get(str(column("symbol")[0].as_py()), -1)
        return (np.array([ts], np.int64), np.array([ts if now_ns is None else now_ns], np.int64),
                np.array([bar_ts], np.int64), np.array([k], np.int64), np.array([s], np.int64), f64("target"),
                f64("leverage"), f64("stop_loss"), f64("take_profit"), f64("bar_open"), f64("bar_high"),
                f64("bar_low"), f64("price"))

    def flatten(self, ts_ns: int, reason: int = K.R_KILL) -> ExecOutput:
        """Cancel every pending order and close every position at the last price (kill switch)."""
        st = self.state
        size = st["slot_f"].shape[0] * 2 + 4
        ev_i, ev_f = np.empty((size, K.EV_I), np.int64), np.empty((size, K.EV_F))
        n = K.flatten(st["acct_f"], st["slot_f"], st["slot_i"], st["sym_f"], st["strat_f"], self.params, ev_i, ev_f,
                      ts_ns, reason)
        return self._outputs(ev_i[:n], ev_f[:n], np.empty((0, 3), np.int64), np.empty((0, 5)))

    def cancel_pending(self, ts_ns: int) -> ExecOutput:
        """End of input: orders that never saw a next price are cancelled, not filled."""
        st = self.state
        rows, values = [], []
        for j in np.flatnonzero(st["slot_f"][:, K.PEND] != 0.0):
            k, s = divmod(int(j), len(self.symbols))
            pending = float(st["slot_f"][j, K.PEND])
            rows.append([K.EV_CANCEL, ts_ns, k, s, K.R_END, int(st["slot_i"][j, K.PEND_BAR]),
                         int(st["slot_i"][j, K.PEND_SEQ])])
            values.append([1.0 if pending > 0 else -1.0, abs(pending), 0.0, 0.0, 0.0])
            st["slot_f"][j, K.PEND] = 0.0
        ev_i = np.array(rows, np.int64).reshape(-1, K.EV_I)
        ev_f = np.array(values, np.float64).reshape(-1, K.EV_F)
        return self._outputs(ev_i, ev_f, np.empty((0, 3), np.int64), np.empty((0, 5)))

    # -- a real venue's side (external mode) -----------------------------------------------------------
    def slot_index(self, strategy: str, symbol: str) -> int:
        return self.strategy_index(strategy) * len(self.symbols) + self._symbol_index[symbol]

    def slot_names(self, j: int) -> tuple[str, str]:
        k, s = divmod(j, len(self.symbols))
        return self.strategies[k], self.symbols[s]

    def slots_of(self, symbol: str) -> list[int]:
        s, n = self._symbol_index[symbol], len(self.symbols)
        return [k * n + s for k in range(len(self.strategies))]

    def slot(self, j: int) -> dict[str, float]:
        row = self.state["slot_f"][j]
        return {"position": float(row[K.POS]), "entry": float(row[K.ENTRY]), "stop_loss": float(row[K.STOP]),
                "take_profit": float(row[K.TP]), "leverage": float(row[K.LEV]), "pending": float(row[K.PEND]),
                "pending_leverage": float(row[K.PEND_LEV])}

    def clear_pending(self, j: int) -> float:
        """Take slot j's pending order out of the kernel: the venue, not the next bar, decides its fill."""
        pending = float(self.state["slot_f"][j, K.PEND])
        self.state["slot_f"][j, K.PEND] = 0.0
        return pending

    def apply_fill(self, j: int, delta: float, price: float, fee: float, fresh_stop: bool = False) -> None:
        """A venue's fill of signed `delta` on slot j. A new or bigger position gets its stop and take profit as
        the paper venue gives them; `fresh_stop` (a fill no decision asked for) takes the default ones."""
        st = self.state
        if fresh_stop:
            st["slot_f"][j, K.PEND_SL] = st["slot_f"][j, K.PEND_TP] = np.nan
            if st["slot_f"][j, K.PEND_LEV] <= 0:
                st["slot_f"][j, K.PEND_LEV] = 1.0
        before = float(st["slot_f"][j, K.POS])
        K._trade(st["acct_f"], st["slot_f"], st["strat_f"], j, j // len(self.symbols), delta, price, fee)
        K.protect(st["slot_f"], j, before, self.params)
        s = j % len(self.symbols)
        if st["sym_f"][s, K.LAST_CLOSE] <= 0:
            st["sym_f"][s, K.LAST_CLOSE] = price
        K._equity(st["acct_f"], st["slot_f"], st["sym_f"], len(self.symbols))

    def adjust_cash(self, amount: float, what: str = "fee") -> None:
        """Money the venue moved that no fill carried: fee corrections (what="fee") or funding (what="funding")."""
        acct = self.state["acct_f"]
        acct[K.CASH] += amount
        acct[K.EQUITY] += amount
        if what == "fee":
            acct[K.FEES] -= amount
        else:
            acct[K.FUNDING] -= amount

    def set_cash_to_equity(self, equity: float) -> None:
        """Start an account from the venue's value (nothing open): cash, peak and day start."""
        acct = self.state["acct_f"]
        acct[K.CASH] = acct[K.EQUITY] = acct[K.PEAK] = acct[K.DAY_START] = equity

    # -- account views -------------------------------------------------------------------------------
    @property
    def equity(self) -> float:
        return float(self.state["acct_f"][K.EQUITY])

    @property
    def breakers(self) -> dict[str, bool]:
        a = self.state["acct_f"]
        return {"daily": bool(a[K.DAILY_TRIPPED]), "drawdown": bool(a[K.DD_TRIPPED]), "killed": bool(a[K.KILLED])}

    def reset_breakers(self) -> None:
        a = self.state["acct_f"]
        a[K.DAILY_TRIPPED] = a[K.DD_TRIPPED] = a[K.KILLED] = 0.0
        a[K.PEAK] = a[K.EQUITY]
        a[K.DAY_START] = a[K.EQUITY]

    def engage_kill(self) -> None:
        self.state["acct_f"][K.KILLED] = 1.0

    def positions(self) -> list[dict]:
        st, out = self.state, []
        for j in np.flatnonzero(st["slot_f"][:, K.POS] != 0.0):
            k, s = divmod(int(j), len(self.symbols))
            row = st["slot_f"][j]
            out.append({"strategy": self.strategies[k], "symbol": self.symbols[s], "size": float(row[K.POS]),
                        "entry": float(row[K.ENTRY]), "stop_loss": float(row[K.STOP]),
                        "take_profit": float(row[K.TP]), "leverage": float(row[K.LEV])})
        return out

    @property
    def fees(self) -> float:
        return float(self.state["acct_f"][K.FEES])

    @property
    def funding(self) -> float:
        return float(self.state["acct_f"][K.FUNDING])

    # -- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"strategies": list(self.strategies), "symbols": list(self.symbols),
                "arrays": {name: {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.ravel().tolist()}
                           for name, a in self.state.items()},
                "counts": dict(self.counts)}

    def load_state_dict(self, data: dict) -> None:
        if data.get("symbols") != self.symbols:
            from varon_cli.errors import ConfigError

            raise ConfigError("saved executor state lists other venue symbols than paper.symbols; "
                              "use a new state directory or restore the config")
        fresh = K.new_state(len(data["strategies"]), len(self.symbols), self.paper.initial_equity,
                            self.risk.max_orders_per_minute)
        state = {name: np.array(a["data"], dtype=a["dtype"]).reshape(a["shape"]) for name, a in data["arrays"].items()}
        for name, array in fresh.items():
            if name not in state or state[name].shape[1:] != array.shape[1:] or \
                    (name in ("acct_f", "acct_i", "ring") and state[name].shape != array.shape):
                from varon_cli.errors import ConfigError

                raise ConfigError(f"saved executor state was written by another version or config ({name} has shape "
                                  f"{state.get(name, np.zeros(0)).shape}); use a new state directory or --name")
        self.strategies = list(data["strategies"])
        self.state = state
        self.counts = Counter(data.get("counts", {}))

    # -- events to streams ---------------------------------------------------------------------------
    def _outputs(self, ev_i: np.ndarray, ev_f: np.ndarray, eq_i: np.ndarray, eq_f: np.ndarray,
                 row_symbols: pa.Array | None = None) -> ExecOutput:
        """Kernel events to the orders and fills streams (column-wise), counters, logs and audit events."""
        repeats = int(self.state["acct_i"][K.REPEATS])
        if repeats:
            self.counts["repeated rejections (counted, not logged)"] += repeats
            self.state["acct_i"][K.REPEATS] = 0
        equity = self._equity_table(eq_i, eq_f)
        if len(ev_i) == 0:
            return ExecOutput(_EMPTY[ORDERS.name], _EMPTY[FILLS.name], equity, [], eq_f[:, 4].copy())
        kind, reason, k_col, s_col = ev_i[:, K.E_KIND], ev_i[:, K.E_REASON], ev_i[:, K.E_K], ev_i[:, K.E_S]
        codes, counts = np.unique(reason, return_counts=True)
        for code, count in zip(codes.tolist(), counts.tolist()):
            self.counts[K.REASONS.get(code, str(code))] += count
        strategies = [self.strategies[k] if k >= 0 else "" for k in k_col.tolist()]
        symbols = [self.symbols[x] if x >= 0 else "" for x in s_col.tolist()]
        unknown = np.flatnonzero(reason == K.R_UNKNOWN_SYMBOL)
        if row_symbols is not None:
            for at in unknown.tolist():  # the kernel passed the row index: name what was refused
                symbols[at] = str(row_symbols[int(ev_i[at, K.E_SEQ])])
                ev_i[at, K.E_SEQ] = 0
        texts = [K.REASONS.get(r, str(r)) for r in reason.tolist()]
        is_order = np.isin(kind, (K.EV_ORDER, K.EV_REJECT, K.EV_CANCEL))
        is_fill = kind == K.EV_FILL
        cloids = [""] * len(ev_i)
        for at in np.flatnonzero(is_order | is_fill).tolist():
            bar = int(ev_i[at, K.E_BAR])
            if bar >= 0:
                cloids[at] = cloid_for(strategies[at], symbols[at], bar)
            elif is_fill[at]:
                cloids[at] = cloid_for(strategies[at], symbols[at], int(ev_i[at, K.E_TS]), texts[at])
        orders = self._stream(ORDERS, is_order, ev_i, ev_f, strategies, symbols, texts, cloids,
                              np.where(kind == K.EV_ORDER, "new", np.where(kind == K.EV_REJECT, "rejected", "cancelled")))
        fills = self._stream(FILLS, is_fill, ev_i, ev_f, strategies, symbols, texts, cloids, "filled")
        events: list[dict] = []
        if self.log_events or self.keep_events:
            for at in range(len(ev_i)):
                event = {"event": _EVENT_KIND[int(kind[at])], "ts": int(ev_i[at, K.E_TS]), "strategy": strategies[at],
                         "symbol": symbols[at], "reason": texts[at], "bar_ts": int(ev_i[at, K.E_BAR]),
                         "side": float(ev_f[at, K.E_SIDE]), "size": float(ev_f[at, K.E_SIZE]),
                         "price": float(ev_f[at, K.E_PRICE]), "fee": float(ev_f[at, K.E_FEE]),
                         "value": float(ev_f[at, K.E_VALUE]), "cloid": cloids[at]}
                if self.log_events and kind[at] == K.EV_REJECT:
                    what = {K.R_BAD_STOP: "stop loss", K.R_BAD_TP: "take profit"}.get(int(reason[at]), "target")
                    log.warning("%s %s: %s (%s %s)", event["strategy"], event["symbol"] or "?", event["reason"], what,
                                event["value"])
                elif self.log_events and kind[at] == K.EV_BREAKER:
                    log.log(logging.INFO if reason[at] == K.R_DAY_RESET else logging.WARNING,
                            "breaker: %s (equity %.2f)", event["reason"], event["value"])
                events.append(event)
        return ExecOutput(orders, fills, equity, events, eq_f[:, 4].copy())

    @staticmethod
    def _stream(kind, mask: np.ndarray, ev_i: np.ndarray, ev_f: np.ndarray, strategies: list[str], symbols: list[str],
                texts: list[str], cloids: list[str], status) -> pa.Table:  # noqa: ANN001
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            return _EMPTY[kind.name]
        pick = rows.tolist()
        side = ev_f[rows, K.E_SIDE]
        seq = ev_i[rows, K.E_SEQ]
        columns = {
            "ts": pa.array(ev_i[rows, K.E_TS], pa.int64()).cast(TS),
            "symbol": pa.array([symbols[i] for i in pick], pa.string()),
            "cloid": pa.array([cloids[i] for i in pick], pa.string()),
            "venue_order_id": pa.array(np.where(seq > 0, seq.astype(str), ""), pa.string()),
            "side": pa.array(np.where(side > 0, "buy", np.where(side < 0, "sell", "")), pa.string()),
            "size": pa.array(ev_f[rows, K.E_SIZE]),
            "price": pa.array(ev_f[rows, K.E_PRICE]),
            "fee": pa.array(ev_f[rows, K.E_FEE]),
            "status": pa.array(np.broadcast_to(np.asarray(status), mask.shape)[rows], pa.string()),
            "reason": pa.array([texts[i] for i in pick], pa.string()),
            "strategy": pa.array([strategies[i] for i in pick], pa.string()),
        }
        schema = kind.schema_with()
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)

    def _equity_table(self, eq_i: np.ndarray, eq_f: np.ndarray) -> pa.Table:
        schema = EQUITY.schema_with()
        if len(eq_i) == 0:
            return _EMPTY[EQUITY.name]
        names = pa.array(self.strategies, pa.string()).take(pa.array(eq_i[:, 1]))
        return pa.Table.from_arrays([
            pa.array(eq_i[:, 0], pa.int64()).cast(TS), names, pa.array(eq_f[:, 0]), pa.array(eq_f[:, 1]),
            pa.array(eq_f[:, 2]), pa.array(eq_f[:, 3])], schema=schema)


class Decided:
    """One `Executor.decide` pass: the kernel's raw events, turned into streams once, on demand."""

    def __init__(self, executor: Executor, raw: tuple | None) -> None:
        self._executor = executor
        self._raw = raw
        self._output: ExecOutput | None = None

    def orders(self) -> list[dict]:
        """The new orders only, as the audit events `output()` will hold for them (cheap: no tables)."""
        if self._raw is None:
            return []
        ev_i, ev_f = self._raw[0], self._raw[1]
        ex = self._executor
        out = []
        for at in np.flatnonzero(ev_i[:, K.E_KIND] == K.EV_ORDER).tolist():
            k, s, bar = int(ev_i[at, K.E_K]), int(ev_i[at, K.E_S]), int(ev_i[at, K.E_BAR])
            strategy, symbol = ex.strategies[k], ex.symbols[s]
            out.append({"event": "order", "ts": int(ev_i[at, K.E_TS]), "strategy": strategy, "symbol": symbol,
                        "reason": K.REASONS.get(int(ev_i[at, K.E_REASON]), ""), "bar_ts": bar,
                        "side": float(ev_f[at, K.E_SIDE]), "size": float(ev_f[at, K.E_SIZE]),
                        "price": float(ev_f[at, K.E_PRICE]), "fee": float(ev_f[at, K.E_FEE]),
                        "value": float(ev_f[at, K.E_VALUE]), "cloid": cloid_for(strategy, symbol, bar)})
        return out

    def output(self) -> ExecOutput:
        if self._output is None:
            if self._raw is None:
                self._output = ExecOutput(_EMPTY[ORDERS.name], _EMPTY[FILLS.name], _EMPTY[EQUITY.name])
            else:
                ev_i, ev_f, eq_i, eq_f, symbols = self._raw
                self._output = self._executor._outputs(ev_i, ev_f, eq_i, eq_f, row_symbols=symbols)
        return self._output


_EVENT_KIND = {K.EV_ORDER: "order", K.EV_FILL: "fill", K.EV_REJECT: "reject", K.EV_CANCEL: "cancel",
               K.EV_RISK: "risk", K.EV_BREAKER: "breaker"}


_EMPTY = {kind.name: kind.schema_with().empty_table() for kind in (ORDERS, FILLS, EQUITY)}

"""Hyperliquid behind the executor: the risk engine decides, the venue fills, varon keeps both in step.

The same `Executor` (risk engine, in external mode) decides as for the paper
venue. Each accepted order becomes, at once:

1. leverage and margin mode for the asset (never above the asset's maximum
   from `meta` or the configured cap; the risk engine already capped it);
2. an aggressive IOC limit at most `max_slippage_bps` from the mid, on the
   venue's price and lot grid, refused locally under the $10 minimum;
3. right after a fill, reduce-only stop-loss (and take-profit) trigger orders
   for the whole position; a new trigger is placed before the old one is
   cancelled, so a position is never without its stop. If the stop cannot be
   placed the position is closed and the failure alarmed.

The venue is the truth for fills: an order's answer moves the position at
once (so the stop goes in at once) with an estimated fee; its fills, from the
WebSocket or the REST catch-up after a reconnect, carry the real fee and the
venue's order id into the fills stream and the audit log. Fills no order of
varon asked for (a stop or take profit firing, a liquidation, a manual trade)
are applied to the slot that owns the coin. One strategy owns a coin at a
time: Hyperliquid nets one position per coin and account.

On start the saved state is reconciled with the venue (positions, open
orders, fills missed while down, order intents whose fate is unknown); the
kill switch cancels every open order and closes every position on the venue.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from varon_cli.config import HyperliquidConfig, PaperConfig, RiskConfig
from varon_cli.errors import ConfigError, VaronError
from varon_cli.execution import kernel as K
from varon_cli.execution.engine import Executor, cloid_for
from varon_cli.execution.hyperliquid.client import Asset, HyperliquidClient, OrderOutcome, OrderSpec, VenueError
from varon_cli.execution.hyperliquid.rounding import below_minimum, round_price, round_size
from varon_cli.execution.hyperliquid.userstream import UserEvent, UserStream
from varon_cli.feeds.hyperliquid import coin_of
from varon_cli.intervals import parse_duration

log = logging.getLogger("varon.execute.hyperliquid")
CRASH_AFTER_SEND = "VARON_TEST_CRASH_AFTER_SEND"  # tests only: die after an order was answered, before the state save
SEEN_FILLS_KEPT = 5000
TINY = 1e-9


class ReconcileError(VaronError):
    """The venue disagrees with the saved state and hyperliquid.on_mismatch is halt."""

    exit_code = 75  # EX_TEMPFAIL: an operator decides, then it runs again


@dataclass
class VenueOutput:
    """What one step on the venue produced: stream rows and audit records."""

    fills: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    audit: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def extend(self, other: VenueOutput) -> None:
        self.fills += other.fills
        self.orders += other.orders
        self.audit += other.audit


class HyperliquidVenue:
    """The adapter between an external-mode `Executor` and a `HyperliquidClient`."""

    def __init__(self, cfg: HyperliquidConfig, client: HyperliquidClient, taker_fee: float = 0.00045,
                 stream: bool = True) -> None:
        self.cfg = cfg
        self.client = client
        self.taker_fee = taker_fee
        self.slippage = cfg.max_slippage_bps / 10_000
        self.sync_every_ns = parse_duration(cfg.sync_interval, "sync_interval")
        self.limit_timeout_ns = parse_duration(cfg.limit_timeout, "limit_timeout")
        self.entry_tif = {"ioc": "Ioc", "gtc": "Gtc", "alo": "Alo"}[cfg.entry_order]
        self.assets: dict[str, Asset] = {}  # by varon symbol
        self.executor: Executor | None = None
        self.events: queue.Queue = queue.Queue()
        self.stream: UserStream | None = None
        self._want_stream = stream
        self.mids: dict[str, float] = {}
        self.mids_ns = 0
        # persisted
        self.orders: dict[int, dict[str, Any]] = {}  # venue oid -> {j, purpose, cloid}
        self.protection: dict[int, dict[str, dict[str, Any]]] = {}  # slot -> {"sl"|"tp": {oid, px, sz, cloid}}
        self.accounted: dict[int, dict[str, Any]] = {}  # oid -> {j, size, fee, seen}: applied from the answer
        self.seen: deque[str] = deque(maxlen=SEEN_FILLS_KEPT)
        self._seen_set: set[str] = set()
        self.last_fill_ms = 0
        self.leverage: dict[str, tuple[bool, int]] = {}  # coin -> (cross, leverage) as set on the venue
        self.prior_intents: set[str] = set()
        self.to_cancel: dict[int, str] = {}  # oid -> symbol: orders of ours whose cancel is not confirmed yet
        self.resting: dict[int, dict[str, Any]] = {}  # oid -> {j, cloid, size, filled, expires_ns}: gtc/alo entries
        self.funding_seen: deque[str] = deque(maxlen=SEEN_FILLS_KEPT)
        self.last_funding_ms = 0
        self._last_sync = 0
        self.counts: dict[str, int] = {}

    # -- set-up ------------------------------------------------------------------------------------
    def build_executor(self, risk: RiskConfig, interval_ns: int) -> Executor:
        """Connect, check the symbols against `meta`, and make the executor with the venue's limits."""
        by_coin = self.client.connect()
        for symbol in self.cfg.symbols:
            coin = coin_of(symbol)
            if coin not in by_coin:
                raise ConfigError(f"hyperliquid.symbols: {symbol} ({coin}) is not listed by the venue at "
                                  f"{self.client.base_url}")
            self.assets[symbol] = by_coin[coin]
        state = self.client.user_state()
        equity = float(state["marginSummary"]["accountValue"])
        paper = PaperConfig(initial_equity=max(equity, 1e-9), symbols=list(self.cfg.symbols),
                            taker_fee=self.taker_fee, slippage_bps=0.0, funding_rate=0.0,
                            max_leverage={s: float(min(a.max_leverage, 50)) for s, a in self.assets.items()})
        self.executor = Executor(risk, paper, interval_ns, external=True)
        self._venue_state = state
        return self.executor

    def state_dict(self) -> dict[str, Any]:
        return {"orders": {str(k): v for k, v in self.orders.items()},
                "protection": {str(k): v for k, v in self.protection.items()},
                "accounted": {str(k): v for k, v in self.accounted.items()},
                "seen": list(self.seen), "last_fill_ms": self.last_fill_ms,
                "leverage": {k: list(v) for k, v in self.leverage.items()}, "nonce": self.client.nonces.last,
                "to_cancel": {str(k): v for k, v in self.to_cancel.items()}, "funding_seen": list(self.funding_seen),
                "resting": {str(k): v for k, v in self.resting.items()},
                "last_funding_ms": self.last_funding_ms}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        self.orders = {int(k): v for k, v in data.get("orders", {}).items()}
        self.protection = {int(k): v for k, v in data.get("protection", {}).items()}
        self.accounted = {int(k): v for k, v in data.get("accounted", {}).items()}
        self.seen = deque(data.get("seen", []), maxlen=SEEN_FILLS_KEPT)
        self._seen_set = set(self.seen)
        self.last_fill_ms = int(data.get("last_fill_ms", 0))
        self.leverage = {k: (bool(v[0]), int(v[1])) for k, v in data.get("leverage", {}).items()}
        self.client.nonces.last = max(self.client.nonces.last, int(data.get("nonce", 0)))
        self.to_cancel = {int(k): v for k, v in data.get("to_cancel", {}).items()}
        self.resting = {int(k): v for k, v in data.get("resting", {}).items()}
        self.funding_seen = deque(data.get("funding_seen", []), maxlen=SEEN_FILLS_KEPT)
        self.last_funding_ms = int(data.get("last_funding_ms", 0))

    # -- start: reconciliation ---------------------------------------------------------------------
    @property
    def _policy(self) -> str:
        """hyperliquid.on_mismatch; a dry run only adopts (into its own state): it never acts and never halts."""
        return "adopt" if self.client.dry_run else self.cfg.on_mismatch

    def start(self, fresh: bool, unresolved: list[dict[str, Any]]) -> VenueOutput:
        """Bring the executor in line with the venue before the first signal; then open the user stream."""
        ex, out = self.executor, VenueOutput()
        state = self._venue_state
        if fresh:
            ex.set_cash_to_equity(float(state["marginSummary"]["accountValue"]))
            self.last_fill_ms = int(state.get("time") or time.time() * 1000)
            for f in self.client.fills_since(self.last_fill_ms - 86_400_000):
                self._mark_seen(f)  # the account's history before this executor is not its own
            self.last_funding_ms = self.last_fill_ms
            for entry in self.client.funding_since(self.last_fill_ms - 86_400_000):
                self.funding_seen.append(f"{(entry.get('delta') or {}).get('coin')}:{entry.get('time')}")
        # orders whose intent was recorded but whose answer never reached the state: ask the venue by cloid
        for intent in unresolved:
            self._adopt_intent(intent, out)
        if self.last_fill_ms:
            self._catch_up(out)
        state = self.client.user_state()
        self._reconcile_positions(state, out)
        self._reconcile_orders(out)
        self._sync_leverage(state)
        if self._want_stream:
            self.stream = UserStream(self.client.base_url, self.client.user, self.events)
            self.stream.start()
        self._last_sync = time.time_ns()
        return out

    def _adopt_intent(self, intent: dict[str, Any], out: VenueOutput) -> None:
        cloid, strategy, symbol = intent["cloid"], intent.get("strategy", ""), intent.get("symbol", "")
        if symbol not in self.assets:
            return
        record = self.client.order_status(cloid)
        if record is None:
            out.audit.append(("reconcile", {"cloid": cloid, "finding": "intent never reached the venue"}))
            log.info("order intent %s (%s %s) never reached the venue: nothing to adopt", cloid, strategy, symbol)
            return
        oid = int(record["order"]["oid"])
        j = self.executor.slot_index(strategy, symbol)
        self.orders[oid] = {"j": j, "purpose": intent.get("reason", "entry"), "cloid": cloid}
        log.warning("order intent %s (%s %s) reached the venue before the restart (oid %d, %s): adopting its fills",
                    cloid, strategy, symbol, oid, record.get("status"))
        out.audit.append(("reconcile", {"cloid": cloid, "venue_order_id": str(oid), "status": record.get("status"),
                                        "finding": "order sent before the restart adopted"}))

    def _reconcile_positions(self, state: dict[str, Any], out: VenueOutput) -> None:
        ex = self.executor
        venue = {p["position"]["coin"]: p["position"] for p in state.get("assetPositions", [])
                 if float(p["position"].get("szi", 0) or 0) != 0}
        listed = {a.coin: s for s, a in self.assets.items()}
        for coin, pos in venue.items():
            if coin not in listed:
                msg = f"venue holds {pos['szi']} {coin}, a coin not in hyperliquid.symbols: left alone"
                log.warning("%s", msg)
                out.audit.append(("reconcile", {"symbol": coin, "finding": msg}))
        for symbol, asset in self.assets.items():
            have = sum(ex.slot(j)["position"] for j in ex.slots_of(symbol))
            raw = venue.get(asset.coin)
            want = float(raw["szi"]) if raw else 0.0
            if abs(have - want) <= TINY * max(1.0, abs(want)):
                continue
            finding = f"{symbol}: executor holds {have:g}, venue holds {want:g}"
            out.audit.append(("reconcile", {"symbol": symbol, "executor": have, "venue": want,
                                            "action": self._policy, "finding": finding}))
            if self._policy == "halt":
                raise ReconcileError(f"{finding}; hyperliquid.on_mismatch = halt: not trading (set it to adopt or "
                                     f"flatten, or close the position on the venue)")
            log.warning("%s: %s", finding, "adopting the venue's position" if self._policy == "adopt"
                        else "flattening it on the venue")
            j = self._owner(symbol, adopt=True)
            entry = float(raw["entryPx"]) if raw else 0.0
            for jj in ex.slots_of(symbol):
                size = ex.slot(jj)["position"]
                if size:
                    self._protection_cancel(jj, out)
                    ex.apply_fill(jj, -size, entry or ex.slot(jj)["entry"], 0.0)
            if want:
                ex.state["slot_f"][j, K.PEND_LEV] = float((raw.get("leverage") or {}).get("value", 1))
                ex.apply_fill(j, want, entry, 0.0, fresh_stop=True)
                if self._policy == "flatten":
                    self._close(j, "reconcile_flatten", int(time.time_ns()), out)
        for j in range(ex.state["slot_f"].shape[0]):
            if ex.slot(j)["position"]:
                self._protect(j, time.time_ns(), out)

    def _reconcile_orders(self, out: VenueOutput) -> None:
        mine = {int(t["oid"]) for p in self.protection.values() for t in p.values() if t.get("oid")}
        strangers, obsolete = [], []
        for order in self.client.open_orders():
            oid = int(order["oid"])
            if oid in mine:
                continue
            if oid in self.orders or oid in self.to_cancel:
                obsolete.append(order)  # the executor's own, replaced or left over: cancelled below
                continue
            strangers.append(order)
            finding = (f"open order {oid} ({order.get('coin')} {order.get('side')} {order.get('sz')} @ "
                       f"{order.get('limitPx')}) is not one of the executor's")
            log.warning("%s", finding)
            out.audit.append(("reconcile", {"venue_order_id": str(oid), "finding": finding,
                                            "action": self._policy}))
        if strangers and self._policy == "halt":
            raise ReconcileError(f"{len(strangers)} open order(s) on the venue the executor did not place; "
                                 f"hyperliquid.on_mismatch = halt: not trading")
        by_coin = {a.coin: a for a in self.assets.values()}
        cancels = [(by_coin[o["coin"]], int(o["oid"])) for o in strangers + obsolete if o["coin"] in by_coin]
        for (asset, oid), status in zip(cancels, self.client.cancel(cancels)):
            log.info("cancelled open order %d (%s): %s", oid, asset.coin, status)
            if status == "success" or _gone(status):
                self.to_cancel.pop(oid, None)
                self.resting.pop(oid, None)
        # protection the state remembers but the venue no longer has (filled, cancelled by hand): forget it
        open_now = {int(o["oid"]) for o in self.client.open_orders()}
        for j, kinds in list(self.protection.items()):
            for kind, placed in list(kinds.items()):
                if placed.get("oid") and int(placed["oid"]) not in open_now:
                    del kinds[kind]
            if self.executor.slot(j)["position"]:
                self._protect(j, time.time_ns(), out)

    def _sync_leverage(self, state: dict[str, Any]) -> None:
        for p in state.get("assetPositions", []):
            lev = p["position"].get("leverage") or {}
            if lev.get("value"):
                self.leverage[p["position"]["coin"]] = (lev.get("type") == "cross", int(lev["value"]))

    # -- signals to orders -------------------------------------------------------------------------
    def submit(self, events: list[dict[str, Any]]) -> VenueOutput:
        """Send the executor's new orders (its "order" events) to the venue, then keep every stop in place."""
        out = VenueOutput()
        for event in events:
            if event["event"] == "order":
                self._execute(event, out)
        for j in range(self.executor.state["slot_f"].shape[0]):
            if self.executor.slot(j)["position"]:
                self._protect(j, time.time_ns(), out)  # a trailing stop moved by the signal
        return out

    def _execute(self, event: dict[str, Any], out: VenueOutput) -> None:
        ex = self.executor
        strategy, symbol = event["strategy"], event["symbol"]
        j = ex.slot_index(strategy, symbol)
        delta = ex.clear_pending(j)
        if delta == 0.0:
            return
        asset = self.assets[symbol]
        pos = ex.slot(j)["position"]
        holders = [jj for jj in ex.slots_of(symbol) if jj != j and ex.slot(jj)["position"] != 0.0]
        if holders:
            other = ex.slot_names(holders[0])[0]
            return self._refuse(event, out, f"rejected: {other} holds {asset.coin}; Hyperliquid nets one position "
                                            f"per coin, so one strategy trades it at a time")
        after = pos + delta
        reduce_only = pos != 0.0 and (after == 0.0 or (after > 0) == (pos > 0) and abs(after) < abs(pos))
        is_buy = delta > 0
        mid = self.mid(asset.coin)
        if mid is None:
            return self._refuse(event, out, f"rejected: no mid price for {asset.coin}")
        if reduce_only and after == 0.0:
            size = round_size(pos, asset.sz_decimals, "up")
        else:
            size = round_size(delta, asset.sz_decimals, "down")
        if size <= 0 or (not reduce_only and below_minimum(size, mid)):
            return self._refuse(event, out, f"rejected: below the venue's $10 minimum ({size:g} {asset.coin} at "
                                            f"{mid:g})")
        self._cancel_resting(j, "replaced by a new decision", out)  # one working entry per slot
        if not reduce_only:
            problem = self._ensure_leverage(asset, ex.slot(j)["pending_leverage"])
            if problem:
                return self._refuse(event, out, f"rejected: leverage not set on the venue: {problem}")
        tif = "Ioc" if reduce_only else self.entry_tif
        away = self.slippage if tif == "Ioc" else -self.cfg.limit_offset_bps / 10_000
        price = round_price(mid * (1 + away) if is_buy else mid * (1 - away), asset.sz_decimals,
                            "down" if is_buy else "up")
        spec = OrderSpec(asset, is_buy, size, price, reduce_only, event["cloid"], tif=tif)
        outcome = self._place_intended(spec)
        if outcome is None:
            return
        if os.environ.get(CRASH_AFTER_SEND):
            os._exit(137)
        self._record_outcome(j, event, spec, outcome, event.get("reason", "entry"), out)
        if outcome.status == "filled":
            self._protect(j, event["bar_ts"], out)
        elif outcome.status == "resting" and outcome.oid is not None:
            self.resting[outcome.oid] = {"j": j, "cloid": spec.cloid, "size": spec.size, "filled": 0.0,
                                         "expires_ns": time.time_ns() + self.limit_timeout_ns}

    def _cancel_resting(self, j: int, why: str, out: VenueOutput, only_expired: bool = False) -> None:
        """Cancel slot j's resting limit entries (by cloid), or with j = -1 every one that has expired."""
        now = time.time_ns()
        for oid, rest in list(self.resting.items()):
            if (j >= 0 and int(rest["j"]) != j) or (only_expired and rest["expires_ns"] > now):
                continue
            strategy, symbol = self.executor.slot_names(int(rest["j"]))
            status = self.client.cancel_by_cloid([(self.assets[symbol], rest["cloid"])])[0]
            if status not in ("success", "dry_run") and not _gone(status):
                log.warning("%s %s: cancel of resting order %d: %s; tried again later", strategy, symbol, oid, status)
                continue
            del self.resting[oid]
            if status in ("success", "dry_run"):
                log.info("%s %s: resting entry %d cancelled: %s", strategy, symbol, oid, why)
                row = {"ts": now, "symbol": symbol, "cloid": rest["cloid"], "venue_order_id": str(oid), "side": "",
                       "size": float(rest["size"]) - float(rest["filled"]), "price": 0.0, "fee": 0.0,
                       "status": "cancelled", "reason": why, "strategy": strategy}
                out.orders.append(row)
                out.audit.append(("order", dict(row)))

    def _place_intended(self, spec: OrderSpec) -> OrderOutcome | None:
        """Place an order whose intent is recorded; an intent from before a restart is first looked up."""
        if spec.cloid in self.prior_intents:
            record = self.client.order_status(spec.cloid)
            if record is not None:
                log.warning("order %s already reached the venue before the restart: not sending it again",
                            spec.cloid)
                if int(record["order"]["oid"]) in self.orders:
                    return None  # adopted at start: its fills are already applied
                return self.client.outcome_of(record)
        return self.client.place([spec])[0]

    def _record_outcome(self, j: int, event: dict[str, Any], spec: OrderSpec, outcome: OrderOutcome, purpose: str,
                        out: VenueOutput) -> None:
        ex = self.executor
        strategy, symbol = ex.slot_names(j)
        side = 1.0 if spec.is_buy else -1.0
        row = _order_row(strategy, symbol, spec, outcome, purpose)
        out.orders.append(row)
        out.audit.append(("order", dict(row, bar_ts=event.get("bar_ts", -1))))
        if outcome.oid is not None:
            self.orders[outcome.oid] = {"j": j, "purpose": purpose, "cloid": spec.cloid}
        if outcome.status == "filled" and outcome.filled > 0:
            fee = outcome.filled * outcome.avg_px * self.taker_fee  # corrected when the venue's fill arrives
            if outcome.oid is not None:
                self.accounted[outcome.oid] = {"j": j, "size": outcome.filled, "fee": fee, "seen": 0.0}
            ex.apply_fill(j, side * outcome.filled, outcome.avg_px, fee)
            if outcome.filled < spec.size - TINY:
                log.warning("%s %s: %s filled %g of %g", strategy, symbol, spec.cloid, outcome.filled, spec.size)
        elif outcome.status == "error":
            self._count("orders rejected by the venue")
            log.warning("%s %s: the venue rejected %s %g %s: %s", strategy, symbol, "buy" if spec.is_buy else "sell",
                        spec.size, spec.asset.coin, outcome.error)
        elif outcome.status == "unknown":
            self._count("orders with unknown outcome")
            log.error("%s %s: order %s: no answer after %d tries; the venue's positions will be read back",
                      strategy, symbol, spec.cloid, self.client.max_retries + 1)
            self._last_sync = 0

    def _refuse(self, event: dict[str, Any], out: VenueOutput, reason: str) -> None:
        self._count(reason.split(":")[1].strip().split(" (")[0] if ":" in reason else reason)
        log.warning("%s %s: %s", event["strategy"], event["symbol"], reason)
        row = {"ts": time.time_ns(), "symbol": event["symbol"], "cloid": event["cloid"], "venue_order_id": "",
               "side": "buy" if event["side"] > 0 else "sell", "size": float(event["size"]),
               "price": float(event["price"]), "fee": 0.0, "status": "rejected", "reason": reason,
               "strategy": event["strategy"]}
        out.orders.append(row)
        out.audit.append(("risk", dict(row)))

    def _ensure_leverage(self, asset: Asset, wanted: float) -> str:
        cross = self.cfg.margin_mode == "cross" and not asset.only_isolated
        lev = int(max(1, min(math.floor(wanted + 1e-9), asset.max_leverage)))
        if self.leverage.get(asset.coin) == (cross, lev):
            return ""
        problem = self.client.update_leverage(asset, lev, cross)
        if not problem:
            self.leverage[asset.coin] = (cross, lev)
            log.info("%s: leverage %dx %s", asset.coin, lev, "cross" if cross else "isolated")
        return problem

    def mid(self, coin: str) -> float | None:
        """The freshest mid: from the stream when under 5 s old, else read over REST."""
        stream = self.stream
        if stream is not None and stream.mids_ns > self.mids_ns and coin in stream.mids:
            self.mids, self.mids_ns = dict(stream.mids), stream.mids_ns
        if coin not in self.mids or time.time_ns() - self.mids_ns > 5_000_000_000:
            try:
                self.mids.update(self.client.mids())
                self.mids_ns = time.time_ns()
            except VenueError as exc:
                log.warning("mids: %s", exc.message)
        return self.mids.get(coin)

    # -- protection --------------------------------------------------------------------------------
    def _protect(self, j: int, bar_ts: int, out: VenueOutput) -> None:
        """Make the venue's triggers for slot j match its position, stop and take profit (new before old)."""
        ex = self.executor
        slot = ex.slot(j)
        pos = slot["position"]
        if pos == 0.0:
            self._protection_cancel(j, out)
            return
        strategy, symbol = ex.slot_names(j)
        asset = self.assets[symbol]
        placed = self.protection.setdefault(j, {})
        size = round_size(pos, asset.sz_decimals, "up")
        stop = slot["stop_loss"]
        if not (stop > 0 and math.isfinite(stop)):
            # never a position without a stop: the configured default from the entry
            stop = slot["entry"] * (1 - (1 if pos > 0 else -1) * ex.risk.default_stop_loss)
            ex.state["slot_f"][j, K.STOP] = stop
            log.warning("%s %s: no usable stop loss for the position; using the default %g", strategy, symbol, stop)
        specs = []
        for kind, px in (("sl", stop), ("tp", slot["take_profit"])):
            if not (px > 0 and math.isfinite(px)):
                if kind in placed:  # a take profit no longer wanted
                    self._cancel_placed(j, kind, out)
                continue
            trigger = round_price(px, asset.sz_decimals, "nearest")
            current = placed.get(kind)
            if current and current["px"] == trigger and current["sz"] == size and current["long"] == (pos > 0):
                continue
            cloid = cloid_for(strategy, symbol, bar_ts, f"{kind}|{size:g}|{trigger:g}|{pos > 0}")
            specs.append((kind, OrderSpec(asset, pos < 0, size, trigger, True, cloid, trigger_px=trigger, tpsl=kind)))
        if not specs:
            return
        outcomes = self.client.place([spec for _, spec in specs])
        for (kind, spec), outcome in zip(specs, outcomes):
            purpose = "stop_loss" if kind == "sl" else "take_profit"
            row = _order_row(strategy, symbol, spec, outcome, purpose)
            out.orders.append(row)
            out.audit.append(("order", row))
            if outcome.status in ("resting", "dry_run") or (outcome.status == "filled"):
                old = placed.get(kind)
                placed[kind] = {"oid": outcome.oid, "px": spec.price, "sz": spec.size, "cloid": spec.cloid,
                                "long": pos > 0}
                if outcome.oid is not None:
                    self.orders[outcome.oid] = {"j": j, "purpose": purpose, "cloid": spec.cloid}
                if old and old.get("oid"):
                    self._cancel_oid(j, asset, int(old["oid"]), purpose, out)
            elif kind == "sl":
                message = (f"{strategy} {symbol}: the stop loss could not be placed ({outcome.error or outcome.status})"
                           f"; closing the position")
                log.critical("%s", message)
                self._count("stops that could not be placed (position closed)")
                out.audit.append(("breaker", {"alarm": message, "strategy": strategy, "symbol": symbol}))
                self._close(j, "stop_not_placed", bar_ts, out)
                return
            else:
                log.error("%s %s: take profit not placed: %s", strategy, symbol, outcome.error or outcome.status)

    def _protection_cancel(self, j: int, out: VenueOutput) -> None:
        for kind in list(self.protection.get(j, {})):
            self._cancel_placed(j, kind, out)

    def _cancel_placed(self, j: int, kind: str, out: VenueOutput) -> None:
        placed = self.protection.get(j, {}).pop(kind, None)
        if placed and placed.get("oid"):
            _, symbol = self.executor.slot_names(j)
            self._cancel_oid(j, self.assets[symbol], int(placed["oid"]),
                             "stop_loss" if kind == "sl" else "take_profit", out)

    def _cancel_oid(self, j: int, asset: Asset, oid: int, purpose: str, out: VenueOutput) -> None:
        strategy, symbol = self.executor.slot_names(j)
        status = self.client.cancel([(asset, oid)])[0]
        if _gone(status):
            self.orders.pop(oid, None)  # filled or cancelled already: nothing to report as cancelled here
            self.to_cancel.pop(oid, None)
            return
        if status not in ("success", "dry_run"):
            log.warning("cancel %s order %d: %s; tried again at the next sync", asset.coin, oid, status)
            self.to_cancel[oid] = symbol
            return
        self.to_cancel.pop(oid, None)
        ref = self.orders.get(oid, {})
        row = {"ts": time.time_ns(), "symbol": symbol, "cloid": ref.get("cloid", ""), "venue_order_id": str(oid),
               "side": "", "size": 0.0, "price": 0.0, "fee": 0.0, "status": "cancelled", "reason": purpose,
               "strategy": strategy}
        out.orders.append(row)
        out.audit.append(("order", dict(row)))
        self.orders.pop(oid, None)

    def _close(self, j: int, purpose: str, bar_ts: int, out: VenueOutput) -> None:
        """Close slot j's position with reduce-only IOCs, widening the price cap if the book is thin."""
        ex = self.executor
        strategy, symbol = ex.slot_names(j)
        asset = self.assets[symbol]
        for attempt in range(3):
            pos = ex.slot(j)["position"]
            if pos == 0.0:
                break
            mid = self.mid(asset.coin) or ex.slot(j)["entry"]
            slip = self.slippage * (2 ** attempt)
            is_buy = pos < 0
            price = round_price(mid * (1 + slip) if is_buy else mid * (1 - slip), asset.sz_decimals,
                                "down" if is_buy else "up")
            cloid = cloid_for(strategy, symbol, bar_ts, f"{purpose}|{attempt}")
            spec = OrderSpec(asset, is_buy, round_size(pos, asset.sz_decimals, "up"), price, True, cloid)
            outcome = self.client.place([spec])[0]
            self._record_outcome(j, {"bar_ts": bar_ts}, spec, outcome, purpose, out)
            if outcome.status in ("dry_run", "unknown"):
                break
        if ex.slot(j)["position"] == 0.0:
            self._protection_cancel(j, out)
        else:
            log.critical("%s %s: position %g could not be closed", strategy, symbol, ex.slot(j)["position"])

    # -- the venue's events ------------------------------------------------------------------------
    def poll(self) -> VenueOutput:
        """Apply what the venue reported since the last call; read positions back every sync_interval."""
        out = VenueOutput()
        while True:
            try:
                event: UserEvent = self.events.get_nowait()
            except queue.Empty:
                break
            if event.kind == "fills":
                self._on_fills(event.data, out, "stream")
            elif event.kind == "funding":
                self._on_funding(event.data, out)
            elif event.kind == "reconnected":
                log.info("user stream reconnected: reading fills since %d over REST", self.last_fill_ms)
                self._count("user stream reconnects")
                self._catch_up(out)
            elif event.kind == "lost":
                log.warning("user stream lost; reconnecting")
        if self.resting:
            self._cancel_resting(-1, "limit_timeout", out, only_expired=True)
        if time.time_ns() - self._last_sync >= self.sync_every_ns:
            self.sync(out)
        return out

    def sync(self, out: VenueOutput) -> None:
        """Read fills and positions back from the venue; a disagreement is logged and the venue believed."""
        self._last_sync = time.time_ns()
        try:
            self._catch_up(out)
            state = self.client.user_state()
        except VenueError as exc:
            log.warning("sync with the venue: %s", exc.message)
            return
        ex = self.executor
        venue = {p["position"]["coin"]: p["position"] for p in state.get("assetPositions", [])}
        for symbol, asset in self.assets.items():
            have = sum(ex.slot(j)["position"] for j in ex.slots_of(symbol))
            raw = venue.get(asset.coin)
            want = float(raw["szi"]) if raw else 0.0
            if abs(have - want) > TINY * max(1.0, abs(want)):
                self._count("positions corrected from the venue")
                log.error("%s: executor holds %g, venue holds %g: taking the venue's", symbol, have, want)
                out.audit.append(("reconcile", {"symbol": symbol, "executor": have, "venue": want,
                                                "action": "adopt"}))
                j = self._owner(symbol, adopt=True)
                ex.apply_fill(j, want - have, float(raw["entryPx"]) if raw else ex.slot(j)["entry"] or 1.0, 0.0,
                              fresh_stop=True)
                self._protect(j, time.time_ns(), out)

    def _on_fills(self, fills: list[dict[str, Any]], out: VenueOutput, source: str) -> None:
        ex = self.executor
        by_coin = {a.coin: s for s, a in self.assets.items()}
        for f in sorted(fills, key=lambda f: int(f.get("time", 0))):
            if not self._mark_seen(f):
                continue
            symbol = by_coin.get(f.get("coin"))
            if symbol is None:
                log.warning("fill in %s, a coin not traded here: %s %s @ %s", f.get("coin"), f.get("side"),
                            f.get("sz"), f.get("px"))
                continue
            oid, size, px, fee = int(f["oid"]), float(f["sz"]), float(f["px"]), float(f.get("fee", 0) or 0)
            side = 1.0 if f.get("side") == "B" else -1.0
            ref = self.orders.get(oid)
            accounted = self.accounted.get(oid)
            rest = self.resting.get(oid)
            if rest is not None:
                rest["filled"] += size
                if rest["filled"] >= rest["size"] - TINY:
                    del self.resting[oid]
            if accounted is not None:
                j = int(accounted["j"])
                share = min(size / accounted["size"], 1.0) if accounted["size"] else 1.0
                ex.adjust_cash(accounted["fee"] * share - fee, "fee")  # the estimate out, the real fee in
                accounted["seen"] += size
                if accounted["seen"] >= accounted["size"] - TINY:
                    del self.accounted[oid]
                purpose = ref["purpose"] if ref else "entry"
            else:
                if f.get("liquidation"):
                    purpose = "liquidation"
                    j = self._owner(symbol, adopt=True)
                    log.critical("%s: liquidated: %s %g at %g", symbol, f.get("dir", ""), size, px)
                    self._count("liquidation fills")
                elif ref is not None:
                    j, purpose = int(ref["j"]), ref["purpose"]
                    for kind, placed in list(self.protection.get(j, {}).items()):
                        if placed.get("oid") is not None and int(placed["oid"]) == oid:
                            del self.protection[j][kind]  # it fired: nothing left to cancel
                else:
                    j, purpose = self._owner(symbol, adopt=True), "external"
                    self._count("fills for orders varon did not place")
                    log.warning("%s: fill for an order varon did not place (oid %d): %s %g at %g", symbol, oid,
                                f.get("side"), size, px)
                before = ex.slot(j)["position"]
                # a fill nobody decided keeps the strategy's stop and take profit; one that opens a position from
                # nothing, or flips it, gets the configured defaults
                flips = before != 0.0 and (before + side * size) * before < 0
                ex.apply_fill(j, side * size, px, fee,
                              fresh_stop=purpose in ("external", "liquidation") and (before == 0.0 or flips))
                after = ex.slot(j)["position"]
                if after == 0.0:
                    self._protection_cancel(j, out)
                elif purpose in ("stop_loss", "take_profit", "external", "liquidation") or after != before:
                    self._protect(j, int(f.get("time", 0)) * 1_000_000, out)
            strategy, _ = ex.slot_names(j)
            row = {"ts": int(f.get("time", 0)) * 1_000_000, "symbol": symbol, "cloid": str(f.get("cloid") or
                   (ref or {}).get("cloid", "")), "venue_order_id": str(oid), "side": "buy" if side > 0 else "sell",
                   "size": size, "price": px, "fee": fee, "status": "filled", "reason": purpose,
                   "strategy": strategy}
            out.fills.append(row)
            out.audit.append(("fill", dict(row, tid=f.get("tid"), source=source)))

    def _mark_seen(self, f: dict[str, Any]) -> bool:
        """Remember a fill by its identity; False if it was seen before (snapshot, stream and catch-up overlap)."""
        key = f"{f.get('tid')}:{f.get('oid')}:{f.get('time')}"
        if key in self._seen_set:
            return False
        if len(self.seen) == self.seen.maxlen:
            self._seen_set.discard(self.seen[0])
        self.seen.append(key)
        self._seen_set.add(key)
        self.last_fill_ms = max(self.last_fill_ms, int(f.get("time", 0)))
        return True

    def _on_funding(self, data: dict[str, Any], out: VenueOutput) -> None:
        """One funding payment (WebSocket userEvents or REST userFunding), booked once by (coin, time)."""
        key = f"{data.get('coin')}:{data.get('time')}"
        if key in self.funding_seen:
            return
        self.funding_seen.append(key)
        self.last_funding_ms = max(self.last_funding_ms, int(data.get("time") or 0))
        amount = float(data.get("usdc", 0) or 0)
        if amount:
            self.executor.adjust_cash(amount, "funding")
        out.audit.append(("fill", {"funding": amount, "coin": data.get("coin"), "rate": data.get("fundingRate"),
                                   "funding_time": data.get("time")}))

    def _catch_up(self, out: VenueOutput) -> None:
        """What the WebSocket may have missed: fills and funding since the last seen, over REST."""
        self._on_fills(self.client.fills_since(max(self.last_fill_ms - 1, 0)), out, "catch-up")
        for entry in self.client.funding_since(max(self.last_funding_ms - 1, 0)):
            delta = entry.get("delta") or {}
            if delta.get("type") == "funding":
                self._on_funding({**delta, "time": entry.get("time")}, out)
        for oid, symbol in list(self.to_cancel.items()):
            if symbol in self.assets:
                status = self.client.cancel([(self.assets[symbol], oid)])[0]
                if status == "success" or _gone(status):
                    self.to_cancel.pop(oid, None)
                    self.orders.pop(oid, None)
                    log.info("cancelled %s order %d on a later try", symbol, oid)

    def _owner(self, symbol: str, adopt: bool) -> int:
        """The slot that owns a coin: the one holding it, else the adopt strategy's."""
        ex = self.executor
        for j in ex.slots_of(symbol):
            if ex.slot(j)["position"] != 0.0:
                return j
        return ex.slot_index(self.cfg.adopt_strategy, symbol)

    # -- kill switch -------------------------------------------------------------------------------
    def kill(self, reason: str) -> VenueOutput:
        """Cancel every open order and close every position on the venue (all coins), then read it back."""
        out = VenueOutput()
        ex = self.executor
        ex.engage_kill()
        by_coin = {a.coin: a for a in self.client.assets.values()}
        for attempt in range(3):
            orders = self.client.open_orders()
            cancels = [(by_coin[o["coin"]], int(o["oid"])) for o in orders if o["coin"] in by_coin]
            for (asset, oid), status in zip(cancels, self.client.cancel(cancels)):
                log.info("kill switch: cancel %s order %d: %s", asset.coin, oid, status)
            self.protection.clear()
            self.resting.clear()
            state = self.client.user_state()
            open_positions = [p["position"] for p in state.get("assetPositions", [])
                              if float(p["position"].get("szi", 0) or 0) != 0]
            if not open_positions:
                break
            mids = self.client.mids()
            specs = []
            for p in open_positions:
                asset, szi = by_coin[p["coin"]], float(p["szi"])
                mid = mids.get(p["coin"]) or float(p["entryPx"])
                slip = self.slippage * (2 ** attempt)
                price = round_price(mid * (1 + slip) if szi < 0 else mid * (1 - slip), asset.sz_decimals,
                                    "down" if szi < 0 else "up")
                specs.append(OrderSpec(asset, szi < 0, abs(szi), price, True,
                                       cloid_for("kill", p["coin"], time.time_ns(), f"{reason}|{attempt}")))
            for spec, outcome in zip(specs, self.client.place(specs)):
                symbol = next((s for s, a in self.assets.items() if a.coin == spec.asset.coin), spec.asset.coin)
                log.warning("kill switch: close %s %g: %s %s", spec.asset.coin, spec.size, outcome.status,
                            outcome.error)
                if symbol in self.assets:
                    j = self._owner(symbol, adopt=True)
                    self._record_outcome(j, {"bar_ts": -1}, spec, outcome, "kill_switch", out)
                else:
                    out.orders.append(_order_row("kill", symbol, spec, outcome, "kill_switch"))
            if self.client.dry_run:
                break
        else:
            state = self.client.user_state()
            left = [p["position"] for p in state.get("assetPositions", [])
                    if float(p["position"].get("szi", 0) or 0) != 0]
            if left:
                log.critical("kill switch: positions still open on the venue: %s",
                             ", ".join(f"{p['coin']} {p['szi']}" for p in left))
        self._catch_up(out)
        return out

    def close(self) -> VenueOutput:
        """Stop the stream and collect the fills it may not have delivered yet."""
        out = self.poll()
        if self.stream is not None:
            self.stream.stop()
            self.stream.join(timeout=3)
        try:
            self._catch_up(out)
        except VenueError as exc:
            log.warning("final catch-up: %s", exc.message)
        return out

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        self.executor.counts[what] += 1


def _gone(status: str) -> bool:
    """A cancel answered "never placed, already canceled, or filled": the order is no longer open."""
    return "never placed" in status or "already canceled" in status


def _order_row(strategy: str, symbol: str, spec: OrderSpec, outcome: OrderOutcome, purpose: str) -> dict[str, Any]:
    status = {"filled": "filled", "resting": "open", "error": "rejected", "dry_run": "dry_run",
              "unknown": "unknown"}[outcome.status]
    reason = purpose if outcome.status != "error" else f"rejected by the venue: {outcome.error}"
    return {"ts": time.time_ns(), "symbol": symbol, "cloid": spec.cloid,
            "venue_order_id": "" if outcome.oid is None else str(outcome.oid),
            "side": "buy" if spec.is_buy else "sell", "size": outcome.filled if outcome.status == "filled" else spec.size,
            "price": outcome.avg_px if outcome.status == "filled" else spec.price, "fee": 0.0, "status": status,
            "reason": reason, "strategy": strategy}

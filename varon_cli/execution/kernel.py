"""The compiled heart of the executor: risk engine and paper venue in one pass over signals.

One function, `step`, serves the live executor (a batch of one signal) and the
backtest (hundreds of thousands of signals per call) with the same arithmetic,
so backtest and live fill the same orders at the same prices (DESIGN principle 3).

Each signal row carries the bar its decision was made on (open, high, low,
close). The first row of a new bar for a symbol moves that symbol's market:

1. orders decided on the previous bar fill at this bar's open (the first price
   after the decision, never the decision's own price), plus slippage, paying
   the taker fee;
2. stops, take profits and liquidations trigger on the bar's range. When the
   stop and the take profit are both inside one bar the stop is assumed to have
   come first (the pessimistic reading of a bar whose path is unknown); a bar
   opening beyond a trigger fills at the open;
3. funding is paid at every hour mark the bar crosses, on the position at the
   close, at the rate of a funding stream for that symbol and hour when one is
   given, else at the configured rate;
4. equity is marked at the close and breakers are checked (the UTC day a bar
   belongs to is the day it opens in; the day's loss counts from the equity
   before its first bar).

Then the row's decision goes through the risk engine: field validation, stale
and future signals, leverage caps, per-strategy and account exposure, reduce-
only while a breaker or the kill switch is engaged, the order rate limit, the
minimum order size, and the stop-loss and take-profit sides. An accepted
decision becomes an order that fills at the next bar's open.

State lives in plain arrays so it can be saved, restored and copied; the
Python wrapper (`engine.py`) owns names, streams, persistence and the audit log.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# -- account scalars (acct_f) ---------------------------------------------------------------------
CASH, PEAK, DAY_START, FEES, FUNDING, EQUITY, DAILY_TRIPPED, DD_TRIPPED, KILLED = range(9)
ACCT_F = 9
# acct_i
DAY, SEQ, RING_POS, REPEATS = range(4)
ACCT_I = 4

# -- per (strategy, symbol) slot (slot_f / slot_i) ---------------------------------------------
POS, ENTRY, STOP, TP, LEV, PEND, PEND_SL, PEND_TP, PEND_LEV, LAST_REJECT_VALUE = range(10)
SLOT_F = 10
LAST_DECIDED, PEND_BAR, PEND_SEQ, KNOWN, LAST_REJECT = range(5)
SLOT_I = 5

# -- per symbol ----------------------------------------------------------------------------------
LAST_CLOSE, MAX_LEV, MMR = range(3)
SYM_F = 3
# -- per strategy --------------------------------------------------------------------------------
EXPOSURE, STRAT_MAX_LEV, PNL = range(3)
STRAT_F = 3

# -- parameters (params) -------------------------------------------------------------------------
(P_TAKER, P_SLIP, P_FUNDING, P_ACCOUNT_EXPOSURE, P_DEFAULT_SL, P_DEFAULT_TP, P_DAILY_LOSS, P_FLATTEN,
 P_MAX_DD, P_MIN_NOTIONAL, P_MAX_AGE, P_MAX_SKEW, P_INTERVAL, P_WINDOW, P_REBALANCE, P_EXTERNAL) = range(16)
N_PARAMS = 16

# -- events --------------------------------------------------------------------------------------
EV_ORDER, EV_FILL, EV_REJECT, EV_CANCEL, EV_RISK, EV_BREAKER = 1, 2, 3, 4, 5, 6
# ev_i columns
E_KIND, E_TS, E_K, E_S, E_REASON, E_BAR, E_SEQ = range(7)
EV_I = 7
# ev_f columns
E_SIDE, E_SIZE, E_PRICE, E_FEE, E_VALUE = range(5)
EV_F = 5

# reasons
R_ENTRY, R_REDUCE, R_FLIP, R_STOP, R_TP, R_LIQ, R_FLATTEN, R_KILL, R_EXIT = 0, 1, 2, 3, 4, 5, 6, 7, 8
R_BAD_TARGET, R_BAD_LEVERAGE, R_STALE, R_FUTURE, R_BAD_PRICE, R_BAD_STOP, R_BAD_TP = 20, 21, 22, 23, 24, 25, 26
R_RATE_LIMIT, R_BELOW_MIN, R_BREAKER, R_OLD_BAR, R_DUPLICATE, R_UNKNOWN_SYMBOL, R_END = 27, 28, 29, 30, 31, 32, 33
R_CLIP_LEVERAGE, R_CLIP_EXPOSURE = 40, 41
R_DAILY, R_DRAWDOWN, R_DAY_RESET = 50, 51, 52

REASONS = {
    R_ENTRY: "entry", R_REDUCE: "reduce", R_FLIP: "flip", R_STOP: "stop_loss", R_TP: "take_profit",
    R_LIQ: "liquidation", R_FLATTEN: "breaker_flatten", R_KILL: "kill_switch", R_EXIT: "exit",
    R_BAD_TARGET: "rejected: target NaN or outside -1..1", R_BAD_LEVERAGE: "rejected: leverage not positive",
    R_STALE: "rejected: signal older than risk.max_signal_age", R_FUTURE: "rejected: signal from the future",
    R_BAD_PRICE: "rejected: bar prices missing or not positive",
    R_BAD_STOP: "rejected: stop loss on the wrong side of the price",
    R_BAD_TP: "rejected: take profit on the wrong side of the price",
    R_RATE_LIMIT: "rejected: order rate limit", R_BELOW_MIN: "rejected: below the minimum order size",
    R_BREAKER: "rejected: breaker engaged, reduce only", R_OLD_BAR: "rejected: bar older than the symbol's last",
    R_DUPLICATE: "rejected: bar already decided", R_UNKNOWN_SYMBOL: "rejected: symbol not listed by the venue",
    R_END: "cancelled: end of input",
    R_CLIP_LEVERAGE: "leverage capped", R_CLIP_EXPOSURE: "size cut to the exposure limit",
    R_DAILY: "daily loss breaker tripped", R_DRAWDOWN: "drawdown breaker tripped", R_DAY_RESET: "new UTC day",
}

HOUR_NS = 3_600_000_000_000
DAY_NS = 86_400_000_000_000


def new_state(n_strategies: int, n_symbols: int, initial_equity: float, rate_window: int) -> dict[str, np.ndarray]:
    """Fresh arrays for an account with `initial_equity` and nothing open."""
    acct_f = np.zeros(ACCT_F)
    acct_f[CASH] = acct_f[PEAK] = acct_f[DAY_START] = acct_f[EQUITY] = initial_equity
    acct_i = np.zeros(ACCT_I, np.int64)
    acct_i[DAY] = -1
    slot_f = np.zeros((n_strategies * n_symbols, SLOT_F))
    slot_f[:, STOP] = slot_f[:, TP] = slot_f[:, PEND_SL] = slot_f[:, PEND_TP] = np.nan
    slot_i = np.full((n_strategies * n_symbols, SLOT_I), -1, np.int64)
    slot_i[:, PEND_SEQ] = 0
    slot_i[:, KNOWN] = 0
    slot_i[:, LAST_REJECT] = -1
    return {
        "acct_f": acct_f, "acct_i": acct_i, "slot_f": slot_f, "slot_i": slot_i,
        "sym_f": np.zeros((n_symbols, SYM_F)), "sym_bar": np.full(n_symbols, -1, np.int64),
        "strat_f": np.zeros((n_strategies, STRAT_F)), "ring": np.full(max(rate_window, 1), -(2 ** 62), np.int64),
    }


@njit(cache=True, inline="always")
def _emit(ev_i, ev_f, n, kind, ts, k, s, reason, bar, seq, side, size, price, fee, value):
    ev_i[n, E_KIND] = kind
    ev_i[n, E_TS] = ts
    ev_i[n, E_K] = k
    ev_i[n, E_S] = s
    ev_i[n, E_REASON] = reason
    ev_i[n, E_BAR] = bar
    ev_i[n, E_SEQ] = seq
    ev_f[n, E_SIDE] = side
    ev_f[n, E_SIZE] = size
    ev_f[n, E_PRICE] = price
    ev_f[n, E_FEE] = fee
    ev_f[n, E_VALUE] = value
    return n + 1


@njit(cache=True)
def _reject(acct_i, slot_i, slot_f, j, ev_i, ev_f, n, ts, k, s, reason, bar, size, price, value):
    """A rejection, emitted unless it repeats the slot's last one exactly (same reason and value, e.g. a breaker
    refusing the same target every bar): repeats are counted instead of flooding the log."""
    last = slot_f[j, LAST_REJECT_VALUE]
    if slot_i[j, LAST_REJECT] == reason and (last == value or (last != last and value != value)):
        acct_i[REPEATS] += 1
        return n
    slot_i[j, LAST_REJECT] = reason
    slot_f[j, LAST_REJECT_VALUE] = value
    return _emit(ev_i, ev_f, n, EV_REJECT, ts, k, s, reason, bar, 0, 0.0, size, price, 0.0, value)


@njit(cache=True)
def _trade(acct_f, slot_f, strat_f, j, k, delta, price, fee):
    """Apply a fill of signed `delta` at `price` to slot j; returns the realised PnL (fee excluded)."""
    pos = slot_f[j, POS]
    realised = 0.0
    if pos != 0.0 and (pos > 0.0) != (delta > 0.0):
        closed = min(abs(delta), abs(pos))
        realised = closed * (price - slot_f[j, ENTRY]) * (1.0 if pos > 0.0 else -1.0)
    new_pos = pos + delta
    if abs(new_pos) < 1e-12 * max(1.0, abs(pos)):
        new_pos = 0.0
    if new_pos == 0.0:
        slot_f[j, ENTRY] = 0.0
        slot_f[j, STOP] = np.nan
        slot_f[j, TP] = np.nan
    elif pos == 0.0 or (pos > 0.0) != (new_pos > 0.0):
        slot_f[j, ENTRY] = price  # opened, or flipped through zero
    elif abs(new_pos) > abs(pos):
        slot_f[j, ENTRY] = (slot_f[j, ENTRY] * abs(pos) + price * abs(delta)) / abs(new_pos)
    slot_f[j, POS] = new_pos
    acct_f[CASH] += realised - fee
    acct_f[FEES] += fee
    strat_f[k, PNL] += realised - fee
    return realised


@njit(cache=True)
def _equity(acct_f, slot_f, sym_f, n_symbols):
    total = acct_f[CASH]
    for j in range(slot_f.shape[0]):
        pos = slot_f[j, POS]
        if pos != 0.0:
            total += pos * (sym_f[j % n_symbols, LAST_CLOSE] - slot_f[j, ENTRY])
    acct_f[EQUITY] = total
    return total


@njit(cache=True)
def _close_all(acct_f, slot_f, slot_i, sym_f, strat_f, params, ev_i, ev_f, n, ts, n_symbols, reason, only_symbol):
    """Market-close every open position (of one symbol, or all with -1) at the last close, and cancel pending orders."""
    slip = params[P_SLIP]
    for j in range(slot_f.shape[0]):
        s = j % n_symbols
        k = j // n_symbols
        if only_symbol >= 0 and s != only_symbol:
            continue
        if slot_f[j, PEND] != 0.0:
            n = _emit(ev_i, ev_f, n, EV_CANCEL, ts, k, s, reason, slot_i[j, PEND_BAR], slot_i[j, PEND_SEQ],
                      1.0 if slot_f[j, PEND] > 0.0 else -1.0, abs(slot_f[j, PEND]), 0.0, 0.0, 0.0)
            slot_f[j, PEND] = 0.0
        pos = slot_f[j, POS]
        if pos != 0.0 and sym_f[s, LAST_CLOSE] > 0.0:
            side = -1.0 if pos > 0.0 else 1.0
            price = sym_f[s, LAST_CLOSE] * (1.0 + side * slip)
            fee = abs(pos) * price * params[P_TAKER]
            _trade(acct_f, slot_f, strat_f, j, k, -pos, price, fee)
            n = _emit(ev_i, ev_f, n, EV_FILL, ts, k, s, reason, -1, 0, side, abs(pos), price, fee, 0.0)
    return n


@njit(cache=True)
def _funding_rate(f_off, f_hour, f_rate, s, mark, default):
    """The rate settled at hour `mark` for symbol s in the funding stream, else `default`."""
    lo, hi = f_off[s], f_off[s + 1]
    if lo == hi:
        return default
    at = lo + np.searchsorted(f_hour[lo:hi], mark)
    if at < hi and f_hour[at] == mark:
        return f_rate[at]
    return default


@njit(cache=True)
def protect(slot_f, j, pos_before, params):
    """After a fill on slot j: a new or bigger position gets its stop (and take profit) and its leverage now."""
    new_pos = slot_f[j, POS]
    if new_pos != 0.0 and (pos_before == 0.0 or (pos_before > 0.0) != (new_pos > 0.0) or abs(new_pos) > abs(pos_before)):
        sign = 1.0 if new_pos > 0.0 else -1.0
        entry = slot_f[j, ENTRY]
        sl = slot_f[j, PEND_SL]
        slot_f[j, STOP] = sl if sl == sl else entry * (1.0 - sign * params[P_DEFAULT_SL])
        tp = slot_f[j, PEND_TP]
        if tp == tp:
            slot_f[j, TP] = tp
        elif params[P_DEFAULT_TP] > 0.0:
            slot_f[j, TP] = entry * (1.0 + sign * params[P_DEFAULT_TP])
        else:
            slot_f[j, TP] = np.nan
        slot_f[j, LEV] = slot_f[j, PEND_LEV]


@njit(cache=True)
def _market(acct_f, acct_i, slot_f, slot_i, sym_f, strat_f, params, ev_i, ev_f, n, s, bar_ts, o, h, lo, c,
            n_symbols, n_strategies, f_off, f_hour, f_rate):
    """A new bar for symbol s: pending fills at the open, triggers on the range, funding, mark, breakers."""
    slip = params[P_SLIP]
    taker = params[P_TAKER]
    interval = np.int64(params[P_INTERVAL])
    # the UTC day a bar belongs to is the day it opens in; the day's loss is measured from the equity before it
    day = bar_ts // DAY_NS
    if day != acct_i[DAY]:
        acct_i[DAY] = day
        acct_f[DAY_START] = acct_f[EQUITY]
        if acct_f[DAILY_TRIPPED] != 0.0:
            acct_f[DAILY_TRIPPED] = 0.0
            n = _emit(ev_i, ev_f, n, EV_BREAKER, bar_ts, -1, -1, R_DAY_RESET, -1, 0, 0.0, 0.0, 0.0, 0.0,
                      acct_f[EQUITY])
    blocked = acct_f[KILLED] != 0.0 or acct_f[DAILY_TRIPPED] != 0.0 or acct_f[DD_TRIPPED] != 0.0
    external = params[P_EXTERNAL] != 0.0
    for k in range(n_strategies):
        if external:
            break  # a real venue fills orders and fires stops, liquidations and funding itself
        j = k * n_symbols + s
        delta = slot_f[j, PEND]
        if delta != 0.0 and blocked:
            pos = slot_f[j, POS]
            after = pos + delta
            grows = after != 0.0 and (pos == 0.0 or (pos > 0.0) != (after > 0.0) or abs(after) > abs(pos))
            if grows:
                # decided before a breaker or the kill switch engaged: never let it add exposure now; a flip keeps
                # its exit part, anything else is cancelled
                reason = R_KILL if acct_f[KILLED] != 0.0 else R_BREAKER
                kept = -pos if pos != 0.0 and (pos > 0.0) != (after > 0.0) else 0.0
                n = _emit(ev_i, ev_f, n, EV_CANCEL, bar_ts, k, s, reason, slot_i[j, PEND_BAR], slot_i[j, PEND_SEQ],
                          1.0 if delta > 0.0 else -1.0, abs(delta - kept), 0.0, 0.0, 0.0)
                slot_f[j, PEND] = kept
                delta = kept
        if delta != 0.0:
            side = 1.0 if delta > 0.0 else -1.0
            price = o * (1.0 + side * slip)
            fee = abs(delta) * price * taker
            pos = slot_f[j, POS]
            if pos == 0.0:
                reason = R_ENTRY
            elif (pos > 0.0) != (delta > 0.0):
                reason = R_FLIP if abs(delta) > abs(pos) + 1e-12 * abs(pos) else (R_EXIT if abs(abs(delta) - abs(pos)) <= 1e-12 * abs(pos) else R_REDUCE)
            else:
                reason = R_ENTRY
            _trade(acct_f, slot_f, strat_f, j, k, delta, price, fee)
            protect(slot_f, j, pos, params)
            n = _emit(ev_i, ev_f, n, EV_FILL, bar_ts, k, s, reason, slot_i[j, PEND_BAR], slot_i[j, PEND_SEQ], side,
                      abs(delta), price, fee, 0.0)
            slot_f[j, PEND] = 0.0
        pos = slot_f[j, POS]
        if pos == 0.0:
            continue
        lev = max(slot_f[j, LEV], 1.0)
        entry = slot_f[j, ENTRY]
        mmr = sym_f[s, MMR]
        stop = slot_f[j, STOP]
        tp = slot_f[j, TP]
        long = pos > 0.0
        if long:
            liq = entry * (1.0 - 1.0 / lev + mmr)
            trigger, reason = (liq, R_LIQ) if liq >= stop else (stop, R_STOP)
            gap_loss = o <= trigger
            gap_win = tp == tp and o >= tp
            touch_loss = lo <= trigger
            touch_win = tp == tp and h >= tp
        else:
            liq = entry * (1.0 + 1.0 / lev - mmr)
            trigger, reason = (liq, R_LIQ) if liq <= stop else (stop, R_STOP)
            gap_loss = o >= trigger
            gap_win = tp == tp and o <= tp
            touch_loss = h >= trigger
            touch_win = tp == tp and lo <= tp
        hit = True
        away = -1.0 if long else 1.0  # the closing trade's side: slippage works against it
        if gap_loss:
            # the first price is already beyond the trigger: a stop fills at that open; a liquidation at the
            # liquidation price (isolated margin: the loss stops at the margin, the venue absorbs the rest)
            price = trigger if reason == R_LIQ else o * (1.0 + away * slip)
        elif gap_win:
            reason = R_TP
            price = o * (1.0 + away * slip)
        elif touch_loss:
            # within the bar's range both may be touched; the order of the path is unknown: the loss comes first
            price = trigger if reason == R_LIQ else trigger * (1.0 + away * slip)
        elif touch_win:
            reason = R_TP
            price = tp * (1.0 + away * slip)
        else:
            hit = False
            price = 0.0
        if hit:
            fee = abs(pos) * price * taker
            _trade(acct_f, slot_f, strat_f, j, k, -pos, price, fee)
            n = _emit(ev_i, ev_f, n, EV_FILL, bar_ts, k, s, reason, -1, 0, -1.0 if pos > 0.0 else 1.0, abs(pos),
                      price, fee, 0.0)
    # funding at each hour mark the bar crosses, on the position held at the close
    for hour in range(bar_ts // HOUR_NS + 1, (bar_ts + interval) // HOUR_NS + 1):
        if external:
            break
        rate = _funding_rate(f_off, f_hour, f_rate, s, hour * HOUR_NS, params[P_FUNDING])
        if rate == 0.0:
            continue
        for k in range(n_strategies):
            j = k * n_symbols + s
            pos = slot_f[j, POS]
            if pos != 0.0:
                payment = pos * c * rate
                acct_f[CASH] -= payment
                acct_f[FUNDING] += payment
                strat_f[k, PNL] -= payment
    sym_f[s, LAST_CLOSE] = c
    equity = _equity(acct_f, slot_f, sym_f, n_symbols)
    close_ts = bar_ts + interval
    if acct_f[DAILY_TRIPPED] == 0.0 and equity < acct_f[DAY_START] * (1.0 - params[P_DAILY_LOSS]):
        acct_f[DAILY_TRIPPED] = 1.0
        n = _emit(ev_i, ev_f, n, EV_BREAKER, close_ts, -1, -1, R_DAILY, -1, 0, 0.0, 0.0, 0.0, 0.0, equity)
        if params[P_FLATTEN] != 0.0:
            n = _close_all(acct_f, slot_f, slot_i, sym_f, strat_f, params, ev_i, ev_f, n, close_ts, n_symbols,
                           R_FLATTEN, -1)
            equity = _equity(acct_f, slot_f, sym_f, n_symbols)
    if equity > acct_f[PEAK]:
        acct_f[PEAK] = equity
    if acct_f[DD_TRIPPED] == 0.0 and equity < acct_f[PEAK] * (1.0 - params[P_MAX_DD]):
        acct_f[DD_TRIPPED] = 1.0
        n = _emit(ev_i, ev_f, n, EV_BREAKER, close_ts, -1, -1, R_DRAWDOWN, -1, 0, 0.0, 0.0, 0.0, 0.0, equity)
    return n


@njit(cache=True)
def step(acct_f, acct_i, slot_f, slot_i, sym_f, sym_bar, strat_f, ring, params,
         ts, now, bar_ts, k_idx, s_idx, target, leverage, stop_loss, take_profit, bar_o, bar_h, bar_l, bar_c,
         start, ev_i, ev_f, eq_i, eq_f, f_off, f_hour, f_rate):
    """Process signal rows from `start` until the input or the event buffer ends; returns (next row, events, equity rows).

    The caller sizes the event buffer; a row is only started when room for its worst case is left.
    """
    n_symbols = sym_f.shape[0]
    n_strategies = strat_f.shape[0]
    worst = 2 * slot_f.shape[0] + 8
    n = 0
    m = 0
    i = start
    rows = ts.shape[0]
    window = np.int64(params[P_WINDOW])
    while i < rows:
        if ev_i.shape[0] - n < worst or eq_i.shape[0] - m < 1:
            break
        s = s_idx[i]
        k = k_idx[i]
        bar = bar_ts[i]
        o, h, lo, c = bar_o[i], bar_h[i], bar_l[i], bar_c[i]
        if s < 0:
            # the row index travels in the seq field so the wrapper can name the unlisted symbol
            n = _emit(ev_i, ev_f, n, EV_REJECT, ts[i], k, s, R_UNKNOWN_SYMBOL, bar, i, 0.0, 0.0, 0.0, 0.0, target[i])
            i += 1
            continue
        j = k * n_symbols + s
        prices_ok = lo > 0.0 and lo <= o and o <= h and lo <= c and c <= h and h < np.inf
        interval = np.int64(params[P_INTERVAL])
        # a row is judged on its own stamp and on its bar's close: a fresh stamp on an old bar is stale too
        reject = -1
        if now[i] - ts[i] > params[P_MAX_AGE] or now[i] - (bar + interval) > params[P_MAX_AGE]:
            reject = R_STALE
        elif ts[i] - now[i] > params[P_MAX_SKEW] or (bar + interval) - now[i] > params[P_MAX_SKEW] + interval:
            reject = R_FUTURE
        if not prices_ok:
            reject = R_BAD_PRICE  # before staleness: a malformed bar must not move the market even when late
        elif bar < sym_bar[s]:
            reject = R_OLD_BAR
        if reject == R_STALE and bar > sym_bar[s]:
            # a late row's bar is real history: stops, liquidations and funding still happen on it
            n = _market(acct_f, acct_i, slot_f, slot_i, sym_f, strat_f, params, ev_i, ev_f, n, s, bar, o, h, lo, c,
                        n_symbols, n_strategies, f_off, f_hour, f_rate)
            sym_bar[s] = bar
        if reject >= 0:
            # a rejected decision; a future or malformed row never moves the market: its bar may be bogus
            n = _reject(acct_i, slot_i, slot_f, j, ev_i, ev_f, n, ts[i], k, s, reject, bar, 0.0, 0.0, target[i])
            i += 1
            continue
        if bar > sym_bar[s]:
            n = _market(acct_f, acct_i, slot_f, slot_i, sym_f, strat_f, params, ev_i, ev_f, n, s, bar, o, h, lo, c,
                        n_symbols, n_strategies, f_off, f_hour, f_rate)
            sym_bar[s] = bar
        tgt = target[i]
        lev = leverage[i]
        if bar <= slot_i[j, LAST_DECIDED]:
            reject = R_DUPLICATE
        elif not (tgt >= -1.0 and tgt <= 1.0):
            reject = R_BAD_TARGET
        elif lev == lev and not (lev > 0.0 and lev < np.inf):
            reject = R_BAD_LEVERAGE
        if reject >= 0:
            n = _reject(acct_i, slot_i, slot_f, j, ev_i, ev_f, n, ts[i], k, s, reject, bar, 0.0, 0.0, tgt)
        else:
            slot_i[j, LAST_DECIDED] = bar
            n = _decide(acct_f, acct_i, slot_f, slot_i, sym_f, strat_f, ring, params, ev_i, ev_f, n, i, j, k, s,
                        ts[i], bar, tgt, lev, stop_loss[i], take_profit[i], c, window)
        eq_i[m, 0] = ts[i]
        eq_i[m, 1] = k
        eq_i[m, 2] = s
        eq_f[m, 0] = acct_f[EQUITY]
        eq_f[m, 1] = slot_f[j, POS]
        eq_f[m, 2] = strat_f[k, PNL] + _unrealised(slot_f, sym_f, k, n_symbols)
        eq_f[m, 3] = 1.0 - acct_f[EQUITY] / acct_f[PEAK] if acct_f[PEAK] > 0.0 else 0.0
        eq_f[m, 4] = slot_f[j, POS] * sym_f[s, LAST_CLOSE]
        m += 1
        i += 1
    return i, n, m


@njit(cache=True)
def _unrealised(slot_f, sym_f, k, n_symbols):
    total = 0.0
    for s in range(n_symbols):
        j = k * n_symbols + s
        pos = slot_f[j, POS]
        if pos != 0.0:
            total += pos * (sym_f[s, LAST_CLOSE] - slot_f[j, ENTRY])
    return total


@njit(cache=True)
def _margin(slot_f, sym_f, jj, n_symbols):
    """Margin a slot holds or has ordered: |position + pending| at the last close over its leverage."""
    size = abs(slot_f[jj, POS] + slot_f[jj, PEND])
    if size == 0.0:
        return 0.0
    lev = slot_f[jj, PEND_LEV] if slot_f[jj, PEND] != 0.0 else slot_f[jj, LEV]
    return size * sym_f[jj % n_symbols, LAST_CLOSE] / max(lev, 1.0)


@njit(cache=True)
def _decide(acct_f, acct_i, slot_f, slot_i, sym_f, strat_f, ring, params, ev_i, ev_f, n, i, j, k, s, ts, bar, tgt,
            lev, sl, tp, c, window):
    """The risk engine for one accepted decision; may emit an order, a rejection and risk notes."""
    n_symbols = sym_f.shape[0]
    requested = lev if lev == lev else 1.0
    cap = min(strat_f[k, STRAT_MAX_LEV], sym_f[s, MAX_LEV])
    lev = min(requested, cap)
    if lev < requested:
        n = _emit(ev_i, ev_f, n, EV_RISK, ts, k, s, R_CLIP_LEVERAGE, bar, 0, 0.0, 0.0, c, 0.0, lev)
    equity = max(acct_f[EQUITY], 0.0)
    pos = slot_f[j, POS]
    # the strategy's exposure is shared by the symbols it has decided on: target 1 on each uses all of it, not n
    # times it (a symbol's first decision may find its share taken; the strategy cap below holds regardless)
    traded = 0
    for ss in range(n_symbols):
        if slot_i[k * n_symbols + ss, LAST_DECIDED] >= 0:
            traded += 1
    desired = tgt * strat_f[k, EXPOSURE] * equity * lev / c / max(traded, 1)
    # a stop or take profit must be a real price on the loss (profit) side of the position it protects
    side = desired  # an exit is never refused for the stop or take profit that came with it
    if sl == sl and side != 0.0 and not ((side > 0.0 and 0.0 < sl and sl < c) or (side < 0.0 and c < sl and sl < np.inf)):
        return _reject(acct_i, slot_i, slot_f, j, ev_i, ev_f, n, ts, k, s, R_BAD_STOP, bar, abs(desired - pos), c, sl)
    if tp == tp and side != 0.0 and not ((side > 0.0 and c < tp and tp < np.inf) or (side < 0.0 and 0.0 < tp and tp < c)):
        return _reject(acct_i, slot_i, slot_f, j, ev_i, ev_f, n, ts, k, s, R_BAD_TP, bar, abs(desired - pos), c, tp)
    # a moved (e.g. trailing) stop or take profit applies to the position held now, when valid for its side
    keeps_side = pos != 0.0 and (desired == 0.0 or (desired > 0.0) == (pos > 0.0))
    if keeps_side and sl == sl and ((pos > 0.0 and 0.0 < sl and sl < c) or (pos < 0.0 and c < sl and sl < np.inf)):
        slot_f[j, STOP] = sl
    if keeps_side and tp == tp and ((pos > 0.0 and c < tp and tp < np.inf) or (pos < 0.0 and 0.0 < tp and tp < c)):
        slot_f[j, TP] = tp
    blocked = acct_f[DAILY_TRIPPED] != 0.0 or acct_f[DD_TRIPPED] != 0.0 or acct_f[KILLED] != 0.0
    if blocked:
        # reduce only: keep the side, never grow
        if pos == 0.0 or (desired > 0.0) != (pos > 0.0):
            limited = 0.0
        else:
            limited = desired if abs(desired) < abs(pos) else pos
        if limited != desired:
            if limited == pos:
                return _reject(acct_i, slot_i, slot_f, j, ev_i, ev_f, n, ts, k, s, R_BREAKER, bar, 0.0, c, tgt)
            n = _emit(ev_i, ev_f, n, EV_RISK, ts, k, s, R_BREAKER, bar, 0, 0.0, abs(desired - limited), c, 0.0, tgt)
            desired = limited
    # exposure: margin held or ordered by the strategy's other slots, and by every other slot of the account
    other = 0.0
    mine = 0.0
    for jj in range(slot_f.shape[0]):
        if jj != j:
            held = _margin(slot_f, sym_f, jj, n_symbols)
            other += held
            if jj // n_symbols == k:
                mine += held
    room = min(params[P_ACCOUNT_EXPOSURE] * equity - other, strat_f[k, EXPOSURE] * equity - mine)
    margin = abs(desired) * c / lev
    if margin > 0.0 and margin > room + 1e-9 * max(equity, 1.0):
        cut = (1.0 if desired > 0.0 else -1.0) * max(room, 0.0) * lev / c
        if abs(desired - cut) > params[P_REBALANCE] * max(abs(pos), abs(cut)):
            # a real cut; one inside the rebalance band is equity or price drift and changes no order
            n = _emit(ev_i, ev_f, n, EV_RISK, ts, k, s, R_CLIP_EXPOSURE, bar, 0, 0.0, abs(desired - cut), c, 0.0, tgt)
        desired = cut
    delta = desired - pos
    closing = desired == 0.0 and pos != 0.0
    same_side = pos != 0.0 and desired != 0.0 and (pos > 0.0) == (desired > 0.0)
    if delta == 0.0 or (same_side and abs(delta) < params[P_REBALANCE] * abs(pos)):
        slot_i[j, LAST_REJECT] = -1  # accepted, nothing to do (a drift of equity or price is no new decision)
        return n
    if abs(delta) * c < params[P_MIN_NOTIONAL] and not closing:
        if same_side:
            slot_i[j, LAST_REJECT] = -1
            return n
        return _reject(acct_i, slot_i, slot_f, j, ev_i, ev_f, n, ts, k, s, R_BELOW_MIN, bar, abs(delta), c, tgt)
    # order rate limit: a ring of the last `window` order times
    pos_ring = acct_i[RING_POS] % ring.shape[0]
    if ts - ring[pos_ring] < 60_000_000_000 and not closing:
        return _reject(acct_i, slot_i, slot_f, j, ev_i, ev_f, n, ts, k, s, R_RATE_LIMIT, bar, abs(delta), c, tgt)
    ring[pos_ring] = ts
    acct_i[RING_POS] += 1
    slot_i[j, LAST_REJECT] = -1
    acct_i[SEQ] += 1
    slot_f[j, PEND] = delta
    slot_f[j, PEND_SL] = sl
    slot_f[j, PEND_TP] = tp
    slot_f[j, PEND_LEV] = lev
    slot_i[j, PEND_BAR] = bar
    slot_i[j, PEND_SEQ] = acct_i[SEQ]
    if pos == 0.0:
        reason = R_ENTRY
    elif desired == 0.0:
        reason = R_EXIT
    elif (pos > 0.0) != (desired > 0.0):
        reason = R_FLIP
    elif abs(desired) > abs(pos):
        reason = R_ENTRY
    else:
        reason = R_REDUCE
    return _emit(ev_i, ev_f, n, EV_ORDER, ts, k, s, reason, bar, acct_i[SEQ], 1.0 if delta > 0.0 else -1.0,
                 abs(delta), c, 0.0, tgt)


@njit(cache=True)
def flatten(acct_f, slot_f, slot_i, sym_f, strat_f, params, ev_i, ev_f, ts, reason):
    """Kill switch / manual flatten: cancel every pending order and close every position at the last close."""
    n = _close_all(acct_f, slot_f, slot_i, sym_f, strat_f, params, ev_i, ev_f, 0, ts, sym_f.shape[0], reason, -1)
    _equity(acct_f, slot_f, sym_f, sym_f.shape[0])
    return n

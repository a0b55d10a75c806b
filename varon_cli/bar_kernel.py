"""The compiled loop behind `varon bars`: one pass, any batch size, live or file.

A file is one long batch and a live stream many short ones; both run this same
loop with state carried between calls, so a bar computed live equals the bar
computed later from the recorded trades by construction.

Event time and closing
    M is the largest event time seen (a trade's ts, a finer bar's open time, or
    an upstream watermark). The frontier F = floor((M - lateness) / interval) is the
    first bucket still open: every bucket below F is closed and emitted, for
    every symbol seen so far, empty buckets included (OHLC = previous close).
    A record whose bucket is below F arrived too late and is counted, not used.

State layout (per symbol s, ring slot k = bucket % K, K = lateness/interval + 2)
    slot_i[s, k] = bucket, open_ts, close_ts, trades, partial
    slot_f[s, k] = open, high, low, close, volume, buy_volume, notional
    sym_i[s]     = known, first_bucket, first_ts
    sym_f[s]     = last close
    g            = M, F, F_is_set, late_count, first_late_row, error_code, error_row
"""

from __future__ import annotations

import numba
import numpy as np

UNSET = np.iinfo(np.int64).min
NEVER = np.iinfo(np.int64).max

# g[] indices
G_M, G_F, G_FSET, G_LATE, G_FIRST_LATE, G_ERR, G_ERR_ROW = range(7)
G_SIZE = 7
# slot_i[..., j]
SI_BUCKET, SI_OPEN_TS, SI_CLOSE_TS, SI_N, SI_PARTIAL = range(5)
# slot_f[..., j]
SF_OPEN, SF_HIGH, SF_LOW, SF_CLOSE, SF_VOL, SF_BVOL, SF_PV = range(7)
# out_f[j, row]
OF_OPEN, OF_HIGH, OF_LOW, OF_CLOSE, OF_VOL, OF_BVOL, OF_VWAP = range(7)
# error codes
ERR_NONE, ERR_PRICE, ERR_SIZE, ERR_SIDE, ERR_CAPACITY = range(5)


@numba.njit(cache=True, inline="always")
def _emit(s, b, interval, horizon, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p, count):
    k = b % slot_i.shape[1]
    if count >= out_i.shape[1]:
        g[G_ERR] = ERR_CAPACITY
        return count
    ts0 = b * interval
    out_i[0, count] = ts0
    out_i[1, count] = s
    if slot_i[s, k, SI_BUCKET] == b:
        vol = slot_f[s, k, SF_VOL]
        close = slot_f[s, k, SF_CLOSE]
        out_f[OF_OPEN, count] = slot_f[s, k, SF_OPEN]
        out_f[OF_HIGH, count] = slot_f[s, k, SF_HIGH]
        out_f[OF_LOW, count] = slot_f[s, k, SF_LOW]
        out_f[OF_CLOSE, count] = close
        out_f[OF_VOL, count] = vol
        out_f[OF_BVOL, count] = slot_f[s, k, SF_BVOL]
        out_f[OF_VWAP, count] = slot_f[s, k, SF_PV] / vol if vol > 0 else close
        out_i[2, count] = slot_i[s, k, SI_N]
        partial = slot_i[s, k, SI_PARTIAL] != 0
        slot_i[s, k, SI_BUCKET] = UNSET
        sym_f[s] = close
    else:
        last = sym_f[s]
        out_f[OF_OPEN, count] = last
        out_f[OF_HIGH, count] = last
        out_f[OF_LOW, count] = last
        out_f[OF_CLOSE, count] = last
        out_f[OF_VOL, count] = 0.0
        out_f[OF_BVOL, count] = 0.0
        out_f[OF_VWAP, count] = last
        out_i[2, count] = 0
        partial = False
    if b == sym_i[s, 1] and sym_i[s, 2] > ts0:
        partial = True  # data started after this bar opened
    if ts0 + interval > horizon:
        partial = True  # input ended before this bar's end
    out_p[count] = partial
    return count + 1


@numba.njit(cache=True)
def _close_until(f_new, interval, n_sym, horizon, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p, count):
    """Emit every bucket below f_new, in bucket order, then symbol order."""
    b = g[G_F]
    while b < f_new:
        for s in range(n_sym):
            if sym_i[s, 0] != 0 and sym_i[s, 1] <= b:
                count = _emit(s, b, interval, horizon, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p, count)
        b += 1
    g[G_F] = f_new
    return count


@numba.njit(cache=True)
def _advance(m_new, interval, lateness, n_sym, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p, count):
    if g[G_FSET] != 0 and m_new <= g[G_M]:
        return count
    if g[G_FSET] == 0 or m_new > g[G_M]:
        g[G_M] = m_new
    f_new = (g[G_M] - lateness) // interval
    if g[G_FSET] == 0:
        g[G_F] = f_new
        g[G_FSET] = 1
        return count
    if f_new > g[G_F]:
        count = _close_until(f_new, interval, n_sym, NEVER, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p, count)
    return count


@numba.njit(cache=True)
def aggregate(
    ts, sym, sym_const, o, h, lo, c, v, bv, vwap, n_in, p_in, buy,
    interval, lateness, n_sym, row_offset,
    g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p,
):
    """Fold records into bars, emitting closed bars; returns the number of rows written.

    Trades pass o=h=lo=c=price, v=size, buy=taker-buy flags and empty bv/vwap/n_in/p_in.
    Finer bars pass every column and an empty buy; their open time is their
    event time (a finer bar's end is only known complete for all symbols when
    the next one, or a watermark, arrives). `sym` may be
    empty when every record has the symbol code `sym_const`.
    """
    count = 0
    n = ts.shape[0]
    is_trades = buy.shape[0] == n and n > 0
    # M and F live in locals on the hot path; g[] is synced around the rare
    # calls that close bars.
    m = g[G_M]
    f = g[G_F]
    fset = g[G_FSET] != 0
    for i in range(n):
        t = ts[i]
        price = c[i]
        size = v[i]
        if not (price > 0.0 and price < np.inf):
            g[G_ERR] = ERR_PRICE
            g[G_ERR_ROW] = row_offset + i
            g[G_M] = m
            return count
        if not (size >= 0.0 and size < np.inf):
            g[G_ERR] = ERR_SIZE
            g[G_ERR_ROW] = row_offset + i
            g[G_M] = m
            return count
        b = t // interval
        if fset and b < f:
            if g[G_LATE] == 0:
                g[G_FIRST_LATE] = row_offset + i
            g[G_LATE] += 1
            continue
        if not fset or t > m:
            if fset and (t - lateness) // interval <= f:
                m = t  # time moved on but no bar closes: the common case
            else:
                g[G_M] = m
                count = _advance(t, interval, lateness, n_sym, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p, count)
                m = g[G_M]
                f = g[G_F]
                fset = True
                if g[G_ERR] != 0:
                    return count
        s = sym_const if sym.shape[0] == 0 else sym[i]
        if sym_i[s, 0] == 0:
            sym_i[s, 0] = 1
            sym_i[s, 1] = b
            sym_i[s, 2] = t
        elif b < sym_i[s, 1] or (b == sym_i[s, 1] and t < sym_i[s, 2]):
            sym_i[s, 1] = b
            sym_i[s, 2] = t
        k = b % slot_i.shape[1]
        if is_trades:
            op = price
            hi = price
            lw = price
            bvol = size if buy[i] else 0.0
            pv = price * size
            cnt = 1
            part = 0
        else:
            op = o[i]
            hi = h[i]
            lw = lo[i]
            bvol = bv[i]
            pv = vwap[i] * size
            cnt = n_in[i]
            part = 1 if p_in[i] else 0
        if slot_i[s, k, SI_BUCKET] != b:
            slot_i[s, k, SI_BUCKET] = b
            slot_i[s, k, SI_OPEN_TS] = t
            slot_i[s, k, SI_CLOSE_TS] = t
            slot_i[s, k, SI_N] = cnt
            slot_i[s, k, SI_PARTIAL] = part
            slot_f[s, k, SF_OPEN] = op
            slot_f[s, k, SF_HIGH] = hi
            slot_f[s, k, SF_LOW] = lw
            slot_f[s, k, SF_CLOSE] = price
            slot_f[s, k, SF_VOL] = size
            slot_f[s, k, SF_BVOL] = bvol
            slot_f[s, k, SF_PV] = pv
        else:
            if t < slot_i[s, k, SI_OPEN_TS]:
                slot_i[s, k, SI_OPEN_TS] = t
                slot_f[s, k, SF_OPEN] = op
            if t >= slot_i[s, k, SI_CLOSE_TS]:
                slot_i[s, k, SI_CLOSE_TS] = t
                slot_f[s, k, SF_CLOSE] = price
            if hi > slot_f[s, k, SF_HIGH]:
                slot_f[s, k, SF_HIGH] = hi
            if lw < slot_f[s, k, SF_LOW]:
                slot_f[s, k, SF_LOW] = lw
            slot_f[s, k, SF_VOL] += size
            slot_f[s, k, SF_BVOL] += bvol
            slot_f[s, k, SF_PV] += pv
            slot_i[s, k, SI_N] += cnt
            slot_i[s, k, SI_PARTIAL] |= part
    g[G_M] = m
    return count


@numba.njit(cache=True)
def advance_to(m_new, interval, lateness, n_sym, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p):
    """An upstream watermark: event time reached m_new with no record."""
    return _advance(m_new, interval, lateness, n_sym, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p, 0)


@numba.njit(cache=True)
def flush(interval, covered, n_sym, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p):
    """End of input: emit every open bucket up to the last one holding data.

    `covered` is how far past the event time the input is known complete (a
    finer bar's length; 0 for trades): a bar ending beyond is flagged partial."""
    last = UNSET
    for s in range(n_sym):
        for k in range(slot_i.shape[1]):
            if slot_i[s, k, SI_BUCKET] != UNSET and slot_i[s, k, SI_BUCKET] > last:
                last = slot_i[s, k, SI_BUCKET]
    if last == UNSET or g[G_FSET] == 0:
        return 0
    return _close_until(last + 1, interval, n_sym, g[G_M] + covered, g, slot_i, slot_f, sym_i, sym_f, out_i, out_f, out_p, 0)

"""Compiled indicator kernels, each a recurrence over (state, inputs) -> outputs.

A kernel runs over any number of rows and leaves its state ready for the next
call. The batch path calls it once over a whole file; the live path calls the
same compiled code once per bar. Same code, same operations in the same order:
batch and incremental values are identical to the bit.

The seeding of EMA, MACD, RSI (Wilder) and ATR follows TA-Lib's published
algorithms (SMA seed, the same update expressions), so values agree with it
after warm-up. Rolling mean and deviation keep O(1) sums relative to an anchor and are
recomputed exactly from the window every `period` bars, so they cannot drift
over months of live data the way TA-Lib's plain running sums can. A NaN output means "not enough bars yet".
"""

from __future__ import annotations

import math

import numba
import numpy as np

NAN = np.nan
NS_PER_DAY = 86_400_000_000_000
TWO_PI = 2.0 * math.pi


@numba.njit(cache=True)
def ema_ratio(state, close, period, out):
    """close / EMA(close) - 1. state = [count, seed_sum, ema]."""
    k = 2.0 / (period + 1)
    for i in range(close.shape[0]):
        x = close[i]
        cnt = state[0]
        if cnt < period:
            state[1] += x
            state[0] = cnt + 1
            if cnt + 1 == period:
                state[2] = state[1] / period
                out[i] = x / state[2] - 1.0
            else:
                out[i] = NAN
        else:
            state[2] = ((x - state[2]) * k) + state[2]
            out[i] = x / state[2] - 1.0


@numba.njit(cache=True)
def macd(state, close, fast, slow, signal, out_line, out_signal, out_hist):
    """MACD as TA-Lib computes it: both EMAs start at bar slow-1, the fast one
    seeded with the SMA of the last `fast` closes there; the signal EMA is seeded
    with the SMA of the first `signal` MACD values.
    state = [count, slow_sum, fast_sum, slow_ema, fast_ema, sig_count, sig_sum, sig_ema]."""
    k_slow = 2.0 / (slow + 1)
    k_fast = 2.0 / (fast + 1)
    k_sig = 2.0 / (signal + 1)
    for i in range(close.shape[0]):
        x = close[i]
        cnt = state[0]
        out_line[i] = NAN
        out_signal[i] = NAN
        out_hist[i] = NAN
        if cnt < slow:
            state[1] += x
            if cnt >= slow - fast:
                state[2] += x
            state[0] = cnt + 1
            if cnt + 1 < slow:
                continue
            state[3] = state[1] / slow
            state[4] = state[2] / fast
        else:
            state[3] = ((x - state[3]) * k_slow) + state[3]
            state[4] = ((x - state[4]) * k_fast) + state[4]
        line = state[4] - state[3]
        if state[5] < signal:
            state[6] += line
            state[5] += 1
            if state[5] < signal:
                continue
            state[7] = state[6] / signal
        else:
            state[7] = ((line - state[7]) * k_sig) + state[7]
        out_line[i] = line
        out_signal[i] = state[7]
        out_hist[i] = line - state[7]


@numba.njit(cache=True)
def rsi(state, close, period, out):
    """Wilder's RSI, 0..100 (50 when the window has no movement at all).
    state = [count, prev_close, avg_gain, avg_loss]."""
    for i in range(close.shape[0]):
        x = close[i]
        cnt = state[0]
        state[0] = cnt + 1
        if cnt == 0:
            state[1] = x
            out[i] = NAN
            continue
        change = x - state[1]
        state[1] = x
        if cnt <= period:
            if change < 0:
                state[3] -= change
            else:
                state[2] += change
            if cnt < period:
                out[i] = NAN
                continue
            state[3] /= period
            state[2] /= period
        else:
            state[3] *= period - 1
            state[2] *= period - 1
            if change < 0:
                state[3] -= change
            else:
                state[2] += change
            state[3] /= period
            state[2] /= period
        total = state[2] + state[3]
        out[i] = 100.0 * (state[2] / total) if total != 0.0 else 50.0


@numba.njit(cache=True)
def natr(state, high, low, close, period, out):
    """Average true range (Wilder, SMA seed) divided by the close.
    state = [count, prev_close, tr_sum, atr]."""
    for i in range(close.shape[0]):
        cnt = state[0]
        state[0] = cnt + 1
        if cnt == 0:
            state[1] = close[i]
            out[i] = NAN
            continue
        prev = state[1]
        tr = high[i] - low[i]
        up = abs(prev - high[i])
        if up > tr:
            tr = up
        down = abs(prev - low[i])
        if down > tr:
            tr = down
        state[1] = close[i]
        if cnt <= period:
            state[2] += tr
            if cnt < period:
                out[i] = NAN
                continue
            state[3] = state[2] / period
        else:
            state[3] = (state[3] * (period - 1) + tr) / period
        out[i] = state[3] / close[i]


RING_HEADER = 6  # count, pos, anchor, sum(x - anchor), sum((x - anchor)^2), pushes since resync


@numba.njit(cache=True, inline="always")
def _ring_push(state, x, period):
    """Push x into the window; returns True once the window is full.

    state = [count, pos, anchor, s1, s2, since_resync, ring[0..period)]. The sums
    are kept relative to an anchor near the data (no cancellation for prices far
    from zero) and recomputed exactly from the ring every `period` pushes, so
    rounding cannot drift over a long live run; updates are O(1) in between."""
    pos = int(state[1])
    slot = RING_HEADER + pos
    anchor = state[2]
    if state[0] >= period:
        d_old = state[slot] - anchor
        state[3] -= d_old
        state[4] -= d_old * d_old
    else:
        state[0] += 1
    state[slot] = x
    d = x - anchor
    state[3] += d
    state[4] += d * d
    state[1] = (pos + 1) % period
    state[5] += 1
    if state[5] >= period:  # exact resync around the newest value
        state[5] = 0
        anchor = x
        state[2] = anchor
        s1 = 0.0
        s2 = 0.0
        for j in range(RING_HEADER, RING_HEADER + int(state[0])):
            dj = state[j] - anchor
            s1 += dj
            s2 += dj * dj
        state[3] = s1
        state[4] = s2
    return state[0] >= period


@numba.njit(cache=True, inline="always")
def _ring_mean_std(state, period):
    """Mean and population standard deviation of the full window."""
    m1 = state[3] / period
    var = state[4] / period - m1 * m1
    return state[2] + m1, math.sqrt(var) if var > 0.0 else 0.0


@numba.njit(cache=True)
def bollinger_pctb(state, close, period, nbdev, out):
    """Bollinger %B: where the close sits between the bands (0.5 when the bands have no width)."""
    for i in range(close.shape[0]):
        if not _ring_push(state, close[i], period):
            out[i] = NAN
            continue
        mean, std = _ring_mean_std(state, period)
        width = 2.0 * nbdev * std
        out[i] = (close[i] - (mean - nbdev * std)) / width if width > 0.0 else 0.5


@numba.njit(cache=True)
def zscore(state, x, period, out):
    """(x - rolling mean) / rolling population std (0 when the window is flat)."""
    for i in range(x.shape[0]):
        if not _ring_push(state, x[i], period):
            out[i] = NAN
            continue
        mean, std = _ring_mean_std(state, period)
        out[i] = (x[i] - mean) / std if std > 0.0 else 0.0


@numba.njit(cache=True)
def realized_vol(state, close, period, out):
    """Population std of the last `period` one-bar log returns.
    state = [has_prev, prev_close, window state...]."""
    ring = state[2:]
    for i in range(close.shape[0]):
        x = close[i]
        if state[0] == 0.0:
            state[0] = 1.0
            state[1] = x
            out[i] = NAN
            continue
        r = math.log(x / state[1])
        state[1] = x
        if not _ring_push(ring, r, period):
            out[i] = NAN
            continue
        _, std = _ring_mean_std(ring, period)
        out[i] = std


@numba.njit(cache=True)
def log_return(state, close, horizon, out):
    """log(close_t / close_{t-horizon}). state = [count, pos, ring of the last `horizon` closes]."""
    for i in range(close.shape[0]):
        x = close[i]
        cnt = state[0]
        pos = int(state[1])
        old = state[2 + pos]
        state[2 + pos] = x
        state[1] = (pos + 1) % horizon
        if cnt < horizon:
            state[0] = cnt + 1
            out[i] = NAN
        else:
            out[i] = math.log(x / old)


@numba.njit(cache=True)
def taker_buy_ratio(buy_volume, volume, out):
    """Share of volume bought by takers (0.5 for an empty bar, NaN when the source does not say)."""
    for i in range(volume.shape[0]):
        out[i] = buy_volume[i] / volume[i] if volume[i] > 0.0 else (0.5 if buy_volume[i] == buy_volume[i] else NAN)


@numba.njit(cache=True)
def vwap_deviation(close, vwap, out):
    """close / vwap - 1."""
    for i in range(close.shape[0]):
        out[i] = close[i] / vwap[i] - 1.0


@numba.njit(cache=True)
def time_encoding(ts, out_day_sin, out_day_cos, out_week_sin, out_week_cos):
    """Cyclical time of day and day of week (Monday 00:00 = angle 0) of the bar's open time, UTC."""
    for i in range(ts.shape[0]):
        t = ts[i]
        day_frac = (t % NS_PER_DAY) / NS_PER_DAY
        out_day_sin[i] = math.sin(TWO_PI * day_frac)
        out_day_cos[i] = math.cos(TWO_PI * day_frac)
        days = t // NS_PER_DAY
        week_frac = (((days + 3) % 7) + day_frac) / 7.0  # 1970-01-01 was a Thursday
        out_week_sin[i] = math.sin(TWO_PI * week_frac)
        out_week_cos[i] = math.cos(TWO_PI * week_frac)

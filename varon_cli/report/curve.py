"""Vectorised primitives over an equity path: per-bar returns, drawdowns, underwater runs.

An equity *path* here is the initial equity followed by the equity at the end
of each bar, so a run of n bars has n + 1 points and n returns. Prepending the
initial equity makes the first bar's profit count like every other bar's.
"""

from __future__ import annotations

import numpy as np

# A drawdown smaller than this (as a fraction of the peak) is float noise from
# summing fills and funding, not a loss; it must not start an "underwater" run.
UNDERWATER_TOLERANCE = 1e-12


def simple_returns(path: np.ndarray) -> np.ndarray:
    """r[t] = path[t+1] / path[t] - 1.

    Once equity is at or below zero the account is ruined and nothing is left
    to trade: the returns that follow are 0 rather than a division by zero.
    The ruin bar itself keeps its true return (-1, or below when a leveraged
    account ends negative).
    """
    prev, cur = path[:-1], path[1:]
    out = np.zeros(cur.shape, dtype=np.float64)
    np.divide(cur - prev, prev, out=out, where=prev > 0)
    return out


def running_peak(path: np.ndarray) -> np.ndarray:
    """The highest equity seen so far at each point."""
    return np.maximum.accumulate(path) if path.size else path


def drawdowns(path: np.ndarray) -> np.ndarray:
    """Drawdown from the running peak as a positive fraction (0 at a new high, 1 at zero equity).

    It exceeds 1 when equity goes negative. A path that never had positive
    equity has no meaningful drawdown and reads 0.
    """
    peak = running_peak(path)
    out = np.zeros(path.shape, dtype=np.float64)
    np.divide(peak - path, peak, out=out, where=peak > 0)
    return out


def longest_run(mask: np.ndarray) -> int:
    """Length of the longest stretch of consecutive True values."""
    if not mask.any():
        return 0
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return int((ends - starts).max())

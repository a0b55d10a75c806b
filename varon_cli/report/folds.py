"""Walk-forward folds: contiguous time slices of a run, and the spread of a metric across them.

A metric from one long backtest hides whether the edge came from one lucky
month. Splitting the bars into consecutive folds (time order only, never
shuffled, so no fold sees the future of another) and reporting each metric's
mean, spread and extremes across folds shows how stable it is.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from varon_cli.report.metrics import Metrics

# Fields that say where or how long a fold is, not how it performed.
NOT_AGGREGATED = frozenset({"start_ns", "end_ns", "bar_interval_ns"})


def fold_bounds(ts_ns: np.ndarray, n: int) -> list[tuple[int, int]]:
    """Split a time-sorted series into `n` contiguous half-open index ranges [start, stop).

    The ranges cover every index exactly once, in order, with bar counts as
    equal as possible. A cut never falls between rows with the same timestamp
    (several symbols at one bar stay in one fold), so counts may then differ
    by more than one. Raises ValueError when `ts_ns` is not sorted or cannot
    give `n` non-empty folds.
    """
    ts = np.asarray(ts_ns)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ns]").astype(np.int64)
    size = ts.size
    if n < 1:
        raise ValueError(f"the number of folds must be at least 1, got {n}")
    if np.any(np.diff(ts) < 0):
        raise ValueError("fold_bounds needs timestamps sorted in time order")
    if size < n:
        raise ValueError(f"cannot split {size} rows into {n} non-empty folds")
    cuts = (np.arange(1, n, dtype=np.int64) * size) // n
    # move each cut back to the first row of its timestamp
    inner = np.searchsorted(ts, ts[cuts], side="left")
    edges = np.concatenate(([0], inner, [size]))
    if np.any(np.diff(edges) <= 0):
        raise ValueError(f"cannot split {size} rows ({np.unique(ts).size} distinct times) into {n} non-empty folds")
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def aggregate_folds(per_fold: list[Metrics]) -> dict[str, tuple[float, float, float, float]]:
    """(mean, std, min, max) of each numeric metric across folds.

    std is the sample standard deviation (ddof=1), NaN with a single fold.
    Non-finite values (a fold without trades has NaN win rate; one without
    losing trades an infinite profit factor) are left out of that metric's
    numbers; a metric with no finite value reads NaN in all four.
    """
    if not per_fold:
        return {}
    out: dict[str, tuple[float, float, float, float]] = {}
    for field in dataclasses.fields(Metrics):
        if field.name in NOT_AGGREGATED:
            continue
        values = np.array([float(getattr(m, field.name)) for m in per_fold], dtype=np.float64)
        values = values[np.isfinite(values)]
        if not values.size:
            out[field.name] = (math.nan,) * 4
            continue
        std = float(values.std(ddof=1)) if values.size > 1 else math.nan
        out[field.name] = (float(values.mean()), std, float(values.min()), float(values.max()))
    return out

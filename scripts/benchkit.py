"""Timing helpers every benchmark script shares: best-of-N timing and throughput text."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any


def rate(n: float, seconds: float, unit: str = "bars") -> str:
    """A throughput as text, scaled to k or M."""
    r = n / seconds if seconds > 0 else math.inf
    if r >= 1e6:
        return f"{r / 1e6:,.2f} M {unit}/s"
    if r >= 1e3:
        return f"{r / 1e3:,.1f} k {unit}/s"
    return f"{r:,.1f} {unit}/s"


def best_of(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> tuple[float, list[float], Any]:
    """(best seconds, all timed seconds, result of the first call). Timed results are dropped at once,
    so one run's memory never inflates the next run's time."""
    first = None
    for i in range(warmup):
        out = fn()
        if i == 0:
            first = out
        del out
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if first is None:
            first = out
        del out
    return min(times), times, first


def spread(times: list[float]) -> str:
    return "runs " + " ".join(f"{t:.3f}" for t in times) + " s"

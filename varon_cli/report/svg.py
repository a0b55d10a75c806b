"""Line charts as inline SVG, drawn here so the HTML report needs no library and no network.

A 525k-bar backtest cannot put every point in a page, and averaging would hide
the worst moment of a drawdown. `downsample` keeps, per bucket of bars, the
lowest and the highest point in their time order: the chart keeps its
extremes and at most about `MAX_POINTS` points per series.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MAX_POINTS = 2000
WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 78, 16, 30, 30
LEGEND_WIDTH = 170
PALETTE = ("#1f6fb4", "#e0731c", "#2a9d3f", "#c4332f", "#7b52ab", "#8c564b", "#d6589f", "#5f6b6d")


@dataclass(frozen=True)
class Series:
    """One line: its legend label, times in ns since the epoch, and values."""

    label: str
    x: np.ndarray
    y: np.ndarray


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points of (x, y) keeping each bucket's min and max, the first and the last.

    Non-finite values are dropped first: a gap in a chart is better than a crash.
    """
    keep = np.isfinite(y)
    x, y = np.asarray(x)[keep], np.asarray(y, dtype=np.float64)[keep]
    n = y.size
    if n <= max_points:
        return x, y
    buckets = max(1, (max_points - 2) // 2)
    width = -(-n // buckets)
    rows = -(-n // width)
    padded = np.concatenate((y, np.full(rows * width - n, y[-1]))).reshape(rows, width)
    base = np.arange(rows) * width
    lows = np.minimum(padded.argmin(axis=1) + base, n - 1)
    highs = np.minimum(padded.argmax(axis=1) + base, n - 1)
    index = np.unique(np.concatenate(([0, n - 1], lows, highs)))
    return x[index], y[index]


def line_chart(series: Sequence[Series], title: str, percent: bool = False, baseline: float | None = None) -> str:
    """An SVG chart of `series` on shared axes with a legend; values are fractions shown as % when `percent`.

    `baseline` draws a dashed reference line (e.g. at 0).
    """
    lines = [downsample(s.x, s.y) for s in series]
    head = (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
            f'role="img" aria-label="{html.escape(title)}">'
            f'<text x="{LEFT}" y="18" class="title">{html.escape(title)}</text>')
    xs = [x for x, _ in lines if x.size]
    if not xs:
        return head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text></svg>'
    x_lo, x_hi = min(int(x[0]) for x in xs), max(int(x[-1]) for x in xs)
    ys = [y for _, y in lines if y.size] + ([np.array([baseline])] if baseline is not None else [])
    y_lo, y_hi = _span(min(float(y.min()) for y in ys), max(float(y.max()) for y in ys))
    ticks = nice_ticks(y_lo, y_hi)
    y_lo, y_hi = min(y_lo, ticks[0]), max(y_hi, ticks[-1])

    def px(x: np.ndarray) -> np.ndarray:
        return LEFT + (x.astype(np.float64) - x_lo) / max(x_hi - x_lo, 1) * (WIDTH - LEFT - RIGHT)

    def py(y: np.ndarray) -> np.ndarray:
        return TOP + (y_hi - y) / (y_hi - y_lo) * (HEIGHT - TOP - BOTTOM)

    parts = [head, _axes(ticks, py, percent, x_lo, x_hi, px)]
    if baseline is not None:
        yb = float(py(np.array([baseline]))[0])
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yb:.1f}" y2="{yb:.1f}" class="base"/>')
    for i, (s, (x, y)) in enumerate(zip(series, lines)):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(x), py(y)))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{points}"/>')
        lx = WIDTH - RIGHT - LEGEND_WIDTH * (len(series) - i)
        parts.append(f'<rect x="{lx}" y="12" width="12" height="3" fill="{color}"/>'
                     f'<text x="{lx + 16}" y="17" class="legend">{html.escape(s.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    raw = (hi - lo) / max(target - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    count = int(math.ceil((hi - first) / step - 1e-9)) + 1
    return [first + k * step for k in range(count)]


def _span(lo: float, hi: float) -> tuple[float, float]:
    """A non-empty value range: a flat series gets a small band around its value."""
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.01 or 1.0
    return lo - pad, hi + pad


def _axes(ticks: list[float], py: Callable[[np.ndarray], np.ndarray], percent: bool,
          x_lo: int, x_hi: int, px: Callable[[np.ndarray], np.ndarray]) -> str:
    """Horizontal grid lines with value labels and five time labels along the bottom."""
    scale = 100.0 if percent else 1.0
    step = (ticks[1] - ticks[0]) * scale if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    suffix = "%" if percent else ""
    out = []
    for t in ticks:
        y = float(py(np.array([t]))[0])
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{t * scale:,.{decimals}f}{suffix}</text>')
    stamps = np.linspace(x_lo, x_hi, 5).astype(np.int64)
    fmt = "%Y-%m-%d" if x_hi - x_lo > 2 * 86400 * 10**9 else "%m-%d %H:%M"
    anchors = ("start", "middle", "middle", "middle", "end")
    for stamp, x, anchor in zip(stamps, px(stamps), anchors):
        label = dt.datetime.fromtimestamp(int(stamp) // 10**9, tz=dt.timezone.utc).strftime(fmt)
        out.append(f'<text x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="{anchor}" class="tick">{label}</text>')
    return "".join(out)

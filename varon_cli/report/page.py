"""The report as one self-contained HTML file: metrics table, charts, assumptions, conventions.

Everything is inline (CSS and SVG, no script), so the file opens offline, can
be mailed or archived beside the run, and shows the same thing in ten years.
It holds no wall-clock time: the same run writes the same bytes.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from varon_cli.report.curve import running_peak
from varon_cli.report.format import ROWS
from varon_cli.report.metrics import CONVENTIONS, Metrics
from varon_cli.report.svg import Series, line_chart

Curve = tuple[np.ndarray, np.ndarray]

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1d2329;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 12px;border-bottom:1px solid #e3e6e8;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #c9cfd3}
svg{display:block;margin:8px 0;max-width:100%;height:auto}
svg .title{font-weight:600;font-size:13px}svg .tick,svg .legend{font-size:11px;fill:#47525a}
svg .grid{stroke:#e3e6e8}svg .base{stroke:#8a959b;stroke-dasharray:4 3}
li{margin:2px 0}
"""


def render_html(results: Sequence[tuple[str, Metrics]], curves: Mapping[str, Curve],
                positions: Mapping[str, Curve], title: str, assumptions: Sequence[str]) -> str:
    """The page's text; `write_html` saves it."""
    initial = {name: m.initial_equity for name, m in results}
    equity = [Series(name, *_arrays(c)) for name, c in curves.items()]
    drawdown = [Series(s.label, s.x, _drawdown(s.y, initial.get(s.label))) for s in equity]
    exposure = [Series(name, *_arrays(c)) for name, c in positions.items()]
    stated = "".join(f"<li>{html.escape(a)}</li>" for a in assumptions) or "<li>The caller stated none.</li>"
    return "".join((
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Metrics</h2>", _metrics_table(results),
        "<h2>Charts</h2>",
        line_chart(equity, "Equity"),
        line_chart(drawdown, "Drawdown from peak", percent=True, baseline=0.0),
        line_chart(exposure, "Position (notional)", baseline=0.0),
        f'<h2 id="assumptions">Assumptions</h2><ul>{stated}</ul>',
        '<h2 id="conventions">How the metrics are computed</h2><ul>',
        "".join(f"<li>{html.escape(c)}</li>" for c in CONVENTIONS),
        "</ul></body></html>\n",
    ))


def write_html(path: str | os.PathLike[str], results: Sequence[tuple[str, Metrics]], curves: Mapping[str, Curve],
               positions: Mapping[str, Curve], title: str, *, assumptions: Sequence[str]) -> Path:
    """Write the report to `path` under a temporary name and rename it, so a reader never sees half a page.

    `curves` and `positions` map a result's name to (ts_ns, values) arrays;
    `assumptions` are the engine's own sentences (fill rule, fees, funding,
    stop rule), printed as given.
    """
    target = Path(path)
    text = render_html(results, curves, positions, title, assumptions)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _metrics_table(results: Sequence[tuple[str, Metrics]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in results)
    body = "".join(
        f"<tr><td>{html.escape(row.label)}</td>" + "".join(f"<td>{html.escape(row.write(m))}</td>" for _, m in results) + "</tr>"
        for row in ROWS
    )
    return f"<table><thead><tr><th>Metric</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def _arrays(curve: Curve) -> Curve:
    ts, values = curve
    ts = np.asarray(ts)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ns]")
    return ts.astype(np.int64, copy=False), np.asarray(values, dtype=np.float64)


def _drawdown(equity: np.ndarray, initial: float | None) -> np.ndarray:
    """Drawdown as a negative fraction below the peak, the peak including the initial equity when known."""
    peak = running_peak(equity)
    if initial is not None:
        peak = np.maximum(peak, initial)
    out = np.zeros(equity.shape)
    np.divide(equity - peak, peak, out=out, where=peak > 0)
    return out

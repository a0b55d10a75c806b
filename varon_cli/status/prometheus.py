"""The status report in the Prometheus text exposition format (version 0.0.4), served over HTTP.

One endpoint describes every varon process on the status directory, with
`command`, `label` and `pid` labels, plus the executors and the kill switch:
the process holding `status.prometheus_port` (the first long-running command
to bind it, or `varon status`) reads the metrics files on each scrape. When it
exits, the next process to try (every few seconds) takes the port over.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("varon.status")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, type, help; values come from `_samples`
FAMILIES = [
    ("varon_up", "gauge", "1 when the report could be made (always 1 when served)."),
    ("varon_healthy", "gauge", "1 when `varon status` would exit 0."),
    ("varon_problems", "gauge", "Number of health problems."),
    ("varon_process_ok", "gauge", "1 when the process is alive with a fresh heartbeat (0: stale, dead, feed lost)."),
    ("varon_process_alive", "gauge", "1 when the process's pid is running."),
    ("varon_process_heartbeat_age_seconds", "gauge", "Seconds since the process last published."),
    ("varon_process_uptime_seconds", "gauge", "Seconds since the process started."),
    ("varon_rows_in_total", "counter", "Rows (collect: frames) received."),
    ("varon_rows_out_total", "counter", "Rows written."),
    ("varon_rows_in_per_second", "gauge", "Input rate over the last second."),
    ("varon_rows_out_per_second", "gauge", "Output rate over the last second."),
    ("varon_lag_seconds", "gauge", "Now minus the event time of the last row or watermark handled."),
    ("varon_batch_seconds", "gauge", "Time spent on one batch, over the last 256 (quantile label)."),
    ("varon_feed_reconnects_total", "counter", "Reconnections of a live collector."),
    ("varon_feed_gaps_total", "counter", "Sequence, heartbeat and trade-id gaps seen by a collector."),
    ("varon_feed_stalls_total", "counter", "Connections dropped by the collector's watchdog."),
    ("varon_feed_up", "gauge", "1 while a live collector receives frames (0: down, lost, gave up)."),
    ("varon_executor_equity", "gauge", "Account equity (quote currency)."),
    ("varon_executor_pnl", "gauge", "Profit and loss of all strategies since the account started, unrealised included."),
    ("varon_executor_day_pnl", "gauge", "Equity change since the UTC day started."),
    ("varon_executor_drawdown_ratio", "gauge", "Drawdown from the equity peak."),
    ("varon_executor_exposure_ratio", "gauge", "Margin committed over equity (scope=account or a strategy)."),
    ("varon_executor_exposure_limit_ratio", "gauge", "The configured limit for that exposure."),
    ("varon_executor_leverage_ratio", "gauge", "Gross notional over equity."),
    ("varon_executor_position", "gauge", "Position size (base units) by strategy and symbol."),
    ("varon_executor_position_notional", "gauge", "Position notional at the last price, signed."),
    ("varon_executor_breaker_engaged", "gauge", "1 while a breaker is engaged (breaker=daily, drawdown, killed)."),
    ("varon_kill_switch_engaged", "gauge", "1 while the kill file exists in the state directory."),
]


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() or abs(value) >= 1e15 else str(int(value))


def _samples(report: dict[str, Any]) -> dict[str, list[tuple[dict[str, Any], float]]]:
    out: dict[str, list[tuple[dict[str, Any], float]]] = {name: [] for name, _, _ in FAMILIES}

    def add(name: str, labels: dict[str, Any], value: Any) -> None:
        if isinstance(value, (int, float)):  # None (not known yet) is left out
            out[name].append((labels, float(value)))

    add("varon_up", {}, 1)
    add("varon_healthy", {}, 1 if report["healthy"] else 0)
    add("varon_problems", {}, len(report["problems"]))
    for p in report["processes"]:
        labels = {"command": p.get("command"), "label": p.get("label"), "pid": p.get("pid")}
        add("varon_process_ok", labels, 1 if p["state"] == "ok" else 0)
        add("varon_process_alive", labels, 1 if p["alive"] else 0)
        add("varon_process_heartbeat_age_seconds", labels, p["heartbeat_age_s"])
        add("varon_process_uptime_seconds", labels, p["uptime_s"])
        add("varon_rows_in_total", labels, p.get("rows_in"))
        add("varon_rows_out_total", labels, p.get("rows_out"))
        add("varon_rows_in_per_second", labels, p.get("rate_in"))
        add("varon_rows_out_per_second", labels, p.get("rate_out"))
        add("varon_lag_seconds", labels, p.get("lag_s"))
        add("varon_batch_seconds", {**labels, "quantile": "0.5"}, p.get("latency_p50_s"))
        add("varon_batch_seconds", {**labels, "quantile": "0.99"}, p.get("latency_p99_s"))
        feed = p.get("feed")
        if feed:
            add("varon_feed_reconnects_total", labels, feed.get("reconnects"))
            add("varon_feed_gaps_total", labels, feed.get("gaps"))
            add("varon_feed_stalls_total", labels, feed.get("stalls"))
            if feed.get("state") != "replay":
                add("varon_feed_up", labels, 1 if feed.get("state") == "up" else 0)
    for ex in report["executors"]:
        if not ex.get("metrics"):
            continue
        labels = {"executor": ex.get("name"), "pid": ex.get("pid"), "venue": ex.get("venue")}
        add("varon_executor_equity", labels, ex.get("equity"))
        add("varon_executor_pnl", labels, ex.get("pnl"))
        add("varon_executor_day_pnl", labels, ex.get("day_pnl"))
        add("varon_executor_drawdown_ratio", labels, ex.get("drawdown"))
        exposure = ex.get("exposure") or {}
        add("varon_executor_exposure_ratio", {**labels, "scope": "account"}, exposure.get("fraction"))
        add("varon_executor_exposure_limit_ratio", {**labels, "scope": "account"}, exposure.get("limit"))
        for name, strat in (ex.get("strategies") or {}).items():
            add("varon_executor_exposure_ratio", {**labels, "scope": name}, strat.get("exposure"))
            add("varon_executor_exposure_limit_ratio", {**labels, "scope": name}, strat.get("limit"))
        add("varon_executor_leverage_ratio", labels, (ex.get("leverage") or {}).get("gross"))
        for pos in ex.get("positions") or []:
            where = {**labels, "strategy": pos.get("strategy"), "symbol": pos.get("symbol")}
            add("varon_executor_position", where, pos.get("size"))
            add("varon_executor_position_notional", where, pos.get("notional"))
        for name, engaged in (ex.get("breakers") or {}).items():
            add("varon_executor_breaker_engaged", {**labels, "breaker": name}, 1 if engaged else 0)
    add("varon_kill_switch_engaged", {"state_dir": report["state_dir"]}, 1 if report["kill_switch"]["engaged"] else 0)
    return out


def render(report: dict[str, Any]) -> str:
    """The report as Prometheus text: HELP and TYPE for each family with samples, then its samples."""
    lines = []
    samples = _samples(report)
    for name, kind, text in FAMILIES:
        rows = samples[name]
        if not rows:
            continue
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            if labels:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items() if v is not None)
                lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


class Endpoint:
    """GET /metrics answered from `provider()`; a daemon thread; `start` returns False when the port is taken."""

    def __init__(self, host: str, port: int, provider: Callable[[], dict[str, Any]]) -> None:
        self.host, self.port, self.provider = host, port, provider
        self.serving = False
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> bool:
        provider = self.provider

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "try /metrics")
                    return
                try:
                    body = render(provider()).encode()
                    code = 200
                except Exception as exc:  # noqa: BLE001 - a scrape error is an answer, not a crash
                    log.warning("status: Prometheus scrape failed: %s", exc)
                    body, code = f"# error: {exc}\nvaron_up 0\n".encode(), 500
                self.send_response(code)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                log.debug("status http: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            log.debug("status: Prometheus port %s:%d not available: %s", self.host, self.port, exc)
            return False
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="varon-prometheus",
                         daemon=True).start()
        self.serving = True
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.serving = False

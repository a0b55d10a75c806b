"""The status report as rich renderables: a processes table, the account, risk, problems and alerts."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STATE_STYLE = {"ok": "green", "stale": "yellow", "dead": "bold red"}


def age(seconds: float | None) -> str:
    """A duration for people: 0.4s, 12s, 4m05s, 3h12m, 2d04h."""
    if seconds is None:
        return "–"
    s = max(float(seconds), 0.0)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def count(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    if abs(n) < 100_000:
        return f"{n:,.0f}"
    if abs(n) < 100_000_000:
        return f"{n / 1e3:,.0f}k"
    return f"{n / 1e6:,.0f}M"


def rate(n: float | None) -> str:
    if n is None:
        return "–"
    if abs(n) < 10:
        return f"{n:.1f}"
    if abs(n) < 10_000:
        return f"{n:,.0f}"
    if abs(n) < 10_000_000:
        return f"{n / 1e3:,.1f}k"
    return f"{n / 1e6:,.1f}M"


def latency(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


def money(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+,.2f}" if sign else f"{x:,.2f}"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def _pnl_style(x: float | None) -> str:
    return "" if not x else ("green" if x > 0 else "red")


def processes_table(report: dict[str, Any]) -> Table:
    table = Table(title="Pipeline processes", title_justify="left", header_style="bold", expand=False)
    for name, justify in (("pid", "right"), ("process", "left"), ("state", "left"), ("beat", "right"),
                          ("up", "right"), ("in/s", "right"), ("out/s", "right"), ("rows in", "right"),
                          ("rows out", "right"), ("lag", "right"), ("p50", "right"), ("p99", "right"),
                          ("reconn", "right"), ("gaps", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    if not report["processes"]:
        table.add_row("", Text("no varon process publishes in " + report["status_dir"], style="dim"),
                      *[""] * 12)
    for p in report["processes"]:
        feed = p.get("feed") or {}
        state = p["state"]
        style = STATE_STYLE.get(state, "bold red")
        label = Text(state, style=style)
        if feed and state == "ok" and feed.get("state") not in ("up", "replay"):
            label.append(f" · feed {feed['state']}", style="yellow")
        beat_style = "" if p["heartbeat_age_s"] <= report["stale_after_s"] else "yellow"
        table.add_row(
            str(p.get("pid")), str(p.get("label") or p.get("command")), label,
            Text(age(p["heartbeat_age_s"]), style=beat_style), age(p["uptime_s"]),
            rate(p.get("rate_in")), rate(p.get("rate_out")), count(p.get("rows_in")), count(p.get("rows_out")),
            age(p.get("lag_s")), latency(p.get("latency_p50_s")), latency(p.get("latency_p99_s")),
            count(feed.get("reconnects")) if feed else "", count(feed.get("gaps")) if feed else "",
        )
    return table


def account_panel(report: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = []
    for ex in report["executors"]:
        if not ex.get("metrics"):
            parts.append(Text(f"executor {ex['name']} (pid {ex['pid']}): registered in the state directory, "
                              f"publishes no metrics here", style="dim"))
            continue
        exposure, leverage = ex.get("exposure") or {}, ex.get("leverage") or {}
        head = Text()
        head.append(f"executor {ex['name']}", style="bold")
        head.append(f" ({ex.get('venue')}{', dry run' if ex.get('dry_run') else ''}, pid {ex['pid']})  ")
        head.append(f"equity {money(ex.get('equity'))}  ")
        head.append("pnl ")
        head.append(money(ex.get("pnl"), True), style=_pnl_style(ex.get("pnl")))
        head.append("  day ")
        head.append(money(ex.get("day_pnl"), True), style=_pnl_style(ex.get("day_pnl")))
        head.append(f"  drawdown {pct(ex.get('drawdown'))}  fees {money(ex.get('fees'))}"
                    f"  exposure {pct(exposure.get('fraction'))} / {pct(exposure.get('limit'))}"
                    f"  leverage {_x(leverage.get('gross'))} / {_x(leverage.get('limit'))}"
                    f"  fills {count(ex.get('fills'))}")
        parts.append(head)
        strategies = ex.get("strategies") or {}
        if strategies:
            line = Text("  strategies: ", style="dim")
            for i, (name, s) in enumerate(strategies.items()):
                line.append(("; " if i else "") + f"{name} pnl ")
                line.append(money(s.get("pnl"), True), style=_pnl_style(s.get("pnl")))
                line.append(f", exposure {pct(s.get('exposure'))} / {pct(s.get('limit'))}")
            parts.append(line)
        positions = ex.get("positions") or []
        if positions:
            table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 2, 0, 0))
            for name in ("strategy", "symbol", "size", "entry", "mark", "notional", "unrealised", "lev", "stop"):
                table.add_column(name, justify="left" if name in ("strategy", "symbol") else "right", no_wrap=True)
            for pos in positions:
                table.add_row(str(pos["strategy"]), str(pos["symbol"]), f"{pos['size']:+.6g}", _price(pos["entry"]),
                              _price(pos["mark"]), money(pos["notional"], True),
                              Text(money(pos["unrealised"], True), style=_pnl_style(pos["unrealised"])),
                              _x(pos["leverage"]), _price(pos.get("stop_loss")))
            parts.append(table)
        else:
            parts.append(Text("  no open positions", style="dim"))
    if not parts:
        parts.append(Text("no executor running", style="dim"))
    return Panel(Group(*parts), title="Positions, PnL, exposure", title_align="left")


def risk_panel(report: dict[str, Any]) -> RenderableType:
    lines: list[RenderableType] = []
    kill = report["kill_switch"]
    line = Text("kill switch: ")
    if kill["engaged"]:
        line.append(f"ENGAGED ({kill['reason']})", style="bold red")
    else:
        line.append("off", style="green")
    line.append(f"   state dir {report['state_dir']}", style="dim")
    lines.append(line)
    for ex in report["executors"]:
        if not ex.get("metrics"):
            continue
        line = Text(f"breakers of {ex['name']}: ")
        for i, (name, engaged) in enumerate((ex.get("breakers") or {}).items()):
            line.append(("  " if i else "") + f"{name} ")
            line.append("TRIPPED" if engaged else "ok", style="bold red" if engaged else "green")
        limits = ex.get("limits") or {}
        line.append(f"   (daily loss limit {pct(limits.get('daily_loss_limit'))}, max drawdown "
                    f"{pct(limits.get('max_drawdown'))})", style="dim")
        lines.append(line)
    return Panel(Group(*lines), title="Risk", title_align="left")


def health_panel(report: dict[str, Any]) -> RenderableType:
    if report["healthy"]:
        body: RenderableType = Text("healthy", style="bold green")
    else:
        body = Group(*[Text("• " + p, style="red") for p in report["problems"]])
    alerts = sorted((a for p in report["processes"] for a in p.get("alerts") or []), key=lambda a: a["ts_ns"])[-5:]
    if alerts:
        rows = [Text("recent alerts:", style="bold")]
        for a in alerts:
            stamp = time.strftime("%H:%M:%S", time.gmtime(a["ts_ns"] / 1e9))
            rows.append(Text(f"  {stamp}Z {a['kind']}: {a['message']}", style="yellow"))
        body = Group(body, *rows)
    return Panel(body, title="Health", title_align="left", border_style="green" if report["healthy"] else "red")


def render(report: dict[str, Any]) -> RenderableType:
    head = Text()
    head.append("varon status", style="bold")
    head.append(f"  {report['time']}  ")
    if report["healthy"]:
        head.append("HEALTHY", style="bold green")
    else:
        n = len(report["problems"])
        head.append(f"UNHEALTHY ({n} problem{'s' if n != 1 else ''})", style="bold red")
    head.append(f"   metrics {report['status_dir']} · stale after {report['stale_after_s']:g}s", style="dim")
    return Group(head, processes_table(report), account_panel(report), risk_panel(report), health_panel(report))


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _price(value: float | None) -> str:
    return "–" if value is None else f"{value:,.6g}"

"""`varon status`: the live dashboard of a running system, and its health for cron and monitoring."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, LogFormatOpt, LogLevelOpt, run, setup

app = typer.Typer(help="A live dashboard of the running pipeline processes; --once/--json and the exit status for cron.",
                  invoke_without_command=True)

UNHEALTHY_EXIT = 1


@app.callback(invoke_without_command=True)
def status(
    once: Annotated[bool, typer.Option("--once", help="Print the dashboard once and exit (exit status: 0 healthy, 1 not).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON once and exit (same exit status).")] = False,
    expect: Annotated[Optional[str], typer.Option("--expect", help="Comma-separated commands that must be running, e.g. collect,bars,execute (or 'collect coinbase', 'execute btc').", show_default=False)] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Forget the metrics files of processes that died without removing them (after reporting them).")] = False,
    serve: Annotated[bool, typer.Option("--serve", help="No dashboard: serve the Prometheus endpoint (status.prometheus_port) until interrupted.")] = False,
    refresh: Annotated[float, typer.Option("--refresh", help="Dashboard refresh period in seconds.")] = 1.0,
    stale_after: Annotated[Optional[str], typer.Option("--stale-after", help="A heartbeat older than this is unhealthy (config status.stale_after, default 30s).", show_default=False)] = None,
    status_dir: Annotated[Optional[str], typer.Option("--status-dir", help="Where processes publish (config status.dir, default .varon/run).", show_default=False)] = None,
    state_dir: Annotated[Optional[str], typer.Option("--state-dir", help="Executor state directory, for the kill switch and registrations (config execute.state_dir).", show_default=False)] = None,
    prometheus_port: Annotated[Optional[int], typer.Option("--prometheus-port", help="Serve Prometheus metrics on this port while running (config status.prometheus_port; 0 = off).", show_default=False)] = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Show every running collect, bars, features, signal and execute process: heartbeat, throughput, lag,
    per-batch latency, reconnects and gaps; positions, PnL and exposure; breakers and the kill switch.

    Unhealthy (exit 1 with --once/--json): a heartbeat older than status.stale_after, a process that died
    without cleaning up, a lost feed, the kill switch or a breaker engaged, or a command named by --expect
    not running. On a terminal the dashboard refreshes every second until Ctrl-C; elsewhere it prints once.
    Example: varon status --once --expect collect,bars,features,signal,execute || notify-someone
    """

    def body() -> None:
        from varon_cli.errors import UsageError
        from varon_cli.intervals import parse_duration
        from varon_cli.status.view import collect, prune as prune_dead

        cfg = setup(config, log_level, log_format, {
            "status": {"stale_after": stale_after, "dir": status_dir, "prometheus_port": prometheus_port},
            "execute": {"state_dir": state_dir}})
        if not refresh > 0:
            raise UsageError(f"--refresh {refresh}: must be positive")
        expected = [e.strip() for e in (expect or "").split(",") if e.strip()]
        stale = parse_duration(cfg.status.stale_after, "stale_after") / 1e9

        def report() -> dict:
            return collect(cfg.status.dir, cfg.execute.state_dir, stale, expected)

        endpoint = _endpoint(cfg, report) if cfg.status.prometheus_port else None
        try:
            if serve:
                _serve(cfg, report, endpoint)
                return
            if as_json or once or not sys.stdout.isatty():
                current = report()
                if as_json:
                    sys.stdout.write(json.dumps(current, indent=1, default=str) + "\n")
                else:
                    _print_once(current)
                if prune:
                    _report_pruned(prune_dead(current))
                if not current["healthy"]:
                    for problem in current["problems"]:
                        print(f"varon status: {problem}", file=sys.stderr)
                    raise typer.Exit(UNHEALTHY_EXIT)
                return
            if prune:
                _report_pruned(prune_dead(report()))
            _dashboard(report, refresh)
        finally:
            if endpoint is not None:
                endpoint.close()

    run("status", body)


def _print_once(report: dict) -> None:
    from rich.console import Console

    from varon_cli.status.dashboard import render

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(render(report))


def _report_pruned(removed: list[str]) -> None:
    for path in removed:
        print(f"varon status: forgot dead process file {path}", file=sys.stderr)


def _dashboard(report, refresh: float) -> None:  # noqa: ANN001 - () -> dict
    from rich.console import Console
    from rich.live import Live

    from varon_cli.runtime import Interrupted
    from varon_cli.status.dashboard import render

    console = Console()
    try:
        with Live(render(report()), console=console, screen=True, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(refresh)
                live.update(render(report()), refresh=True)
    except Interrupted:
        return  # Ctrl-C is how a dashboard is closed


def _endpoint(cfg, report):  # noqa: ANN001, ANN202
    from varon_cli.status.prometheus import Endpoint

    endpoint = Endpoint(cfg.status.prometheus_host, cfg.status.prometheus_port, report)
    if endpoint.start():
        print(f"varon status: Prometheus metrics on http://{cfg.status.prometheus_host}:{cfg.status.prometheus_port}/metrics",
              file=sys.stderr)
    return endpoint


def _serve(cfg, report, endpoint) -> None:  # noqa: ANN001
    """Hold the Prometheus port until interrupted; while another varon process holds it, retry every 5 s."""
    from varon_cli.errors import UsageError
    from varon_cli.runtime import Interrupted

    if endpoint is None:
        raise UsageError("--serve needs a port: --prometheus-port N or status.prometheus_port")
    told = False
    try:
        while True:
            if not endpoint.serving and not endpoint.start():
                if not told:
                    print(f"varon status: port {cfg.status.prometheus_port} is in use (another varon process serves "
                          f"the same numbers there); retrying every 5 s", file=sys.stderr)
                    told = True
            elif endpoint.serving and told:
                print("varon status: now serving", file=sys.stderr)
                told = False
            time.sleep(5)
    except Interrupted:
        return

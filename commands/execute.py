"""`varon execute`: signals in, orders and fills out, through the risk engine and a venue."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, LogFormatOpt, LogLevelOpt, OnAlertOpt, OutputOpt, run, setup
from commands.execute_ops import kill, reset

log = logging.getLogger("varon.execute")

app = typer.Typer(help="Execute signals on a venue under the risk limits (config section risk); kill and reset.",
                  no_args_is_help=False, invoke_without_command=True)
app.command("kill")(kill)
app.command("reset")(reset)


@app.callback(invoke_without_command=True)
def execute(
    ctx: typer.Context,
    venue: Annotated[str, typer.Option("--venue", help="paper (simulated) or hyperliquid (live perpetuals; config section hyperliquid).")] = "paper",
    url: Annotated[Optional[str], typer.Option("--url", help="Hyperliquid API base URL (default hyperliquid.url).", show_default=False)] = None,
    testnet: Annotated[bool, typer.Option("--testnet", help="Use hyperliquid.testnet_url.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Hyperliquid: build, sign and log every action without sending it.")] = False,
    input: Annotated[Optional[list[str]], typer.Option("-i", "--input", help="Signals input; repeat for several strategies (default stdin).", show_default=False)] = None,
    output: OutputOpt = "-",
    orders_out: Annotated[Optional[str], typer.Option("--orders-out", help="Orders, rejections and cancellations stream.", show_default=False)] = None,
    equity_out: Annotated[Optional[str], typer.Option("--equity-out", help="Equity stream (one row per signal).", show_default=False)] = None,
    funding: Annotated[Optional[str], typer.Option("--funding", help="A funding stream file for hourly rates; else paper.funding_rate.", show_default=False)] = None,
    name: Annotated[str, typer.Option("--name", help="Executor name: its state and audit log in the state directory.")] = "default",
    clock: Annotated[str, typer.Option("--clock", help="wall: signals are judged stale against the wall clock (live); event: against their own time (replays).")] = "wall",
    on_alert: OnAlertOpt = None,  # [status hook]
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Turn signals into orders under the risk limits, fill them on the venue, write fills to -o.

With --venue hyperliquid every entry is an IOC limit within hyperliquid.max_slippage_bps of the mid, followed
at once by reduce-only stop-loss (and take-profit) triggers; the signing key comes from $VARON_HL_SECRET_KEY
or hyperliquid.key_file (mode 600). Start-up reconciles the saved state with the venue (hyperliquid.on_mismatch).

    State and the audit log live in execute.state_dir; `varon execute kill` (or SIGUSR1, or a KILL file there)
    cancels, flattens and stops every executor until `varon execute reset`.
    Example: varon signal --strategy ema-cross -i features.parquet | varon execute --venue paper --equity-out eq.arrows
    """
    if ctx.invoked_subcommand is not None:
        return

    def body() -> None:
        from varon_cli.errors import UsageError
        from varon_cli.execution.live import ExecuteRequest, run_execute, summary

        cfg = setup(config, log_level, log_format, {"status": {"on_alert": on_alert}})  # [status hook] --on-alert
        if venue not in ("paper", "hyperliquid"):
            raise UsageError(f"--venue {venue!r}: expected paper or hyperliquid")
        if venue == "paper" and (url or testnet or dry_run):
            raise UsageError("--url, --testnet and --dry-run apply to --venue hyperliquid")
        if clock not in ("wall", "event"):
            raise UsageError(f"--clock {clock!r}: expected wall or event")
        from varon_cli.execution.killswitch import KILL_EXIT_CODE, KillRequested
        from varon_cli.runtime import Interrupted

        run_name = f"{name}-dry-run" if dry_run else name  # a dry run never touches the live executor's state
        request = ExecuteRequest(list(input or ["-"]), output, orders_out, equity_out, run_name, clock, funding,
                                 venue=venue, url=url, testnet=testnet, dry_run=dry_run)
        try:
            executor = run_execute(request, cfg)
        except KillRequested as exc:
            _exit_now(KILL_EXIT_CODE, f"varon execute: error: kill switch engaged ({exc.reason}): not trading; "
                                      f"`varon execute reset` releases it")
        except Interrupted as exc:
            _exit_now(exc.exit_code, f"varon execute: stopped by {exc}; state saved, outputs committed")
        log.info("%s", summary(executor))

    run("execute", body)


def _exit_now(code: int, message: str) -> None:
    """Everything is saved and committed; leave without waiting for input threads blocked in a read.

    Interpreter shutdown with a thread parked inside a native read can abort the
    process, and an executor's exit code must say what happened (3 = killed).
    """
    import os
    import sys

    print(message, file=sys.stderr)
    from varon_cli.status.metrics import shutdown  # [status hook] remove the metrics file, start pending alerts
    shutdown()  # [status hook]
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

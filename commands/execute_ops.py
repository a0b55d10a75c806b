"""`varon execute kill` and `varon execute reset`: the operator's hands on running executors.

Both report to stderr (they produce no data) and act on the state directory:
config `execute.state_dir`, or --state-dir.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, LogFormatOpt, LogLevelOpt, run, setup
from varon_cli.execution.killswitch import engage, release, request_reset
from varon_cli.execution.statedir import StateDir

StateDirOpt = Annotated[Optional[str], typer.Option(
    "--state-dir", help="Executor state directory. (config execute.state_dir, default .varon/state)", show_default=False)]


def _state_dir(config: Optional[Path], log_level: Optional[str], log_format: Optional[str], state_dir: Optional[str]) -> Path:
    cfg = setup(config, log_level, log_format, {"execute": {"state_dir": state_dir}})
    return Path(cfg.execute.state_dir)


def kill(
    reason: Annotated[str, typer.Option("--reason", help="Why: kept in the kill file and each executor's audit log.")] = "manual",
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the executors to stop (0 = do not wait).")] = 5.0,
    state_dir: StateDirOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Stop every executor on the state directory now; none trades again until `varon execute reset`.

    Writes STATE_DIR/KILL and sends SIGUSR1 to each running executor, which stops
    trading and exits with code 3. Executors that cannot be signalled find the
    file within a second. Example: varon execute kill --reason "feed looks wrong"
    """

    def body() -> None:
        root = _state_dir(config, log_level, log_format, state_dir)
        signalled = engage(root, reason)
        typer.echo(f"kill switch engaged in {root}: {reason}", err=True)
        if not signalled:
            typer.echo("no executor running; none will start trading until `varon execute reset`", err=True)
            return
        typer.echo("signalled: " + ", ".join(info.describe() for info in signalled), err=True)
        pids = {info.pid for info in signalled}
        deadline = time.monotonic() + max(wait, 0.0)
        left = [e for e in StateDir(root).running() if e.pid in pids]
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [e for e in StateDir(root).running() if e.pid in pids]
        if left and wait > 0:
            typer.echo(f"still running after {wait:g} s: " + ", ".join(e.describe() for e in left)
                       + " (stopping; the kill file stays engaged)", err=True)
        elif wait > 0:
            typer.echo("all signalled executors have stopped", err=True)

    run("execute kill", body)


def reset(
    state_dir: StateDirOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Release the kill switch and clear the executors' circuit breakers.

    Removes STATE_DIR/KILL and posts a breaker reset (STATE_DIR/RESET) that each
    executor applies once: a running one at its next batch, a stopped one when it
    starts. Example: varon execute reset --state-dir .varon/state
    """

    def body() -> None:
        root = _state_dir(config, log_level, log_format, state_dir)
        seq = request_reset(root)  # before the release: an executor free to start also sees the reset
        was_engaged = release(root)
        typer.echo(f"kill switch {'released' if was_engaged else 'was not engaged'} in {root}", err=True)
        typer.echo(f"breaker reset #{seq} posted; executors clear their breakers at their next batch or start", err=True)

    run("execute reset", body)

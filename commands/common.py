"""Options every command shares, and the wrapper that turns failures into exit codes."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from varon_cli.config import VaronConfig, load_config
from varon_cli.errors import VaronError
from varon_cli.logs import configure_logging
from varon_cli.runtime import Interrupted, PipeClosed, install_signal_handlers, silence_stdout
from varon_cli.status import metrics as status_metrics  # [status hook] per-process metrics for `varon status`

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML config file (default: $VARON_CONFIG).", show_default=False)]
LogLevelOpt = Annotated[Optional[str], typer.Option("--log-level", help="debug, info, warning or error.", show_default=False)]
LogFormatOpt = Annotated[Optional[str], typer.Option("--log-format", help="text, or json for cron and CI.", show_default=False)]
InputOpt = Annotated[str, typer.Option("-i", "--input", help="Input file (.parquet, .arrow, .arrows, .feather, a dataset directory) or - for stdin.")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output file (format from the extension; a directory = partitioned Parquet dataset) or - for stdout.")]
KindOpt = Annotated[Optional[str], typer.Option("--kind", help="Stream kind of an input file that has no varon metadata.", show_default=False)]
OnAlertOpt = Annotated[Optional[str], typer.Option("--on-alert", help="Shell command run (not waited for) when a breaker trips, the kill switch fires or a feed is lost; $VARON_ALERT_KIND, $VARON_ALERT_MESSAGE say what. (config status.on_alert)", show_default=False)]  # [status hook]


def setup(config: Path | None, log_level: str | None, log_format: str | None,
          overrides: dict[str, dict[str, Any]] | None = None) -> VaronConfig:
    """Load the layered config (flags last) and configure logging from it."""
    layers = dict(overrides or {})
    layers["log"] = {"level": log_level.lower() if log_level else None, "format": log_format}
    cfg = load_config(config, layers)
    configure_logging(cfg.log.level, cfg.log.format)
    status_metrics.configure(cfg)  # [status hook] alerts; starts publishing if `run` armed a long-running command
    return cfg


def run(command: str, body: Callable[[], None]) -> None:
    """Run a command body: one-line errors, quiet closed pipes, flush-and-exit on signals."""
    try:
        install_signal_handlers()
    except ValueError:  # not the main thread (an embedding test runner)
        pass
    started = time.monotonic()
    log = logging.getLogger("varon." + command.replace(" ", "."))
    status_token = status_metrics.arm(command)  # [status hook]
    try:
        body()
    except VaronError as exc:
        print(f"varon {command}: error: {exc.message}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except PipeClosed:
        silence_stdout()
        raise typer.Exit(0) from None
    except Interrupted as exc:
        log.warning("stopped by %s after %.1f s; output flushed", exc, time.monotonic() - started)
        raise typer.Exit(exc.exit_code) from None
    finally:
        status_metrics.shutdown(status_token)  # [status hook] removes this process's metrics file

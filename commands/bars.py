"""`varon bars`: trades (or finer bars) in, OHLCV bars out."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, InputOpt, KindOpt, LogFormatOpt, LogLevelOpt, OutputOpt, run, setup
from varon_cli.runtime import pump
from varon_cli.schemas import BARS, TRADES
from varon_cli.streamio import open_input, open_output

log = logging.getLogger("varon.bars")


def bars(
    interval: Annotated[Optional[str], typer.Option("--interval", help="Bar interval: 1s, 1m, 5m, 1h, 1d, ... (config bars.interval, default 1m)", show_default=False)] = None,
    lateness: Annotated[Optional[str], typer.Option("--lateness", help="How far behind event time a trade may arrive and still count, e.g. 2s. (default 0s)", show_default=False)] = None,
    late: Annotated[Optional[str], typer.Option("--late", help="Trades later than that: drop (count and warn) or fail. (default: fail for files, drop for pipes)", show_default=False)] = None,
    partial: Annotated[Optional[str], typer.Option("--partial", help="First bar after start and last bar at end of input: flag or skip. (default flag)", show_default=False)] = None,
    input: InputOpt = "-",
    output: OutputOpt = "-",
    kind: KindOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Aggregate trades, or finer bars, into OHLCV bars stamped with their open time.

    Empty intervals become explicit bars (OHLC = previous close, volume 0).
    Example: varon bars --interval 5m -i trades.parquet -o bars.parquet
    """

    def body() -> None:
        from varon_cli.bars import BarAggregator, BarSettings  # compiled kernels load only when this command runs

        cfg = setup(config, log_level, log_format,
                    {"bars": {"interval": interval, "lateness": lateness, "late": late, "partial": partial}})
        with open_input(input, expect=(TRADES, BARS), kind=kind) as src:
            settings = BarSettings.resolve(cfg.bars, src.kind, src.metadata, src.is_file, src.label)
            aggregator = BarAggregator(settings, src.kind, src.label)
            src.project(BarAggregator.input_columns(src.kind))
            with open_output(output, aggregator.schema) as dst:
                pump(src, aggregator, dst)
        stats = aggregator.stats
        log.info("%d %s in, %d %s bars out, %d late dropped", stats.records_in, src.kind.name, stats.bars_out,
                 settings.interval, stats.late_dropped)

    run("bars", body)

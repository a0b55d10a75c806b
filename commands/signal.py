"""`varon signal`: features in, one signal per symbol per bar out."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, InputOpt, LogFormatOpt, LogLevelOpt, OutputOpt, run, setup
from varon_cli.runtime import pump
from varon_cli.schemas import FEATURES
from varon_cli.streamio import open_input, open_output

log = logging.getLogger("varon.signal")

StrategyOpt = Annotated[Optional[str], typer.Option("--strategy", help="Built-in strategy: buy-and-hold, ema-cross, momentum.", show_default=False)]
ParamOpt = Annotated[Optional[list[str]], typer.Option("--param", help="Strategy parameter key=value (repeatable), e.g. --param fast=12.", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="A model directory from `varon train` (instead of --strategy).", show_default=False)]
ExpectHashOpt = Annotated[Optional[str], typer.Option("--expect-hash", help="Refuse features whose spec hash is not this one.", show_default=False)]


def signal(
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    model: ModelOpt = None,
    expect_hash: ExpectHashOpt = None,
    input: InputOpt = "-",
    output: OutputOpt = "-",
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Decide a target (-1..1 of the allowed exposure) per symbol per bar, as each bar arrives.

    Example: varon features -i bars.parquet | varon signal --strategy ema-cross --param fast=12 | varon execute
    """

    def body() -> None:
        from varon_cli.strategies.registry import make_strategy, parse_params
        from varon_cli.strategies.signals import SignalGenerator, check_features

        setup(config, log_level, log_format)
        chosen = choose_strategy(strategy, param, model)
        if expect_hash:
            chosen.feature_hash = expect_hash
        with open_input(input, expect=(FEATURES,)) as src:
            interval = check_features(chosen, src.metadata, src.schema.names, src.label)
            generator = SignalGenerator(chosen, interval, src.label)
            with open_output(output, generator.schema) as dst:
                pump(src, generator, dst)
        log.info("%d signals from %s", generator.rows, chosen.name)

    run("signal", body)


def choose_strategy(strategy: str | None, param: list[str] | None, model: str | None):  # noqa: ANN201 - Strategy
    """--strategy NAME [--param k=v] or --model DIR, exactly one of them."""
    from pathlib import Path

    from varon_cli.errors import UsageError
    from varon_cli.strategies.registry import make_strategy, parse_params

    if bool(strategy) == bool(model):
        raise UsageError("give either --strategy NAME (buy-and-hold, ema-cross, momentum) or --model DIR")
    if model:
        if param:
            raise UsageError("--param applies to --strategy; a model carries its own configuration")
        from varon_cli.rl.model import ModelStrategy

        return ModelStrategy(Path(model))
    return make_strategy(strategy, parse_params(param))

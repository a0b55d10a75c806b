"""`varon features`: bars in, features out, from a TOML spec."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, InputOpt, KindOpt, LogFormatOpt, LogLevelOpt, OutputOpt, run, setup
from varon_cli.features.spec import load_spec
from varon_cli.runtime import pump
from varon_cli.schemas import BARS
from varon_cli.streamio import open_input, open_output

log = logging.getLogger("varon.features")


def features(
    spec: Annotated[Optional[Path], typer.Option("--spec", help="Feature spec TOML. (config features.spec, default configs/features.toml)", show_default=False)] = None,
    warmup: Annotated[Optional[str], typer.Option("--warmup", help="Rows before every feature is defined: flag (warmup=true, NaN values) or drop. (default flag)", show_default=False)] = None,
    input: InputOpt = "-",
    output: OutputOpt = "-",
    kind: KindOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Compute features from bars: returns, EMA ratios, MACD, RSI, Bollinger %B, ATR, volatility, ...

    The spec and its hash travel in the output's metadata.
    Example: varon bars --interval 5m -i trades.parquet | varon features -o features.parquet
    """

    def body() -> None:
        from varon_cli.features.engine import FeatureEngine  # compiled kernels load only when this command runs

        cfg = setup(config, log_level, log_format, {"features": {"spec": str(spec) if spec else None, "warmup": warmup}})
        feature_spec = load_spec(cfg.features.spec or None)
        with open_input(input, expect=(BARS,), kind=kind) as src:
            engine = FeatureEngine(feature_spec, cfg.features.warmup, src.label, src.metadata)
            with open_output(output, engine.schema) as dst:
                pump(src, engine, dst)
        log.info("%d bars in, %d feature columns, spec %s (%s)", engine.rows_in, len(feature_spec.columns),
                 feature_spec.hash, feature_spec.source)

    run("features", body)

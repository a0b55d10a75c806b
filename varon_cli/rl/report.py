"""The end of `varon train`: the one look at the test split, the report, and the model directory.

Each fold's test period goes through `run_backtest` (the engine of `varon
backtest`: the same executor, risk engine and paper venue) for the chosen
model, every other seed, buy-and-hold and ema-cross. The seeds are reported as
a distribution; the chosen model's Sharpe is also deflated for the number of
trials (seeds, plus `--trials` configurations tried before).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from varon_cli.backtest import metrics_of, run_backtest
from varon_cli.config import VaronConfig
from varon_cli.intervals import parse_interval
from varon_cli.rl.model import ModelStrategy, save_model
from varon_cli.rl.dataset import fingerprint
from varon_cli.rl.trainer import ACTIONS, FoldResult, TrainSettings, code_version, deflate
from varon_cli.rl.validation import summarise_seeds
from varon_cli.schemas import FEATURE_HASH_KEY, FEATURE_SPEC_KEY, INTERVAL_KEY
from varon_cli.strategies.registry import make_strategy

log = logging.getLogger("varon.train")
KEYS = ("total_return", "sharpe", "max_drawdown", "directional_accuracy", "trade_count", "fees")


def _window(features: pa.Table, start: int, end: int, interval_ns: int) -> pa.Table:
    ts = features.column("ts").cast(pa.int64())
    mask = pc.and_(pc.greater_equal(ts, start), pc.less_equal(ts, end))
    return features.filter(mask)


def _metrics(m) -> dict[str, float]:  # noqa: ANN001 - report.Metrics
    return {key: float(getattr(m, key)) for key in KEYS}


def _model_meta(features: pa.Table, settings: TrainSettings, fold: FoldResult, name: str) -> dict[str, Any]:
    meta = features.schema.metadata or {}
    columns = list(fold.normaliser.columns)
    return {
        "name": name, "algo": settings.algo, "hparams": settings.hparams, "actions": list(ACTIONS),
        "feature_columns": columns, "feature_hash": (meta.get(FEATURE_HASH_KEY) or b"").decode(),
        "feature_spec": (meta.get(FEATURE_SPEC_KEY) or b"").decode(),
        "interval": (meta.get(INTERVAL_KEY) or b"").decode(), "normaliser": fold.normaliser.to_dict(),
        "seed": fold.chosen.seed, "settings": settings.describe(), "code_version": code_version(),
        "data": fingerprint(features), "windows": fold.window,
    }


def finish_training(folds: list[FoldResult], features: pa.Table, settings: TrainSettings, cfg: VaronConfig,
                    out: Path, label: str) -> dict[str, Any]:
    """Test every fold once, print the report, write the model directory; returns the JSON summary."""
    interval = parse_interval((features.schema.metadata or {}).get(INTERVAL_KEY, b"1m").decode())
    import sys

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    document: dict[str, Any] = {"algo": settings.algo, "model": str(out), "folds": []}
    meta = None
    for fold in folds:
        name = f"{settings.algo}-{out.name}"
        meta = _model_meta(features, settings, fold, name)
        start, end = fold.window["test"]
        period = _window(features, start, end, interval)
        rows: dict[str, dict[str, float]] = {}
        seed_sharpes, chosen_returns = [], np.zeros(0)
        for result in fold.seeds:
            strategy = ModelStrategy.from_agent(result.agent, meta, f"{name}-seed{result.seed}")
            run = run_backtest(period, strategy, interval, cfg.risk, cfg.paper, label)
            metrics = metrics_of(run, interval, cfg.paper.initial_equity)
            seed_sharpes.append(float(metrics.sharpe))
            if result is fold.chosen:
                rows[f"{settings.algo} (seed {result.seed}, chosen)"] = _metrics(metrics)
                _, equity, _ = run.curve()
                path = np.concatenate(([cfg.paper.initial_equity], equity))
                chosen_returns = np.diff(np.log(np.maximum(path, 1e-12)))
        for baseline in ("buy-and-hold", "ema-cross"):
            run = run_backtest(period, make_strategy(baseline), interval, cfg.risk, cfg.paper, label)
            rows[baseline] = _metrics(metrics_of(run, interval, cfg.paper.initial_equity))
        trials = len(settings.seeds) + settings.trials
        finite = [s for s in seed_sharpes if np.isfinite(s)]
        per_year = 365.25 * 86_400e9 / interval  # the report's annualisation
        per_bar = [s / np.sqrt(per_year) for s in finite]  # the deflated Sharpe works in per-bar units
        fold_doc = {
            "fold": fold.fold, "windows": fold.window,
            "validation": {str(r.seed): {"sharpe": r.best_valid_sharpe, "best_step": r.best_step,
                                         "steps": r.steps_done, "env_steps_per_s": r.env_steps_per_s}
                           for r in fold.seeds},
            "test": rows, "test_sharpe_over_seeds": summarise_seeds(finite) if finite else {},
            "deflated_sharpe": deflate(chosen_returns, per_bar, trials), "trials": trials,
        }
        document["folds"].append(fold_doc)
        _print(console, settings, fold_doc, label)
    assert meta is not None
    last = folds[-1]
    meta["metrics"] = document["folds"]
    save_model(out, last.chosen.agent, meta)
    log.info("wrote model %s (seed %d, validation Sharpe %.3f)", out, last.chosen.seed, last.chosen.best_valid_sharpe)
    return _json_safe(document)


def _print(console: Console, settings: TrainSettings, fold: dict[str, Any], label: str) -> None:
    start, end = fold["windows"]["test"]
    title = (f"{settings.algo} on {label}: out-of-sample test, fold {fold['fold']} "
             f"({np.datetime64(start, 'ns')} .. {np.datetime64(end, 'ns')})")
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("")
    for key in KEYS:
        table.add_column(key.replace("_", " "), justify="right")
    for name, values in fold["test"].items():
        table.add_row(name, *(f"{values[k]:.4g}" for k in KEYS))
    console.print(table)
    dist = fold["test_sharpe_over_seeds"]
    if dist:
        console.print(f"test Sharpe over {len(settings.seeds)} seeds: mean {dist['mean']:.3f}, std {dist['std']:.3f}, "
                      f"min {dist['min']:.3f}, max {dist['max']:.3f}; deflated Sharpe (probability the chosen "
                      f"model's Sharpe beats the best of {fold['trials']} trials by chance) "
                      f"{fold['deflated_sharpe']:.3f}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value

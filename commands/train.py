"""`varon train`: features in, a validated model directory out."""

from __future__ import annotations

import json
import logging
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from commands.common import ConfigOpt, InputOpt, LogFormatOpt, LogLevelOpt, run, setup

log = logging.getLogger("varon.train")
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def train(
    algo: Annotated[str, typer.Option("--algo", help="dqn, ddqn, dueling, noisy, rainbow or drqn.")] = "drqn",
    input: InputOpt = "-",
    out: Annotated[Path, typer.Option("--out", help="Model directory to write (checkpoints go under it; a rerun resumes).")] = Path("models/model"),
    train_config: Annotated[Optional[Path], typer.Option("--train-config", help="Hyperparameters TOML (default configs/train/ALGO.toml).", show_default=False)] = None,
    hparam: Annotated[Optional[list[str]], typer.Option("--hparam", help="Override a hyperparameter or [train] setting: key=value (repeatable).", show_default=False)] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds trained; the model is the best on validation, the test is reported over all.")] = 3,
    walk_forward: Annotated[int, typer.Option("--walk-forward", help="N rolling train/validation/test folds (0 = one 70/15/15 split by time).")] = 0,
    trials: Annotated[int, typer.Option("--trials", help="Configurations tried before this one, for the deflated Sharpe (0 = the seeds only).")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Train a reinforcement-learning agent on features, validated by time, tested once out of sample.

    Example: varon train --algo drqn -i features.parquet --out models/btc-drqn --seeds 3
    """

    def body() -> None:
        from varon_cli.errors import UsageError
        from varon_cli.rl.agents.hparams import ALGOS, resolve_hparams
        from varon_cli.rl.report import finish_training
        from varon_cli.rl.trainer import TrainSettings, train as run_training
        from varon_cli.schemas import FEATURES
        from varon_cli.streamio import open_input

        cfg = setup(config, log_level, log_format)
        if algo not in ALGOS:
            raise UsageError(f"--algo {algo!r}: use one of {', '.join(ALGOS)}")
        if device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device {device!r}: use auto, cpu or cuda")
        if seeds < 1:
            raise UsageError(f"--seeds {seeds}: at least 1")
        path = train_config or REPO_CONFIGS / f"{algo}.toml"
        document = {}
        if path.exists():
            from varon_cli.config import read_toml

            document = read_toml(path, "train config")
        run_keys = dict(document.get("train", {}))
        hp_keys = dict(document.get("hparams", {}))
        for pair in hparam or []:
            key, sep, value = pair.partition("=")
            if not sep:
                raise UsageError(f"--hparam {pair!r}: expected key=value")
            (run_keys if key in ("steps", "eval_every", "patience", "episode_bars") else hp_keys)[key.strip()] = \
                _value(value.strip())
        try:
            hp = resolve_hparams(algo, hp_keys)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        unknown = set(run_keys) - {"steps", "eval_every", "patience", "episode_bars"}
        if unknown:
            raise UsageError(f"unknown [train] setting(s) {', '.join(sorted(unknown))}; known: steps, eval_every, "
                             f"patience, episode_bars")
        settings = TrainSettings(algo=algo, hparams=hp, seeds=tuple(range(seeds)),
                                 steps=int(run_keys.get("steps", 20_000)),
                                 eval_every=int(run_keys.get("eval_every", 2_000)),
                                 patience=int(run_keys.get("patience", 5)),
                                 episode_bars=int(run_keys["episode_bars"]) if run_keys.get("episode_bars") else None,
                                 walk_forward=walk_forward, device=device, trials=trials)
        if settings.steps < 1 or settings.eval_every < 1:
            raise UsageError("steps and eval_every must be positive")
        with open_input(input, expect=(FEATURES,)) as src:
            features = src.read_all()
        summary = run_training_with_progress(run_training, features, settings, cfg, out)
        document = finish_training(summary, features, settings, cfg, out, src.label)
        if as_json:
            json.dump(document, sys.stdout, indent=2, allow_nan=False)
            sys.stdout.write("\n")

    run("train", body)


def run_training_with_progress(run_training, features, settings, cfg, out: Path):  # noqa: ANN001, ANN201
    """Train with a rich progress display on a terminal, log lines otherwise."""
    import sys as _sys

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = settings.steps * len(settings.seeds) * max(settings.walk_forward, 1)
    if not _sys.stderr.isatty():
        def plain(event: dict) -> None:
            log.info("fold %d seed %d: step %d/%d, loss %.4g, exploration %.3f, validation Sharpe %.3f (best %.3f)",
                     event["fold"], event["seed"], event["step"], event["steps"], event["loss"], event["exploration"],
                     event["valid_sharpe"], event["best"])

        return run_training(features, settings, cfg.paper, out, plain)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"{settings.algo}", total=total, info="")
        done = {"base": 0, "key": None}

        def show(event: dict) -> None:
            key = (event["fold"], event["seed"])
            if done["key"] != key:
                if done["key"] is not None:
                    done["base"] += settings.steps
                done["key"] = key
            bar.update(task, completed=done["base"] + event["step"],
                       info=f"fold {event['fold']} seed {event['seed']}  loss {event['loss']:.4g}  "
                            f"explore {event['exploration']:.3f}  valid Sharpe {event['valid_sharpe']:.2f} "
                            f"(best {event['best']:.2f})")

        return run_training(features, settings, cfg.paper, out, show)

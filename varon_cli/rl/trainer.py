"""`varon train` as a library: time splits, training per seed, model selection on validation, one test.

Honest validation, in order:
1. the features are split by time only (train < validation < test, one cutoff
   for every symbol; `walk_forward` for rolling folds);
2. normalisation statistics are fitted on the training split alone and stored
   with the model;
3. each seed trains on the training split; its greedy policy is scored on the
   validation split every `eval_every` steps; the best validation score keeps
   its weights and `patience` evaluations without improvement stop the seed;
4. the model is the seed with the best validation score (validation alone);
5. the test split is touched once, at the end, through the same backtest engine
   as `varon backtest`, beside buy-and-hold and ema-cross on the same period.
   Every seed's test result is reported as a distribution, and the chosen
   model's Sharpe is also deflated for the number of trials (Bailey & López de
   Prado 2014).

A seed checkpoints its whole training state (agent with replay, environment
RNG, counters, best weights) at every evaluation, so a killed run resumes from
the last one and finishes with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from varon_cli import __version__
from varon_cli.config import PaperConfig, RiskConfig
from varon_cli.errors import InputError, UsageError
from varon_cli.rl.agents.base import Agent
from varon_cli.rl.agents.factory import make_agent, restore_agent
from varon_cli.rl.agents.hparams import resolve_hparams
from varon_cli.rl.dataset import MarketData, Normaliser, fingerprint, prepare, split_by_time, walk_forward
from varon_cli.rl.env import Costs, TradingEnv
from varon_cli.rl.policy import greedy_actions
from varon_cli.rl.validation import deflated_sharpe, moments, sharpe, summarise_seeds

log = logging.getLogger("varon.train")
ACTIONS = (-1.0, 0.0, 1.0)


@dataclass(frozen=True)
class TrainSettings:
    algo: str
    hparams: dict[str, Any]
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 20_000
    eval_every: int = 2_000
    patience: int = 5
    episode_bars: int | None = 256
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    walk_forward: int = 0
    device: str = "auto"
    trials: int = 0  # configurations tried before this one (for the deflated Sharpe); 0 = just the seeds

    def describe(self) -> dict[str, Any]:
        return {"algo": self.algo, "hparams": self.hparams, "seeds": list(self.seeds), "steps": self.steps,
                "eval_every": self.eval_every, "patience": self.patience, "episode_bars": self.episode_bars,
                "fractions": list(self.fractions), "walk_forward": self.walk_forward, "trials": self.trials}


@dataclass
class SeedResult:
    seed: int
    best_valid_sharpe: float
    best_step: int
    steps_done: int
    agent: Agent
    seconds: float
    env_steps_per_s: float
    updates: int


@dataclass
class FoldResult:
    fold: int
    seeds: list[SeedResult]
    chosen: SeedResult
    normaliser: Normaliser
    window: dict[str, int]
    test: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[dict[str, Any]], None]


def _checkpoint_path(out: Path, fold: int, seed: int) -> Path:
    return out / "checkpoints" / f"fold{fold}-seed{seed}.pt"


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def validation_score(agent: Agent, env: TradingEnv) -> float:
    """Annualised Sharpe of the greedy policy's net log returns on a split (no exploration)."""
    actions = greedy_actions(agent, env.data, env.action_values)
    evaluation = env.evaluate(actions)
    score = sharpe(evaluation.log_returns, env.costs.periods_per_year)
    return float(score) if np.isfinite(score) else -1e9


def train_seed(train_env: TradingEnv, valid_env: TradingEnv, settings: TrainSettings, seed: int, fold: int,
               out: Path, identity: dict[str, Any], progress: Progress | None = None) -> SeedResult:
    """Train one seed with checkpoints at every evaluation; resumes from a compatible checkpoint."""
    hp = settings.hparams
    augment = bool(hp.get("augment", False))
    path = _checkpoint_path(out, fold, seed)
    step, best, best_step, best_state, stale, updates = 0, -np.inf, 0, None, 0, 0
    agent: Agent | None = None
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("identity") != identity:
            raise UsageError(f"{path}: checkpoint of another dataset, feature spec or config; "
                             f"remove {out / 'checkpoints'} or use another --out")
        agent = restore_agent(saved["agent"], device=settings.device)
        train_env._rng = np.random.default_rng()  # noqa: SLF001 - restored below
        train_env._rng.bit_generator.state = saved["env_rng"]  # noqa: SLF001
        step, best, best_step, stale, updates = (saved["step"], saved["best"], saved["best_step"], saved["stale"],
                                                 saved["updates"])
        best_state = saved["best_state"]
        log.info("fold %d seed %d: resuming at step %d from %s", fold, seed, step, path)
        obs, state = saved["obs"], saved["state"]
        for name, value in saved["episode"].items():
            setattr(train_env, name, value)  # where the environment was in its episode
    else:
        agent = make_agent(settings.algo, train_env.obs_dim, train_env.n_actions, hp, seed=seed,
                           device=settings.device)
        obs = train_env.reset(seed=seed)
        state = agent.initial_state(1)
    started = time.perf_counter()
    start_step = step
    finished = stale >= settings.patience
    while step < settings.steps and not finished:
        action, next_state = agent.act(obs[None, :], state, explore=True)
        a = int(action[0])
        next_obs, reward, done, info = train_env.step(a)
        # an episode ends because a window or the data ends, never because the market does: a cut, not a
        # terminal state, so the value after it is bootstrapped
        agent.observe(obs[None, :], np.array([a]), np.array([reward]), next_obs[None, :], np.array([False]),
                      augmented=_augmented(info) if augment else None, truncated=np.array([done]))
        metrics = agent.update()
        if metrics:
            updates += 1
        step += 1
        if done:
            obs = train_env.reset()
            state = agent.initial_state(1)
        else:
            obs, state = next_obs, next_state
        if step % settings.eval_every == 0 or step == settings.steps:
            score = validation_score(agent, valid_env)
            if score > best:
                best, best_step, stale = score, step, 0
                best_state = agent.state_dict(include_replay=False)
            else:
                stale += 1
            finished = stale >= settings.patience
            _save_checkpoint(path, {"identity": identity, "agent": agent.state_dict(include_replay=True),
                                    "env_rng": train_env._rng.bit_generator.state,  # noqa: SLF001
                                    "step": step, "best": best, "best_step": best_step, "stale": stale,
                                    "updates": updates, "best_state": best_state, "obs": obs, "state": state,
                                    "episode": {name: getattr(train_env, name) for name in
                                                ("_row", "_end", "_pos", "_next_series")}})
            if progress is not None:
                progress({"fold": fold, "seed": seed, "step": step, "steps": settings.steps,
                          "loss": float(metrics.get("loss", np.nan)) if metrics else float("nan"),
                          "exploration": agent.exploration(), "valid_sharpe": score, "best": best})
    seconds = time.perf_counter() - started
    final = restore_agent(best_state, device="cpu") if best_state is not None else agent
    rate = (step - start_step) / seconds if seconds > 0 else float("nan")
    return SeedResult(seed, float(best), best_step, step, final, seconds, rate, updates)


def _augmented(info: dict) -> dict[str, np.ndarray] | None:
    payload = info.get("augmented")
    if payload is None:
        return None
    rewards, next_obs = payload
    return {"rewards": rewards, "next_obs": next_obs}


def usable_columns(features: pa.Table) -> list[str]:
    """Feature columns that carry information: a column that is NaN everywhere (e.g. a taker-buy ratio computed
    from candles that never say who bought) is left out, with a warning, rather than failing the run."""
    from varon_cli.schemas import FEATURES

    columns, empty = [], []
    for field in features.schema:
        if field.name in FEATURES.schema.names or not pa.types.is_floating(field.type):
            continue
        values = features.column(field.name).to_numpy(zero_copy_only=False)
        (columns if np.isfinite(values).any() else empty).append(field.name)
    if empty:
        log.warning("feature column(s) %s are NaN everywhere in this data and are not used", ", ".join(empty))
    if not columns:
        raise InputError("no usable feature columns: every float column is NaN")
    return columns


def prepare_splits(features: pa.Table, settings: TrainSettings, min_rows: int) -> list[tuple[MarketData, ...]]:
    data = prepare(features, usable_columns(features), min_rows=min_rows)
    if settings.walk_forward > 1:
        return walk_forward(data, settings.walk_forward, min_rows=min_rows)
    return [split_by_time(data, settings.fractions, min_rows=min_rows)]


def train(features: pa.Table, settings: TrainSettings, paper: PaperConfig, out: Path,
          progress: Progress | None = None) -> list[FoldResult]:
    """Train every fold and seed; returns the folds with their chosen (best-validation) seeds."""
    hp = settings.hparams
    min_rows = max(3, int(hp.get("seq_len", 1)) + int(hp.get("burn_in", 0)) + 3)
    folds = prepare_splits(features, settings, min_rows)
    meta = features.schema.metadata or {}
    identity = {"fingerprint": fingerprint(features), "settings": settings.describe(),
                "feature_hash": (meta.get(b"varon.feature_hash") or b"").decode()}
    results = []
    for number, (train_data, valid_data, test_data) in enumerate(folds):
        normaliser = Normaliser.fit(train_data)
        costs = Costs.from_paper(paper, train_data.interval_ns)
        seeds = []
        for seed in settings.seeds:
            train_env = TradingEnv(train_data, normaliser, costs, ACTIONS, settings.episode_bars, seed=seed,
                                   augment=bool(hp.get("augment", False)))
            valid_env = TradingEnv(valid_data, normaliser, costs, ACTIONS, None, seed=seed, augment=False)
            seeds.append(train_seed(train_env, valid_env, settings, seed, number, out, identity, progress))
            log.info("fold %d seed %d: best validation Sharpe %.3f at step %d (%d steps, %.0f steps/s)", number,
                     seed, seeds[-1].best_valid_sharpe, seeds[-1].best_step, seeds[-1].steps_done,
                     seeds[-1].env_steps_per_s)
        chosen = max(seeds, key=lambda r: r.best_valid_sharpe)
        window = {"train": list(train_data.time_range()), "valid": list(valid_data.time_range()),
                  "test": list(test_data.time_range())}
        results.append(FoldResult(number, seeds, chosen, normaliser, window))
    return results


def deflate(test_returns: np.ndarray, seed_sharpes: list[float], trials: int) -> float:
    """Probability that the chosen model's (per-bar) Sharpe beats what chance gives the best of `trials` tries."""
    if len(test_returns) < 3:
        return float("nan")
    sr = float(np.mean(test_returns) / np.std(test_returns, ddof=1)) if np.std(test_returns) > 0 else 0.0
    skew, kurt = moments(test_returns)
    variance = float(np.var(seed_sharpes, ddof=1)) if len(seed_sharpes) > 1 else 0.0
    return float(deflated_sharpe(sr, max(trials, 1), len(test_returns), skew, kurt, max(variance, 1e-12)))


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    head = Path(__file__).resolve().parents[2] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        return f"{__version__}+{ref[:12]}"
    except OSError:
        return __version__


__all__ = ["TrainSettings", "train", "deflate", "code_version", "resolve_hparams", "summarise_seeds", "InputError",
           "RiskConfig"]

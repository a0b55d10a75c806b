#!/usr/bin/env python
"""Benchmarks of RL training throughput on CPU beside stable-baselines3 in the same run, and of live DRQN latency.

    .venv/bin/python scripts/bench_train.py            # 30,000 training steps a side, 5,000 latency bars (~2.5-3 min)
    .venv/bin/python scripts/bench_train.py --quick    # 5,000 steps a side, 1,000 latency bars, smoke run
    .venv/bin/python scripts/bench_train.py --only 2   # DRQN latency only

Data. 50,000 1-minute bars of one symbol (coinbase BTC-USD) on a gap-free grid
from 2024-01-01: by default the real 45,031 1m candles of the BTC perpetual in
shared/data/candles/btc-perp-20211231-20220201_1m.csv, then the same month
time-reversed (as scripts/bench_backtest.py lays them; volume there is quote
volume: base = volume / close; no taker-buy volume, vwap = (h+l+c)/3); `--data
walk` uses a seeded random walk instead. Features: the default spec
(varon_cli/features/default.toml) through features_from_table; the columns
are trainer.usable_columns (every float feature column that is not NaN
everywhere: taker_buy_ratio is left out, 19 remain), prepared with
dataset.prepare and split by time 70/15/15 as `varon train` does; the
normaliser is fitted on the training split.

1. training throughput. The environment is varon's TradingEnv over the training split (35k bars),
   actions (-1, 0, 1), episode_bars 256, the paper venue's default costs, augment off; observation =
   19 scored features + the position (20 floats). --repeat rounds (default 2, interleaved so that a
   change of machine load hits both sides): each round times varon's runs in this process, then SB3's
   in a fresh process, which first makes one untimed --warmup-steps run on a throwaway model (torch's
   first calls); varon makes the same warm-up run once. The best run of each side is reported, with
   every run's time beside it. torch intra-op threads = 1 on both sides (varon sets it from
   hparams.threads = 1; SB3's process calls torch.set_num_threads(1)).
     varon: make_agent("dqn", 20, 3, hparams, seed 0, device "cpu") driven by the loop of
       trainer.train_seed: act -> env.step -> observe -> update, reset (env and agent state) at an
       episode's end. The validation passes and checkpoints train_seed adds every eval_every steps are
       not in it; `train_seed` itself is also timed, as `varon train` runs it (varon defaults, 10,000
       steps, eval every 2,000 steps on the validation split with a checkpoint each time; not --quick),
       varon only.
     stable-baselines3: DQN("MlpPolicy", env, policy_kwargs={"net_arch": [64, 64]}, ...) and
       model.learn(total_timesteps=N) timed, in its own interpreter (--sb3-python, default
       /tmp/sb3-venv/bin/python) as a subprocess. Its env is the SAME TradingEnv class: the subprocess
       imports varon_cli.rl.env from this checkout (sys.path; the venv has numpy and pyarrow, all that
       module needs) and rebuilds it from the raw training split and the fitted normaliser saved to an
       .npz, behind a gymnasium.Env wrapper (Box(20,) float32 observations, Discrete(3); reset -> (obs,
       {}); step -> (obs, reward, done, False, info): the end of a window is reported as terminated,
       as train_seed feeds it to varon's agent). SB3 wraps it in Monitor and DummyVecEnv as DQN does
       by default. Checked: a fixed action sequence through the wrapper gives the same rewards and
       observations as varon's env in this process.
     configurations: "matched" = SB3 DQN's defaults (2.x) where comparable, on both sides: hidden
       [64, 64] ReLU, Adam lr 1e-4 eps 1e-8, batch 32, buffer 1,000,000, learning_starts 100,
       train_freq 4, gradient_steps 1, gamma 0.99, hard target copy every 10,000 env steps (SB3
       counts env steps, varon gradient steps: target_update_interval 2,500), Huber loss (delta 1),
       grad-norm clip 10, epsilon 1 -> 0.05 over the first 10 % of the run (SB3 exploration_fraction
       0.1; varon eps_decay_steps = N / 10). "varon defaults" = hparams.DEFAULTS["dqn"] as `varon
       train --algo dqn` uses them (batch 64, lr 5e-4, buffer 100,000, learning_starts 1,000, target
       copy every 500 gradient steps, epsilon over 10,000 steps), and SB3 given the same values.
       Differences that stay: varon's Adam is fused and it runs torch.use_deterministic_algorithms
       (hparams.deterministic); SB3 steps a 1-env DummyVecEnv with a Monitor, logs, and calls
       callbacks.
     Figures: env steps/s = steps / wall time of the whole loop (acting, stepping, storing and
     learning together); gradient updates/s = updates / the same wall time. Ratio = varon / SB3:
     above 1, varon is faster. Each run's process CPU time (time.process_time) is printed beside its
     wall time, and the ratio of the best CPU times too: on a machine shared with other processes it
     moves less with their load than the wall-time ratio does. "env alone": random actions through
     TradingEnv.step (varon) and through DummyVecEnv(Monitor(wrapper)).step (the SB3 process).

2. live DRQN inference, one bar at a time. A DRQN agent from make_agent("drqn", ...) with its
   defaults (encoder [64], LSTM 64, double, threads 1), UNTRAINED (seeded weights: the work per bar
   does not depend on their values), wrapped as ModelStrategy.from_agent(agent, meta, "drqn-bench")
   with meta = feature_hash, feature_columns, normaliser (Normaliser.fit(train).to_dict()), actions
   [-1, 0, 1]. The bars are the last --latency-warmup + --latency-bars rows of the features table,
   each a 1-row RecordBatch sliced beforehand; the first --latency-warmup are not counted. Timed
   (perf_counter_ns), hidden state and position carried from bar to bar by the strategy:
     a. strategy.decide(batch, np.array([0]))
     b. SignalGenerator(strategy, 1m).signals(batch): decide plus building the signals batch
     c. agent.act(obs, state, explore=False) on the same observations: the network alone, the floor
   Beside the wall times, each bar's thread CPU time (time.thread_time_ns): on a machine shared with
   other processes (the load average is printed) a bar preempted midway shows in the wall time only.
   Checked: the per-bar decisions equal one decide() call over all the bars at once (the state carried
   across calls is the state carried within a call), and the LSTM state moved. The issue's target:
   p99 < 2 ms per bar on CPU, hidden state carried (b counts), judged on the wall time and on the thread
   CPU time.

Figures are throughputs, latencies and ratios; no timing is asserted. Checks are printed; the exit
status is 1 when one fails. `--profile` adds a cProfile of varon's training loop (matched, top 15 by
tottime).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import logging
import math
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from benchkit import rate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from varon_cli.config import load_config  # noqa: E402
from varon_cli.features.engine import features_from_table  # noqa: E402
from varon_cli.features.spec import load_spec  # noqa: E402
from varon_cli.rl.agents.factory import make_agent  # noqa: E402
from varon_cli.rl.agents.hparams import DEFAULTS  # noqa: E402
from varon_cli.rl.dataset import MarketData, Normaliser, prepare, split_by_time  # noqa: E402
from varon_cli.rl.env import Costs, TradingEnv  # noqa: E402
from varon_cli.rl.model import ModelStrategy  # noqa: E402
from varon_cli.rl.trainer import ACTIONS, TrainSettings, train_seed, usable_columns  # noqa: E402
from varon_cli.schemas import BARS, FEATURE_HASH_KEY, INTERVAL_KEY  # noqa: E402
from varon_cli.strategies.signals import SignalGenerator  # noqa: E402

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)  # figures never wrap

MINUTE_NS = 60_000_000_000
START_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
VENUE, SYMBOL = "coinbase", "BTC-USD"
CANDLES = ROOT.parent / "shared" / "data" / "candles" / "btc-perp-20211231-20220201_1m.csv"
DEFAULT_SB3_PYTHON = "/tmp/sb3-venv/bin/python"
SB3_INSTALL = ("python3.11 -m venv /tmp/sb3-venv && /tmp/sb3-venv/bin/pip install stable-baselines3==2.9.2 "
               "torch==2.13.0 pyarrow==26.0.1  (the CPU torch wheel)")
TARGET_P99_US = 2_000
EPISODE_BARS = 256
SEED = 0

# SB3 DQN 2.x defaults where varon has the same knob (target_update_interval: env steps, SB3's unit).
SB3_DEFAULTS = {"net_arch": [64, 64], "learning_rate": 1e-4, "adam_eps": 1e-8, "batch_size": 32,
                "buffer_size": 1_000_000, "learning_starts": 100, "train_freq": 4, "gradient_steps": 1,
                "gamma": 0.99, "tau": 1.0, "target_update_env_steps": 10_000, "max_grad_norm": 10.0,
                "eps_start": 1.0, "eps_end": 0.05, "exploration_fraction": 0.1}

FAILED: list[str] = []


# -- helpers ------------------------------------------------------------------------------------------


def check(label: str, ok: bool, detail: str) -> None:
    console.print(f"check {label}: {'[green]OK[/]' if ok else '[red]FAILED[/]'} - {detail}")
    if not ok:
        FAILED.append(label)


def train_figure(label: str, steps: int, updates: int, secs: float, extra: str = "") -> None:
    console.print(f"{label:<46}{rate(steps, secs, 'steps'):>18}{rate(updates, secs, 'updates'):>20}   {secs:7.2f} s"
                  f"   ({steps:,} steps, {updates:,} updates){('; ' + extra) if extra else ''}")


def pct_line(label: str, us: np.ndarray) -> str:
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return (f"{label:<44} p50 {p50:7.1f}  p90 {p90:7.1f}  p99 {p99:7.1f}  max {us.max():8.1f}  "
            f"mean {us.mean():7.1f} us  (n={len(us):,})")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def quiet_logs() -> None:
    root = logging.getLogger("varon")
    root.handlers[:] = [logging.NullHandler()]
    root.propagate = False


# -- data ---------------------------------------------------------------------------------------------
def real_candles(n: int) -> tuple[np.ndarray, ...]:
    """(open, high, low, close, base volume): the real month, forward then reversed, again and again."""
    import polars as pl

    df = pl.read_csv(CANDLES, try_parse_dates=True)
    o, h, lo, c = (df[k].to_numpy().astype(np.float64) for k in ("open", "high", "low", "close"))
    v = df["volume"].to_numpy().astype(np.float64) / c  # quote volume -> base volume
    fwd = (o, h, lo, c, v)
    rev = (c[::-1], h[::-1], lo[::-1], o[::-1], v[::-1])  # time-reversed: its open is the forward close
    parts: list[tuple[np.ndarray, ...]] = []
    total = 0
    while total < n:
        parts.append(fwd if len(parts) % 2 == 0 else rev)
        total += len(o)
    return tuple(np.concatenate([p[i] for p in parts])[:n] for i in range(5))


def walk_candles(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """A seeded random walk of 1m candles (~3 %/day)."""
    rng = np.random.default_rng(seed)
    close = np.round(60_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0008, n))), 2)
    open_ = np.r_[60_000.0, close[:-1]]
    high = np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0004, n))), 2)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0004, n))), 2)
    volume = np.round(rng.lognormal(math.log(20.0), 0.8, n), 6)
    return open_, high, low, close, volume


def bars_table(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> pa.Table:
    n = len(o)
    ts = START_NS + MINUTE_NS * np.arange(n, dtype=np.int64)
    zero = pa.array(np.zeros(n, dtype=np.int8))
    vwap = np.where(v > 0, (h + lo + c) / 3.0, c)
    return pa.Table.from_arrays(
        [pa.array(ts, type=BARS.schema.field("ts").type), pa.array([VENUE]).take(zero), pa.array([SYMBOL]).take(zero),
         pa.array(o), pa.array(h), pa.array(lo), pa.array(c), pa.array(v), pa.array(np.full(n, np.nan)),
         pa.array(vwap), pa.nulls(n, pa.int64()), pa.array(np.zeros(n, dtype=np.bool_))],
        schema=BARS.schema_with({INTERVAL_KEY: b"1m"}),
    )


def save_split(path: Path, data: MarketData, normaliser: Normaliser, costs: Costs) -> None:
    """The raw training split, the fitted normaliser and the costs: what the SB3 process rebuilds TradingEnv from."""
    np.savez(path, features=data.features, ts=data.ts, open=data.open, close=data.close, offsets=data.offsets,
             interval_ns=np.int64(data.interval_ns), columns=np.array(data.columns),
             normaliser=np.array(json.dumps(normaliser.to_dict())),
             costs=np.array([costs.taker_fee, costs.slippage, costs.funding_rate_per_hour]))


def probe_actions(n: int) -> np.ndarray:
    return np.random.default_rng(123).integers(0, len(ACTIONS), n)


def env_digest(env: TradingEnv, actions: np.ndarray) -> dict[str, float]:
    """Rewards and observations of a fixed action sequence from reset(seed 0), episodes restarting at done."""
    obs = env.reset(seed=SEED)
    rewards, obs_sum, dones = 0.0, float(obs.astype(np.float64).sum()), 0
    for a in actions:
        obs, r, done, _ = env.step(int(a))
        rewards += r
        obs_sum += float(obs.astype(np.float64).sum())
        if done:
            dones += 1
            obs = env.reset()
            obs_sum += float(obs.astype(np.float64).sum())
    return {"rewards": rewards, "obs_sum": obs_sum, "dones": dones}


# -- 1. varon ------------------------------------------------------------------------------------------
def matched_hparams(steps: int) -> dict[str, Any]:
    s = SB3_DEFAULTS
    return {"hidden": tuple(s["net_arch"]), "lr": s["learning_rate"], "adam_eps": s["adam_eps"],
            "batch_size": s["batch_size"], "buffer_size": s["buffer_size"], "learning_starts": s["learning_starts"],
            "train_freq": s["train_freq"], "gradient_steps": s["gradient_steps"], "gamma": s["gamma"], "tau": s["tau"],
            "target_update_interval": s["target_update_env_steps"] // (s["train_freq"] // s["gradient_steps"]),
            "max_grad_norm": s["max_grad_norm"], "huber_delta": 1.0, "eps_start": s["eps_start"],
            "eps_end": s["eps_end"], "eps_decay_steps": max(1, int(s["exploration_fraction"] * steps)), "threads": 1}


def sb3_config(hp: dict[str, Any], steps: int) -> dict[str, Any]:
    """SB3 DQN arguments for varon hparams (a full set: SB3 defaults are passed explicitly too)."""
    return {"net_arch": list(hp["hidden"]), "learning_rate": hp["lr"], "adam_eps": hp["adam_eps"],
            "batch_size": hp["batch_size"], "buffer_size": hp["buffer_size"], "learning_starts": hp["learning_starts"],
            "train_freq": hp["train_freq"], "gradient_steps": hp["gradient_steps"], "gamma": hp["gamma"],
            "tau": hp["tau"],
            "target_update_env_steps": hp["target_update_interval"] * hp["train_freq"] // hp["gradient_steps"],
            "max_grad_norm": hp["max_grad_norm"], "eps_start": hp["eps_start"], "eps_end": hp["eps_end"],
            "exploration_fraction": min(1.0, hp["eps_decay_steps"] / steps)}


def varon_loop(env: TradingEnv, hp: dict[str, Any], steps: int) -> tuple[float, float, int, Any]:
    """train_seed's loop without its evaluations: (wall seconds, process CPU seconds, gradient updates, agent)."""
    agent = make_agent("dqn", env.obs_dim, env.n_actions, hp, seed=SEED, device="cpu")
    obs = env.reset(seed=SEED)
    state = agent.initial_state(1)
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        action, next_state = agent.act(obs[None, :], state, explore=True)
        a = int(action[0])
        next_obs, reward, done, _info = env.step(a)
        agent.observe(obs[None, :], np.array([a]), np.array([reward]), next_obs[None, :], np.array([done]))
        agent.update()
        if done:
            obs = env.reset()
            state = agent.initial_state(1)
        else:
            obs, state = next_obs, next_state
    return time.perf_counter() - t0, time.process_time() - c0, agent.grad_steps, agent


def env_alone(env: TradingEnv, steps: int) -> float:
    actions = np.random.default_rng(1).integers(0, env.n_actions, steps).tolist()
    env.reset(seed=SEED)
    t0 = time.perf_counter()
    for a in actions:
        _, _, done, _ = env.step(a)
        if done:
            env.reset()
    return time.perf_counter() - t0


# -- 1. stable-baselines3, in its own interpreter ------------------------------------------------------
SB3_SCRIPT = r"""
import importlib.metadata, json, sys, time
sys.path.insert(0, sys.argv[1])  # varon's checkout: varon_cli.rl.env needs numpy and pyarrow only
import numpy as np
import torch
torch.set_num_threads(1)
import gymnasium as gym
from stable_baselines3 import DQN
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from varon_cli.rl.dataset import MarketData, Normaliser
from varon_cli.rl.env import Costs, TradingEnv

saved = np.load(sys.argv[2])
job = json.loads(sys.argv[3])
data = MarketData(features=saved["features"], columns=tuple(str(c) for c in saved["columns"]), ts=saved["ts"],
                  open=saved["open"], close=saved["close"], offsets=saved["offsets"],
                  keys=(("coinbase", "BTC-USD"),), interval_ns=int(saved["interval_ns"]))
normaliser = Normaliser.from_dict(json.loads(str(saved["normaliser"])))
fee, slip, funding = (float(x) for x in saved["costs"])
costs = Costs(taker_fee=fee, slippage=slip, funding_rate_per_hour=funding, bar_interval_ns=data.interval_ns)


class VaronEnv(gym.Env):
    # varon's TradingEnv as a gymnasium Env; a window's end is reported as terminated, as train_seed does
    metadata = {"render_modes": []}

    def __init__(self):
        self.env = TradingEnv(data, normaliser, costs, (-1.0, 0.0, 1.0), job["episode_bars"], seed=job["seed"],
                              augment=False)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.env.obs_dim,), np.float32)
        self.action_space = gym.spaces.Discrete(self.env.n_actions)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.env.reset(seed=seed), {}

    def step(self, action):
        obs, reward, done, info = self.env.step(int(action))
        return obs, reward, done, False, info


out = {"sb3": importlib.metadata.version("stable-baselines3"), "torch": torch.__version__,
       "gymnasium": importlib.metadata.version("gymnasium"), "numpy": np.__version__,
       "threads": torch.get_num_threads()}

# the same action sequence as varon's env in the parent, through the wrapper
w = VaronEnv()
obs, _ = w.reset(seed=job["seed"])
rewards, obs_sum, dones = 0.0, float(obs.astype(np.float64).sum()), 0
for a in job["probe"]:
    obs, r, term, trunc, _ = w.step(a)
    rewards += r
    obs_sum += float(obs.astype(np.float64).sum())
    if term or trunc:
        dones += 1
        obs, _ = w.reset()
        obs_sum += float(obs.astype(np.float64).sum())
out["digest"] = {"rewards": rewards, "obs_sum": obs_sum, "dones": dones}

# env alone, as SB3 steps it
venv = DummyVecEnv([lambda: Monitor(VaronEnv())])
venv.seed(job["seed"])
venv.reset()
acts = np.random.default_rng(1).integers(0, 3, (job["env_steps"], 1))
t0 = time.perf_counter()
for a in acts:
    venv.step(a)
out["env_alone"] = time.perf_counter() - t0


def model(c):
    return DQN("MlpPolicy", VaronEnv(), learning_rate=c["learning_rate"], buffer_size=c["buffer_size"],
               learning_starts=c["learning_starts"], batch_size=c["batch_size"], tau=c["tau"], gamma=c["gamma"],
               train_freq=c["train_freq"], gradient_steps=c["gradient_steps"],
               target_update_interval=c["target_update_env_steps"], exploration_fraction=c["exploration_fraction"],
               exploration_initial_eps=c["eps_start"], exploration_final_eps=c["eps_end"],
               max_grad_norm=c["max_grad_norm"], policy_kwargs={"net_arch": c["net_arch"],
               "optimizer_kwargs": {"eps": c["adam_eps"]}}, seed=job["seed"], device="cpu", verbose=0)


runs = []
if job["warmup"]:
    c = dict(job["configs"][0], exploration_fraction=0.1)
    model(c).learn(total_timesteps=job["warmup"])  # torch's first calls in this process, untimed
for c in job["configs"]:
    m = model(c)
    t0, c0 = time.perf_counter(), time.process_time()
    m.learn(total_timesteps=job["steps"])
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    runs.append({"seconds": secs, "cpu": cpu, "steps": int(m.num_timesteps), "updates": int(m._n_updates),
                 "net": str(m.q_net.q_net).replace("\n", " ")})
out["runs"] = runs
print(json.dumps(out))
"""


def probe_python(python: str) -> str:
    """'' when `python` can import stable_baselines3, gymnasium and varon's env module, else why not."""
    if not python:
        return "no interpreter given"
    if not Path(python).exists():
        return f"{python} does not exist; install with: {SB3_INSTALL}"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import stable_baselines3, gymnasium, varon_cli.rl.env"
    probe = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{python} cannot import stable_baselines3 / gymnasium / varon_cli.rl.env: " \
               f"{probe.stderr.strip().splitlines()[-1:]}"
    return ""


def run_sb3(python: str, npz: Path, job: dict[str, Any]) -> tuple[dict | None, str]:
    # the script runs from a temporary directory: a file named like a stdlib module in the cwd cannot shadow it
    proc = subprocess.run([python, "-c", SB3_SCRIPT, str(ROOT), str(npz), json.dumps(job)], capture_output=True,
                          text=True, cwd=npz.parent, env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    if proc.returncode != 0:
        return None, f"run failed ({proc.returncode}): {proc.stderr.strip()[-1200:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


# -- 1. the section ------------------------------------------------------------------------------------
def bench_train(args: argparse.Namespace, train: MarketData, valid: MarketData, normaliser: Normaliser,
                costs: Costs, tmp: Path) -> None:
    n = args.steps
    console.rule(f"[bold]1. training throughput, DQN on CPU: {n:,} env steps a side, TradingEnv over {train.n_rows:,} "
                 "training bars")
    env = TradingEnv(train, normaliser, costs, ACTIONS, EPISODE_BARS, seed=SEED, augment=False)
    matched = matched_hparams(n)
    own = dict(DEFAULTS["dqn"])
    configs = [("matched", matched), ("varon defaults", own)]
    console.print(f"env: obs_dim {env.obs_dim} ({train.n_features} scored features + position), {env.n_actions} actions, "
                  f"episode_bars {EPISODE_BARS}, costs: taker fee {costs.taker_fee}, slippage {costs.slippage}, funding "
                  f"{costs.funding_rate_per_hour}/h. torch {torch.__version__}, intra-op threads 1 on both sides; "
                  f"{args.repeat} round(s) of timed runs, best kept, after a {args.warmup_steps:,}-step warm-up run "
                  "per process.", style="dim")
    capped = ", capped: a shorter decay"
    for label, hp in configs:
        c = sb3_config(hp, n)
        console.print(f"config {label}: net [64, 64], batch {hp['batch_size']}, lr {hp['lr']:g}, Adam eps "
                      f"{hp['adam_eps']:g}, buffer {hp['buffer_size']:,}, learning_starts {hp['learning_starts']:,}, "
                      f"train_freq {hp['train_freq']}, gradient_steps {hp['gradient_steps']}, gamma {hp['gamma']}, "
                      f"target copy every {c['target_update_env_steps']:,} env steps (varon target_update_interval "
                      f"{hp['target_update_interval']:,} gradient steps), epsilon {hp['eps_start']:g} -> "
                      f"{hp['eps_end']:g} over {hp['eps_decay_steps']:,} steps (SB3 exploration_fraction "
                      f"{c['exploration_fraction']:g}{capped if hp['eps_decay_steps'] > n else ''}), grad clip "
                      f"{hp['max_grad_norm']:g}", style="dim")

    # the same environment in both processes
    probe = probe_actions(2_000)
    mine = env_digest(env, probe)
    npz = tmp / "train_split.npz"
    save_split(npz, train, normaliser, costs)

    # rounds: varon's runs, then SB3's (a fresh process each round), --repeat times; the best run of each is kept
    labels = [label for label, _ in configs]
    varon_runs: dict[str, list[tuple[float, float, int]]] = {label: [] for label in labels}
    sb3_runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    job = {"seed": SEED, "episode_bars": EPISODE_BARS, "probe": probe.tolist(), "env_steps": n, "steps": n,
           "warmup": args.warmup_steps, "configs": [sb3_config(hp, n) for _, hp in configs]}
    sb3: dict[str, Any] | None = None
    why = probe_python(args.sb3_python) if args.sb3_python else "skipped (--sb3-python '')"
    if args.warmup_steps:
        varon_loop(env, matched | {"eps_decay_steps": args.warmup_steps // 10 or 1}, args.warmup_steps)
    for _ in range(args.repeat):
        for label, hp in configs:
            secs, cpu, updates, _agent = varon_loop(env, hp, n)
            varon_runs[label].append((secs, cpu, updates))
        if not why:
            got, why = run_sb3(args.sb3_python, npz, job)
            if got is not None:
                sb3 = sb3 or got
                for label, r in zip(labels, got["runs"]):
                    sb3_runs[label].append(r)
    env_secs = env_alone(env, n)
    if why:
        sb3 = None
    results = {label: (min(r[0] for r in runs), runs[0][2]) for label, runs in varon_runs.items()}
    varon_cpu = {label: min(r[1] for r in runs) for label, runs in varon_runs.items()}
    best_sb3 = {label: min(runs, key=lambda r: r["seconds"]) for label, runs in sb3_runs.items() if runs}

    def spread(times: list[float], cpu: list[float]) -> str:
        runs = "" if len(times) < 2 else "runs " + " ".join(f"{t:.2f}" for t in times) + " s, "
        return runs + "CPU " + " ".join(f"{t:.2f}" for t in cpu) + " s"

    console.print(f"{'':<46}{'env steps/s':>18}{'updates/s':>20}   best of {args.repeat}")
    for label, hp in configs:
        secs, updates = results[label]
        train_figure(f"varon DQN, {label}", n, updates, secs, spread([r[0] for r in varon_runs[label]],
                                                                          [r[1] for r in varon_runs[label]]))
        if sb3 is not None:
            r = best_sb3[label]
            train_figure(f"SB3 {sb3['sb3']} DQN, {label}", r["steps"], r["updates"], r["seconds"],
                         spread([x["seconds"] for x in sb3_runs[label]], [x["cpu"] for x in sb3_runs[label]]))
    train_figure("varon TradingEnv.step alone (random actions)", n, 0, env_secs)
    if sb3 is not None:
        train_figure("SB3 DummyVecEnv(Monitor(wrapper)).step alone", n, 0, sb3["env_alone"])
    if sb3 is None:
        console.print(f"stable-baselines3: not measured ({why})")
    else:
        console.print(f"   SB3 process: stable-baselines3 {sb3['sb3']}, torch {sb3['torch']}, gymnasium {sb3['gymnasium']}, "
                      f"numpy {sb3['numpy']}, torch threads {sb3['threads']}; q_net {sb3['runs'][0]['net']}", style="dim")
        d = sb3["digest"]
        same = d["dones"] == mine["dones"] and math.isclose(d["rewards"], mine["rewards"], rel_tol=0, abs_tol=1e-9) \
            and math.isclose(d["obs_sum"], mine["obs_sum"], rel_tol=1e-12)
        check("SB3 steps the same environment", same,
              f"{len(probe):,} fixed actions: reward sum {d['rewards']:.9f} vs {mine['rewards']:.9f}, obs sum "
              f"{d['obs_sum']:.4f} vs {mine['obs_sum']:.4f}, {d['dones']} vs {mine['dones']} episode ends")
        for label, hp in configs:
            secs, updates = results[label]
            r = best_sb3[label]
            expect = (n - hp["learning_starts"]) // hp["train_freq"] * hp["gradient_steps"]
            check(f"both sides did the same updates ({label})",
                  r["steps"] == n and abs(r["updates"] - updates) <= hp["gradient_steps"] + 1
                  and abs(updates - expect) <= hp["gradient_steps"] + 1,
                  f"varon {updates:,}, SB3 {r['updates']:,} (about {expect:,} expected), SB3 steps {r['steps']:,}")
        for label in labels:
            secs, updates = results[label]
            r = best_sb3[label]
            ratio = (n / secs) / (r["steps"] / r["seconds"])
            by_cpu = min(x["cpu"] for x in sb3_runs[label]) / varon_cpu[label]
            console.print(f"ratio varon/SB3, {label + ':':<17} env steps/s [bold]{ratio:5.2f}x[/], updates/s "
                          f"[bold]{(updates / secs) / (r['updates'] / r['seconds']):5.2f}x[/]  "
                          f"(target >= 1: {'[green]met[/]' if ratio >= 1 else '[red]missed[/]'}); by process CPU "
                          f"time (best runs) {by_cpu:5.2f}x")
        console.print(f"ratio varon/SB3, env alone:       [bold]{(n / env_secs) / (n / sb3['env_alone']):5.2f}x[/]")

    # train_seed as `varon train` runs it
    if not args.quick:
        ts_steps = min(n, 10_000)
        settings = TrainSettings(algo="dqn", hparams=own, seeds=(SEED,), steps=ts_steps, eval_every=2_000,
                                 patience=10**6,
                                 episode_bars=EPISODE_BARS, device="cpu")
        valid_env = TradingEnv(valid, normaliser, costs, ACTIONS, None, seed=SEED, augment=False)
        train_env = TradingEnv(train, normaliser, costs, ACTIONS, EPISODE_BARS, seed=SEED, augment=False)
        gc.collect()
        t0 = time.perf_counter()
        res = train_seed(train_env, valid_env, settings, SEED, 0, tmp / "run", {"bench": True})
        wall = time.perf_counter() - t0
        train_figure("varon train_seed, varon defaults (+evals)", res.steps_done, res.updates, wall)
        console.print(f"   {ts_steps // 2_000} validation passes over {valid.n_rows:,} bars and checkpoints (replay "
                      f"included) in it; train_seed's own figure {res.env_steps_per_s:,.0f} steps/s; best "
                      f"validation Sharpe {res.best_valid_sharpe:.2f} at step {res.best_step:,}", style="dim")

    if args.profile:
        console.rule("[bold]profile: varon's training loop, matched (cProfile, top 15 by tottime)")
        prof = cProfile.Profile()
        prof.enable()
        varon_loop(env, matched, n)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
        console.print(out.getvalue().split("\n", 4)[-1].rstrip(), markup=False)


# -- 2. live DRQN latency -------------------------------------------------------------------------------
def bench_latency(args: argparse.Namespace, feats: pa.Table, columns: list[str], normaliser: Normaliser,
                  obs_dim: int) -> None:
    n_warm, n = args.latency_warmup, args.latency_bars
    console.rule(f"[bold]2. live DRQN inference: {n:,} bars one at a time (after {n_warm:,} warm-up bars)")
    agent = make_agent("drqn", obs_dim, len(ACTIONS), {}, seed=SEED, device="cpu")
    meta = {"feature_hash": (feats.schema.metadata.get(FEATURE_HASH_KEY) or b"").decode(),
            "feature_columns": list(columns), "normaliser": normaliser.to_dict(), "actions": list(ACTIONS)}
    hp = agent.hp
    console.print(f"DRQN, untrained (seeded weights): encoder {list(hp['hidden'])}, LSTM {hp['lstm_hidden']}, "
                  f"{len(ACTIONS)} actions, obs_dim {obs_dim}; torch threads {torch.get_num_threads()}. One 1-row "
                  "features batch per bar (sliced beforehand); state and position carried by the strategy. "
                  "The issue's target: p99 < 2 ms per bar.", style="dim")
    rows = feats.slice(feats.num_rows - n_warm - n, n_warm + n)
    batches = rows.to_batches(max_chunksize=1)
    if len(batches) != n_warm + n:
        batches = [rows.slice(i, 1).combine_chunks().to_batches()[0] for i in range(rows.num_rows)]
    symbols = np.array([0])
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    total = len(batches)

    def fresh() -> ModelStrategy:
        return ModelStrategy.from_agent(agent, meta, "drqn-bench")

    # a. decide
    strategy = fresh()
    t_a = np.empty(total)
    u_a = np.empty(total)
    targets = np.empty(total)
    gc.collect()
    for i, batch in enumerate(batches):
        t0, c0 = clock(), cpu()
        d = strategy.decide(batch, symbols)
        t_a[i], u_a[i] = clock() - t0, cpu() - c0
        targets[i] = d.target[0]
    h_end = strategy._state[0][0].clone()  # noqa: SLF001 - the carried LSTM state, to check it moved

    # b. SignalGenerator.signals
    gen = SignalGenerator(fresh(), MINUTE_NS)
    t_b = np.empty(total)
    u_b = np.empty(total)
    sig_targets = np.empty(total)
    gc.collect()
    for i, batch in enumerate(batches):
        t0, c0 = clock(), cpu()
        out = gen.signals(batch)
        t_b[i], u_b[i] = clock() - t0, cpu() - c0
        sig_targets[i] = out.column("target")[0].as_py()

    # c. agent.act alone, on the observations the strategy built
    whole = fresh()
    one_call = whole.decide(rows.combine_chunks().to_batches(max_chunksize=total)[0], np.zeros(total, np.int64))
    raw = np.column_stack([rows.column(c).to_numpy(zero_copy_only=False) for c in columns])
    scores = normaliser.transform(raw)
    obs = np.empty((total, 1, obs_dim), np.float32)
    obs[:, 0, :-1] = scores
    obs[:, 0, -1] = np.r_[0.0, targets[:-1]]
    state = agent.initial_state(1)
    t_c = np.empty(total)
    u_c = np.empty(total)
    gc.collect()
    for i in range(total):
        t0, c0 = clock(), cpu()
        _, state = agent.act(obs[i], state, explore=False)
        t_c[i], u_c[i] = clock() - t0, cpu() - c0

    sl = slice(n_warm, None)
    a_us, b_us, c_us = t_a[sl] / 1e3, t_b[sl] / 1e3, t_c[sl] / 1e3
    console.print(pct_line("a. ModelStrategy.decide, one bar", a_us))
    console.print(pct_line("b. SignalGenerator.signals, one bar", b_us))
    console.print(pct_line("c. agent.act alone (LSTM step + head)", c_us))
    cpu_p = {k: np.percentile(u[sl] / 1e3, [50, 99]) for k, u in (("a", u_a), ("b", u_b), ("c", u_c))}
    console.print("   thread CPU time per bar (the time the bar's work ran on a CPU, without waits for one), p50 / p99 us: "
                  + ", ".join(f"{k} {v[0]:.1f} / {v[1]:.1f}" for k, v in cpu_p.items()), style="dim")
    moves = int((np.diff(targets) != 0).sum())
    console.print(f"   targets over the run: {int((targets > 0).sum()):,} long, {int((targets < 0).sum()):,} short, "
                  f"{int((targets == 0).sum()):,} flat, {moves:,} changes; bars over 2 ms: a {int((a_us > 2000).sum())}, "
                  f"b {int((b_us > 2000).sum())}", style="dim")
    check("state carried across calls = within one call", np.array_equal(targets, one_call.target)
          and np.array_equal(targets, sig_targets),
          f"{total:,} per-bar decisions vs one decide() over all bars: "
          f"{int((targets != one_call.target).sum())} differ; via SignalGenerator: {int((targets != sig_targets).sum())} differ")
    check("the LSTM state moved", bool(h_end.abs().sum() > 0), f"|h| sum after the run {float(h_end.abs().sum()):.3f}")
    p99 = float(np.percentile(b_us, 99))
    p99_cpu = float(cpu_p["b"][1])

    def verdict(us: float) -> str:
        return "[green]met[/]" if us < TARGET_P99_US else "[red]missed[/]"

    console.print(f"target p99 < 2 ms per bar, hidden state carried (b, signals batch included): wall time "
                  f"{verdict(p99)} (p99 {p99:.1f} us = {p99 / TARGET_P99_US:.3f} of the budget; decide alone p99 "
                  f"{float(np.percentile(a_us, 99)):.1f} us), thread CPU time {verdict(p99_cpu)} (p99 {p99_cpu:.1f} us); "
                  f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


# -- main -----------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 5,000 steps a side, 1,000 latency bars, "
                                                         "no train_seed figure")
    ap.add_argument("--only", default="1,2", help="comma-separated sections to run (default 1,2)")
    ap.add_argument("--bars", type=int, default=50_000, help="1m bars of features (default 50,000)")
    ap.add_argument("--data", choices=("real", "walk"), default="real",
                    help="real: the bundled BTC perp month, forward and reversed (default); walk: a seeded random walk")
    ap.add_argument("--steps", type=int, help="env steps per training run (default 30,000, 5,000 with --quick)")
    ap.add_argument("--warmup-steps", type=int, help="untimed warm-up run per side (default 2,000, 500 with --quick)")
    ap.add_argument("--latency-bars", type=int, help="timed bars in section 2 (default 5,000, 1,000 with --quick)")
    ap.add_argument("--latency-warmup", type=int, default=200, help="bars before the timed ones (default 200)")
    ap.add_argument("--sb3-python", default=os.environ.get("SB3_PYTHON", DEFAULT_SB3_PYTHON),
                    help=f"interpreter with stable-baselines3, gymnasium and pyarrow (default $SB3_PYTHON or "
                         f"{DEFAULT_SB3_PYTHON}); '' skips it")
    ap.add_argument("--repeat", type=int, help="rounds of timed training runs, best taken (default 2, 1 with --quick)")
    ap.add_argument("--profile", action="store_true", help="also cProfile varon's training loop (top 15 by tottime)")
    args = ap.parse_args()
    args.steps = args.steps or (5_000 if args.quick else 30_000)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (500 if args.quick else 2_000)
    args.repeat = args.repeat or (1 if args.quick else 2)
    args.latency_bars = args.latency_bars or (1_000 if args.quick else 5_000)
    sections = {int(s) for s in args.only.split(",") if s.strip()}
    quiet_logs()

    console.print(f"[bold]varon training benchmark[/]{' (quick)' if args.quick else ''}: python "
                  f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; torch {torch.__version__}, "
                  f"numpy {np.__version__}, pyarrow {pa.__version__}; load average {load()} (other processes share the CPUs: "
                  "compare figures of the same run)")
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    real = args.data == "real" and CANDLES.exists()
    candles = real_candles(args.bars) if real else walk_candles(args.bars, 7)
    feats = features_from_table(bars_table(*candles), load_spec())
    columns = usable_columns(feats)
    data = prepare(feats, columns)
    train, valid, _test = split_by_time(data)
    normaliser = Normaliser.fit(train)
    costs = Costs.from_paper(load_config(None, {}, {}).paper, data.interval_ns)
    what = (f"real 1m BTC perp candles {CANDLES.name}, forward and time-reversed" if real
            else "seeded random walk (seed 7)")
    console.print(f"data: {args.bars:,} 1m bars, {what}; {len(columns)} feature columns ({', '.join(columns)}); "
                  f"{data.n_rows:,} rows after warm-up, train {train.n_rows:,} / valid {valid.n_rows:,} / test "
                  f"{_test.n_rows:,} (built in {time.perf_counter() - t0:.1f} s)")
    tmp = Path(tempfile.mkdtemp(prefix="varon-bench-train-"))
    try:
        if 1 in sections:
            bench_train(args, train, valid, normaliser, costs, tmp)
        if 2 in sections:
            warm = feats.column("warmup").to_numpy(zero_copy_only=False)
            bench_latency(args, feats.filter(pa.array(~warm)), columns, normaliser, len(columns) + 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"total {time.perf_counter() - t_start:.0f} s; load average {load()}")
    if FAILED:
        console.print(f"[red]checks failed: {', '.join(FAILED)}[/]")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

"""The interface every `varon train` agent implements, and the input handling they share.

An agent acts on a batch of observations (one row per environment), is told
what happened (`observe`), and learns when asked (`update`). Feed-forward agents
have no state between steps (`state` is None); recurrent ones return a new
state from every `act` that the caller passes back on the next step and resets
with `initial_state` / `reset_state` at episode boundaries.

`observe` takes single steps ([obs_dim] observations, scalar action) or a
batch of steps from parallel environments stepped together ([E, obs_dim],
[E]); `done` means the episode *terminated* (no value beyond it), `truncated`
that it was cut off (time limit, end of data) and bootstraps from `next_obs`.

Action augmentation (Huang 2018, "Financial Trading as a Game: A Deep
Reinforcement Learning Approach"): in a market the agent does not move, the
reward and next observation of every action are known after each step, so a
step can teach the value of all actions. Pass them as `augmented`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Augmented:
    """What every action would have given at one step (or at each of a batch of steps).

    rewards: [n_actions] (or [E, n_actions]); next_obs: [n_actions, obs_dim]
    (or [E, n_actions, obs_dim]). Row a is the outcome of action a; the row of
    the action taken should equal the step's own reward and next observation.
    Episode termination is the step's own `done`: it does not depend on the action.
    """

    rewards: np.ndarray
    next_obs: np.ndarray


@dataclass(frozen=True)
class Steps:
    """A batch of E transitions as float32/int64/bool arrays (what `observe` was given, made batched)."""

    obs: np.ndarray  # [E, D] float32
    action: np.ndarray  # [E] int64
    reward: np.ndarray  # [E] float32
    next_obs: np.ndarray  # [E, D] float32
    terminated: np.ndarray  # [E] bool
    ended: np.ndarray  # [E] bool: terminated or truncated
    aug_rewards: np.ndarray | None  # [E, A] float32
    aug_next_obs: np.ndarray | None  # [E, A, D] float32


def as_steps(obs: Any, action: Any, reward: Any, next_obs: Any, done: Any, truncated: Any,
             augmented: Augmented | Mapping[str, Any] | None, obs_dim: int, n_actions: int,
             need_augmented: bool) -> Steps:
    """Validate and batch the arguments of `observe`; raise ValueError on a shape that does not fit."""
    obs = np.asarray(obs, dtype=np.float32)
    single = obs.ndim == 1
    obs = obs.reshape(1, -1) if single else obs
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(f"obs must be [obs_dim={obs_dim}] or [E, {obs_dim}], got shape {np.shape(obs)}")
    n = obs.shape[0]

    def vector(value: Any, dtype: Any, name: str) -> np.ndarray:
        out = np.asarray(value, dtype=dtype).reshape(-1)
        if out.shape[0] != n:
            raise ValueError(f"{name} has {out.shape[0]} entries for {n} observations")
        return out

    action_arr = vector(action, np.int64, "action")
    if action_arr.size and (action_arr.min() < 0 or action_arr.max() >= n_actions):
        raise ValueError(f"action out of range 0..{n_actions - 1}: {action_arr}")
    next_arr = np.asarray(next_obs, dtype=np.float32).reshape(n, obs_dim)
    terminated = vector(done, bool, "done")
    ended = terminated if truncated is None else terminated | vector(truncated, bool, "truncated")
    aug_r = aug_n = None
    if need_augmented:
        if augmented is None:
            raise ValueError("this agent was built with augment=True: observe needs `augmented` for every step")
        if isinstance(augmented, Mapping):
            augmented = Augmented(augmented["rewards"], augmented["next_obs"])
        aug_r = np.asarray(augmented.rewards, dtype=np.float32)
        aug_n = np.asarray(augmented.next_obs, dtype=np.float32)
        if aug_r.size != n * n_actions or aug_n.size != n * n_actions * obs_dim:
            raise ValueError(f"augmented needs rewards [{n_actions}] and next_obs [{n_actions}, {obs_dim}] per step, "
                             f"got {aug_r.shape} and {aug_n.shape} for {n} steps")
        aug_r = aug_r.reshape(n, n_actions)
        aug_n = aug_n.reshape(n, n_actions, obs_dim)
    return Steps(obs, action_arr, vector(reward, np.float32, "reward"), next_arr, terminated, ended, aug_r, aug_n)


def as_obs_batch(obs: Any, obs_dim: int) -> np.ndarray:
    """Observations for `act` as float32 [batch, obs_dim] (a single [obs_dim] row becomes a batch of one)."""
    x = np.asarray(obs, dtype=np.float32)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != obs_dim:
        raise ValueError(f"obs must be [batch, obs_dim={obs_dim}], got shape {np.shape(obs)}")
    return x


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu'; 'cuda' (error if unavailable)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA device")
    return torch.device(name)


def configure_torch(device: torch.device, threads: int, deterministic: bool) -> None:
    """Process-wide torch settings for training: thread count and deterministic kernels.

    These are global in torch, so they are set here once per agent. Small MLPs
    run fastest on one intra-op thread (thread hand-offs cost more than the
    matmuls); threads=0 leaves torch's choice. Deterministic mode uses
    warn_only so an op without a deterministic CUDA kernel warns instead of
    failing a run; cuBLAS needs its workspace setting for reproducible matmuls.
    """
    if device.type == "cpu" and threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


class Agent(abc.ABC):
    """What `varon train` needs from an agent; see the module docstring for the conventions."""

    algo: str
    obs_dim: int
    n_actions: int
    device: torch.device

    @abc.abstractmethod
    def act(self, obs: np.ndarray, state: Any = None, explore: bool = True) -> tuple[np.ndarray, Any]:
        """Actions [batch] for observations [batch, obs_dim], and the state to pass next time."""

    def initial_state(self, batch: int) -> Any:
        """The state at the start of an episode for `batch` environments (None: no state)."""
        return None

    def reset_state(self, state: Any, mask: np.ndarray) -> Any:
        """`state` with the rows where `mask` is true reset to the episode-start state."""
        return state

    @abc.abstractmethod
    def observe(self, obs: np.ndarray, action: Any, reward: Any, next_obs: np.ndarray, done: Any,
                augmented: Augmented | Mapping[str, Any] | None = None, truncated: Any = None) -> None:
        """Record one step (or a batch of steps, one per environment) for learning."""

    @abc.abstractmethod
    def q_values(self, obs: np.ndarray, state: Any = None) -> np.ndarray:
        """Greedy Q-values [batch, n_actions] for inspection and logging (a recurrent state is not advanced)."""

    @abc.abstractmethod
    def update(self) -> dict[str, float]:
        """Run the gradient steps due; metrics of the last one, or {} when none was due (warm-up)."""

    @abc.abstractmethod
    def exploration(self) -> float:
        """Current exploration level: epsilon, or the mean noise sigma for noisy networks."""

    @abc.abstractmethod
    def state_dict(self, include_replay: bool = True) -> dict[str, Any]:
        """Everything needed to resume training exactly (weights, optimizer, RNGs, counters, replay)."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from `state_dict()`; the agent must have been built with the same algo and hparams."""

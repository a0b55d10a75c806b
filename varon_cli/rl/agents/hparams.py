"""Default hyperparameters per algorithm, and checking of user overrides.

Counts: `learning_starts`, `eps_decay_steps` and `per_beta_steps` are in
environment steps (one per environment per `observe` row); `train_freq` is
environment steps per training round, each of `gradient_steps` updates;
`target_update_interval` is in gradient steps (ignored when tau < 1, which
means a Polyak update of the target after every gradient step instead).

The network size defaults to two hidden layers of 64, the size
stable-baselines3's DQN uses, so speed comparisons are like for like.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_DQN: dict[str, Any] = {
    # network and optimiser
    "hidden": (64, 64),  # MLP torso widths
    "lr": 5e-4,  # Adam learning rate
    "adam_eps": 1.5e-4,  # Adam epsilon (Rainbow's value; 1e-8 makes early steps jumpy)
    "max_grad_norm": 10.0,  # global gradient-norm clip
    "huber_delta": 1.0,  # Huber loss threshold for scalar heads
    # learning schedule
    "gamma": 0.99,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1_000,
    "train_freq": 4,
    "gradient_steps": 1,
    "target_update_interval": 500,
    "tau": 1.0,  # 1 = hard copies every target_update_interval gradient steps
    # epsilon-greedy (unused when noisy)
    "eps_start": 1.0,
    "eps_end": 0.05,
    "eps_decay_steps": 10_000,
    # variants (Hessel et al. 2018 ablate exactly these)
    "double": False,  # van Hasselt et al. 2016
    "dueling": False,  # Wang et al. 2016
    "noisy": False,  # Fortunato et al. 2018
    "noisy_sigma0": 0.5,
    "prioritized": False,  # Schaul et al. 2016
    "per_alpha": 0.6,
    "per_beta0": 0.4,
    "per_beta_steps": 100_000,
    "per_eps": 1e-6,
    "n_step": 1,  # Sutton 1988; Rainbow uses 3
    "distributional": False,  # C51, Bellemare et al. 2017
    "atoms": 51,
    "v_min": -10.0,
    "v_max": 10.0,
    "augment": False,  # action augmentation, Huang 2018
    # runtime
    "threads": 1,  # torch intra-op threads on CPU; 0 = leave torch's choice
    "deterministic": True,  # torch.use_deterministic_algorithms
}

_DRQN: dict[str, Any] = {
    "hidden": (64,),  # encoder before the LSTM
    "lstm_hidden": 64,
    "seq_len": 16,  # steps per replayed window that get a loss
    "burn_in": 4,  # steps before them that only warm the LSTM state up (R2D2)
    "lr": 5e-4,
    "adam_eps": 1.5e-4,
    "max_grad_norm": 10.0,
    "huber_delta": 1.0,
    "gamma": 0.99,
    "batch_size": 16,  # windows per update
    "buffer_size": 100_000,
    "learning_starts": 1_000,
    "train_freq": 4,
    "gradient_steps": 1,
    "target_update_interval": 500,
    "tau": 1.0,
    "eps_start": 1.0,
    "eps_end": 0.05,
    "eps_decay_steps": 10_000,
    "double": True,
    "dueling": False,
    "augment": False,
    "threads": 1,
    "deterministic": True,
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "dqn": dict(_DQN),  # Mnih et al. 2015
    "ddqn": _DQN | {"double": True},  # van Hasselt et al. 2016
    "dueling": _DQN | {"double": True, "dueling": True},  # Wang et al. 2016 (dueling on double DQN, as there)
    "noisy": _DQN | {"noisy": True},  # Fortunato et al. 2018 (NoisyNet-DQN)
    "rainbow": _DQN | {  # Hessel et al. 2018: all of the above, prioritised, 3-step, C51
        "double": True, "dueling": True, "noisy": True, "prioritized": True, "n_step": 3,
        "distributional": True, "per_alpha": 0.5, "lr": 2.5e-4,
    },
    "drqn": dict(_DRQN),  # Hausknecht & Stone 2015
}

ALGOS = tuple(DEFAULTS)


def resolve_hparams(algo: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The algo's defaults with `overrides` applied; ValueError names an unknown algo, key or bad value."""
    if algo not in DEFAULTS:
        raise ValueError(f"unknown algo {algo!r}: use one of {', '.join(ALGOS)}")
    hp = dict(DEFAULTS[algo])
    for key, value in (overrides or {}).items():
        if key not in hp:
            raise ValueError(f"unknown hyperparameter {key!r} for {algo}; known: {', '.join(sorted(hp))}")
        hp[key] = _coerce(key, value, hp[key])
    _check(hp)
    return hp


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"hyperparameter {key!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and v > 0 for v in value):
            raise ValueError(f"hyperparameter {key!r} must be a list of positive layer widths, got {value!r}")
        return tuple(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"hyperparameter {key!r} must be an integer, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"hyperparameter {key!r} must be a number, got {value!r}")
    return float(value)


def _check(hp: dict[str, Any]) -> None:
    positive = ("lr", "batch_size", "buffer_size", "train_freq", "gradient_steps", "target_update_interval",
                "seq_len", "lstm_hidden", "n_step", "atoms", "max_grad_norm", "huber_delta")
    for key in positive:
        if key in hp and not hp[key] > 0:
            raise ValueError(f"hyperparameter {key!r} must be positive, got {hp[key]!r}")
    for key in ("gamma", "eps_start", "eps_end", "per_alpha", "per_beta0"):
        if key in hp and not 0.0 <= hp[key] <= 1.0:
            raise ValueError(f"hyperparameter {key!r} must be in [0, 1], got {hp[key]!r}")
    if not 0.0 < hp["tau"] <= 1.0:
        raise ValueError(f"hyperparameter 'tau' must be in (0, 1], got {hp['tau']!r}")
    if hp["learning_starts"] < hp["batch_size"] and "seq_len" not in hp:
        raise ValueError("hyperparameter 'learning_starts' must be at least 'batch_size'")
    if hp.get("distributional") and not hp["v_max"] > hp["v_min"]:
        raise ValueError("hyperparameter 'v_max' must exceed 'v_min'")
    if hp.get("burn_in", 0) < 0 or hp["threads"] < 0:
        raise ValueError("hyperparameters 'burn_in' and 'threads' must not be negative")

"""Model directories: what `varon train` writes and `varon signal|backtest --model DIR` loads.

A directory holds everything needed to reproduce a decision and to judge it:

    model.json     algo, hyperparameters, actions, feature columns, the feature spec and its hash,
                   normalisation statistics (fitted on the training split only), the data fingerprint,
                   the seed, the code version, and the validation / test metrics
    agent.pt       the agent's weights (torch state, no replay buffer)

`ModelStrategy` wraps it as a `Strategy`: it refuses features of another spec
hash, scores each row with the stored statistics, feeds back the position it
asked for, and carries recurrent state per symbol from bar to bar (started
fresh only when a symbol first appears, as in training).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from varon_cli.errors import InputError, UsageError
from varon_cli.execution.statedir import write_atomic
from varon_cli.rl.agents.base import Agent
from varon_cli.rl.agents.factory import restore_agent
from varon_cli.rl.dataset import Normaliser
from varon_cli.strategies.base import Decisions, Strategy

MODEL_FILE = "model.json"
WEIGHTS_FILE = "agent.pt"
FORMAT = 1


def save_model(directory: Path, agent: Agent, meta: dict[str, Any]) -> None:
    """Write the model directory atomically file by file (weights first, then the description that names them)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = agent.state_dict(include_replay=False)
    tmp = directory / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, directory / WEIGHTS_FILE)
    weights_hash = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()
    document = {"format": FORMAT, **meta, "weights_sha256": weights_hash}
    write_atomic(directory / MODEL_FILE, json.dumps(document, indent=2, default=_plain).encode())


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def load_meta(directory: Path) -> dict[str, Any]:
    path = directory / MODEL_FILE
    if not path.is_file():
        raise UsageError(f"{directory}: not a model directory (no {MODEL_FILE}); make one with `varon train`")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable model description ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a varon model description of format {FORMAT}")
    return meta


def load_agent(directory: Path, device: str = "cpu") -> tuple[Agent, dict[str, Any]]:
    """The agent and its description; a corrupted or altered weights file is refused."""
    meta = load_meta(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"{directory}: {WEIGHTS_FILE} is missing")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != meta.get("weights_sha256"):
        raise InputError(f"{weights}: does not match the hash in {MODEL_FILE} (corrupted or replaced)")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=False)
        agent = restore_agent(state, device=device)
    except Exception as exc:  # noqa: BLE001 - any failure here means a bad file
        raise InputError(f"{weights}: cannot load ({type(exc).__name__}: {exc})") from None
    return agent, meta


class ModelStrategy(Strategy):
    """A trained agent as a strategy: greedy actions, position fed back, recurrent state per symbol."""

    name = "model"

    def __init__(self, directory: Path, device: str = "cpu") -> None:
        agent, meta = load_agent(directory, device)
        self._setup(agent, meta, str(meta.get("name") or directory.name),
                    f"{directory.name}@{meta['weights_sha256'][:12]}")

    @classmethod
    def from_agent(cls, agent: Agent, meta: dict[str, Any], name: str) -> ModelStrategy:
        """The same strategy straight from a trained agent (the test of `varon train`, before it is saved)."""
        strategy = cls.__new__(cls)
        strategy._setup(agent, meta, name, name)
        return strategy

    def _setup(self, agent: Agent, meta: dict[str, Any], name: str, model_id: str) -> None:
        _check_meta(agent, meta, name)
        Strategy.__init__(self, {})
        self.agent, self.meta = agent, meta
        self.name = name
        self.feature_hash = meta["feature_hash"]
        self.model_id = model_id
        self.columns = list(self.meta["feature_columns"])
        self.required_columns = ("close", *self.columns)
        self.normaliser = Normaliser.from_dict(self.meta["normaliser"])
        self.action_values = np.asarray(self.meta["actions"], dtype=np.float64)
        self._state: dict[int, Any] = {}
        self._position: dict[int, float] = {}

    def decide(self, batch: pa.RecordBatch, symbols: np.ndarray) -> Decisions:
        n = batch.num_rows
        raw = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                               for c in self.columns]) if self.columns else np.zeros((n, 0))
        usable = np.isfinite(raw).all(axis=1)
        if "warmup" in batch.schema.names:
            usable &= ~np.asarray(batch.column("warmup").to_numpy(zero_copy_only=False), dtype=bool)
        scores = self.normaliser.transform(np.where(np.isfinite(raw), raw, 0.0))
        target = np.zeros(n)
        for i in range(n):
            if not usable[i]:
                continue  # features not defined yet: stay flat, and do not feed the recurrent state garbage
            s = int(symbols[i])
            if s not in self._state:
                self._state[s] = self.agent.initial_state(1)
                self._position[s] = 0.0
            obs = np.empty((1, len(self.columns) + 1), dtype=np.float32)
            obs[0, :-1] = scores[i]
            obs[0, -1] = self._position[s]
            action, self._state[s] = self.agent.act(obs, self._state[s], explore=False)
            value = float(self.action_values[int(action[0])])
            self._position[s] = value
            target[i] = value
        return Decisions.targets(target)


REQUIRED_KEYS = ("algo", "actions", "feature_columns", "feature_hash", "normaliser")


def _check_meta(agent: Agent, meta: dict[str, Any], name: str) -> None:
    """A model description that does not fit its weights is refused in one line, before any decision."""
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise InputError(f"model {name}: description lacks {', '.join(missing)}")
    actions, columns = meta["actions"], meta["feature_columns"]
    if not isinstance(actions, list) or len(actions) != agent.n_actions:
        raise InputError(f"model {name}: {len(actions) if isinstance(actions, list) else 'no'} actions described, "
                         f"the agent has {agent.n_actions}")
    if not isinstance(columns, list) or len(columns) + 1 != agent.obs_dim:
        raise InputError(f"model {name}: {len(columns) if isinstance(columns, list) else 'no'} feature columns "
                         f"described, the agent observes {agent.obs_dim - 1} (+ its position)")
    normaliser = meta["normaliser"]
    if not isinstance(normaliser, dict) or list(normaliser.get("columns", [])) != columns:
        raise InputError(f"model {name}: the normalisation statistics do not match the feature columns")

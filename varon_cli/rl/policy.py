"""A trained agent's greedy decisions over a split, bar by bar, with its own position fed back.

The observation includes the position the agent holds, so a policy cannot be
scored by one batched forward pass over the features: each decision depends on
the previous one. All series of a split advance together, one bar per step,
with recurrent state carried per series and started fresh at each series.
"""

from __future__ import annotations

import numpy as np

from varon_cli.rl.agents.base import Agent
from varon_cli.rl.dataset import MarketData


def greedy_actions(agent: Agent, data: MarketData, action_values: np.ndarray) -> np.ndarray:
    """One action index per row of `data` (already normalised); the last two rows of a series get 0 (unused)."""
    n_series = data.n_series
    lengths = data.lengths.astype(np.int64)
    out = np.zeros(data.n_rows, dtype=np.int64)
    if n_series == 0:
        return out
    state = agent.initial_state(n_series)
    position = np.zeros(n_series, dtype=np.float32)
    obs = np.zeros((n_series, data.n_features + 1), dtype=np.float32)
    starts = data.offsets[:-1].astype(np.int64)
    for t in range(int(lengths.max())):
        live = t < lengths
        rows = np.where(live, starts + t, starts)
        obs[:, :-1] = data.features[rows]
        obs[:, -1] = position
        actions, state = agent.act(obs, state, explore=False)
        actions = np.asarray(actions, dtype=np.int64)
        out[rows[live]] = actions[live]
        position = np.where(live, action_values[actions], position).astype(np.float32)
    return out

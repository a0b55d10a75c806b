"""Experience replay: uniform, prioritised (sum tree), n-step returns, and sequences for DRQN.

All storage is preallocated numpy arrays (one per field, a ring of
`capacity` rows); adding a batch of transitions is one slice assignment per
field and sampling is one fancy index per field, so no Python object is made
per transition. Every buffer draws from the numpy Generator it is given (the
agent's), so sampling is reproducible and resumes exactly from a checkpoint.

Transitions are stored with their bootstrap `discount` already applied
(gamma^k, or 0 after a terminal state), so one buffer serves 1-step and n-step
targets alike: target = reward + discount * V(next_obs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numba import njit

Batch = dict[str, np.ndarray]


def _to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Copies as tensors, which torch.save / torch.load(weights_only=True) round-trip exactly."""
    return {k: torch.from_numpy(np.ascontiguousarray(v).copy()) for k, v in arrays.items()}


def _fields(obs_dim: int, n_actions: int, augment: bool) -> dict[str, tuple[tuple[int, ...], Any]]:
    fields: dict[str, tuple[tuple[int, ...], Any]] = {
        "obs": ((obs_dim,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
        "next_obs": ((obs_dim,), np.float32), "discount": ((), np.float32),
    }
    if augment:  # one-step outcome of every action (Huang 2018)
        fields |= {"aug_reward": ((n_actions,), np.float32), "aug_next_obs": ((n_actions, obs_dim), np.float32),
                   "aug_discount": ((), np.float32)}
    return fields


class UniformReplay:
    """A ring of the last `capacity` transitions, sampled uniformly (Mnih et al. 2015)."""

    def __init__(self, capacity: int, obs_dim: int, n_actions: int, rng: np.random.Generator,
                 augment: bool = False) -> None:
        self.capacity, self.rng = capacity, rng
        self.data = {k: np.zeros((capacity, *shape), dtype) for k, (shape, dtype) in
                     _fields(obs_dim, n_actions, augment).items()}
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **arrays: np.ndarray) -> np.ndarray:
        """Append a batch of transitions (every field, leading dim n); returns the rows written."""
        n = len(arrays["action"])
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions to a buffer of {self.capacity}")
        rows = (self.pos + np.arange(n)) % self.capacity
        where: Any = slice(self.pos, self.pos + n) if self.pos + n <= self.capacity else rows
        for key, store in self.data.items():
            store[where] = arrays[key]
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        return rows

    def gather(self, rows: np.ndarray) -> Batch:
        return {k: v[rows] for k, v in self.data.items()}

    def sample(self, batch_size: int) -> Batch:
        return self.gather(self.rng.integers(0, self.size, size=batch_size))

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos, "size": self.size, "data": _to_tensors({k: v[: self.size] for k, v in self.data.items()})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.size = int(state["pos"]), int(state["size"])
        for k, v in state["data"].items():
            self.data[k][: self.size] = v.numpy()


@njit(cache=True)
def _tree_set(tree: np.ndarray, leaves: int, index: np.ndarray, priority: np.ndarray) -> None:
    for k in range(len(index)):  # in order, so for a repeated index the last value wins
        node = index[k] + leaves
        tree[node] = priority[k]
        node >>= 1
        while node >= 1:
            tree[node] = tree[2 * node] + tree[2 * node + 1]
            node >>= 1


@njit(cache=True)
def _tree_find(tree: np.ndarray, leaves: int, values: np.ndarray) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for k in range(len(values)):
        value, node = values[k], 1
        while node < leaves:
            left = tree[2 * node]
            if value < left:
                node = 2 * node
            else:
                value -= left
                node = 2 * node + 1
        out[k] = node - leaves
    return out


class SumTree:
    """A binary tree whose every node holds the sum of its children: O(log n) proportional sampling.

    Leaves are priorities; `find(u)` walks from the root to the leaf whose
    cumulative-sum interval holds u, so a leaf is found with probability
    priority / total (Schaul et al. 2016, "Prioritized Experience Replay",
    Appendix B.2.1). A parent is always recomputed as left + right, so the
    tree is a pure function of its leaves (no drift from adding differences).
    The walks are compiled loops: in numpy they would be a dozen array ops
    per tree level.
    """

    def __init__(self, capacity: int) -> None:
        self.leaves = 1 << max(0, (capacity - 1).bit_length())
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)  # node 1 is the root

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, index: np.ndarray) -> np.ndarray:
        return self.tree[np.asarray(index) + self.leaves]

    def update(self, index: np.ndarray, priority: np.ndarray | float) -> None:
        """Set leaves `index` to `priority` (for a repeated index the last value wins)."""
        index = np.ascontiguousarray(index, dtype=np.int64)
        priority = np.ascontiguousarray(np.broadcast_to(np.asarray(priority, dtype=np.float64), index.shape))
        _tree_set(self.tree, self.leaves, index, priority)

    def find(self, value: np.ndarray) -> np.ndarray:
        """Leaf index for each cumulative value in [0, total)."""
        return _tree_find(self.tree, self.leaves, np.ascontiguousarray(value, dtype=np.float64))


class PrioritizedReplay(UniformReplay):
    """Proportional prioritised replay (Schaul et al. 2016).

    A transition is drawn with probability p_i^alpha / sum_k p_k^alpha, where
    p_i = |TD error| + eps, so surprising transitions are replayed more. The
    bias this introduces is corrected by importance weights
    w_i = (N P(i))^-beta / max_j w_j, with beta annealed towards 1 by the agent.
    New transitions get the largest priority seen so far, so each is replayed
    at least once soon. Sampling is stratified: one draw from each of
    `batch_size` equal slices of the total mass, as in the paper. Weights are
    normalised by the batch maximum (a common, cheaper variant of the global one).
    """

    def __init__(self, capacity: int, obs_dim: int, n_actions: int, rng: np.random.Generator,
                 augment: bool = False, alpha: float = 0.6, eps: float = 1e-6) -> None:
        super().__init__(capacity, obs_dim, n_actions, rng, augment)
        self.alpha, self.eps = alpha, eps
        self.tree = SumTree(capacity)
        self.max_priority = 1.0

    def add(self, **arrays: np.ndarray) -> np.ndarray:
        rows = super().add(**arrays)
        self.tree.update(rows, self.max_priority ** self.alpha)
        return rows

    def sample(self, batch_size: int, beta: float = 0.4) -> Batch:  # type: ignore[override]
        total = self.tree.total
        u = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        rows = np.minimum(self.tree.find(np.minimum(u, np.nextafter(total, 0.0))), self.size - 1)
        prob = self.tree.get(rows) / total
        weights = (self.size * prob) ** -beta
        batch = self.gather(rows)
        batch["rows"] = rows
        batch["weights"] = (weights / weights.max()).astype(np.float32)
        return batch

    def update_priorities(self, rows: np.ndarray, td_abs: np.ndarray) -> None:
        """Set the priorities of sampled rows from their new |TD errors| (or, for C51, KL divergences)."""
        priority = np.asarray(td_abs, dtype=np.float64) + self.eps
        self.max_priority = max(self.max_priority, float(priority.max()))
        self.tree.update(rows, priority ** self.alpha)

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"tree": torch.from_numpy(self.tree.tree.copy()),
                                       "max_priority": self.max_priority}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.tree.tree[:] = state["tree"].numpy()
        self.max_priority = float(state["max_priority"])


class NStepAccumulator:
    """Turns 1-step transitions from E parallel environments into n-step ones (Sutton 1988; Rainbow).

    The n-step target r_t + g r_{t+1} + ... + g^{n-1} r_{t+n-1} + g^n V(s_{t+n})
    propagates a reward n states back per update. The environments step
    together, so each step's data goes into slot `t % n` of small [n, E]
    arrays; an environment's transition leaves once n steps are pending, and all
    its pending ones leave (with shorter sums) when its episode ends. A terminal
    end zeroes the bootstrap; a truncation keeps gamma^k on the final observation.
    Augmented (all-action) data is one-step and travels with its first step.
    """

    def __init__(self, n: int, gamma: float) -> None:
        if n < 2:
            raise ValueError("NStepAccumulator is for n >= 2")
        self.n, self.gamma = n, gamma
        self.powers = gamma ** np.arange(n + 1)
        self.slots: dict[str, np.ndarray] = {}
        self.count = np.zeros(0, dtype=np.int64)
        self.t = 0

    def _allocate(self, fields: dict[str, np.ndarray]) -> None:
        self.slots = {k: np.zeros((self.n, *v.shape), v.dtype) for k, v in fields.items()}
        self.count = np.zeros(len(fields["action"]), dtype=np.int64)

    def push(self, fields: dict[str, np.ndarray], next_obs: np.ndarray, terminated: np.ndarray,
             ended: np.ndarray) -> dict[str, np.ndarray] | None:
        """Add one step per environment (`fields`: obs, action, reward[, aug_*] with leading E).

        Returns the transitions that are complete (replay fields, leading dim k) or None.
        """
        envs = len(fields["action"])
        if not self.slots or self.slots["action"].shape[1] != envs:
            if self.count.any():
                raise ValueError(f"the number of environments changed from {len(self.count)} to {envs} mid-episode")
            self._allocate(fields)
        slot = self.t % self.n
        for key, value in fields.items():
            self.slots[key][slot] = value
        self.count += 1
        self.t += 1
        out: list[dict[str, np.ndarray]] = []
        ready = np.flatnonzero((self.count == self.n) & ~ended)
        if len(ready):
            order = (slot + 1 + np.arange(self.n)) % self.n  # oldest first
            rewards = self.slots["reward"][order][:, ready]
            first = {k: v[order[0], ready] for k, v in self.slots.items() if k != "reward"}
            out.append(first | {"reward": (self.powers[: self.n, None] * rewards).sum(0),
                                "next_obs": next_obs[ready],
                                "discount": np.full(len(ready), self.powers[self.n])})
            self.count[ready] -= 1
        for env in np.flatnonzero(ended):
            out.append(self._flush(env, slot, next_obs[env], bool(terminated[env])))
        if not out:
            return None
        merged = {k: np.concatenate([o[k] for o in out]) for k in out[0]}
        merged["reward"] = merged["reward"].astype(np.float32)
        merged["discount"] = merged["discount"].astype(np.float32)
        return merged

    def _flush(self, env: int, slot: int, next_obs: np.ndarray, terminated: bool) -> dict[str, np.ndarray]:
        c = int(self.count[env])
        order = (slot - c + 1 + np.arange(c)) % self.n
        rewards = self.slots["reward"][order, env].astype(np.float64)
        returns = np.array([(self.powers[: c - j] * rewards[j:]).sum() for j in range(c)])
        discount = np.zeros(c) if terminated else self.powers[c - np.arange(c)]
        self.count[env] = 0
        first = {k: v[order, env] for k, v in self.slots.items() if k != "reward"}
        return first | {"reward": returns, "next_obs": np.repeat(next_obs[None], c, 0), "discount": discount}

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "count": torch.from_numpy(self.count.copy()), "slots": _to_tensors(self.slots)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.count = state["count"].numpy().copy()
        self.slots = {k: v.numpy().copy() for k, v in state["slots"].items()}


class SequenceReplay:
    """Per-environment streams of steps, sampled as fixed-length windows for DRQN (Hausknecht & Stone 2015).

    Each of the E environments (stepped together) has its own ring of
    `capacity // E` steps, so a window of consecutive rows is a true time
    series. Windows start anywhere, the LSTM state zero at the window start
    ("bootstrapped random updates"); the first `burn_in` steps only warm that
    state up (Kapturowski et al. 2019, R2D2). `first` flags mark episode
    starts so the learner can mask steps that a window carries into the next
    episode. Steps keep their own next observation, so the target of an
    episode's last step is exact.
    """

    def __init__(self, capacity: int, obs_dim: int, n_actions: int, seq_len: int, burn_in: int,
                 rng: np.random.Generator, augment: bool = False) -> None:
        self.capacity, self.rng = capacity, rng
        self.window = burn_in + seq_len
        self.fields = _fields(obs_dim, n_actions, augment) | {"first": ((), np.bool_)}
        self.fields.pop("aug_discount", None)  # one-step only: equals `discount`
        self.data: dict[str, np.ndarray] = {}
        self.envs = self.length = self.pos = self.size = 0

    def __len__(self) -> int:
        return self.size * self.envs

    def _allocate(self, envs: int) -> None:
        self.envs = envs
        self.length = max(self.capacity // envs, self.window)
        self.data = {k: np.zeros((envs, self.length, *shape), dtype) for k, (shape, dtype) in self.fields.items()}

    def add(self, **arrays: np.ndarray) -> None:
        """Append one step for each environment (every field with leading dim E)."""
        envs = len(arrays["action"])
        if envs != self.envs:
            if self.size:
                raise ValueError(f"the number of environments changed from {self.envs} to {envs}")
            self._allocate(envs)
        for key, store in self.data.items():
            store[:, self.pos] = arrays[key]
        self.pos = (self.pos + 1) % self.length
        self.size = min(self.size + 1, self.length)

    def can_sample(self) -> bool:
        return self.size >= self.window

    def sample(self, batch_size: int) -> Batch:
        """Windows [B, burn_in + seq_len, ...] of consecutive steps of one environment each."""
        env = self.rng.integers(0, self.envs, size=batch_size)
        start = self.rng.integers(0, self.size - self.window + 1, size=batch_size)
        oldest = (self.pos - self.size) % self.length
        cols = (oldest + start[:, None] + np.arange(self.window)) % self.length
        return {k: v[env[:, None], cols] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"envs": self.envs, "pos": self.pos, "size": self.size,
                "data": _to_tensors({k: v[:, : self.size] for k, v in self.data.items()})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["envs"]):
            self._allocate(int(state["envs"]))
        self.pos, self.size = int(state["pos"]), int(state["size"])
        for k, v in state["data"].items():
            self.data[k][:, : self.size] = v.numpy()

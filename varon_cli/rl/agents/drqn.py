"""DRQNAgent: Q-learning with an LSTM over the observation history (Hausknecht & Stone 2015).

"Deep Recurrent Q-Learning for Partially Observable MDPs": when one
observation does not reveal the state (a bar's features do not reveal the
regime), a recurrent network can integrate the history. The agent carries the
LSTM state across `act` calls and the caller resets it at episode boundaries.
Training replays fixed-length windows (replay.SequenceReplay) from a zero
state, with an optional burn-in that gets no loss (Kapturowski et al. 2019,
"Recurrent Experience Replay in Distributed Reinforcement Learning"); steps a
window carries past the end of an episode are masked out. Targets are
one-step and double (van Hasselt et al. 2016) by default; the head can be
dueling (Wang et al. 2016).

Action augmentation (Huang 2018, "Financial Trading as a Game: A Deep
Reinforcement Learning Approach", which pairs it with a DRQN): every replayed
step also carries every action's reward and next observation, and all
actions' Q-values get a target. Each action's next-state value takes one
LSTM step from the state after the current observation with that action's
next observation as input, so it is exact for the recurrent network as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from varon_cli.rl.agents.base import Augmented, as_obs_batch, as_steps
from varon_cli.rl.agents.common import ValueAgent
from varon_cli.rl.agents.networks import RecurrentQNetwork
from varon_cli.rl.agents.replay import SequenceReplay

State = tuple[torch.Tensor, torch.Tensor]


class DRQNAgent(ValueAgent):
    """Recurrent value agent. `act` returns the new LSTM state (h, c), each [batch, lstm_hidden]."""

    def __init__(self, obs_dim: int, n_actions: int, hparams: Mapping[str, Any] | None = None,
                 seed: int = 0, device: str = "auto") -> None:
        super().__init__("drqn", obs_dim, n_actions, hparams, seed, device)
        hp = self.hp
        self.double, self.augment = hp["double"], hp["augment"]
        self.burn_in, self.seq_len = hp["burn_in"], hp["seq_len"]
        self.replay = SequenceReplay(hp["buffer_size"], obs_dim, n_actions, self.seq_len, self.burn_in, self.rng,
                                     augment=self.augment)
        self._first = np.ones(0, dtype=bool)  # per environment: the next observed step starts an episode

    def _build_network(self, generator: torch.Generator) -> nn.Module:
        hp = self.hp
        return RecurrentQNetwork(self.obs_dim, self.n_actions, hp["hidden"], hp["lstm_hidden"], generator,
                                 dueling=hp["dueling"])

    # -- acting -----------------------------------------------------------------------------------

    def initial_state(self, batch: int) -> State:
        """Zero LSTM state for `batch` environments: use it at the start of every episode."""
        zeros = torch.zeros(batch, self.hp["lstm_hidden"], device=self.device)
        return zeros, zeros.clone()

    def reset_state(self, state: State | None, mask: np.ndarray) -> State:
        """Zero the rows of `state` whose environment has just ended its episode (`mask` [batch] bool)."""
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if state is None:
            return self.initial_state(len(mask))
        keep = torch.from_numpy((~mask).astype(np.float32)).to(self.device).unsqueeze(1)
        return state[0] * keep, state[1] * keep

    def act(self, obs: np.ndarray, state: State | None = None, explore: bool = True) -> tuple[np.ndarray, State]:
        """Actions for obs [batch, obs_dim] given the LSTM state (None = start of episode) and the next state.

        The network runs even for random actions, since the state must take in every observation.
        """
        x = as_obs_batch(obs, self.obs_dim)
        if state is None:
            state = self.initial_state(len(x))
        chance = self._random_actions(len(x)) if explore else None
        with torch.no_grad():
            state = self.online.torso.step(torch.from_numpy(x).to(self.device), state)
            actions = self.online.head(state[0]).argmax(dim=1).cpu().numpy()
        if chance is not None:
            actions = np.where(chance[0], chance[1], actions)
        return actions, state

    def q_values(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        """Q-values [batch, n_actions] after taking in obs from `state` (which is not advanced)."""
        x = torch.from_numpy(as_obs_batch(obs, self.obs_dim)).to(self.device)
        with torch.no_grad():
            h, _ = self.online.torso.step(x, state if state is not None else self.initial_state(len(x)))
            return self.online.head(h).cpu().numpy()

    # -- recording --------------------------------------------------------------------------------

    def observe(self, obs: np.ndarray, action: Any, reward: Any, next_obs: np.ndarray, done: Any,
                augmented: Augmented | Mapping[str, Any] | None = None, truncated: Any = None) -> None:
        """Store one step per environment, in order; the step after done/truncated starts a new episode."""
        steps = as_steps(obs, action, reward, next_obs, done, truncated, augmented, self.obs_dim, self.n_actions,
                         self.augment)
        envs = len(steps.action)
        if len(self._first) != envs:
            self._first = np.ones(envs, dtype=bool)
        fields = {"obs": steps.obs, "action": steps.action, "reward": steps.reward, "next_obs": steps.next_obs,
                  "discount": (self.gamma * ~steps.terminated).astype(np.float32), "first": self._first}
        if self.augment:
            fields |= {"aug_reward": steps.aug_rewards, "aug_next_obs": steps.aug_next_obs}
        self.replay.add(**fields)
        self._first = steps.ended.copy()
        self.env_steps += envs

    # -- learning ---------------------------------------------------------------------------------

    def _ready(self) -> bool:
        return self.replay.can_sample()

    def _loss_mask(self, first: np.ndarray) -> np.ndarray:
        """[B, W] float: 1 where a step gets a loss.

        A step counts if no episode starts after the window start and up to it
        (later steps belong to an episode whose LSTM state the window got
        wrong) and it is past the burn-in, unless the window itself starts an
        episode: then the zero start state is exact and every step counts.
        """
        valid = np.ones(first.shape, dtype=bool)
        valid[:, 1:] = np.cumsum(first[:, 1:], axis=1) == 0
        warmed = (np.arange(first.shape[1]) >= self.burn_in)[None, :] | first[:, :1]
        return (valid & warmed).astype(np.float32)

    def _gradient_step(self) -> dict[str, torch.Tensor]:
        batch = self.replay.sample(self.hp["batch_size"])
        mask = torch.from_numpy(self._loss_mask(batch["first"])).to(self.device)
        t = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        # o_0 then each step's next observation: before an episode ends, next_obs[j] is o_{j+1},
        # so one unroll gives Q(o_j) at position j and the next state's value at j + 1, also for
        # an episode's last step (whose next observation is not the following row's).
        seq = torch.cat([t["obs"][:, :1], t["next_obs"]], dim=1)
        hs = self.online.torso.unroll(seq)
        q_all = self.online.head(hs)  # [B, W + 1, A]
        q = q_all[:, :-1]
        with torch.no_grad():
            target_hs = self.target.torso.unroll(seq)
            if self.augment:
                y = self._augmented_targets(t, seq, hs.detach(), target_hs)
            else:
                q_next = self.target.head(target_hs[:, 1:])
                chooser = q_all[:, 1:].detach() if self.double else q_next
                value = q_next.gather(-1, chooser.argmax(dim=-1, keepdim=True)).squeeze(-1)
                y = t["reward"] + t["discount"] * value
        action = t["action"].unsqueeze(-1)
        delta = self.hp["huber_delta"]
        if self.augment:
            per_step = F.huber_loss(q, y, reduction="none", delta=delta).mean(dim=-1)
        else:
            per_step = F.huber_loss(q.gather(-1, action).squeeze(-1), y, reduction="none", delta=delta)
        count = mask.sum().clamp(min=1.0)
        loss = (per_step * mask).sum() / count
        self._optimize(loss)
        q_mean = (q.detach().gather(-1, action).squeeze(-1) * mask).sum() / count
        return {"loss": loss.detach(), "q_mean": q_mean}

    def _augmented_targets(self, t: dict[str, torch.Tensor], seq: torch.Tensor, online_hs: torch.Tensor,
                           target_hs: torch.Tensor) -> torch.Tensor:
        """One-step targets [B, W, A] for every action: one LSTM step from the state after o_j to each next_obs^a."""
        steps = t["action"].shape[1]
        nxt = t["aug_next_obs"]  # [B, W, A, D]
        lead = nxt.shape[:3]
        x = nxt.reshape(-1, self.obs_dim)

        def after_each_obs(net: nn.Module, hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            cs = net.torso.cell_states(seq, hs)
            return tuple(v[:, :steps].unsqueeze(2).expand(*lead, v.shape[-1]).reshape(-1, v.shape[-1])
                         for v in (hs, cs))  # type: ignore[return-value]

        q_next = self.target.head(self.target.torso.step(x, after_each_obs(self.target, target_hs))[0])
        if self.double:
            chooser = self.online.head(self.online.torso.step(x, after_each_obs(self.online, online_hs))[0])
        else:
            chooser = q_next
        value = q_next.gather(1, chooser.argmax(dim=1, keepdim=True)).view(lead)
        return t["aug_reward"] + t["discount"].unsqueeze(-1) * value

    # -- checkpoints ------------------------------------------------------------------------------

    def _replay_state(self) -> dict[str, Any]:
        return {"buffer": self.replay.state_dict(), "first": torch.from_numpy(self._first.copy())}

    def _load_replay_state(self, state: Mapping[str, Any]) -> None:
        self.replay.load_state_dict(state["buffer"])
        self._first = state["first"].numpy().copy()

"""Machinery DQN and DRQN share: RNGs, epsilon schedule, update schedule, target network, checkpoints.

Randomness comes only from generators the agent owns: a numpy Generator
(replay sampling, epsilon draws) and torch Generators (weight init, noisy-net
noise). Nothing reads torch's or numpy's global RNG, so two agents with the
same seed produce bit-identical weights on CPU, and a checkpoint that stores
these generators' states resumes to exactly the run that was not interrupted.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from varon_cli.rl.agents.base import Agent, configure_torch, resolve_device
from varon_cli.rl.agents.hparams import resolve_hparams
from varon_cli.rl.agents.networks import NoisyLinear


class ValueAgent(Agent):
    """Base of the value-based agents. Subclasses build the network and replay and define one gradient step."""

    def __init__(self, algo: str, obs_dim: int, n_actions: int, hparams: Mapping[str, Any] | None,
                 seed: int, device: str) -> None:
        self.algo, self.obs_dim, self.n_actions, self.seed = algo, int(obs_dim), int(n_actions), int(seed)
        if self.obs_dim < 1 or self.n_actions < 2:
            raise ValueError(f"need obs_dim >= 1 and n_actions >= 2, got {obs_dim} and {n_actions}")
        self.hp = resolve_hparams(algo, hparams)
        self.device = resolve_device(device)
        configure_torch(self.device, self.hp["threads"], self.hp["deterministic"])
        self.gamma = self.hp["gamma"]
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        init_generator = torch.Generator().manual_seed(self.seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.online = self._build_network(init_generator).to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.params = list(self.online.parameters())
        # fused: one kernel for all parameters, a third faster per step than the loop on small networks
        self.optimizer = torch.optim.Adam(self.params, lr=self.hp["lr"], eps=self.hp["adam_eps"], fused=True)
        self.noisy_layers = [m for m in self.online.modules() if isinstance(m, NoisyLinear)]
        self.env_steps = 0
        self.grad_steps = 0

    # -- what subclasses provide -------------------------------------------------------------------

    @abc.abstractmethod
    def _build_network(self, generator: torch.Generator) -> nn.Module:
        """The online network, initialised from `generator` (the target is a copy)."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Whether the replay can give a batch."""

    @abc.abstractmethod
    def _gradient_step(self) -> dict[str, torch.Tensor]:
        """Sample, compute the loss, step the optimiser; return loss and q_mean as detached scalars."""

    @abc.abstractmethod
    def _replay_state(self) -> dict[str, Any]:
        ...

    @abc.abstractmethod
    def _load_replay_state(self, state: Mapping[str, Any]) -> None:
        ...

    # -- exploration ------------------------------------------------------------------------------

    def epsilon(self) -> float:
        """Linear decay from eps_start to eps_end over eps_decay_steps environment steps (0 when noisy)."""
        if self.hp.get("noisy"):
            return 0.0
        frac = min(1.0, self.env_steps / max(1, self.hp["eps_decay_steps"]))
        return self.hp["eps_start"] + frac * (self.hp["eps_end"] - self.hp["eps_start"])

    def exploration(self) -> float:
        """Epsilon, or for noisy networks the mean |sigma| of the noisy weights (it shrinks as the agent learns)."""
        if self.noisy_layers:
            with torch.no_grad():
                total = sum(layer.weight_sigma.abs().sum() for layer in self.noisy_layers)
                count = sum(layer.weight_sigma.numel() for layer in self.noisy_layers)
                return float(total) / count
        return self.epsilon()

    def _random_actions(self, batch: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(mask, actions) for epsilon-greedy: where mask is set, take the random action instead."""
        if self.noisy_layers:
            return None
        mask = self.rng.random(batch) < self.epsilon()
        return mask, self.rng.integers(0, self.n_actions, size=batch)

    # -- learning ---------------------------------------------------------------------------------

    def _due(self) -> int:
        """Gradient steps owed so far: gradient_steps per train_freq environment steps after warm-up."""
        starts = self.hp["learning_starts"]
        if self.env_steps < starts or not self._ready():
            return self.grad_steps
        rounds = (self.env_steps - starts) // self.hp["train_freq"] + 1
        return rounds * self.hp["gradient_steps"]

    def update(self) -> dict[str, float]:
        """Run every gradient step owed (none during warm-up); metrics of the last, or {}."""
        due = self._due()
        last: dict[str, torch.Tensor] = {}
        while self.grad_steps < due:
            last = self._gradient_step()
            self.grad_steps += 1
            self._update_target()
        if not last:
            return {}
        metrics = {k: v.item() for k, v in last.items()}  # one device sync per call, not per step
        metrics["noise_sigma" if self.noisy_layers else "epsilon"] = self.exploration()
        metrics["grad_steps"] = float(self.grad_steps)
        return metrics

    def _optimize(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.hp["max_grad_norm"])
        self.optimizer.step()

    def _update_target(self) -> None:
        """Polyak averaging when tau < 1, else a hard copy every target_update_interval gradient steps."""
        tau = self.hp["tau"]
        if tau < 1.0:
            with torch.no_grad():
                target = list(self.target.parameters())
                torch._foreach_lerp_(target, self.params, tau)
        elif self.grad_steps % self.hp["target_update_interval"] == 0:
            self.target.load_state_dict(self.online.state_dict())

    def _resample_noise(self) -> None:
        if self.noisy_layers:
            self.online.reset_noise(self.noise_generator)
            self.target.reset_noise(self.noise_generator)

    # -- checkpoints ------------------------------------------------------------------------------

    def state_dict(self, include_replay: bool = True) -> dict[str, Any]:
        """A snapshot (copies, not views) that torch.save / torch.load(weights_only=True) round-trip.

        Without the replay the weights and counters are restored but training
        continues from an empty buffer, so it is no longer bit-identical.
        """
        state = {
            "algo": self.algo, "seed": self.seed, "obs_dim": self.obs_dim, "n_actions": self.n_actions,
            "hparams": dict(self.hp),
            "online": copy.deepcopy(self.online.state_dict()),
            "target": copy.deepcopy(self.target.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "noise_rng": self.noise_generator.get_state(),
            "env_steps": self.env_steps, "grad_steps": self.grad_steps,
        }
        if include_replay:
            state["replay"] = self._replay_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("algo", "obs_dim", "n_actions"):
            if state[key] != getattr(self, key):
                raise ValueError(f"checkpoint {key} is {state[key]!r}, this agent's is {getattr(self, key)!r}")
        saved = resolve_hparams(self.algo, state["hparams"])
        differ = sorted(k for k in saved if saved[k] != self.hp[k])
        if differ:
            raise ValueError(f"checkpoint hyperparameters differ from this agent's: {', '.join(differ)}")
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.noise_generator.set_state(state["noise_rng"])
        self.env_steps, self.grad_steps = int(state["env_steps"]), int(state["grad_steps"])
        if "replay" in state:
            self._load_replay_state(state["replay"])

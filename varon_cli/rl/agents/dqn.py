"""DQNAgent: deep Q-learning and its Rainbow extensions, each switched on by a flag.

- dqn: Mnih et al. 2015, "Human-level control through deep reinforcement
  learning": replay, a target network, Huber loss, epsilon-greedy.
- double: van Hasselt et al. 2016, "Deep Reinforcement Learning with Double
  Q-learning": the online network picks the next action, the target network
  values it, which removes max-operator overestimation.
- dueling: Wang et al. 2016 (see networks.DuelingHead).
- noisy: Fortunato et al. 2018 (see networks.NoisyLinear); replaces epsilon.
- prioritized: Schaul et al. 2016 (see replay.PrioritizedReplay); the
  priority is |TD error|, or for C51 the KL divergence to the target
  distribution as in Rainbow; beta is annealed linearly from per_beta0 to 1.
- n_step: multi-step targets (Sutton 1988), see replay.NStepAccumulator.
- distributional: C51, Bellemare et al. 2017: cross-entropy between the
  predicted distribution and the projected target distribution.
- rainbow: all of them, Hessel et al. 2018, "Rainbow: Combining Improvements
  in Deep Reinforcement Learning".
- augment: action augmentation, Huang 2018, "Financial Trading as a Game: A
  Deep Reinforcement Learning Approach": each replayed step carries the
  one-step reward and next observation of every action, and the loss covers
  all actions' Q-values. With n_step > 1 the taken action keeps its n-step
  target and the others get one-step targets (their later rewards would
  depend on positions the agent never held, so they are unknown).
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
from varon_cli.rl.agents.networks import QNetwork, project_distribution
from varon_cli.rl.agents.replay import NStepAccumulator, PrioritizedReplay, UniformReplay


class DQNAgent(ValueAgent):
    """A feed-forward value agent; `algo` picks the default flags (see hparams.DEFAULTS)."""

    def __init__(self, obs_dim: int, n_actions: int, hparams: Mapping[str, Any] | None = None,
                 seed: int = 0, device: str = "auto", algo: str = "dqn") -> None:
        if algo == "drqn":
            raise ValueError("algo drqn is the recurrent agent: use DRQNAgent or make_agent")
        super().__init__(algo, obs_dim, n_actions, hparams, seed, device)
        hp = self.hp
        self.double, self.augment, self.n_step = hp["double"], hp["augment"], hp["n_step"]
        self.distributional = hp["distributional"]
        self.prioritized = hp["prioritized"]
        replay_cls = PrioritizedReplay if self.prioritized else UniformReplay
        kwargs = {"alpha": hp["per_alpha"], "eps": hp["per_eps"]} if self.prioritized else {}
        self.replay = replay_cls(hp["buffer_size"], obs_dim, n_actions, self.rng, augment=self.augment, **kwargs)
        self.nstep = NStepAccumulator(self.n_step, self.gamma) if self.n_step > 1 else None

    def _build_network(self, generator: torch.Generator) -> nn.Module:
        hp = self.hp
        atoms = hp["atoms"] if hp["distributional"] else 1
        return QNetwork(self.obs_dim, self.n_actions, hp["hidden"], generator, dueling=hp["dueling"],
                        noisy=hp["noisy"], sigma0=hp["noisy_sigma0"], atoms=atoms,
                        v_min=hp["v_min"], v_max=hp["v_max"])

    # -- acting -----------------------------------------------------------------------------------

    def act(self, obs: np.ndarray, state: Any = None, explore: bool = True) -> tuple[np.ndarray, Any]:
        """Greedy actions; if `explore`, epsilon-greedy, or with the current noise when noisy. State is always None."""
        x = as_obs_batch(obs, self.obs_dim)
        chance = self._random_actions(len(x)) if explore else None
        if chance is not None and chance[0].all():
            return chance[1], None  # every action is random: skip the network
        with torch.no_grad():
            if self.noisy_layers and explore and self.grad_steps == 0:
                # Fortunato et al. resample after every optimisation step and act on that noise in between;
                # before learning starts there is none, so draw for every action instead.
                self.online.reset_noise(self.noise_generator)
            elif self.noisy_layers and not explore:
                self.online.eval()  # noise-free means for evaluation
            q = self.online.q_values(torch.from_numpy(x).to(self.device))
            if self.noisy_layers and not explore:
                self.online.train()
        actions = q.argmax(dim=1).cpu().numpy()
        if chance is not None:
            actions = np.where(chance[0], chance[1], actions)
        return actions, None

    def q_values(self, obs: np.ndarray, state: Any = None) -> np.ndarray:
        """Q-values [batch, n_actions] of the greedy (noise-free) network, for inspection and logging."""
        x = torch.from_numpy(as_obs_batch(obs, self.obs_dim)).to(self.device)
        with torch.no_grad():
            self.online.eval()
            q = self.online.q_values(x)
            self.online.train()
        return q.cpu().numpy()

    # -- recording --------------------------------------------------------------------------------

    def observe(self, obs: np.ndarray, action: Any, reward: Any, next_obs: np.ndarray, done: Any,
                augmented: Augmented | Mapping[str, Any] | None = None, truncated: Any = None) -> None:
        """Store a step or a batch of steps; `augmented` is required when augment=True and ignored otherwise."""
        steps = as_steps(obs, action, reward, next_obs, done, truncated, augmented, self.obs_dim, self.n_actions,
                         self.augment)
        one_step_discount = (self.gamma * ~steps.terminated).astype(np.float32)
        fields = {"obs": steps.obs, "action": steps.action, "reward": steps.reward}
        if self.augment:
            fields |= {"aug_reward": steps.aug_rewards, "aug_next_obs": steps.aug_next_obs,
                       "aug_discount": one_step_discount}
        if self.nstep is None:
            self.replay.add(**fields, next_obs=steps.next_obs, discount=one_step_discount)
        else:
            ready = self.nstep.push(fields, steps.next_obs, steps.terminated, steps.ended)
            if ready is not None:
                self.replay.add(**ready)
        self.env_steps += len(steps.action)

    # -- learning ---------------------------------------------------------------------------------

    def _ready(self) -> bool:
        return len(self.replay) >= self.hp["batch_size"]

    def _beta(self) -> float:
        frac = min(1.0, self.env_steps / max(1, self.hp["per_beta_steps"]))
        return self.hp["per_beta0"] + frac * (1.0 - self.hp["per_beta0"])

    def _gradient_step(self) -> dict[str, torch.Tensor]:
        size = self.hp["batch_size"]
        if self.prioritized:
            batch = self.replay.sample(size, beta=self._beta())
        else:
            batch = self.replay.sample(size)
        t = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items() if k != "rows"}
        self._resample_noise()
        # Next states whose values the targets need: the taken transition's (n-step) next
        # observation and, with augmentation, every action's one-step next observation.
        nexts = []
        if self.augment:
            nexts.append(t["aug_next_obs"].reshape(-1, self.obs_dim))
        if not self.augment or self.nstep is not None:
            nexts.append(t["next_obs"])
        nxt = torch.cat(nexts) if len(nexts) > 1 else nexts[0]
        # One online pass over obs and (for double) the next states together; only obs gets gradients.
        out = self.online(torch.cat([t["obs"], nxt]) if self.double else t["obs"])
        current, online_next = out[:size], (out[size:].detach() if self.double else None)
        with torch.no_grad():
            target_next = self.target(nxt)
        losses = self._c51_loss if self.distributional else self._huber_loss
        per_sample, priority, q_taken = losses(t, current, online_next, target_next)
        loss = (per_sample * t["weights"]).mean() if self.prioritized else per_sample.mean()
        self._optimize(loss)
        if self.prioritized:
            self.replay.update_priorities(batch["rows"], priority.cpu().numpy())
        return {"loss": loss.detach(), "q_mean": q_taken.mean()}

    def _next_values(self, online_next: torch.Tensor | None, target_next: torch.Tensor) -> torch.Tensor:
        """Target-network value (Q, or atom probabilities for C51) of the best next action.

        Double DQN picks that action with the online network, plain DQN with the target network.
        """
        if self.distributional:
            support = self.target.head.support
            probs = target_next.softmax(dim=-1)
            chooser = probs if online_next is None else online_next.softmax(dim=-1)
            best = (chooser * support).sum(-1).argmax(dim=1)
            return probs[torch.arange(len(best), device=best.device), best]
        chooser = target_next if online_next is None else online_next
        return target_next.gather(1, chooser.argmax(dim=1, keepdim=True)).squeeze(1)

    def _split_next(self, values: torch.Tensor, size: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(values of every action's next state [B, A, ...] or None, values of the n-step next state [B, ...] or None)."""
        if not self.augment:
            return None, values
        per_action = values[: size * self.n_actions].view(size, self.n_actions, *values.shape[1:])
        return per_action, (values[size * self.n_actions:] if self.nstep is not None else None)

    def _huber_loss(self, t: dict[str, torch.Tensor], q: torch.Tensor, online_next: torch.Tensor | None,
                    target_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample Huber loss, |TD error| (the PER priority; mean over actions with augmentation), Q taken."""
        size = q.shape[0]
        action = t["action"].unsqueeze(1)
        with torch.no_grad():
            v_aug, v_taken = self._split_next(self._next_values(online_next, target_next), size)
            y_taken = None if v_taken is None else t["reward"] + t["discount"] * v_taken
            if self.augment:
                y = t["aug_reward"] + t["aug_discount"].unsqueeze(1) * v_aug
                if y_taken is not None:
                    y.scatter_(1, action, y_taken.unsqueeze(1))
        delta = self.hp["huber_delta"]
        q_taken = q.gather(1, action).squeeze(1)
        if self.augment:
            per_sample = F.huber_loss(q, y, reduction="none", delta=delta).mean(dim=1)
            td = (q.detach() - y).abs().mean(dim=1)
        else:
            per_sample = F.huber_loss(q_taken, y_taken, reduction="none", delta=delta)
            td = (q_taken.detach() - y_taken).abs()
        return per_sample, td, q_taken.detach()

    def _c51_loss(self, t: dict[str, torch.Tensor], logits: torch.Tensor, online_next: torch.Tensor | None,
                  target_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample cross-entropy to the projected target, KL divergence (Rainbow's priority), Q taken."""
        size = logits.shape[0]
        support = self.target.head.support
        action = t["action"]
        rows = torch.arange(size, device=logits.device)
        log_p = logits.log_softmax(dim=-1)  # [B, A, K]
        with torch.no_grad():
            p_aug, p_taken = self._split_next(self._next_values(online_next, target_next), size)
            m_taken = None
            if p_taken is not None:
                tz = t["reward"].unsqueeze(1) + t["discount"].unsqueeze(1) * support
                m_taken = project_distribution(p_taken, tz, support)
            if self.augment:
                tz = t["aug_reward"].unsqueeze(-1) + t["aug_discount"].view(-1, 1, 1) * support
                m = project_distribution(p_aug, tz, support)  # [B, A, K]
                if m_taken is not None:
                    m[rows, action] = m_taken
            target = m if self.augment else m_taken
            entropy = -(target * target.clamp(min=1e-12).log()).sum(-1)
        if self.augment:
            cross_entropy = -(m * log_p).sum(-1)
            per_sample, kl = cross_entropy.mean(dim=1), (cross_entropy.detach() - entropy).mean(dim=1)
        else:
            per_sample = -(m_taken * log_p[rows, action]).sum(-1)
            kl = per_sample.detach() - entropy
        q_taken = (log_p.detach().exp()[rows, action] * support).sum(-1)
        return per_sample, kl.clamp(min=0.0), q_taken

    # -- checkpoints ------------------------------------------------------------------------------

    def _replay_state(self) -> dict[str, Any]:
        state = {"buffer": self.replay.state_dict()}
        if self.nstep is not None:
            state["nstep"] = self.nstep.state_dict()
        return state

    def _load_replay_state(self, state: Mapping[str, Any]) -> None:
        self.replay.load_state_dict(state["buffer"])
        if self.nstep is not None:
            self.nstep.load_state_dict(state["nstep"])

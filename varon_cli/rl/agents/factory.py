"""`make_agent`: build an agent by algorithm name; `restore_agent`: rebuild one from a checkpoint.

| algo    | agent      | paper                                                        |
|---------|------------|--------------------------------------------------------------|
| dqn     | DQNAgent   | Mnih et al. 2015, Human-level control through deep RL         |
| ddqn    | DQNAgent   | van Hasselt et al. 2016, Deep RL with Double Q-learning       |
| dueling | DQNAgent   | Wang et al. 2016, Dueling Network Architectures for Deep RL   |
| noisy   | DQNAgent   | Fortunato et al. 2018, Noisy Networks for Exploration         |
| rainbow | DQNAgent   | Hessel et al. 2018, Rainbow: Combining Improvements in Deep RL|
| drqn    | DRQNAgent  | Hausknecht & Stone 2015, Deep Recurrent Q-Learning for POMDPs |

Default hyperparameters per algo are `hparams.DEFAULTS[algo]`; any of them
can be overridden (so `dqn` with `{"double": True}` is DDQN), and an unknown
key raises ValueError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from varon_cli.rl.agents.base import Agent
from varon_cli.rl.agents.dqn import DQNAgent
from varon_cli.rl.agents.drqn import DRQNAgent
from varon_cli.rl.agents.hparams import ALGOS


def make_agent(algo: str, obs_dim: int, n_actions: int, hparams: Mapping[str, Any] | None = None,
               seed: int = 0, device: str = "auto") -> Agent:
    """A fresh agent for `algo` in dqn|ddqn|dueling|noisy|rainbow|drqn; device auto|cpu|cuda."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}: use one of {', '.join(ALGOS)}")
    if algo == "drqn":
        return DRQNAgent(obs_dim, n_actions, hparams, seed=seed, device=device)
    return DQNAgent(obs_dim, n_actions, hparams, seed=seed, device=device, algo=algo)


def restore_agent(state: Mapping[str, Any], device: str = "auto") -> Agent:
    """The agent a `state_dict()` came from, with that state loaded (training resumes exactly)."""
    agent = make_agent(state["algo"], state["obs_dim"], state["n_actions"], state["hparams"],
                       seed=state["seed"], device=device)
    agent.load_state_dict(state)
    return agent

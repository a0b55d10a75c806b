"""Value-based RL agents for `varon train`: DQN and its Rainbow extensions, and DRQN.

Public API: `make_agent`, `restore_agent`, `DEFAULTS` (hyperparameters per
algo), the `Agent` interface, `Augmented` (all-action outcomes for action
augmentation), and the two agent classes.
"""

from varon_cli.rl.agents.base import Agent, Augmented
from varon_cli.rl.agents.dqn import DQNAgent
from varon_cli.rl.agents.drqn import DRQNAgent
from varon_cli.rl.agents.factory import make_agent, restore_agent
from varon_cli.rl.agents.hparams import ALGOS, DEFAULTS

__all__ = ["ALGOS", "DEFAULTS", "Agent", "Augmented", "DQNAgent", "DRQNAgent", "make_agent", "restore_agent"]

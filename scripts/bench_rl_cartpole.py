#!/usr/bin/env python
"""CartPole-v1 for every agent and several seeds: steps to solve, time, 100-episode greedy mean.

    .venv/bin/python scripts/bench_rl_cartpole.py                  # all algos, seeds 0 1 2
    .venv/bin/python scripts/bench_rl_cartpole.py --algos dqn drqn --seeds 0

The protocol, budget and hyperparameters are the learning test's
(tests/test_rl_agents.py: solve_cartpole, CARTPOLE_HPARAMS); the test runs
seed 0 only. Exit status 1 when any run misses the 195 bar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_rl_agents import CARTPOLE_BUDGET, CARTPOLE_HPARAMS, solve_cartpole  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=list(CARTPOLE_HPARAMS), choices=list(CARTPOLE_HPARAMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=CARTPOLE_BUDGET)
    args = parser.parse_args()
    failed = 0
    print(f"{'algo':8s} {'seed':>4s} {'steps':>6s} {'grads':>6s} {'train s':>8s} {'total s':>8s} "
          f"{'steps/s':>8s} {'mean100':>8s}")
    for algo in args.algos:
        for seed in args.seeds:
            r = solve_cartpole(algo, CARTPOLE_HPARAMS[algo], args.budget, seed)
            failed += r["mean_return"] < 195.0
            print(f"{algo:8s} {seed:4d} {r['steps']:6d} {r['grad_steps']:6d} {r['train_seconds']:8.1f} "
                  f"{r['seconds']:8.1f} {r['steps'] / r['train_seconds']:8.0f} {r['mean_return']:8.1f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

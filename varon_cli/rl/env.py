"""The trading environment: one position per bar, filled at the next open, paid for in fees, slippage and funding.

Timing (DESIGN principle 5: no lookahead). Bars are t = 0, 1, ... of one
symbol's series; bar t opens at ts[t] and closes when bar t+1 opens.

- The observation at bar t is the normalised features of bar t (known at its
  close) plus the position currently held (one extra, last column).
- The action chosen at t sets the position held from the open of bar t+1 (the
  first price after the decision) to the open of bar t+2, where the next
  decision fills. Nothing from the close of t to the open of t+1 is earned.
- The reward is the log of the equity ratio over that holding period:

      r_t = log(1 + p * (open[t+2] / open[t+1] - 1)       price move on the new position p
                  - |p - p_prev| * (taker_fee + slippage)  cost of trading from p_prev to p
                  - p * funding_rate * hour_marks)         funding for hour marks in (ts[t+1], ts[t+2]]

  Positions are fractions of equity (-1 short, 1 long, 0 flat), rebalanced to
  the target every bar; the drift rebalancing of an unchanged target is not
  charged (it is second order in the bar return). Funding is charged on the
  notional at entry, `p` per unit of equity, at every hour mark the holding
  period crosses, as the paper venue does for the bar it crosses; longs pay a
  positive rate. An equity ratio below 1e-12 (ruin) is floored there.
- Every series needs two bars after its last decision, so a series of n bars
  has n - 2 decisions. An episode starts flat at the first bar of a series (or,
  with `episode_bars`, at a random bar) and ends with the series' last decision
  or after `episode_bars` decisions. The position left at the end is not closed.

Because the agent does not move the market, the outcome of every action from
the same state is known exactly: `step` returns it in `info["augmented"]` for
action augmentation (Huang 2018, "Financial Trading as a Game"). Per-bar price
moves and funding are precomputed, so a step is a few small array operations,
and `evaluate` scores a whole action sequence with no loop at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from varon_cli.config import PaperConfig
from varon_cli.errors import InputError
from varon_cli.intervals import format_interval
from varon_cli.rl.dataset import MIN_SERIES_ROWS, MarketData, Normaliser

HOUR_NS = 3_600_000_000_000
YEAR_NS = 365 * 86_400_000_000_000  # crypto trades every day of the year
EQUITY_FLOOR = 1e-12


@dataclass(frozen=True)
class Costs:
    """What a change of position and a held position cost, as fractions of notional."""

    taker_fee: float = 0.0
    slippage: float = 0.0
    funding_rate_per_hour: float = 0.0
    bar_interval_ns: int = 60_000_000_000

    def __post_init__(self) -> None:
        if not self.bar_interval_ns > 0:
            raise ValueError(f"bar interval {self.bar_interval_ns} ns: must be positive")
        if not self.slippage >= 0:
            raise ValueError(f"slippage {self.slippage}: must not be negative")

    @classmethod
    def from_paper(cls, paper: PaperConfig, interval_ns: int) -> Costs:
        """The paper venue's costs (config `paper`): slippage_bps in basis points, funding per hour."""
        return cls(taker_fee=paper.taker_fee, slippage=paper.slippage_bps / 10_000,
                   funding_rate_per_hour=paper.funding_rate, bar_interval_ns=int(interval_ns))

    @property
    def per_trade(self) -> float:
        """Cost per unit of position traded: the fee plus the slippage beyond the open."""
        return self.taker_fee + self.slippage

    @property
    def periods_per_year(self) -> float:
        return YEAR_NS / self.bar_interval_ns


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The outcome of an action sequence over every series of a split, decision by decision.

    Series i is `offsets[i]:offsets[i+1]`; each starts flat with equity 1.
    `ts` is when each return is realised: the open of the bar two after the decision.
    """

    log_returns: np.ndarray
    positions: np.ndarray
    equity: np.ndarray
    ts: np.ndarray
    offsets: np.ndarray

    @property
    def total_log_return(self) -> float:
        return float(self.log_returns.sum())

    @property
    def turnover(self) -> float:
        """Sum of |position changes|, including each series' entry from flat."""
        prev = np.zeros_like(self.positions)
        prev[1:] = self.positions[:-1]
        prev[self.offsets[:-1]] = 0.0
        return float(np.abs(self.positions - prev).sum())


class TradingEnv:
    """A single-position trading environment over MarketData; see the module docstring for the timing.

    `reset() -> obs`, `step(action_index) -> (obs, reward, done, info)`; obs is
    float32 [obs_dim] with the position as its last value. `info["augmented"]`
    is (rewards of every action, next obs for every action) unless `augment`
    is False (a faster step when the agent does not use it).
    """

    def __init__(self, data: MarketData, normaliser: Normaliser | None, costs: Costs,
                 actions: tuple[float, ...] = (-1.0, 0.0, 1.0), episode_bars: int | None = None,
                 seed: int = 0, augment: bool = True) -> None:
        values = np.asarray(actions, dtype=np.float64)
        if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"actions {actions!r}: need a non-empty list of finite positions")
        if episode_bars is not None and episode_bars < 1:
            raise ValueError(f"episode_bars {episode_bars}: must be at least 1")
        if data.n_series == 0 or int(data.lengths.min()) < MIN_SERIES_ROWS:
            raise InputError(f"every series needs at least {MIN_SERIES_ROWS} bars (a decision and two opens after it)")
        if data.interval_ns != costs.bar_interval_ns:
            raise InputError(f"data has {format_interval(data.interval_ns)} bars but the costs are for "
                             f"{format_interval(costs.bar_interval_ns)} bars")
        self.data = normaliser.apply(data) if normaliser is not None else data
        self.costs = costs
        self.episode_bars = episode_bars
        self.augment = augment
        self._values = values
        self._value_list = values.tolist()
        self._cost = costs.per_trade
        self._rng = np.random.default_rng(seed)

        d = self.data
        n, f = d.n_rows, d.n_features
        self._obs = np.zeros((n, f + 1), dtype=np.float32)
        self._obs[:, :f] = d.features
        self._ts = d.ts
        # per-row outcome of holding one unit from open[t+1] to open[t+2]; NaN where t is no decision bar
        within = np.arange(n) - np.repeat(d.offsets[:-1], d.lengths)
        is_decision = within < np.repeat(d.lengths, d.lengths) - 2
        self.decision_rows = np.flatnonzero(is_decision)
        gross = np.full(n, np.nan)
        gross[:-2] = d.open[2:] / d.open[1:-1] - 1.0
        marks = np.zeros(n, dtype=np.int64)
        marks[:-2] = d.ts[2:] // HOUR_NS - d.ts[1:-1] // HOUR_NS
        self._drift = np.where(is_decision, gross - costs.funding_rate_per_hour * marks, np.nan)
        self._drift_list = self._drift.tolist()
        self._dec_offsets = np.concatenate([[0], np.cumsum(d.lengths - 2)]).astype(np.int64)
        self._last_decision = d.offsets[1:] - 3
        self._next_series = 0
        self._row = -1
        self._end = -1
        self._pos = 0.0

    # -- shape -------------------------------------------------------------------------------------
    @property
    def n_actions(self) -> int:
        return int(self._values.size)

    @property
    def obs_dim(self) -> int:
        return int(self._obs.shape[1])

    @property
    def action_values(self) -> np.ndarray:
        return self._values.copy()

    @property
    def n_decisions(self) -> int:
        return int(self.decision_rows.size)

    # -- stepping ----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode flat: series after series from their first bar, or random windows of `episode_bars`."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        d = self.data
        if self.episode_bars is None:
            s = self._next_series
            self._next_series = (s + 1) % d.n_series
            start = int(d.offsets[s])
            self._end = int(self._last_decision[s])
        else:
            n_dec = d.lengths - 2
            s = int(self._rng.choice(d.n_series, p=n_dec / n_dec.sum()))
            start = int(d.offsets[s]) + int(self._rng.integers(0, max(int(n_dec[s]) - self.episode_bars, 0) + 1))
            self._end = min(start + self.episode_bars - 1, int(self._last_decision[s]))
        self._row = start
        self._pos = 0.0
        obs = self._obs[start].copy()
        obs[-1] = 0.0
        return obs

    def step(self, action: int) -> tuple[np.ndarray, float, bool, dict]:
        i = self._row
        if i < 0:
            raise RuntimeError("the episode is over (or never began): call reset()")
        a = int(action)
        if not 0 <= a < self._values.size:
            raise IndexError(f"action {action} outside 0..{self._values.size - 1}")
        prev = self._pos
        new = self._value_list[a]
        info: dict = {"position": new, "row": i}
        if self.augment:
            values = self._values
            rewards = np.log(np.maximum(1.0 + values * self._drift_list[i] - np.abs(values - prev) * self._cost,
                                        EQUITY_FLOOR))
            next_obs = np.empty((values.size, self._obs.shape[1]), dtype=np.float32)
            next_obs[:] = self._obs[i + 1]
            next_obs[:, -1] = values
            info["augmented"] = (rewards, next_obs)
            reward = float(rewards[a])
            obs = next_obs[a].copy()
        else:
            reward = math.log(max(1.0 + new * self._drift_list[i] - abs(new - prev) * self._cost, EQUITY_FLOOR))
            obs = self._obs[i + 1].copy()
            obs[-1] = new
        self._pos = new
        done = i + 1 > self._end
        self._row = -1 if done else i + 1
        return obs, reward, done, info

    # -- whole-split scoring -----------------------------------------------------------------------
    def _decision_actions(self, actions: np.ndarray) -> np.ndarray:
        acts = np.asarray(actions)
        if acts.ndim != 1 or acts.shape[0] not in (self.data.n_rows, self.n_decisions):
            raise ValueError(f"need one action per bar ({self.data.n_rows}) or per decision ({self.n_decisions}), "
                             f"got shape {acts.shape}")
        if acts.shape[0] == self.data.n_rows:
            acts = acts[self.decision_rows]
        in_range = acts.size == 0 or (acts.min() >= 0 and acts.max() < self.n_actions)
        if not np.issubdtype(acts.dtype, np.integer) or not in_range:
            raise ValueError(f"actions must be integer indices in 0..{self.n_actions - 1}")
        return acts

    def evaluate(self, policy_actions: np.ndarray) -> Evaluation:
        """Score action indices over every series at once, exactly as stepping full episodes would.

        `policy_actions` holds one index per bar of the data (the last two bars
        of each series, which no decision can fill, are ignored) or one per
        decision (`decision_rows`). Each series starts flat.
        """
        acts = self._decision_actions(policy_actions)
        pos = self._values[acts]
        prev = np.zeros_like(pos)
        prev[1:] = pos[:-1]
        prev[self._dec_offsets[:-1]] = 0.0
        drift = self._drift[self.decision_rows]
        log_returns = np.log(np.maximum(1.0 + pos * drift - np.abs(pos - prev) * self._cost, EQUITY_FLOOR))
        total = np.cumsum(log_returns)
        base = np.concatenate([[0.0], total])[self._dec_offsets[:-1]]
        equity = np.exp(total - np.repeat(base, np.diff(self._dec_offsets)))
        return Evaluation(log_returns=log_returns, positions=pos, equity=equity,
                          ts=self._ts[self.decision_rows + 2], offsets=self._dec_offsets.copy())

    def optimal_actions(self) -> np.ndarray:
        """The hindsight-best action index per decision, ignoring fees and slippage (a test oracle, never a label).

        Ties go to the smallest |position| (flat when nothing moves).
        """
        score = self._drift[self.decision_rows, None] * self._values[None, :]
        best = score >= score.max(axis=1, keepdims=True)
        return np.where(best, np.abs(self._values)[None, :], np.inf).argmin(axis=1)


__all__ = ["Costs", "EQUITY_FLOOR", "Evaluation", "TradingEnv"]

"""`varon train` learns what can be learned and nothing else: synthetic markets with known answers.

Four hourly markets of two symbols, 1500 bars each, built so that the right
answer is known (env timing: the action at the close of bar t holds from
open[t+1] to open[t+2]; g[t] = log(open[t+2] / open[t+1]) is what it earns):

- planted: `signal_feature` s[t] ~ N(0, 1) is known at the close of t and
  g[t] = 0.008 * sign(s[t]) * (+1 with probability 0.95, else -1) + N(0, 0.001).
  Trading sign(s) earns ~0.9 of the hindsight optimum (0.008 * (0.95 - 0.05)
  per bar against E|g| ~ 0.008); every agent must capture >= 50% of the
  optimum out of sample.
- random: g ~ N(0, 0.008) i.i.d., every feature pure noise. No agent may show
  an edge beyond noise out of sample.
- leak: `signal_feature` at t IS the open(t+1) -> open(t+2) return. An agent
  that cannot exploit it (>= 50% of the optimum; the ceiling is 1.0) means a
  broken environment, reward or observation alignment.
- gap: `signal_feature` at t is the close(t) -> open(t+1) return (sd 1%, larger
  than the 0.8% bar moves), independent of g. It is worth a fortune to a
  simulator that fills at the close of t, and nothing when fills are at the
  first price after the decision (the open of t+1): no edge beyond noise.

Every market has a close(t) -> open(t+1) gap of sd 1% (so a close-filling
environment would differ), three warm-up rows with NaN features, and a second,
pure-noise feature. Costs: taker fee 1 bp, no slippage, no funding (funding
would only make the oracle position-dependent; it is tested in test_rl_env).

Budgets are small (one seed, 3000 environment steps, learning from step 200,
epsilon decayed over 1500 steps, gamma 0.3 because the reward of a position is
realised within two bars and fees are tiny, lr 1e-3); the same budget for
every market, so an agent that finds the planted pattern had every chance to
"find" something in noise. Runs are seeded and deterministic on CPU.

Scoring is out of sample only: the chosen (best-validation) agent's greedy
actions on the test split, through `TradingEnv.evaluate`, against
`TradingEnv.optimal_actions()` (hindsight, fees ignored in the choice, charged
in the score) on the same split.

No-edge criterion (random, gap): with r the test split's per-decision net log
returns (N ~ 440), t = mean(r) / std(r) * sqrt(N), i.e. the per-bar Sharpe
ratio scaled to a z-score. No edge means t < 3.5 (one-sided; under no edge
P(t >= 3.5) ~ 2e-4 per run, ~3e-3 over all 12 runs) and the total test log
return below 20% of the optimum (~3.4 sd of a random position's total). A
planted or leaked edge scores t ~ 20..40 and >= 50% of the optimum, so the
criterion separates by an order of magnitude; `test_the_no_edge_criterion_has_power`
shows it rejects the optimal policy on the same markets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from varon_cli.config import load_config
from varon_cli.rl.agents.hparams import resolve_hparams
from varon_cli.rl.dataset import prepare, split_by_time
from varon_cli.rl.env import Costs, Evaluation, TradingEnv
from varon_cli.rl.policy import greedy_actions
from varon_cli.rl.trainer import ACTIONS, FoldResult, TrainSettings, train
from varon_cli.schemas import FEATURE_HASH_KEY, FEATURE_SPEC_KEY, FEATURES, INTERVAL_KEY

pytestmark = pytest.mark.slow

ALGOS = ("dqn", "ddqn", "dueling", "noisy", "rainbow", "drqn")
HOUR = 3_600_000_000_000
T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z
BARS = 1500
SYMBOLS = ("BTC-USD", "ETH-USD")
WARMUP = 3
MOVE = 0.008  # size of the planted bar move
GAP_SD = 0.01  # close(t) -> open(t+1)

CFG = load_config(None, {"paper": {"taker_fee": 0.0001, "slippage_bps": 0.0, "funding_rate": 0.0}}, {})
PAPER = CFG.paper

CAPTURE = 0.5  # share of the hindsight optimum an agent must capture out of sample (planted, leak)
NOISE_T = 3.5  # no-edge z-score band (random, gap)
NOISE_SHARE = 0.2  # no-edge share of the optimum (random, gap)

STEPS = 3000
COMMON = {"learning_starts": 200, "eps_decay_steps": 1500, "gamma": 0.3, "train_freq": 1,
          "target_update_interval": 100, "lr": 1e-3}
HPARAMS = {
    "dqn": COMMON,
    "ddqn": COMMON,
    "dueling": COMMON,
    "noisy": COMMON | {"noisy_sigma0": 0.2},
    # the two slow agents (C51 + PER, LSTM windows) update every other step to stay inside the time budget
    "rainbow": COMMON | {"noisy_sigma0": 0.2, "train_freq": 2, "target_update_interval": 50},
    "drqn": COMMON | {"train_freq": 2, "target_update_interval": 50},
}


# -- synthetic markets -------------------------------------------------------------------------------

def _symbol_columns(kind: str, symbol: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = BARS
    s = rng.normal(0.0, 1.0, n)
    noise = rng.normal(0.0, 1.0, n)
    gap = rng.normal(0.0, GAP_SD, n)  # log(open[t+1] / close[t])
    if kind == "planted":
        agree = np.where(rng.random(n) < 0.95, 1.0, -1.0)
        g = MOVE * np.sign(s) * agree + rng.normal(0.0, 0.001, n)
    else:
        g = rng.normal(0.0, MOVE, n)
    # g[t] = log(open[t+2] / open[t+1]) for every decision bar t = 0 .. n-3
    opens = np.empty(n)
    opens[:2] = 100.0
    opens[2:] = 100.0 * np.exp(np.cumsum(g[: n - 2]))
    closes = np.empty(n)
    closes[:-1] = opens[1:] * np.exp(-gap[:-1])
    closes[-1] = opens[-1]
    if kind in ("planted", "random"):
        signal = s
    elif kind == "leak":
        signal = np.zeros(n)
        signal[: n - 2] = np.expm1(g[: n - 2])  # the open(t+1) -> open(t+2) return, at bar t
    elif kind == "gap":
        signal = np.zeros(n)
        signal[:-1] = opens[1:] / closes[:-1] - 1.0  # the close(t) -> open(t+1) return, at bar t
    else:
        raise ValueError(kind)
    warm = np.arange(n) < WARMUP
    return {
        "ts": T0 + HOUR * np.arange(n, dtype=np.int64), "venue": np.array(["paper"] * n),
        "symbol": np.array([symbol] * n), "open": opens, "high": np.maximum(opens, closes),
        "low": np.minimum(opens, closes), "close": closes, "volume": np.ones(n), "buy_volume": np.full(n, np.nan),
        "vwap": closes, "trades": np.ones(n, np.int64), "partial": np.zeros(n, bool), "warmup": warm,
        "signal_feature": np.where(warm, np.nan, signal), "noise_feature": np.where(warm, np.nan, noise),
    }


def synthetic_market(kind: str, seed: int = 0) -> pa.Table:
    """A `features` table of two hourly symbols for one of the kinds in the module docstring."""
    rng = np.random.default_rng([seed, ["planted", "random", "leak", "gap"].index(kind)])
    parts = [_symbol_columns(kind, sym, rng) for sym in SYMBOLS]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    extra = [pa.field("signal_feature", pa.float64()), pa.field("noise_feature", pa.float64())]
    schema = FEATURES.schema_with({INTERVAL_KEY: b"1h", FEATURE_HASH_KEY: f"synthetic-{kind}".encode(),
                                   FEATURE_SPEC_KEY: b"{}"}, fields=extra)
    arrays = [pa.array(cols["ts"], pa.int64()).cast(schema.field("ts").type)]
    arrays += [pa.array(cols[f.name], f.type) for f in list(schema)[1:]]
    return pa.Table.from_arrays(arrays, schema=schema)


# -- training and out-of-sample scoring -------------------------------------------------------------

@dataclass
class Outcome:
    fold: FoldResult
    policy: Evaluation  # the chosen agent's greedy actions on the test split
    optimum: Evaluation  # the hindsight-optimal actions on the same split
    env: TradingEnv

    @property
    def captured(self) -> float:
        return self.policy.total_log_return / self.optimum.total_log_return

    @property
    def t_stat(self) -> float:
        return z_score(self.policy.log_returns)

    def describe(self) -> str:
        return (f"test log return {self.policy.total_log_return:.3f} of optimum {self.optimum.total_log_return:.3f} "
                f"({self.captured:.1%}), t {self.t_stat:.2f}, turnover {self.policy.turnover:.0f}, "
                f"validation Sharpe {self.fold.chosen.best_valid_sharpe:.2f} at step {self.fold.chosen.best_step}")


def z_score(log_returns: np.ndarray) -> float:
    """mean / std * sqrt(N): the per-bar Sharpe ratio as a z-score (0 for a policy that never moves)."""
    r = np.asarray(log_returns, dtype=np.float64)
    std = r.std(ddof=1)
    return 0.0 if std == 0 else float(r.mean() / std * np.sqrt(r.size))


def scoring_env(features: pa.Table, fold: FoldResult, settings: TrainSettings) -> TradingEnv:
    """The test split of `features`, cut as the trainer cuts it and scored with the fold's training statistics."""
    data = prepare(features, list(fold.normaliser.columns))
    _, _, test = split_by_time(data, settings.fractions)
    assert [int(test.ts.min()), int(test.ts.max())] == fold.window["test"]
    return TradingEnv(test, fold.normaliser, Costs.from_paper(PAPER, test.interval_ns), ACTIONS, None, augment=False)


def learn(kind: str, algo: str, out: Path, seeds: tuple[int, ...] = (0,), steps: int = STEPS) -> Outcome:
    features = synthetic_market(kind)
    settings = TrainSettings(algo=algo, hparams=resolve_hparams(algo, HPARAMS[algo]), seeds=seeds, steps=steps,
                             eval_every=steps // 4, patience=10, episode_bars=256, device="cpu")
    folds = train(features, settings, PAPER, out)
    assert len(folds) == 1
    fold = folds[0]
    env = scoring_env(features, fold, settings)
    policy = env.evaluate(greedy_actions(fold.chosen.agent, env.data, env.action_values))
    optimum = env.evaluate(env.optimal_actions())
    return Outcome(fold, policy, optimum, env)


def has_no_edge(evaluation: Evaluation, optimum: Evaluation) -> bool:
    return z_score(evaluation.log_returns) < NOISE_T and evaluation.total_log_return < NOISE_SHARE * \
        optimum.total_log_return


# -- the markets are what they claim (so the learning tests mean something) --------------------------

def test_the_synthetic_markets_have_the_stated_structure() -> None:
    for kind in ("planted", "random", "leak", "gap"):
        features = synthetic_market(kind)
        data = prepare(features, ["signal_feature", "noise_feature"])
        assert data.n_series == 2 and data.n_rows == 2 * (BARS - WARMUP)
        env = TradingEnv(data, None, Costs.from_paper(PAPER, data.interval_ns), ACTIONS, None, augment=False)
        rows = env.decision_rows
        g = np.log(data.open[rows + 2] / data.open[rows + 1])
        signal = data.features[rows, 0].astype(np.float64)
        gap = np.log(data.open[rows + 1] / data.close[rows])
        agreement = float(np.mean(np.sign(signal) == np.sign(g)))
        if kind == "planted":
            assert 0.93 < agreement < 0.97
        elif kind == "leak":
            np.testing.assert_allclose(signal, np.expm1(g), rtol=1e-5, atol=1e-9)
        else:
            assert 0.45 < agreement < 0.55  # nothing about the holding period
        if kind == "gap":
            np.testing.assert_allclose(signal, np.expm1(gap), rtol=1e-5, atol=1e-9)
        assert 0.008 < gap.std() < 0.012  # every market has a real close -> next open gap
        # the noise feature never says anything
        assert 0.45 < float(np.mean(np.sign(data.features[rows, 1]) == np.sign(g))) < 0.55


def test_the_no_edge_criterion_has_power() -> None:
    """On the same test splits the optimal policy, the sign of a leaked or planted feature, or a simulator that
    filled the gap feature at the close would all be flagged as an edge."""
    for kind in ("planted", "leak", "random", "gap"):
        features = synthetic_market(kind)
        data = prepare(features, ["signal_feature", "noise_feature"])
        _, _, test = split_by_time(data)
        env = TradingEnv(test, None, Costs.from_paper(PAPER, test.interval_ns), ACTIONS, None, augment=False)
        optimum = env.evaluate(env.optimal_actions())
        assert not has_no_edge(optimum, optimum)
        follow = np.where(test.features[:, 0] > 0, 2, 0)  # long when the feature is positive, else short
        followed = env.evaluate(follow)
        if kind in ("planted", "leak"):
            assert not has_no_edge(followed, optimum)
            assert followed.total_log_return >= 0.85 * optimum.total_log_return
        else:
            assert has_no_edge(followed, optimum)
        if kind == "gap":
            # what the gap feature would be worth if the decision at t filled at close[t] instead of open[t+1]
            rows = env.decision_rows
            at_close = np.log(test.open[rows + 2] / test.close[rows])
            sign = np.where(test.features[rows, 0] > 0, 1.0, -1.0)
            close_fill = np.log1p(sign * np.expm1(at_close))
            assert z_score(close_fill) > 3 * NOISE_T and close_fill.sum() > optimum.total_log_return


# -- learning ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ALGOS)
def test_every_agent_captures_most_of_a_planted_pattern_out_of_sample(algo: str, tmp_path: Path) -> None:
    outcome = learn("planted", algo, tmp_path)
    assert outcome.captured >= CAPTURE, outcome.describe()
    assert outcome.t_stat > 10, outcome.describe()
    assert outcome.fold.chosen.best_valid_sharpe > 20, outcome.describe()  # validation saw it too


@pytest.mark.parametrize("algo", ALGOS)
def test_every_agent_exploits_a_leaked_future_return(algo: str, tmp_path: Path) -> None:
    """The guard against a broken environment: if the reward or the observation were shifted by a bar, the
    feature that IS the holding period's return would be worth nothing."""
    outcome = learn("leak", algo, tmp_path)
    assert outcome.captured >= CAPTURE, outcome.describe()
    assert outcome.t_stat > 10, outcome.describe()


@pytest.mark.parametrize("algo", ALGOS)
def test_no_agent_finds_an_edge_in_a_random_walk(algo: str, tmp_path: Path) -> None:
    outcome = learn("random", algo, tmp_path)
    assert has_no_edge(outcome.policy, outcome.optimum), outcome.describe()


@pytest.mark.parametrize("algo", ALGOS)
def test_no_agent_profits_from_the_gap_it_cannot_trade(algo: str, tmp_path: Path) -> None:
    """The close(t) -> open(t+1) return is past by the time the decision at t fills (the open of t+1)."""
    outcome = learn("gap", algo, tmp_path)
    assert has_no_edge(outcome.policy, outcome.optimum), outcome.describe()


# -- the report on a planted pattern ---------------------------------------------------------------

@pytest.fixture(scope="module")
def planted_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from varon_cli.rl.report import finish_training

    out = tmp_path_factory.mktemp("planted-report") / "model"
    features = synthetic_market("planted")
    algo = "dqn"
    # trials: 9998 configurations tried before these 2 seeds, 10^4 trials in all
    settings = TrainSettings(algo=algo, hparams=resolve_hparams(algo, HPARAMS[algo]), seeds=(0, 1), steps=2000,
                             eval_every=500, patience=10, episode_bars=256, device="cpu", trials=9998)
    folds = train(features, settings, PAPER, out)
    return finish_training(folds, features, settings, CFG, out, "synthetic planted")


def test_the_report_puts_a_planted_edge_far_above_the_baselines(planted_report: dict) -> None:
    (fold,) = planted_report["folds"]
    rows = fold["test"]
    (model,) = [name for name in rows if name.startswith("dqn (seed")]
    assert set(rows) == {model, "buy-and-hold", "ema-cross"}
    for baseline in ("buy-and-hold", "ema-cross"):
        assert rows[model]["total_return"] > rows[baseline]["total_return"] + 0.1, rows
        assert rows[model]["sharpe"] > rows[baseline]["sharpe"] + 10, rows
    assert rows[model]["directional_accuracy"] > 0.6
    assert fold["test_sharpe_over_seeds"]["min"] > 10
    assert fold["trials"] == 10_000


def test_the_deflated_sharpe_of_a_planted_edge_is_high(planted_report: dict) -> None:
    """A per-bar Sharpe of ~0.29 over ~450 bars (t ~ 6) survives 10^4 trials when the trials' Sharpe ratios spread
    as little as these seeds' do (per-bar SR0 = sqrt(V) * 3.86 ~ 0.01 for an annualised std of ~0.2)."""
    (fold,) = planted_report["folds"]
    assert fold["test_sharpe_over_seeds"]["min"] > 10  # the edge is real and large on every seed
    assert fold["deflated_sharpe"] > 0.95, fold["deflated_sharpe"]

"""The trading environment and its data: time splits, train-only normalisation, execution timing, rewards.

The planted-feature tests are the no-lookahead proof (DESIGN principle 5): a
feature that knows the gap from the close of t to the open of t+1 must earn
nothing, because the decision at t fills at the open of t+1; a feature that
knows the return from open t+1 to open t+2 is exactly what the hindsight
oracle trades on.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from varon_cli.config import PaperConfig
from varon_cli.errors import InputError
from varon_cli.rl.dataset import MarketData, Normaliser, fingerprint, prepare, split_by_time, walk_forward
from varon_cli.rl.env import Costs, TradingEnv
from varon_cli.rl.validation import (deflated_sharpe, expected_max_sharpe, moments, norm_cdf, norm_ppf,
                                     probabilistic_sharpe, sharpe, summarise_seeds)
from varon_cli.schemas import FEATURE_HASH_KEY, FEATURES, INTERVAL_KEY

MINUTE = 60_000_000_000
HOUR = 60 * MINUTE
T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z
NO_COSTS = Costs(bar_interval_ns=30 * MINUTE)


def series(symbol: str, opens, closes=None, feats: dict | None = None, warmup=None, start: int = T0,
           interval: int = 30 * MINUTE, venue: str = "paper") -> dict:
    """Columns of one symbol's features rows; closes default to the opens (flat bars)."""
    opens = np.asarray(opens, dtype=np.float64)
    n = opens.size
    closes = opens.copy() if closes is None else np.asarray(closes, dtype=np.float64)
    return {
        "ts": start + interval * np.arange(n, dtype=np.int64), "venue": [venue] * n, "symbol": [symbol] * n,
        "open": opens, "high": np.maximum(opens, closes), "low": np.minimum(opens, closes), "close": closes,
        "volume": np.ones(n), "buy_volume": np.full(n, np.nan), "vwap": closes, "trades": np.ones(n, np.int64),
        "partial": np.zeros(n, bool), "warmup": np.zeros(n, bool) if warmup is None else np.asarray(warmup, bool),
        **{k: np.asarray(v, dtype=np.float64) for k, v in (feats or {}).items()},
    }


def table(*parts: dict, interval: str = "30m", order=None) -> pa.Table:
    """A features table of several symbols' rows (optionally reordered), typed and tagged as `varon features` writes."""
    names = list(parts[0])
    cols = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in names}
    if order is not None:
        cols = {k: v[order] for k, v in cols.items()}
    extra = [pa.field(k, pa.float64()) for k in names if k not in FEATURES.column_names]
    schema = FEATURES.schema_with({INTERVAL_KEY: interval.encode(), FEATURE_HASH_KEY: b"abc123"}, extra)
    arrays = [pa.array(cols["ts"], pa.int64()).cast(schema.field("ts").type)]
    arrays += [pa.array(cols[f.name], f.type) for f in list(schema)[1:]]
    return pa.Table.from_arrays(arrays, schema=schema)


def random_walk(n: int, seed: int, start: float = 100.0) -> np.ndarray:
    return start * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, n)))


def random_market(n: int = 60, seed: int = 0, symbols=("BTC-USD",)) -> pa.Table:
    parts = []
    for k, sym in enumerate(symbols):
        rng = np.random.default_rng(seed + k)
        opens = random_walk(n, seed + k)
        parts.append(series(sym, opens, opens * np.exp(rng.normal(0, 0.005, n)),
                            {"f1": rng.normal(0, 1, n), "f2": rng.normal(5, 2, n)}))
    return table(*parts)


# -- prepare -----------------------------------------------------------------------------------------

def test_prepare_groups_symbols_sorts_by_time_and_drops_leading_warmup():
    eth = series("ETH-USD", [10, 11, 12, 13, 14], feats={"f1": [np.nan, 1, 2, 3, 4]}, warmup=[1, 0, 0, 0, 0])
    btc = series("BTC-USD", [1, 2, 3, 4, 5, 6], feats={"f1": [np.nan, np.nan, 7, 8, 9, 10]},
                 warmup=[1, 1, 0, 0, 0, 0])
    shuffled = np.random.default_rng(3).permutation(11)
    data = prepare(table(eth, btc, order=shuffled))
    assert data.keys == (("paper", "BTC-USD"), ("paper", "ETH-USD"))
    assert data.columns == ("f1",)  # the bars' own float columns (open, vwap, buy_volume...) are no features
    assert data.offsets.tolist() == [0, 4, 8]
    assert data.features.dtype == np.float32
    assert data.features[:, 0].tolist() == [7, 8, 9, 10, 1, 2, 3, 4]
    assert data.open.tolist() == [3, 4, 5, 6, 11, 12, 13, 14]
    assert np.all(np.diff(data.ts[:4]) == 30 * MINUTE) and data.ts[0] == T0 + 60 * MINUTE
    assert data.interval_ns == 30 * MINUTE and data.feature_hash == "abc123"
    nxt = data.next_open
    assert nxt[:3].tolist() == [4, 5, 6] and math.isnan(nxt[3]) and math.isnan(nxt[7])


def test_prepare_feature_columns_chosen_and_checked():
    t = random_market()
    assert prepare(t, ["f2"]).columns == ("f2",)
    with pytest.raises(InputError, match="nope"):
        prepare(t, ["f1", "nope"])


def test_nan_after_warmup_is_an_input_error_naming_column_and_time():
    f = [np.nan, 1.0, 2.0, np.inf, 4.0, 5.0]
    t = table(series("BTC-USD", np.arange(1, 7), feats={"good": np.ones(6), "bad": f}, warmup=[1, 0, 0, 0, 0, 0]))
    with pytest.raises(InputError, match=r"'bad'.*BTC-USD 2025-01-01T01:30:00Z"):
        prepare(t)
    # the same values inside the warm-up are dropped, not an error
    ok = prepare(table(series("BTC-USD", np.arange(1, 8), feats={"bad": f + [6.0]}, warmup=[1, 1, 1, 1, 0, 0, 0])))
    assert ok.features[:, 0].tolist() == [4.0, 5.0, 6.0]
    null_price = table(series("BTC-USD", [1.0, np.nan, 3.0, 4.0], feats={"f": np.ones(4)}))
    with pytest.raises(InputError, match="'open'"):
        prepare(null_price)


def test_too_short_series_is_an_input_error():
    t = table(series("BTC-USD", random_walk(20, 1), feats={"f": np.ones(20)}),
              series("ETH-USD", [1.0, 2.0], feats={"f": [1.0, 2.0]}))
    with pytest.raises(InputError, match="ETH-USD has 2 bars"):
        prepare(t)
    with pytest.raises(InputError, match="need at least 25"):
        prepare(table(series("BTC-USD", random_walk(20, 1), feats={"f": np.ones(20)})), min_rows=25)


def test_duplicate_bar_time_is_refused():
    t = table(series("BTC-USD", [1, 2, 3, 4], feats={"f": np.ones(4)}), series("BTC-USD", [5.0], feats={"f": [1.0]}))
    with pytest.raises(InputError, match="two bars at"):
        prepare(t)


# -- splits --------------------------------------------------------------------------------------------

def two_symbols_late_listing() -> MarketData:
    """BTC from T0 for 100 bars; ETH listed 30 bars later, ending 10 bars earlier."""
    btc = series("BTC-USD", random_walk(100, 1), feats={"f": np.arange(100.0)})
    eth = series("ETH-USD", random_walk(60, 2), feats={"f": np.arange(60.0)}, start=T0 + 30 * 30 * MINUTE)
    return prepare(table(btc, eth))


def test_split_by_time_common_cutoff_no_overlap():
    data = two_symbols_late_listing()
    train, valid, test = split_by_time(data)
    c1, c2 = train.window[1], valid.window[1]
    assert train.window == (None, c1) and valid.window == (c1, c2) and test.window == (c2, None)
    assert train.ts.max() < c1 <= valid.ts.min() and valid.ts.max() < c2 <= test.ts.min()
    for part in (train, valid, test):
        for i in range(part.n_series):  # every symbol respects the same cutoffs, each series in time order
            s = part.series(i)
            assert np.all(np.diff(part.ts[s]) > 0)
    assert {k for k in valid.keys} == {("paper", "BTC-USD"), ("paper", "ETH-USD")}
    assert train.ts[train.series(1)].max() < c1  # ETH's train rows are cut at BTC's cutoff too
    # the three splits partition the rows: none lost (every piece is long enough here), none shared
    rows = lambda p: {(k, int(t)) for i, k in enumerate(p.keys) for t in p.ts[p.series(i)]}  # noqa: E731
    a, b, c = rows(train), rows(valid), rows(test)
    assert not (a & b or b & c or a & c)
    assert len(a | b | c) == data.n_rows
    # the cutoffs sit at 70% and 85% of the 100 distinct bar times
    assert c1 == T0 + 70 * 30 * MINUTE and c2 == T0 + 85 * 30 * MINUTE


def test_split_drops_short_pieces_and_refuses_empty_split():
    data = two_symbols_late_listing()
    # cutoffs at bars 50 and 75: ETH (bars 30..89) has 20 train, 25 valid and 15 test bars
    train, valid, test = split_by_time(data, (0.5, 0.25, 0.25), min_rows=20)
    both = (("paper", "BTC-USD"), ("paper", "ETH-USD"))
    assert train.keys == both and valid.keys == both and test.keys == (("paper", "BTC-USD"),)
    assert test.n_rows == 25
    with pytest.raises(InputError, match="valid split"):
        split_by_time(data, (0.5, 0.25, 0.25), min_rows=26)
    with pytest.raises(InputError):
        split_by_time(data, fractions=(0.998, 0.001, 0.001))


def test_walk_forward_folds_move_forward_and_tests_do_not_overlap():
    data = prepare(table(series("BTC-USD", random_walk(200, 4), feats={"f": np.ones(200)})))
    folds = walk_forward(data, 4, train_fraction=0.5)
    assert len(folds) == 4
    test_rows = []
    for k, (train, valid, test) in enumerate(folds):
        assert train.ts.max() < valid.ts.min() and valid.ts.max() < test.ts.min()
        assert train.ts.min() == data.ts.min()  # expanding: training starts at the first bar
        test_rows.append(set(test.ts.tolist()))
        if k:
            assert train.n_rows > folds[k - 1][0].n_rows
            assert set(folds[k - 1][2].ts.tolist()) <= set(train.ts.tolist())  # the last fold's test is history now
    assert not set.intersection(*test_rows) and sum(map(len, test_rows)) == len(set.union(*test_rows))
    assert folds[-1][2].ts.max() == data.ts.max()
    rolling = walk_forward(data, 4, train_fraction=0.5, expanding=False)
    assert {f[0].n_rows for f in rolling} == {100}  # a window as long as the first
    assert rolling[-1][0].ts.min() > data.ts.min()
    with pytest.raises(InputError):
        walk_forward(data, 40, train_fraction=0.5, min_rows=5)


# -- normalisation -------------------------------------------------------------------------------------

def test_normaliser_statistics_come_from_the_training_split_only():
    t = random_market(100, seed=7, symbols=("BTC-USD", "ETH-USD"))
    train, valid, test = split_by_time(prepare(t))
    norm = Normaliser.fit(train)
    x = train.features.astype(np.float64)
    np.testing.assert_allclose(norm.mean, x.mean(axis=0))
    np.testing.assert_allclose(norm.std, x.std(axis=0))

    # change every feature value after the training cutoff: the statistics do not move
    ts = t["ts"].cast(pa.int64()).to_numpy()
    late = ts >= train.window[1]
    changed = t.set_column(t.column_names.index("f1"), "f1", pa.array(np.where(late, 1e6, t["f1"].to_numpy())))
    train2, _, test2 = split_by_time(prepare(changed))
    norm2 = Normaliser.fit(train2)
    np.testing.assert_array_equal(norm2.mean, norm.mean)
    np.testing.assert_array_equal(norm2.std, norm.std)
    assert not np.array_equal(norm2.apply(test2).features, norm.apply(test).features)  # the change was seen
    # ...whereas a change before the cutoff does move them
    early = t.set_column(t.column_names.index("f1"), "f1", pa.array(np.where(~late, 3.0, t["f1"].to_numpy())))
    assert Normaliser.fit(split_by_time(prepare(early))[0]).mean[0] == pytest.approx(3.0)


def test_normaliser_travels_as_a_dict_and_matches_columns_by_name():
    train = prepare(random_market(50))
    norm = Normaliser.fit(train)
    back = Normaliser.from_dict(norm.to_dict())
    np.testing.assert_array_equal(back.apply(train).features, norm.apply(train).features)
    z = norm.apply(train).features.astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-6)
    reordered = prepare(random_market(50), ["f2", "f1"])
    np.testing.assert_array_equal(norm.apply(reordered).features, norm.apply(train).features)
    with pytest.raises(InputError, match="f2"):
        norm.apply(prepare(random_market(50), ["f1"]))
    # a constant feature does not divide by zero; far-away values are clipped
    const = prepare(table(series("BTC-USD", random_walk(10, 1), feats={"c": np.full(10, 2.0)})))
    n2 = Normaliser.fit(const)
    assert n2.std[0] == n2.std_floor and np.all(n2.apply(const).features == 0)
    assert n2.transform(np.array([[1e9]]))[0, 0] == n2.clip


# -- the environment -------------------------------------------------------------------------------------

def test_costs_from_paper_config():
    c = Costs.from_paper(PaperConfig(), 5 * MINUTE)
    assert (c.taker_fee, c.slippage, c.funding_rate_per_hour) == (0.00045, 0.0001, 0.0000125)
    assert c.per_trade == pytest.approx(0.00055)
    assert c.periods_per_year == 365 * 24 * 12


def test_reward_equals_a_hand_computation():
    # 30-minute bars from 00:00; opens 100, 101, 103, 102, 104
    t = table(series("BTC-USD", [100.0, 101.0, 103.0, 102.0, 104.0], feats={"f": [0.0, 1.0, 2.0, 3.0, 4.0]}))
    costs = Costs(taker_fee=0.00045, slippage=0.0001, funding_rate_per_hour=0.001, bar_interval_ns=30 * MINUTE)
    env = TradingEnv(prepare(t), None, costs)
    obs = env.reset()
    assert obs.tolist() == [0.0, 0.0]
    # t=0 -> long from open 00:30 (101) to open 01:00 (103): buys 1 (fee + slippage); the 01:00 mark costs funding
    obs, r0, done, info = env.step(2)
    assert r0 == pytest.approx(math.log(1 + (103 / 101 - 1) - 1 * 0.00055 - 1 * 0.001), rel=1e-12)
    assert obs.tolist() == [1.0, 1.0] and not done and info["position"] == 1.0
    # t=1 -> short from open 01:00 (103) to open 01:30 (102): trades 2 units; no hour mark in (01:00, 01:30]
    obs, r1, done, _ = env.step(0)
    assert r1 == pytest.approx(math.log(1 - (102 / 103 - 1) - 2 * 0.00055), rel=1e-12)
    # t=2 -> stay short from 01:30 (102) to 02:00 (104): no trade; the 02:00 mark pays the short its funding
    obs, r2, done, _ = env.step(0)
    assert r2 == pytest.approx(math.log(1 - (104 / 102 - 1) + 0.001), rel=1e-12)
    assert done and obs.tolist() == [3.0, -1.0]  # bar 3's features: bar 4 only gives the exit open
    with pytest.raises(RuntimeError):
        env.step(1)


def gapped_market(n: int = 41, seed: int = 5) -> tuple[pa.Table, np.ndarray]:
    """Flat bars (open = close) whose price jumps only between the close of an even bar and the next open."""
    rng = np.random.default_rng(seed)
    gaps = np.where(np.arange(n) % 2 == 0, rng.choice([-1, 1], n) * rng.uniform(0.005, 0.02, n), 0.0)
    gaps[-1] = 0.0
    opens = 100.0 * np.concatenate([[1.0], np.cumprod(1 + gaps[:-1])])
    # feature at t: the return from the close of t to the open of t+1 (not knowable at the close of t)
    return table(series("BTC-USD", opens, feats={"gap": gaps})), gaps


def test_action_at_t_fills_at_the_next_open_so_the_close_to_open_gap_is_not_earned():
    t, gaps = gapped_market()
    env = TradingEnv(prepare(t), None, NO_COSTS)
    sign_policy = (np.sign(gaps) + 1).astype(np.int64)  # index of -1, 0, 1
    result = env.evaluate(sign_policy)
    assert np.abs(gaps[env.decision_rows]).sum() > 0.1  # a timing bug would have earned this
    assert result.total_log_return == 0.0 and np.all(result.equity == 1.0)
    obs, total, done = env.reset(), 0.0, False
    while not done:  # stepping agrees
        obs, r, done, _ = env.step(int(np.sign(obs[0]) + 1))  # obs[0] is the gap feature of the bar
        total += r
    assert total == 0.0
    # the market was not flat: the hindsight oracle earns every jump it could have held
    best = env.evaluate(env.optimal_actions())
    assert best.total_log_return == pytest.approx(np.log1p(np.abs(gaps[1:-1])).sum(), rel=1e-12)
    assert best.total_log_return > 0.1


def test_a_leaked_future_return_is_what_the_oracle_trades():
    opens = random_walk(80, 9)
    leak = np.zeros(80)
    leak[:-2] = opens[2:] / opens[1:-1] - 1  # the return from open t+1 to open t+2
    noise = np.random.default_rng(1).normal(size=80)
    data = prepare(table(series("BTC-USD", opens, feats={"leak": leak, "noise": noise})))
    env = TradingEnv(data, Normaliser.fit(data), NO_COSTS)
    best = env.optimal_actions()
    np.testing.assert_array_equal(env.action_values[best], np.sign(leak[env.decision_rows]))
    assert env.evaluate(best).total_log_return == pytest.approx(np.log1p(np.abs(leak[:-2])).sum(), rel=1e-12)
    # funding shifts the oracle: at 5% an hour a long never pays over a holding period that crosses an hour
    # mark (those from the open of a :30 bar to the next full hour), and still pays over the others
    costly = TradingEnv(data, None, Costs(funding_rate_per_hour=0.05, bar_interval_ns=30 * MINUTE))
    crosses = (data.ts[costly.decision_rows + 1] // HOUR) < (data.ts[costly.decision_rows + 2] // HOUR)
    chosen = costly.optimal_actions()
    assert crosses.sum() > 30 and not np.any(chosen[crosses] == 2)
    np.testing.assert_array_equal(chosen[~crosses], best[~crosses])


def costly_env(**kw) -> TradingEnv:
    data = prepare(random_market(40, seed=11, symbols=("BTC-USD", "ETH-USD")))
    costs = Costs(taker_fee=0.00045, slippage=0.0002, funding_rate_per_hour=0.0005, bar_interval_ns=30 * MINUTE)
    return TradingEnv(data, Normaliser.fit(data), costs, actions=(-1.0, -0.5, 0.0, 1.0), **kw)


def test_augmented_outcomes_equal_stepping_each_action():
    path = np.random.default_rng(2).integers(0, 4, 12)
    env = costly_env()
    env.reset()
    for k, a in enumerate(path):
        _, _, _, info = env.step(int(a))
        rewards, next_obs = info["augmented"]
        assert rewards.shape == (4,) and next_obs.shape == (4, env.obs_dim)
        for b in range(4):
            other = costly_env()
            other.reset()
            for prior in path[:k]:
                other.step(int(prior))
            obs_b, r_b, _, _ = other.step(b)
            assert r_b == rewards[b]
            np.testing.assert_array_equal(obs_b, next_obs[b])
        assert len(set(rewards.tolist())) == 4  # the actions' outcomes differ, so the check could fail
    plain = costly_env(augment=False)
    plain.reset()
    fast = [plain.step(int(a))[1] for a in path]
    env2 = costly_env()
    env2.reset()
    np.testing.assert_allclose(fast, [env2.step(int(a))[1] for a in path], rtol=1e-13)


def test_evaluate_equals_stepping_every_series():
    env = costly_env()
    acts = np.random.default_rng(8).integers(0, 4, env.n_decisions)
    stepped, positions = [], []
    for _ in range(env.data.n_series):
        env.reset()
        done = False
        while not done:
            _, r, done, info = env.step(int(acts[len(stepped)]))
            stepped.append(r)
            positions.append(info["position"])
    result = env.evaluate(acts)
    np.testing.assert_allclose(result.log_returns, stepped, rtol=1e-13, atol=1e-16)
    np.testing.assert_array_equal(result.positions, positions)
    for i in range(env.data.n_series):
        s = slice(result.offsets[i], result.offsets[i + 1])
        np.testing.assert_allclose(result.equity[s], np.exp(np.cumsum(stepped[s])), rtol=1e-12)
    assert result.offsets.tolist() == [0, 38, 76]
    assert np.all(result.ts == env.data.ts[env.decision_rows + 2])
    per_bar = np.zeros(env.data.n_rows, np.int64)
    per_bar[env.decision_rows] = acts
    np.testing.assert_array_equal(env.evaluate(per_bar).log_returns, result.log_returns)
    with pytest.raises(ValueError):
        env.evaluate(acts[:-1])


def test_episodes_of_fixed_length_start_at_random_bars_reproducibly():
    def starts(seed):
        env = costly_env(episode_bars=5, seed=seed)
        out = []
        for _ in range(20):
            env.reset()
            rows, done = [], False
            while not done:
                _, _, done, info = env.step(1)
                rows.append(info["row"])
            assert len(rows) == 5 and np.all(np.diff(rows) == 1)
            out.append(rows[0])
        return out

    assert starts(1) == starts(1)
    assert len(set(starts(1))) > 5 and starts(1) != starts(2)


def test_env_refuses_costs_for_another_interval():
    with pytest.raises(InputError, match="30m bars but the costs are for 5m"):
        TradingEnv(prepare(random_market(10)), None, Costs(bar_interval_ns=5 * MINUTE))


# -- validation ------------------------------------------------------------------------------------------

def test_normal_quantiles():
    assert norm_ppf(0.975) == pytest.approx(1.959963984540054, abs=1e-12)
    assert norm_ppf(0.001) == pytest.approx(-3.090232306167814, abs=1e-12)
    assert norm_ppf(0.5) == 0.0
    for p in (1e-12, 0.01, 0.024, 0.3, 0.9, 0.99999):
        assert norm_cdf(norm_ppf(p)) == pytest.approx(p, rel=1e-12)


def test_probabilistic_sharpe_by_hand():
    # SR 0.1 per period over 252 returns, skew -0.5, kurtosis 4:
    # z = 0.1 * sqrt(251) / sqrt(1 + 0.5 * 0.1 + 3/4 * 0.01) = 1.5406240484, Phi(z) = 0.9382958442
    assert probabilistic_sharpe(0.1, 0.0, 252, -0.5, 4.0) == pytest.approx(0.9382958442, abs=1e-9)
    assert deflated_sharpe(0.1, 1, 252, -0.5, 4.0, 0.01) == probabilistic_sharpe(0.1, 0.0, 252, -0.5, 4.0)


def test_deflated_sharpe_falls_with_more_trials():
    values = [deflated_sharpe(0.1, n, 252, -0.5, 4.0, 0.002) for n in (1, 2, 10, 100, 1000)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert expected_max_sharpe(100, 0.0) == 0.0
    # the worked example of Bailey & López de Prado (2014): SR 2.5 a year, 5 years of days, 100 trials,
    # V[SR] 0.5 a year, skew -3, kurtosis 10 -> SR0 = 0.1132 a day, DSR = 0.9004
    sr, v = 2.5 / math.sqrt(250), 0.5 / 250
    assert expected_max_sharpe(100, v) == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe(sr, 100, 1250, -3.0, 10.0, v) == pytest.approx(0.9004, abs=5e-4)


def test_sharpe_moments_and_seed_summary():
    r = np.array([0.01, -0.005, 0.02, 0.0])
    mean, std = 0.00625, math.sqrt((0.00375**2 + 0.01125**2 + 0.01375**2 + 0.00625**2) / 3)
    assert sharpe(r, 365) == pytest.approx(mean / std * math.sqrt(365), rel=1e-12)
    assert sharpe(np.zeros(5), 365) == 0.0 and math.isnan(sharpe(np.ones(1), 365))
    skew, kurt = moments(np.random.default_rng(0).normal(size=200_000))
    assert abs(skew) < 0.02 and kurt == pytest.approx(3.0, abs=0.05)
    assert moments(np.array([0.0, 0.0, 0.0, 1.0]))[0] > 1  # a right tail is positive skew
    s = summarise_seeds([3.0, 1.0, 2.0, 10.0])
    assert s == {"mean": 4.0, "std": pytest.approx(math.sqrt(50 / 3)), "min": 1.0, "median": 2.5, "max": 10.0}
    assert summarise_seeds([2.0])["std"] == 0.0
    with pytest.raises(ValueError):
        summarise_seeds([])


# -- fingerprint -------------------------------------------------------------------------------------------

def test_fingerprint_is_stable_and_sees_every_value():
    t = random_market(30, seed=3, symbols=("BTC-USD", "ETH-USD"))
    fp = fingerprint(t)
    assert fp == fingerprint(random_market(30, seed=3, symbols=("BTC-USD", "ETH-USD")))
    rechunked = pa.concat_tables([t.slice(0, 7), t.slice(7)])
    assert fingerprint(rechunked)["sha256"] == fp["sha256"]
    assert fp["symbols"] == ["paper/BTC-USD", "paper/ETH-USD"] and fp["rows"] == 60
    assert fp["start"] == "2025-01-01T00:00:00Z" and fp["end"] == "2025-01-01T14:30:00Z"
    assert fp["interval"] == "30m" and fp["feature_hash"] == "abc123"
    f1 = t["f1"].to_numpy().copy()
    f1[17] = np.nextafter(f1[17], np.inf)  # one ulp of one value
    changed = t.set_column(t.column_names.index("f1"), "f1", pa.array(f1))
    assert fingerprint(changed)["sha256"] != fp["sha256"]

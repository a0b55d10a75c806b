#!/usr/bin/env python
"""Benchmarks of `varon backtest` throughput and of live decision latency, beside peers in the same run.

    .venv/bin/python scripts/bench_backtest.py            # 525,600 1m bars (a year), 1.5 minutes with the peers
    .venv/bin/python scripts/bench_backtest.py --quick    # 50,000 bars, smoke run
    .venv/bin/python scripts/bench_backtest.py --only 2   # latency only

Data. One symbol (coinbase BTC-USD) of 1-minute bars, stamped on a gap-free 1m
grid from 2024-01-01. By default they are real: the 45,031 1m candles of the
BTC perpetual from 2021-12-31 to 2022-02-01 (shared/data/candles/
btc-perp-20211231-20220201_1m.csv), laid end to end alternately forward and
time-reversed (a reversed candle swaps its open and close, keeps high and
low), which makes a continuous price path that stays in the month's real
range with no rescaling and no drift; about 11.7 copies make the year. Volume
in the file is quote volume: base volume = volume / close; the file has no
taker-buy volume (NaN), no vwap ((h+l+c)/3 stands in) and no trade count
(null). `--data walk` uses a seeded random walk instead (~3 %/day, ~0.5 %
empty bars), as scripts/bench.py does.

1. backtest throughput, `ema-cross` (fast 12, slow 48) on every bar, varon's full executor (risk engine +
   paper venue). Bars/s = bars / wall time; timed runs are best of --repeat after one untimed warm-up call on
   a 2,000-bar slice (numba kernels load from their cache or compile there; compile time is measured on its
   own in fresh processes with an empty and a warm NUMBA_CACHE_DIR).
     A. run_backtest with the default [risk] (paper.symbols = [BTC-USD]), as `varon backtest` runs it. On
        1-minute bars ema-cross pays the taker fee on every cross and loses, so the daily-loss or drawdown
        breaker may trip; from then on the executor refuses entries (reduce only) and every bar's decision
        becomes a rejection event and orders row (counted, not logged, in backtests).
     B. the same with the breakers out of reach (risk.max_drawdown = risk.daily_loss_limit = 1): the strategy
        trades every cross all year, the work the peers do. The ratios use B. Every other limit stays on.
        B is also timed in pieces, by timers wrapped around run_backtest's callees for one run:
        SignalGenerator.signals, Executor.process (of it the compiled kernel.step, and _outputs turning the
        kernel's events into the orders/fills tables), Executor.cancel_pending.
     C. `varon backtest --strategy ema-cross -i BARS.parquet --json` as a subprocess, process wall time
        (Parquet read, start-up, and the buy-and-hold pass every report includes), with A's and B's risk
        settings (B through VARON_RISK__* variables).
     peers, each in its own interpreter (--nautilus-python, --vectorbt-python), on the same bars:
        nautilus_trader: BacktestEngine, the bars as nautilus Bar objects (BarDataWrangler; the bar close
          time as ts_event, as varon's decision time), a CryptoPerpetual with taker and maker fee 0.045 %,
          price precision 0.01, NETTING OMS, MARGIN account with 1,000,000 USDT so margin never binds, and a
          strategy with varon's rule: EMA 12 and 48 of the close (nautilus' ExponentialMovingAverage), once
          both are initialised long when fast > slow else short, one market order per cross (0.05 BTC to
          open, 0.10 BTC to reverse). Timed: engine.run() only (bars already converted and added).
          Differences: fixed size, no stops, no exposure or breaker checks, no slippage; a market order fills
          at the bar's close (nautilus matches bars as O/H/L/C prices and the strategy acts after the close),
          varon at the next bar's open.
        vectorbt: Portfolio.from_signals(close, entries, exits, short_entries, short_exits, price=open,
          fees=0.00045, slippage=0.0001, size=2000 (quote), size_type="value", init_cash=1000000 (so cash
          never binds, as for nautilus), freq="1min") on varon's own ema-cross targets from run B (entries = target turns long, short_entries = turns
          short, exits = short_entries, short_exits = entries), shifted one bar so a decision at a bar's
          close fills at the next bar's open as in varon. Timed: the from_signals call only, best of --repeat
          after a compile call on a 2,000-bar slice. A vectorised reference: no risk engine, no stops, no
          funding, no per-bar equity stream.
     Ratio = varon bars/s / peer bars/s: above 1, varon is faster.

2. decision latency in live mode, one features row at a time: a warm SignalGenerator and Executor, each
   1-row bars batch serialised to its own Arrow IPC stream beforehand; timed from
   `pa.ipc.open_stream(buf).read_next_batch()` until `Executor.process(signals, now)` returns the orders
   (now = the bar's close + 1 ms, as a wall clock right after the close). Also with one IPC stream kept open
   (as `varon execute` reads its input: the schema is read once), and through `varon execute`'s per-batch
   path, LiveExecutor.handle (audit log records + fsync, atomic state file save with fsync + directory
   fsync), which is reported on its own: it waits for the disk. The first --latency-warmup rows are not
   counted. Default [risk]. Percentiles in microseconds; the issue's target is p99 < 1 ms for a rule strategy.

Figures are throughputs, latencies and ratios; no timing is asserted. Checks (B timed in pieces gives
B's result, the CLI's report covers every bar, the peers saw every bar and crossed about as often as
varon) are printed; the exit status is 1 when one fails. `--profile` adds a cProfile of run_backtest (A and B, top 15 by tottime).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import logging
import math
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from benchkit import best_of, rate, spread  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402

from varon_cli.backtest import run_backtest  # noqa: E402
from varon_cli.config import load_config  # noqa: E402
from varon_cli.execution import engine as engine_mod  # noqa: E402
from varon_cli.execution.engine import Executor  # noqa: E402
from varon_cli.execution.live import ExecuteRequest, LiveExecutor  # noqa: E402
from varon_cli.execution.statedir import StateDir  # noqa: E402
from varon_cli.schemas import BARS, INTERVAL_KEY  # noqa: E402
from varon_cli.strategies.registry import make_strategy  # noqa: E402
from varon_cli.strategies.signals import SignalGenerator  # noqa: E402

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)  # figures never wrap

MINUTE_NS = 60_000_000_000
START_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
YEAR_BARS = 525_600
VENUE, SYMBOL = "coinbase", "BTC-USD"
PARAMS = {"fast": "12", "slow": "48"}
CANDLES = ROOT.parent / "shared" / "data" / "candles" / "btc-perp-20211231-20220201_1m.csv"
VARON_BIN = Path(sys.executable).parent / "varon"
DEFAULT_NT_PYTHON = "/tmp/nt-venv/bin/python"
DEFAULT_VBT_PYTHON = "/tmp/vbt-venv/bin/python"
WIDE_RISK = {"max_drawdown": 1.0, "daily_loss_limit": 1.0}
TARGET_BARS_S = 500_000
WARM_SLICE = 2_000

FAILED: list[str] = []


# -- helpers ------------------------------------------------------------------------------------------






def check(label: str, ok: bool, detail: str) -> None:
    console.print(f"check {label}: {'[green]OK[/]' if ok else '[red]FAILED[/]'} - {detail}")
    if not ok:
        FAILED.append(label)


def figure(label: str, n: int, secs: float, extra: str = "") -> None:
    console.print(f"{label:<52}{rate(n, secs):>16}   {secs:7.3f} s{('   ' + extra) if extra else ''}")


def fs_of(path: Path) -> str:
    """The file system type holding `path` (from /proc/mounts), for the fsync figures."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], f"{parts[2]} on {parts[0]}"
    except OSError:
        pass
    return kind


class CountWarnings(logging.Handler):
    """Counts the executor's WARNING records (rejections, breakers) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


WARNINGS = CountWarnings()


def quiet_logs() -> None:
    root = logging.getLogger("varon")
    root.handlers[:] = [WARNINGS]
    root.setLevel(logging.WARNING)
    root.propagate = False


# -- data ---------------------------------------------------------------------------------------------
def real_candles(n: int) -> tuple[np.ndarray, ...]:
    """(open, high, low, close, base volume): the real month, forward then reversed, again and again."""
    import polars as pl

    df = pl.read_csv(CANDLES, try_parse_dates=True)
    o, h, lo, c = (df[k].to_numpy().astype(np.float64) for k in ("open", "high", "low", "close"))
    v = df["volume"].to_numpy().astype(np.float64) / c  # quote volume -> base volume
    fwd = (o, h, lo, c, v)
    rev = (c[::-1], h[::-1], lo[::-1], o[::-1], v[::-1])  # time-reversed: its open is the forward close
    parts: list[tuple[np.ndarray, ...]] = []
    total = 0
    k = 0
    while total < n:
        parts.append(fwd if k % 2 == 0 else rev)
        total += len(o)
        k += 1
    return tuple(np.concatenate([p[i] for p in parts])[:n] for i in range(5))


def walk_candles(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """A seeded random walk of 1m candles (~3 %/day), ~0.5 % empty bars (OHLC = previous close, no volume)."""
    rng = np.random.default_rng(seed)
    empty = rng.random(n) < 0.005
    empty[0] = False
    steps = rng.normal(0.0, 0.0008, n)
    steps[empty] = 0.0
    close = np.round(60_000.0 * np.exp(np.cumsum(steps)), 2)
    open_ = np.empty(n)
    open_[0] = 60_000.0
    open_[1:] = close[:-1]
    close[empty] = open_[empty]
    high = np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0004, n))), 2)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0004, n))), 2)
    high[empty] = low[empty] = open_[empty]
    volume = np.round(rng.lognormal(math.log(20.0), 0.8, n), 6)
    volume[empty] = 0.0
    return open_, high, low, close, volume


def bars_table(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, real: bool) -> pa.Table:
    n = len(o)
    ts = START_NS + MINUTE_NS * np.arange(n, dtype=np.int64)
    zero = pa.array(np.zeros(n, dtype=np.int8))
    vwap = np.where(v > 0, (h + lo + c) / 3.0, c)
    if real:
        buy_volume = pa.array(np.full(n, np.nan))
        trades = pa.nulls(n, pa.int64())
    else:
        buy_volume = pa.array(np.round(v * 0.5, 6))
        trades = pa.array(np.where(v > 0, 300, 0).astype(np.int64))
    return pa.Table.from_arrays(
        [pa.array(ts, type=BARS.schema.field("ts").type), pa.array([VENUE]).take(zero), pa.array([SYMBOL]).take(zero),
         pa.array(o), pa.array(h), pa.array(lo), pa.array(c), pa.array(v), buy_volume, pa.array(vwap), trades,
         pa.array(np.zeros(n, dtype=np.bool_))],
        schema=BARS.schema_with({INTERVAL_KEY: b"1m"}),
    )


def configs() -> tuple[Any, Any]:
    base = {"paper": {"symbols": [SYMBOL]}}
    return load_config(None, base, {}), load_config(None, {**base, "risk": dict(WIDE_RISK)}, {})


def backtest(table: pa.Table, cfg: Any) -> Any:
    return run_backtest(table, make_strategy("ema-cross", dict(PARAMS)), MINUTE_NS, cfg.risk, cfg.paper)


def run_summary(run: Any) -> str:
    ex = run.executor
    counts = ex.counts
    rejected = sum(v for k, v in counts.items() if k.startswith("rejected"))
    flips = counts.get("flip", 0) // 2
    return (f"{run.orders.num_rows:,} order rows ({rejected:,} rejected), {run.fills.num_rows:,} fills "
            f"({flips:,} flips, {counts.get('stop_loss', 0):,} stops), equity {ex.equity:,.2f}, fees {ex.fees:,.2f}, "
            f"breakers {', '.join(k for k, v in ex.breakers.items() if v) or 'none'}")


def order_count(run: Any) -> int:
    """Orders the risk engine accepted (status new)."""
    status = run.orders.column("status").to_numpy(zero_copy_only=False)
    return int((status == "new").sum())


# -- 1. compile time, in fresh processes --------------------------------------------------------------
COMPILE_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import pyarrow.parquet as pq
from varon_cli.backtest import run_backtest
from varon_cli.config import load_config
from varon_cli.strategies.registry import make_strategy
t1 = time.perf_counter()
cfg = load_config(None, {"paper": {"symbols": ["BTC-USD"]}}, {})
table = pq.read_table(sys.argv[2])
t2 = time.perf_counter()
run_backtest(table, make_strategy("ema-cross", {"fast": "12", "slow": "48"}), 60_000_000_000, cfg.risk, cfg.paper)
t3 = time.perf_counter()
run_backtest(table, make_strategy("ema-cross", {"fast": "12", "slow": "48"}), 60_000_000_000, cfg.risk, cfg.paper)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t3 - t2, "second": t4 - t3}))
"""


def compile_times(small: Path, cache_dir: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, str(ROOT), str(small)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"compile probe failed: {proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- 1. B in pieces -----------------------------------------------------------------------------------
def pieces(table: pa.Table, cfg: Any) -> tuple[dict[str, float], Any]:
    """One run_backtest with its steps timed from outside: SignalGenerator.signals, Executor.process (of it
    kernel.step and Executor._outputs) and Executor.cancel_pending wrapped by timers for the call."""
    acc = {"signals": 0.0, "process": 0.0, "step": 0.0, "outputs": 0.0, "cancel": 0.0}
    kernel = engine_mod.K
    originals = [(kernel, "step", kernel.step), (SignalGenerator, "signals", SignalGenerator.signals),
                 (Executor, "process", Executor.process), (Executor, "_outputs", Executor._outputs),
                 (Executor, "cancel_pending", Executor.cancel_pending)]

    def timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[key] += time.perf_counter() - t
        return wrapper

    for (owner, name, fn), key in zip(originals, ("step", "signals", "process", "outputs", "cancel")):
        setattr(owner, name, timed(key, fn))
    try:
        gc.collect()
        t0 = time.perf_counter()
        run = backtest(table, cfg)
        acc["total"] = time.perf_counter() - t0
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    return acc, run


# -- 1. the CLI ---------------------------------------------------------------------------------------
def cli_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env.update(extra)
    return env


def run_cli(path: Path, env: dict[str, str]) -> tuple[float, dict, str]:
    cmd = [str(VARON_BIN), "backtest", "--strategy", "ema-cross", "--param", "fast=12", "--param", "slow=48",
           "-i", str(path), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout), proc.stderr


# -- 1. nautilus_trader, in its own interpreter --------------------------------------------------------
NAUTILUS_SCRIPT = r"""
import gc, importlib.metadata, json, sys, time
from decimal import Decimal
t_import = time.perf_counter()
import pandas as pd
import pyarrow.parquet as pq
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, TraderId, Venue
from nautilus_trader.model.instruments import CryptoPerpetual
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy
t_import = time.perf_counter() - t_import

path, fast_n, slow_n, fee = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


class EmaCrossConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    bar_type: BarType
    trade_size: Decimal
    fast: int
    slow: int


class EmaCross(Strategy):
    # varon's ema-cross: long when the fast EMA is above the slow one, else short; one order per cross
    def __init__(self, config):
        super().__init__(config)
        self.fast = ExponentialMovingAverage(config.fast)
        self.slow = ExponentialMovingAverage(config.slow)
        self.side = 0
        self.orders_sent = 0
        self.bars_seen = 0

    def on_start(self):
        inst = self.cache.instrument(self.config.instrument_id)
        self.q_open = inst.make_qty(self.config.trade_size)
        self.q_flip = inst.make_qty(2 * self.config.trade_size)
        self.register_indicator_for_bars(self.config.bar_type, self.fast)
        self.register_indicator_for_bars(self.config.bar_type, self.slow)
        self.subscribe_bars(self.config.bar_type)

    def on_bar(self, bar):
        self.bars_seen += 1
        if not self.indicators_initialized():
            return
        want = 1 if self.fast.value > self.slow.value else -1
        if want == self.side:
            return
        qty = self.q_open if self.side == 0 else self.q_flip
        self.submit_order(self.order_factory.market(self.config.instrument_id,
                                                    OrderSide.BUY if want > 0 else OrderSide.SELL, qty))
        self.side = want
        self.orders_sent += 1


t0 = time.perf_counter()
df = pq.read_table(path, columns=["ts", "open", "high", "low", "close", "volume"]).to_pandas()
df.index = pd.DatetimeIndex(df.pop("ts") + pd.Timedelta(minutes=1))  # ts_event = the bar's close
spec = CryptoPerpetual.to_dict(TestInstrumentProvider.btcusdt_perp_binance())
spec.update(price_precision=2, price_increment="0.01", min_price="0.01", taker_fee=fee, maker_fee=fee)
inst = CryptoPerpetual.from_dict(spec)
bar_type = BarType.from_str(f"{inst.id}-1-MINUTE-LAST-EXTERNAL")
bars = BarDataWrangler(bar_type, inst).process(df)
del df
t_wrangle = time.perf_counter() - t0
t0 = time.perf_counter()
engine = BacktestEngine(BacktestEngineConfig(trader_id=TraderId("BENCH-001"),
                                             logging=LoggingConfig(log_level="ERROR", bypass_logging=True)))
engine.add_venue(Venue("BINANCE"), oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
                 starting_balances=[Money(1_000_000, USDT)], base_currency=USDT, default_leverage=Decimal(1))
engine.add_instrument(inst)
engine.add_data(bars)
n_bars = len(bars)
del bars
strategy = EmaCross(EmaCrossConfig(instrument_id=inst.id, bar_type=bar_type, trade_size=Decimal("0.05"),
                                   fast=fast_n, slow=slow_n))
engine.add_strategy(strategy)
t_setup = time.perf_counter() - t0
gc.collect()
t0 = time.perf_counter()
engine.run()
t_run = time.perf_counter() - t0
filled = sum(1 for o in engine.cache.orders() if o.is_closed and o.filled_qty > 0)
balance = engine.portfolio.account(Venue("BINANCE")).balance_total(USDT).as_double()
engine.dispose()
print(json.dumps({"version": importlib.metadata.version("nautilus_trader"), "python": sys.version.split()[0],
                  "bars": n_bars, "bars_seen": strategy.bars_seen, "import": t_import, "wrangle": t_wrangle,
                  "setup": t_setup, "run": t_run, "orders": strategy.orders_sent, "filled": filled,
                  "balance": balance}))
"""


def probe_python(python: str, module: str, install: str) -> str:
    """'' when `python` can import `module`, else why not."""
    if not python:
        return "no interpreter given"
    if not Path(python).exists():
        return f"{python} does not exist; install with: {install}"
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{python} cannot import {module}: {probe.stderr.strip().splitlines()[-1:]}"
    return ""


def run_nautilus(python: str, bars_path: Path, fee: float) -> tuple[dict | None, str]:
    why = probe_python(python, "nautilus_trader.backtest.engine",
                       "python3.11 -m venv /tmp/nt-venv && /tmp/nt-venv/bin/pip install nautilus_trader")
    if why:
        return None, why
    # the script runs from a temporary directory: a file named like a stdlib module in the cwd cannot shadow it
    proc = subprocess.run([python, "-c", NAUTILUS_SCRIPT, str(bars_path), PARAMS["fast"], PARAMS["slow"], str(fee)],
                          capture_output=True, text=True, cwd=bars_path.parent)
    if proc.returncode != 0:
        return None, f"run failed ({proc.returncode}): {proc.stderr.strip()[-800:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


# -- 1. vectorbt, in its own interpreter ----------------------------------------------------------------
VECTORBT_SCRIPT = r"""
import gc, importlib.metadata, json, sys, time
import numpy as np
import pandas as pd
import vectorbt as vbt

data = np.load(sys.argv[1])
repeat, fee, slip, warm = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
target = data["target"]
n = len(target)
is_long, is_short = target > 0, target < 0
entries = is_long & ~np.r_[False, is_long[:-1]]
short_entries = is_short & ~np.r_[False, is_short[:-1]]
# decided at bar i's close, filled at bar i+1's open (varon's rule)
entries, short_entries = np.r_[False, entries[:-1]], np.r_[False, short_entries[:-1]]
index = pd.date_range("2024-01-01", periods=n, freq="1min")
close, open_ = pd.Series(data["close"], index), pd.Series(data["open"], index)
ent, sent = pd.Series(entries, index), pd.Series(short_entries, index)


def run(stop):
    c, o, e, s = close.iloc[:stop], open_.iloc[:stop], ent.iloc[:stop], sent.iloc[:stop]
    return vbt.Portfolio.from_signals(c, e, s, s, e, price=o, fees=fee, slippage=slip, size=2000.0,
                                      size_type="value", init_cash=1_000_000.0, freq="1min")


t0 = time.perf_counter()
run(warm)
compile_s = time.perf_counter() - t0
times = []
for _ in range(repeat):
    gc.collect()
    t0 = time.perf_counter()
    pf = run(n)
    times.append(time.perf_counter() - t0)
print(json.dumps({"version": importlib.metadata.version("vectorbt"), "numba": importlib.metadata.version("numba"),
                  "numpy": np.__version__, "bars": n, "compile": compile_s, "times": times,
                  "orders": int(len(pf.orders.records)), "signals": int(entries.sum() + short_entries.sum()),
                  "final_value": float(pf.final_value())}))
"""


def run_vectorbt(python: str, npz: Path, repeat: int, fee: float, slip: float) -> tuple[dict | None, str]:
    why = probe_python(python, "vectorbt", "python3.11 -m venv /tmp/vbt-venv && /tmp/vbt-venv/bin/pip install vectorbt")
    if why:
        return None, why
    proc = subprocess.run([python, "-c", VECTORBT_SCRIPT, str(npz), str(repeat), str(fee), str(slip), str(WARM_SLICE)],
                          capture_output=True, text=True, cwd=npz.parent)
    if proc.returncode != 0:
        return None, f"run failed ({proc.returncode}): {proc.stderr.strip()[-800:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


# -- 1. the section -----------------------------------------------------------------------------------
def bench_backtest(args: argparse.Namespace, table: pa.Table, tmp: Path) -> None:
    n = table.num_rows
    cfg_a, cfg_b = configs()
    console.rule(f"[bold]1. backtest throughput: ema-cross (12/48) on {n:,} 1m bars of {SYMBOL}")
    console.print("A: run_backtest, default risk settings; B: breakers out of reach (risk.max_drawdown = daily_loss_limit = 1), "
                  "every other limit on - the same work as the peers, the ratios use B; C: `varon backtest --json` "
                  "as a subprocess (includes the buy-and-hold pass of every report). Bars/s = bars / wall time; "
                  f"best of {args.repeat} after a warm-up call on {WARM_SLICE:,} bars.", style="dim", soft_wrap=False)
    bars_path = tmp / "bars.parquet"
    pq.write_table(table, bars_path)
    small_path = tmp / "bars_small.parquet"
    pq.write_table(table.slice(0, WARM_SLICE), small_path)

    # compile time
    if args.quick:
        console.print("numba compile, fresh process: skipped (--quick)")
    else:
        cache = tmp / "numba-cache"
        cold = compile_times(small_path, cache)
        warm = compile_times(small_path, cache)
        console.print(f"numba compile, fresh process, empty NUMBA_CACHE_DIR: first run_backtest on {WARM_SLICE:,} bars "
                      f"{cold['first']:.2f} s (second {cold['second'] * 1e3:.1f} ms; imports {cold['import']:.2f} s)")
        console.print(f"               fresh process, warm cache:        first call {warm['first']:.2f} s "
                      f"(second {warm['second'] * 1e3:.1f} ms; imports {warm['import']:.2f} s)")
    t0 = time.perf_counter()
    backtest(table.slice(0, WARM_SLICE), cfg_a)
    console.print(f"this process, first call on {WARM_SLICE:,} bars (kernels from varon's cache): "
                  f"{time.perf_counter() - t0:.2f} s")

    # A
    repeat_a = 1 if args.quick else max(1, min(args.repeat, 2))
    best_a, times_a, run_a = best_of(lambda: backtest(table, cfg_a), repeat_a, warmup=0)
    figure("A. run_backtest, default risk settings", n, best_a, spread(times_a))
    console.print(f"   {run_summary(run_a)}")
    tripped = run_a.executor.breakers
    if any(tripped.values()):
        reasons = run_a.orders.column("reason").to_numpy(zero_copy_only=False)
        ts = run_a.orders.column("ts").cast(pa.int64()).to_numpy()
        first = np.flatnonzero(np.char.startswith(reasons.astype(str), "rejected: breaker"))
        if len(first):
            at = int((ts[first[0]] - START_NS) // MINUTE_NS)
            console.print(f"   a breaker tripped by bar {at:,} of {n:,}; after it the strategy's entries are refused "
                          f"(reduce only): one rejection event (and orders row) per bar")
    # B
    best_b, times_b, run_b = best_of(lambda: backtest(table, cfg_b), args.repeat)
    figure("B. run_backtest, breakers out of reach", n, best_b, spread(times_b))
    console.print(f"   {run_summary(run_b)}")
    parts, run_p = pieces(table, cfg_b)
    same = (run_p.orders.num_rows == run_b.orders.num_rows and run_p.fills.num_rows == run_b.fills.num_rows
            and run_p.executor.equity == run_b.executor.equity)
    check("B timed in pieces gives B's result", same, f"{run_p.orders.num_rows:,} order rows, {run_p.fills.num_rows:,} "
          f"fills, equity {run_p.executor.equity:,.2f}")
    rest = parts["total"] - parts["signals"] - parts["process"] - parts["cancel"]
    console.print(f"   B in pieces (one run, {parts['total']:.3f} s): SignalGenerator.signals {parts['signals']:.3f} s "
                  f"({rate(n, parts['signals'])}); Executor.process {parts['process']:.3f} s ({rate(n, parts['process'])}) "
                  f"= kernel.step {parts['step']:.3f} s ({rate(n, parts['step'])}) + _outputs {parts['outputs']:.3f} s "
                  f"+ the rest of process {parts['process'] - parts['step'] - parts['outputs']:.3f} s; cancel_pending "
                  f"{parts['cancel']:.3f} s; the rest of run_backtest (tables) {rest:.3f} s")

    # C: the CLI
    start, _, _ = best_of(lambda: subprocess.run([str(VARON_BIN), "--version"], capture_output=True), 2, warmup=1)
    wide_env = {f"VARON_RISK__{k.upper()}": str(v) for k, v in WIDE_RISK.items()}
    cli: dict[str, float] = {}
    for label, env, reps, name in (
            ("C. CLI `varon backtest --json`, default risk settings", cli_env({}), 1, "CLI, default"),
            ("C. CLI, VARON_RISK__* breakers out of reach", cli_env(wide_env), args.repeat, "CLI, out of reach")):
        best, times, first = best_of(lambda env=env: run_cli(bars_path, env), reps, warmup=0)
        metrics = first[1]["results"][0]["metrics"]
        cli[label] = best
        figure(label, n, best, spread(times))
        console.print(f"   {metrics['bars']:,} bars, {metrics['trade_count']:,} trades, final equity "
                      f"{metrics['final_equity']:,.2f}; stderr {len(first[2]):,} bytes ({first[2].count(chr(10)):,} lines); "
                      f"start-up (`varon --version`) {start:.2f} s")
        check(f"{name}: every bar backtested", metrics["bars"] == n, f"report says {metrics['bars']:,} bars")

    # peers
    fee, slip = cfg_b.paper.taker_fee, cfg_b.paper.slippage_bps / 1e4
    ratios: list[tuple[str, float]] = []
    nt, why = run_nautilus(args.nautilus_python, bars_path, fee)
    varon_orders = order_count(run_b)
    if nt is None:
        console.print(f"nautilus_trader: not measured ({why})")
    else:
        figure(f"nautilus_trader {nt['version']} BacktestEngine.run", nt["bars"], nt["run"],
               f"(+ {nt['wrangle']:.1f} s to Bar objects, {nt['setup']:.1f} s add_data)")
        console.print(f"   {nt['orders']:,} market orders ({nt['filled']:,} filled), balance {nt['balance']:,.2f} USDT "
                      f"of 1,000,000; varon B accepted {varon_orders:,} orders")
        close_enough = nt["bars_seen"] == n and abs(nt["orders"] - varon_orders) <= max(5, 0.02 * varon_orders)
        check("nautilus saw the bars and crossed as often as varon", close_enough,
              f"{nt['bars_seen']:,} bars seen, {nt['orders']:,} orders vs varon's {varon_orders:,}")
        ratios.append((f"nautilus_trader {nt['version']}", nt["bars"] / nt["run"]))
    npz = tmp / "signals.npz"
    np.savez(npz, open=table.column("open").to_numpy(), close=table.column("close").to_numpy(),
             target=run_b.signals.column("target").to_numpy())
    vb, why = run_vectorbt(args.vectorbt_python, npz, args.repeat, fee, slip)
    if vb is None:
        console.print(f"vectorbt: not measured ({why})")
    else:
        best_vb = min(vb["times"])
        figure(f"vectorbt {vb['version']} Portfolio.from_signals", vb["bars"], best_vb,
               f"{spread(vb['times'])}; compile {vb['compile']:.1f} s")
        console.print(f"   {vb['orders']:,} orders from {vb['signals']:,} entry signals, final value "
                      f"{vb['final_value']:,.2f}; numba {vb['numba']}, numpy {vb['numpy']}")
        check("vectorbt traded every signal", vb["orders"] >= vb["signals"] - 1 and vb["bars"] == n,
              f"{vb['orders']:,} orders, {vb['signals']:,} signals, {vb['bars']:,} bars")
        ratios.append((f"vectorbt {vb['version']}", vb["bars"] / best_vb))
    for peer, peer_rate in ratios:
        for label, secs in (("B in process", best_b), ("A in process", best_a),
                            ("CLI, out of reach", cli["C. CLI, VARON_RISK__* breakers out of reach"])):
            console.print(f"ratio varon/{peer}, {label + ':':<20} [bold]{(n / secs) / peer_rate:6.2f}x[/]")
    for label, secs in (("A, default risk settings", best_a), ("B, breakers out of reach", best_b)):
        r = n / secs
        console.print(f"target >= 500k bars/s, {label + ':':<27} {'[green]met[/]' if r >= TARGET_BARS_S else '[red]missed[/]'}"
                      f" ({r / 1e3:,.0f} k bars/s = {r / TARGET_BARS_S:.2f}x the target)")
    console.print("Not the same work: varon's executor checks every bar's decision (validation, staleness, leverage "
                  "and exposure caps, breakers, rate limit, minimum size), keeps a stop on every position checked "
                  "on each bar's range, pays funding hourly, writes an equity row per bar and turns every event into "
                  "orders/fills rows with a derived client order id; nautilus runs its full order lifecycle "
                  "(messages, events, cache, portfolio) per order and a matching engine per bar price; vectorbt "
                  "only simulates the given entries in one compiled loop.", style="dim", soft_wrap=False)

    if args.profile:
        for label, cfg in (("B, breakers out of reach", cfg_b), ("A, default risk settings", cfg_a)):
            console.rule(f"[bold]profile: run_backtest {label} (cProfile, top 15 by tottime)")
            prof = cProfile.Profile()
            prof.enable()
            backtest(table, cfg)
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
            console.print(out.getvalue().split("\n", 4)[-1].rstrip(), markup=False)


# -- 2. latency -----------------------------------------------------------------------------------------
def ipc_bytes(batch: pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def pct_line(label: str, us: np.ndarray) -> str:
    if len(us) == 0:
        return f"{label:<44} (no rows)"
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return (f"{label:<44} p50 {p50:7.1f}  p90 {p90:7.1f}  p99 {p99:7.1f}  max {us.max():8.1f}  "
            f"mean {us.mean():7.1f} us  (n={len(us):,})")


def bench_latency(args: argparse.Namespace, table: pa.Table, tmp: Path) -> None:
    n_warm, n = args.latency_warmup, args.latency_bars
    rows = table.slice(0, n_warm + n)
    batches = rows.to_batches(max_chunksize=1)
    bufs = [ipc_bytes(b) for b in batches]
    close_ns = rows.column("ts").cast(pa.int64()).to_numpy() + MINUTE_NS
    cfg, _ = configs()
    console.rule(f"[bold]2. decision latency, live mode: {n:,} bars one at a time (after {n_warm:,} warm-up bars)")
    console.print("One 1-row bars batch per bar, each its own Arrow IPC stream (serialised beforehand). Timed from "
                  "ipc.open_stream(buf).read_next_batch() until Executor.process(signals, now) returns the orders; "
                  "now = bar close + 1 ms. Default risk settings. The issue's target: p99 < 1 ms.", style="dim", soft_wrap=False)

    def fresh() -> tuple[SignalGenerator, Executor]:
        gen = SignalGenerator(make_strategy("ema-cross", dict(PARAMS)), MINUTE_NS)
        ex = Executor(cfg.risk, cfg.paper, MINUTE_NS)
        ex.strategy_index("ema-cross")
        return gen, ex

    total = len(bufs)
    # a. a new IPC stream per row
    gen, ex = fresh()
    WARNINGS.n = 0
    t_all = np.empty(total)
    t_read = np.empty(total)
    t_sig = np.empty(total)
    t_proc = np.empty(total)
    n_orders = np.zeros(total, np.int64)
    clock = time.perf_counter_ns
    for i in range(total):
        t0 = clock()
        batch = pa.ipc.open_stream(bufs[i]).read_next_batch()
        t1 = clock()
        sig = gen.signals(batch)
        t2 = clock()
        out = ex.process(sig, int(close_ns[i]) + 1_000_000)
        t3 = clock()
        t_all[i], t_read[i], t_sig[i], t_proc[i] = t3 - t0, t1 - t0, t2 - t1, t3 - t2
        n_orders[i] = out.orders.num_rows
    sl = slice(n_warm, None)
    us = t_all[sl] / 1e3
    with_order = n_orders[sl] > 0
    counts = ex.counts
    rejected = sum(v for k, v in counts.items() if k.startswith("rejected"))
    console.print(pct_line("a. IPC read -> orders returned, every row", us))
    console.print(pct_line("   rows whose decision made an order row", us[with_order]))
    console.print(pct_line("   rows with no order", us[~with_order]))
    console.print(f"   of it (p50 / p99 us): IPC open+read {np.percentile(t_read[sl] / 1e3, 50):.1f} / "
                  f"{np.percentile(t_read[sl] / 1e3, 99):.1f}, signals {np.percentile(t_sig[sl] / 1e3, 50):.1f} / "
                  f"{np.percentile(t_sig[sl] / 1e3, 99):.1f}, executor.process {np.percentile(t_proc[sl] / 1e3, 50):.1f} / "
                  f"{np.percentile(t_proc[sl] / 1e3, 99):.1f}; rows over 1 ms: {int((us > 1000).sum())}")
    console.print(f"   executor events over the run (warm-up included): "
                  f"{', '.join(f'{v:,} {k}' for k, v in sorted(counts.items()))}; {rejected:,} rejected, "
                  f"{WARNINGS.n:,} WARNING log records (counted, not printed); equity {ex.equity:,.2f}, breakers "
                  f"{', '.join(k for k, v in ex.breakers.items() if v) or 'none'}")
    p99 = float(np.percentile(us, 99))

    # b. one stream kept open
    gen, ex = fresh()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        for b in batches:
            writer.write_batch(b)
    reader = pa.ipc.open_stream(sink.getvalue())
    t_b = np.empty(total)
    for i in range(total):
        t0 = clock()
        batch = reader.read_next_batch()
        sig = gen.signals(batch)
        ex.process(sig, int(close_ns[i]) + 1_000_000)
        t_b[i] = clock() - t0
    console.print(pct_line("b. as a, one IPC stream kept open", t_b[sl] / 1e3))

    # c. LiveExecutor.handle: audit log + state save per batch
    n_live = min(args.live_bars, n)
    state = tmp / "state"
    request = ExecuteRequest(inputs=[], fills_out="-", orders_out=None, equity_out=None, name="bench", clock="event")
    live = LiveExecutor(cfg, request, MINUTE_NS, StateDir(state))
    gen, _ = fresh()
    sinks: list[Any] = [None, None, None]
    t_c = np.empty(n_warm + n_live)
    for i in range(n_warm + n_live):
        t0 = clock()
        batch = pa.ipc.open_stream(bufs[i]).read_next_batch()
        live.handle(gen.signals(batch), sinks)
        t_c[i] = clock() - t0
    live.audit.close()
    audit_size = live.audit.path.stat().st_size
    console.print(pct_line("c. as a, through LiveExecutor.handle", t_c[n_warm:] / 1e3))
    console.print(f"   audit log + fsync, state file written atomically (fsync, rename, directory fsync) per bar, on "
                  f"{fs_of(state)}; audit log {audit_size / 2**20:,.1f} MiB after {n_warm + n_live:,} bars")
    console.print(f"target p99 < 1 ms (IPC read -> orders returned, a): {'[green]met[/]' if p99 < 1000 else '[red]missed[/]'} "
                  f"(p99 {p99:.1f} us over {n:,} bars; through LiveExecutor.handle p99 "
                  f"{float(np.percentile(t_c[n_warm:] / 1e3, 99)):.1f} us)")


# -- main -----------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 50,000 bars, 2,000 latency bars, no compile probe")
    ap.add_argument("--only", default="1,2", help="comma-separated sections to run (default 1,2)")
    ap.add_argument("--bars", type=int, help=f"bars in the backtest (default {YEAR_BARS:,}, 50,000 with --quick)")
    ap.add_argument("--data", choices=("real", "walk"), default="real",
                    help="real: the bundled BTC perp month, forward and reversed, tiled to the length (default); "
                         "walk: a seeded random walk")
    ap.add_argument("--seed", type=int, default=7, help="seed of --data walk (default 7)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per throughput, best taken (default 3)")
    ap.add_argument("--latency-bars", type=int, help="timed bars in section 2 (default 20,000, 2,000 with --quick)")
    ap.add_argument("--latency-warmup", type=int, default=500, help="bars before the timed ones (default 500)")
    ap.add_argument("--live-bars", type=int, help="timed bars through LiveExecutor.handle (default 2,000, 300 with --quick)")
    ap.add_argument("--nautilus-python", default=os.environ.get("NAUTILUS_PYTHON", DEFAULT_NT_PYTHON),
                    help=f"interpreter with nautilus_trader (default $NAUTILUS_PYTHON or {DEFAULT_NT_PYTHON}); '' skips it")
    ap.add_argument("--vectorbt-python", default=os.environ.get("VECTORBT_PYTHON", DEFAULT_VBT_PYTHON),
                    help=f"interpreter with vectorbt (default $VECTORBT_PYTHON or {DEFAULT_VBT_PYTHON}); '' skips it")
    ap.add_argument("--profile", action="store_true", help="also cProfile run_backtest, B and A (top 15 by tottime)")
    args = ap.parse_args()
    args.bars = args.bars or (50_000 if args.quick else YEAR_BARS)
    args.latency_bars = args.latency_bars or (2_000 if args.quick else 20_000)
    args.live_bars = args.live_bars or (300 if args.quick else 2_000)
    if args.quick:
        args.repeat = min(args.repeat, 2)
    sections = {int(s) for s in args.only.split(",") if s.strip()}
    quiet_logs()

    console.print(f"[bold]varon backtest benchmark[/]{' (quick)' if args.quick else ''}: python {platform.python_version()}, "
                  f"{os.cpu_count()} CPUs, {platform.machine()}; pyarrow {pa.__version__}, numpy {np.__version__}, "
                  f"numba {numba.__version__}")
    t_start = time.perf_counter()
    need = max(args.bars if 1 in sections else 0, args.latency_warmup + args.latency_bars if 2 in sections else 0)
    t0 = time.perf_counter()
    real = args.data == "real"
    candles = real_candles(need) if real else walk_candles(need, args.seed)
    table = bars_table(*candles, real=real)
    closes = candles[3]
    what = (f"real 1m BTC perp candles {CANDLES.name} (45,031 bars), forward and time-reversed alternately"
            if real else f"seeded random walk (seed {args.seed})")
    console.print(f"data: {need:,} 1m bars, {what}; close {closes.min():,.0f}..{closes.max():,.0f}, "
                  f"{int((table.column('volume').to_numpy() == 0).sum()):,} empty bars (built in "
                  f"{time.perf_counter() - t0:.1f} s)")
    tmp = Path(tempfile.mkdtemp(prefix="varon-bench-backtest-"))
    try:
        if 1 in sections:
            bench_backtest(args, table.slice(0, args.bars), tmp)
        if 2 in sections:
            bench_latency(args, table, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"total {time.perf_counter() - t_start:.0f} s")
    if FAILED:
        console.print(f"[red]checks failed: {', '.join(FAILED)}[/]")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Throughput benchmarks for varon, each figure beside a peer doing the same work in the same run.

    .venv/bin/python scripts/bench.py            # 10M trades, 1M bars (a few minutes)
    .venv/bin/python scripts/bench.py --quick    # 1M trades, 100k bars (smoke run)

1. bars in memory   BarAggregator.push over a trades table   vs polars group_by_dynamic
2. bars file->file  `varon bars` CLI on a Parquet file         vs polars read/group/write script
3. features batch   features_from_table over a bars table      vs TA-Lib on the same numpy arrays
4. features live    FeatureEngine.push, one bar per batch      vs TA-Lib over a trailing window per bar

Figures are throughputs, latencies and ratios; nothing is asserted. Timed runs
are best of --repeat after one untimed warm-up (which also compiles numba
kernels). Ratios are varon throughput / peer throughput: above 1, varon is faster.
Correctness checks (varon vs peer values) are printed, not asserted either;
the exit status is 1 when a check fails, so a smoke run notices.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import talib
from rich.console import Console
from rich.table import Table as RichTable
from benchkit import best_of, rate, spread  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402

from varon_cli.bars import BarAggregator, BarSettings  # noqa: E402
from varon_cli.features.engine import FeatureEngine, features_from_table  # noqa: E402
from varon_cli.features.spec import FeatureSpec, load_spec  # noqa: E402
from varon_cli.schemas import BARS, INTERVAL_KEY, TRADES  # noqa: E402
from varon_cli.streamio import READ_BATCH_ROWS  # noqa: E402

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

MINUTE_NS = 60_000_000_000
START_NS = 1_709_251_200_000_000_000  # 2024-03-01T00:00:00Z
VENUE = "coinbase"
# symbol, start price, tick
SYMBOLS = [("BTC-USD", 60_000.0, 0.01), ("ETH-USD", 3_000.0, 0.01), ("SOL-USD", 150.0, 0.001),
           ("DOGE-USD", 0.15, 0.00001), ("AVAX-USD", 35.0, 0.001), ("LINK-USD", 15.0, 0.001),
           ("XRP-USD", 0.6, 0.0001), ("ADA-USD", 0.45, 0.0001)]
REL_TOL = 1e-9


# -- results -------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    varon: str
    peer: str
    peer_name: str
    ratio: float | None  # varon throughput / peer throughput (or peer latency / varon latency)
    check: str


ROWS: list[Row] = []
FAILED: list[str] = []




def ratio_text(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"






def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- synthetic data ------------------------------------------------------------------
def make_trades(n: int, n_symbols: int, seed: int) -> pa.Table:
    """Random-walk trades: Poisson arrivals every ~10 ms (all symbols together), one log-price
    walk per symbol (~3 %/day), lognormal notional (median ~$200), 50/50 taker side."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(10e6, n))
    ts = (ts + START_NS + 12_345_678_901).astype(np.int64)  # first bar partial
    code = np.zeros(n, dtype=np.int8) if n_symbols == 1 else rng.integers(0, n_symbols, n, dtype=np.int8)
    price = np.empty(n)
    sigma = 0.03 / math.sqrt(86_400e9 / 10e6 / n_symbols)  # per trade of one symbol
    for k in range(n_symbols):
        _, p0, tick = SYMBOLS[k]
        idx = np.flatnonzero(code == k) if n_symbols > 1 else slice(None)
        walk = np.cumsum(rng.standard_normal(n if n_symbols == 1 else len(idx)))
        price[idx] = np.maximum(np.round(p0 * np.exp(sigma * walk) / tick), 1) * tick
        del walk
    notional = rng.lognormal(math.log(200.0), 1.5, n)
    size = np.maximum(np.round(notional / price, 8), 1e-8)
    del notional
    side = pa.array(["sell", "buy"]).take(pa.array((rng.random(n) < 0.5).astype(np.int8)))
    names = pa.array([s for s, _, _ in SYMBOLS[:n_symbols]])
    recv = ts + rng.integers(1_000_000, 50_000_000, n)
    table = pa.Table.from_arrays(
        [
            pa.array(ts, type=TRADES.schema.field("ts").type),
            pa.array(recv, type=TRADES.schema.field("recv_ts").type),
            pa.array([VENUE]).take(pa.array(np.zeros(n, dtype=np.int8))),
            names.take(pa.array(code)),
            pc.cast(pa.array(np.arange(n, dtype=np.int64) + 700_000_000), pa.string()),
            pa.array(price),
            pa.array(size),
            side,
            pa.array(np.arange(n, dtype=np.int64) + 1),
        ],
        schema=TRADES.schema_with(),
    )
    # cut as a file read is cut (streamio.READ_BATCH_ROWS rows a batch)
    return pa.Table.from_batches(table.to_batches(max_chunksize=READ_BATCH_ROWS), schema=table.schema)


def make_bars(n: int, seed: int) -> pa.Table:
    """Random-walk 1m OHLCV bars of one symbol (~3 %/day), with ~0.5 % empty bars."""
    rng = np.random.default_rng(seed)
    ts = START_NS + MINUTE_NS * np.arange(n, dtype=np.int64)
    empty = rng.random(n) < 0.005
    empty[0] = False
    steps = rng.normal(0.0, 0.0008, n)
    steps[empty] = 0.0  # an empty bar: OHLC = previous close, no volume (as BarAggregator emits it)
    close = np.round(60_000.0 * np.exp(np.cumsum(steps)), 2)
    open_ = np.empty(n)
    open_[0] = 60_000.0
    open_[1:] = close[:-1]
    close[empty] = open_[empty]
    high = np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0004, n))), 2)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0004, n))), 2)
    high[empty] = low[empty] = open_[empty]
    volume = np.round(rng.lognormal(math.log(20.0), 0.8, n), 6)
    trades = rng.poisson(300, n).astype(np.int64) + 1
    volume[empty] = 0.0
    trades[empty] = 0
    buy_volume = np.round(volume * rng.uniform(0.3, 0.7, n), 6)
    vwap = low + (high - low) * rng.uniform(0.2, 0.8, n)
    vwap[empty] = close[empty]
    table = pa.Table.from_arrays(
        [
            pa.array(ts, type=BARS.schema.field("ts").type),
            pa.array([VENUE]).take(pa.array(np.zeros(n, dtype=np.int8))),
            pa.array(["BTC-USD"]).take(pa.array(np.zeros(n, dtype=np.int8))),
            pa.array(open_), pa.array(high), pa.array(low), pa.array(close), pa.array(volume),
            pa.array(buy_volume), pa.array(vwap), pa.array(trades), pa.array(np.zeros(n, dtype=np.bool_)),
        ],
        schema=BARS.schema_with({INTERVAL_KEY: b"1m"}),
    )
    return pa.Table.from_batches(table.to_batches(max_chunksize=READ_BATCH_ROWS), schema=table.schema)


# -- 1. bars in memory -----------------------------------------------------------------
def varon_bars(batches: list[pa.RecordBatch]) -> pa.Table:
    agg = BarAggregator(BarSettings(interval_ns=int(60e9)))
    out = [b for batch in batches for b in agg.push(batch) if isinstance(b, pa.RecordBatch)]
    out += [b for b in agg.finish() if isinstance(b, pa.RecordBatch)]
    return pa.Table.from_batches(out, schema=agg.schema)


def polars_aggs() -> list[pl.Expr]:
    return [
        pl.col("price").first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").last().alias("close"),
        pl.col("size").sum().alias("volume"),
        pl.col("size").filter(pl.col("side") == "buy").sum().alias("buy_volume"),
        ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"),
        pl.len().alias("trades"),
    ]


def polars_bars(df: pl.DataFrame, by: list[str] | None) -> pl.DataFrame:
    return df.group_by_dynamic("ts", every="1m", group_by=by).agg(polars_aggs())


BAR_VALUES = ("open", "high", "low", "close", "volume", "buy_volume", "vwap")


def compare_bars(varon: pl.DataFrame, peer: pl.DataFrame, by: list[str] | None) -> tuple[bool, str]:
    """Non-empty varon bars against polars windows: same keys, same trade counts, values within REL_TOL."""
    keys = [*(by or []), "ts"]
    v = varon.filter(pl.col("trades") > 0).sort(keys)
    p = peer.sort(keys)
    empty = varon.height - v.height
    if v.height != p.height:
        return False, f"non-empty bars differ: varon {v.height:,}, polars {p.height:,}"
    problems = []
    for k in keys:
        if not v[k].equals(p[k]):
            problems.append(f"{k} differs")
    if not (v["trades"].cast(pl.Int64) == p["trades"].cast(pl.Int64)).all():
        problems.append("trade counts differ")
    worst = 0.0
    worst_col = ""
    for c in BAR_VALUES:
        a, b = v[c].to_numpy(), p[c].to_numpy()
        rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) if len(a) else 0.0
        if rel > worst:
            worst, worst_col = rel, c
    if worst > REL_TOL:
        problems.append(f"max rel diff {worst:.1e} in {worst_col}")
    detail = (f"{v.height:,} non-empty bars each (+{empty:,} empty varon bars); ts, trades equal; "
              f"OHLCV/buy_volume/vwap max rel diff {worst:.1e}" + (f" ({worst_col})" if worst_col else ""))
    return not problems, detail if not problems else "; ".join(problems) + " | " + detail


def bench_bars_memory(n_trades: int, n_symbols: int, repeat: int, seed: int) -> None:
    label = f"bars in memory, {n_symbols} symbol{'s' if n_symbols > 1 else ''}"
    console.rule(f"[bold]1. {label}: {n_trades:,} trades -> 1m bars")
    t0 = time.perf_counter()
    table = make_trades(n_trades, n_symbols, seed)
    batches = table.to_batches()
    console.print(f"data: {table.num_rows:,} trades in {len(batches)} batches of <= {READ_BATCH_ROWS:,} rows, "
                  f"{table.nbytes / 2**20:,.0f} MiB, spanning {(table['ts'][-1].value - table['ts'][0].value) / 3.6e12:.1f} h "
                  f"(generated in {time.perf_counter() - t0:.1f} s)")

    best_v, times_v, out_v = best_of(lambda: varon_bars(batches), repeat)
    console.print(f"varon  BarAggregator.push + finish:   {rate(n_trades, best_v, 'trades'):>22}   "
                  f"best {best_v:.3f} s ({spread(times_v)}), {out_v.num_rows:,} bars")

    by = ["symbol"] if n_symbols > 1 else None
    df = pl.from_arrow(table.select(["ts", "symbol", "price", "size", "side"]))
    del table, batches
    gc.collect()
    best_p, times_p, out_p = best_of(lambda: polars_bars(df, by), repeat)
    console.print(f"polars group_by_dynamic('1m'{', group_by=symbol' if by else ''}): {rate(n_trades, best_p, 'trades'):>17}   "
                  f"best {best_p:.3f} s ({spread(times_p)}), {out_p.height:,} windows, {pl.thread_pool_size()} threads")
    r = best_p / best_v
    console.print(f"ratio varon/polars throughput: [bold]{r:.2f}x[/]")
    ok, detail = compare_bars(pl.from_arrow(out_v), out_p, by)
    console.print(f"check varon vs polars: {'[green]OK[/]' if ok else '[red]MISMATCH[/]'} - {detail}")
    if not ok:
        FAILED.append(label)
    ROWS.append(Row(label, rate(n_trades, best_v, "trades"), rate(n_trades, best_p, "trades"),
                    "polars group_by_dynamic", r, "OK" if ok else "MISMATCH"))
    del df, out_v, out_p
    gc.collect()


# -- 2. bars file to file ------------------------------------------------------------
POLARS_FILE_SCRIPT = """
import sys, polars as pl
df = pl.read_parquet(sys.argv[1])
out = df.group_by_dynamic("ts", every="1m").agg(
    pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
    pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
    pl.col("size").sum().alias("volume"),
    pl.col("size").filter(pl.col("side") == "buy").sum().alias("buy_volume"),
    ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"),
    pl.len().alias("trades"))
out.write_parquet(sys.argv[2], compression="zstd")
"""


def timed_subprocess(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


# A small wrapper process reports its child's peak RSS: measured from the benchmark itself, a
# child's ru_maxrss would include the benchmark's own memory, copied at fork.
PEAK_WRAPPER = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True); "
                "sys.stderr.write(p.stderr.decode()); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
                "sys.exit(p.returncode)")
CHILD_PEAK_MIB: dict[str, float] = {}


def child_peak_mib(cmd: list[str], env: dict[str, str]) -> float:
    proc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(proc.stdout.split()[-1]) / 1024


def bench_bars_file(n_trades: int, repeat: int, seed: int) -> None:
    label = "bars file->file (CLI)"
    console.rule(f"[bold]2. {label}: {n_trades:,} trades Parquet -> 1m bars Parquet")
    varon_bin = Path(sys.executable).parent / "varon"
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="varon-bench-") as tmp:
        trades_path, varon_out, polars_out = (str(Path(tmp) / n) for n in ("trades.parquet", "bars.parquet", "bars_polars.parquet"))
        table = make_trades(n_trades, 1, seed)
        pq.write_table(table, trades_path)
        del table
        gc.collect()
        console.print(f"input: {trades_path} ({os.path.getsize(trades_path) / 2**20:,.0f} MiB, pyarrow defaults)")

        vcmd = [str(varon_bin), "bars", "--interval", "1m", "-i", trades_path, "-o", varon_out]
        pcmd = [sys.executable, "-c", POLARS_FILE_SCRIPT, trades_path, polars_out]
        # the untimed warm-up runs also measure each process's peak memory
        peak_v, peak_p = child_peak_mib(vcmd, env), child_peak_mib(pcmd, env)
        CHILD_PEAK_MIB.update({"varon bars CLI": peak_v, "polars script": peak_p})
        best_v, times_v, _ = best_of(lambda: timed_subprocess(vcmd, env), repeat, warmup=0)
        best_p, times_p, _ = best_of(lambda: timed_subprocess(pcmd, env), repeat, warmup=0)
        start_v, _, _ = best_of(lambda: timed_subprocess([str(varon_bin), "--version"], env), repeat, warmup=0)
        start_p, _, _ = best_of(lambda: timed_subprocess([sys.executable, "-c", "import polars"], env), repeat, warmup=0)

        console.print(f"varon bars (subprocess, end to end):   {rate(n_trades, best_v, 'trades'):>22}   "
                      f"best {best_v:.3f} s ({spread(times_v)})")
        console.print(f"polars read/group/write (subprocess):  {rate(n_trades, best_p, 'trades'):>22}   "
                      f"best {best_p:.3f} s ({spread(times_p)})")
        console.print(f"  both include process start-up: `varon --version` takes {start_v:.3f} s, "
                      f"`python -c 'import polars'` {start_p:.3f} s (best of {repeat}); both read every column and write zstd")
        console.print(f"  peak RSS: varon bars {peak_v:,.0f} MiB, polars script {peak_p:,.0f} MiB")
        r = best_p / best_v
        console.print(f"ratio varon/polars throughput: [bold]{r:.2f}x[/]   "
                      f"(start-up excluded: varon {rate(n_trades, best_v - start_v, 'trades')}, "
                      f"polars {rate(n_trades, best_p - start_p, 'trades')})")
        ok, detail = compare_bars(pl.read_parquet(varon_out), pl.read_parquet(polars_out), None)
        console.print(f"check output files: {'[green]OK[/]' if ok else '[red]MISMATCH[/]'} - {detail}")
        if not ok:
            FAILED.append(label)
        ROWS.append(Row(label + ", incl. start-up", rate(n_trades, best_v, "trades"), rate(n_trades, best_p, "trades"),
                        "polars script (subprocess)", r, "OK" if ok else "MISMATCH"))


# -- 3. features batch ---------------------------------------------------------------
def bar_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    cols = {n: table.column(n).to_numpy() for n in ("open", "high", "low", "close", "volume", "buy_volume", "vwap")}
    cols["ts"] = table.column("ts").cast(pa.int64()).to_numpy()
    return cols


def talib_features(c: dict[str, np.ndarray], extras: bool) -> dict[str, np.ndarray]:
    """The default spec's features with TA-Lib (and numpy for the three TA-Lib has no function for)."""
    close, high, low, volume = c["close"], c["high"], c["low"], c["volume"]
    out: dict[str, np.ndarray] = {}
    for h in (1, 5, 15, 60):
        out[f"logret_{h}"] = np.log(talib.ROCR(close, timeperiod=h))
    for p in (12, 48):
        out[f"ema_ratio_{p}"] = close / talib.EMA(close, timeperiod=p) - 1.0
    out["macd_line"], out["macd_signal"], out["macd_hist"] = talib.MACD(close, 12, 26, 9)
    out["rsi_14"] = talib.RSI(close, timeperiod=14)
    up, _, lo = talib.BBANDS(close, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
    out["bb_pctb_20"] = (close - lo) / (up - lo)
    out["natr_14"] = talib.NATR(high, low, close, timeperiod=14) / 100.0
    out["rvol_20"] = talib.STDDEV(out["logret_1"], timeperiod=20, nbdev=1.0)
    out["volume_z_20"] = (volume - talib.SMA(volume, timeperiod=20)) / talib.STDDEV(volume, timeperiod=20, nbdev=1.0)
    if extras:
        vol, bvol = volume, c["buy_volume"]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["taker_buy_ratio"] = np.where(vol > 0, bvol / vol, np.where(np.isnan(bvol), np.nan, 0.5))
        out["vwap_dev"] = close / c["vwap"] - 1.0
        ts = c["ts"]
        day = (ts % 86_400_000_000_000) / 86_400_000_000_000
        week = (((ts // 86_400_000_000_000) + 3) % 7 + day) / 7.0
        out["time_day_sin"], out["time_day_cos"] = np.sin(2 * np.pi * day), np.cos(2 * np.pi * day)
        out["time_week_sin"], out["time_week_cos"] = np.sin(2 * np.pi * week), np.cos(2 * np.pi * week)
    return out


def talib_full(table: pa.Table, c: dict[str, np.ndarray], spec: FeatureSpec) -> pa.Table:
    """Same output as features_from_table: the bars columns, warmup, and every feature column, as an Arrow table."""
    f = talib_features(c, extras=True)
    warm = np.arange(table.num_rows) < spec.lookback
    arrays = [*table.select(BARS.column_names).columns, pa.array(warm), *(pa.array(f[n]) for n in spec.columns)]
    return pa.Table.from_arrays(arrays, names=[*BARS.column_names, "warmup", *spec.columns])


def compare_features(varon: pa.Table, peer: dict[str, np.ndarray], spec: FeatureSpec) -> tuple[bool, list[str]]:
    lines = []
    ok = True
    start = spec.lookback
    for name in spec.columns:
        a = varon.column(name).to_numpy()[start:]
        b = peer[name][start:]
        both = np.isfinite(a) & np.isfinite(b)
        nan_mismatch = int(np.count_nonzero(np.isfinite(a) != np.isfinite(b)))
        d = np.abs(a[both] - b[both])
        max_abs = float(d.max()) if d.size else 0.0
        scale = np.maximum(np.abs(b[both]), 1e-12)
        max_rel = float((d / scale).max()) if d.size else 0.0
        p99_abs = float(np.quantile(d, 0.99)) if d.size else 0.0
        # TA-Lib's rolling std uses running sums of x and x^2: allow its cancellation error
        tol_abs = 1e-6 if name in ("bb_pctb_20", "volume_z_20") else 1e-9
        good = nan_mismatch == 0 and (max_abs <= tol_abs or max_rel <= 1e-7)
        ok &= good
        lines.append(f"  {name:<16} max|diff| {max_abs:9.2e}  max rel {max_rel:9.2e}  p99|diff| {p99_abs:9.2e}"
                     f"  NaN mismatches {nan_mismatch}{'' if good else '  <-- differs'}")
    return ok, lines


def bench_features_batch(n_bars: int, repeat: int, seed: int, spec: FeatureSpec) -> tuple[pa.Table, float]:
    label = "features batch"
    console.rule(f"[bold]3. {label}: {n_bars:,} 1m bars, {len(spec.columns)} feature columns")
    table = make_bars(n_bars, seed)
    best_v, times_v, out_v = best_of(lambda: features_from_table(table, spec), repeat)
    console.print(f"varon features_from_table:                {rate(n_bars, best_v, 'bars'):>20}   "
                  f"best {best_v:.3f} s ({spread(times_v)})")
    c = bar_arrays(table)
    best_t, times_t, out_t = best_of(lambda: talib_features(c, extras=False), repeat)
    console.print(f"TA-Lib, listed indicators only (numpy in/out): {rate(n_bars, best_t, 'bars'):>15}   "
                  f"best {best_t:.3f} s ({spread(times_t)})")
    best_f, times_f, _ = best_of(lambda: talib_full(table, c, spec), repeat)
    console.print(f"TA-Lib + numpy extras + Arrow table (same output): {rate(n_bars, best_f, 'bars'):>11}   "
                  f"best {best_f:.3f} s ({spread(times_f)})")
    r_t, r_f = best_t / best_v, best_f / best_v
    console.print(f"ratio varon/TA-Lib throughput: [bold]{r_t:.2f}x[/] (indicators only), [bold]{r_f:.2f}x[/] (same output)")
    ok, lines = compare_features(out_v, talib_features(c, extras=True), spec)
    console.print(f"check varon vs TA-Lib after {spec.lookback} warm-up bars: {'[green]OK[/]' if ok else '[red]DIFFERS[/]'}")
    for line in lines:
        console.print(line)
    if not ok:
        FAILED.append(label)
    check = "OK" if ok else "DIFFERS"
    ROWS.append(Row(label, rate(n_bars, best_v, "bars"), rate(n_bars, best_t, "bars"), "TA-Lib, indicators only", r_t, check))
    ROWS.append(Row(label, rate(n_bars, best_v, "bars"), rate(n_bars, best_f, "bars"), "TA-Lib+numpy+Arrow, same output", r_f, check))
    del out_v, out_t
    return table, best_v / n_bars


# -- 4. features live ---------------------------------------------------------------
def bench_features_live(table: pa.Table, n_live: int, spec: FeatureSpec, batch_per_bar_s: float, window: int) -> None:
    label = "features live"
    warm = max(500, 2 * spec.lookback, window)
    console.rule(f"[bold]4. {label}: FeatureEngine.push with one-bar batches, {n_live:,} bars after {warm} warm-up bars")
    rb = table.slice(0, warm + n_live).combine_chunks().to_batches()[0]
    rows = [rb.slice(i, 1) for i in range(warm + n_live)]
    engine = FeatureEngine(spec)
    for b in rows[:warm]:
        for _ in engine.push(b):
            pass
    lat = np.empty(n_live)
    gc.collect()
    for i, b in enumerate(rows[warm:]):
        t0 = time.perf_counter_ns()
        out = list(engine.push(b))
        lat[i] = time.perf_counter_ns() - t0
    assert out and out[0].num_rows == 1
    lat_us = lat / 1e3

    # peer: what a live bot does without incremental state - recompute TA-Lib over the last `window` bars
    c = bar_arrays(table.slice(0, warm + n_live))
    peer = np.empty(n_live)
    for i in range(warm - 10, warm):  # warm the peer too
        talib_features({k: v[i - window + 1:i + 1] for k, v in c.items()}, extras=True)
    for j in range(n_live):
        i = warm + j
        t0 = time.perf_counter_ns()
        f = talib_features({k: v[i - window + 1:i + 1] for k, v in c.items()}, extras=True)
        _last = {k: float(v[-1]) for k, v in f.items()}
        peer[j] = time.perf_counter_ns() - t0
    peer_us = peer / 1e3

    p50, p99 = np.percentile(lat_us, [50, 99])
    q50, q99 = np.percentile(peer_us, [50, 99])
    meets = p99 < 1000.0
    console.print(f"varon push, 1 bar:  p50 {p50:8.1f} us   p90 {np.percentile(lat_us, 90):8.1f} us   p99 {p99:8.1f} us   "
                  f"max {lat_us.max():8.1f} us   mean {lat_us.mean():8.1f} us   -> {1e6 / lat_us.mean():,.0f} bars/s")
    console.print(f"TA-Lib over last {window} bars: p50 {q50:8.1f} us   p90 {np.percentile(peer_us, 90):8.1f} us   p99 {q99:8.1f} us   "
                  f"max {peer_us.max():8.1f} us   mean {peer_us.mean():8.1f} us  (values differ: EMAs re-seed per window)")
    console.print(f"varon batch path, amortized: {batch_per_bar_s * 1e6:.3f} us/bar -> live per-bar overhead "
                  f"{p50 / (batch_per_bar_s * 1e6):,.0f}x the batch cost at p50")
    console.print(f"target p99 < 1 ms: {'[green]met[/]' if meets else '[red]missed[/]'} (p99 {p99:.1f} us)")
    ROWS.append(Row(label + " p50", f"{p50:,.1f} us/bar", f"{q50:,.1f} us/bar", f"TA-Lib, last {window} bars", q50 / p50, ""))
    ROWS.append(Row(label + " p99", f"{p99:,.1f} us/bar", f"{q99:,.1f} us/bar", f"TA-Lib, last {window} bars", q99 / p99,
                    "p99 < 1 ms" if meets else "p99 >= 1 ms"))


# -- main ----------------------------------------------------------------------------
def summary(elapsed: float) -> None:
    t = RichTable(title="varon benchmark summary (ratio = varon throughput / peer throughput; >1 = varon faster)")
    for col, just in (("benchmark", "left"), ("varon", "right"), ("peer", "right"), ("peer is", "left"),
                      ("ratio", "right"), ("check", "left")):
        t.add_column(col, justify=just)
    for r in ROWS:
        style = "red" if r.check in ("MISMATCH", "DIFFERS", "p99 >= 1 ms") else None
        t.add_row(r.name, r.varon, r.peer, r.peer_name, ratio_text(r.ratio), r.check, style=style)
    console.print()
    console.print(t)
    children = "".join(f", {k} {v:,.0f} MiB" for k, v in CHILD_PEAK_MIB.items())
    console.print(f"peak RSS: this process {rss_mib():,.0f} MiB{children}; total {elapsed:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1M trades, 100k bars")
    ap.add_argument("--trades", type=int, help="trades per bars run (default 10M, 1M with --quick)")
    ap.add_argument("--bars", type=int, help="bars for the features runs (default 1M, 100k with --quick)")
    ap.add_argument("--symbols", type=int, default=4, help="symbols in the multi-symbol bars run (default 4)")
    ap.add_argument("--live", type=int, default=5_000, help="bars timed one by one in the live run (default 5000)")
    ap.add_argument("--window", type=int, default=200, help="trailing window of the live TA-Lib peer (default 200)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure, best taken (default 3)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", default="1,2,3,4", help="comma-separated sections to run (default 1,2,3,4)")
    args = ap.parse_args()
    n_trades = args.trades or (1_000_000 if args.quick else 10_000_000)
    n_bars = args.bars or (100_000 if args.quick else 1_000_000)
    if not 2 <= args.symbols <= len(SYMBOLS):
        ap.error(f"--symbols must be 2..{len(SYMBOLS)}")
    sections = {int(s) for s in args.only.split(",") if s.strip()}

    console.print(f"[bold]varon benchmark[/]{' (quick)' if args.quick else ''}: python {platform.python_version()}, "
                  f"{os.cpu_count()} CPUs, {platform.machine()}; numpy {np.__version__}, pyarrow {pa.__version__}, "
                  f"numba {numba.__version__}, polars {pl.__version__} ({pl.thread_pool_size()} threads), "
                  f"TA-Lib {talib.__version__}; best of {args.repeat} after 1 warm-up")
    t_start = time.perf_counter()
    spec = load_spec()
    if 1 in sections:
        bench_bars_memory(n_trades, 1, args.repeat, args.seed)
        bench_bars_memory(n_trades, args.symbols, args.repeat, args.seed + 1)
    if 2 in sections:
        bench_bars_file(n_trades, args.repeat, args.seed)
    table, per_bar = None, float("nan")
    if 3 in sections:
        table, per_bar = bench_features_batch(n_bars, args.repeat, args.seed, spec)
    if 4 in sections:
        if table is None:
            table = make_bars(max(args.live + 1_000, args.window + 1_000), args.seed)
            per_bar = float("nan")
        bench_features_live(table, args.live, spec, per_bar, args.window)
    summary(time.perf_counter() - t_start)
    if FAILED:
        console.print(f"[red]checks failed: {', '.join(FAILED)}[/]")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

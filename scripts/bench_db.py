#!/usr/bin/env python
"""Throughput of `varon db load` and `export` on PostgreSQL, each beside psql doing the same work in the same run.

    .venv/bin/python scripts/bench_db.py                       # 1M bars, 1M trades
    .venv/bin/python scripts/bench_db.py --rows 100000         # a smoke run
    .venv/bin/python scripts/bench_db.py --admin postgresql://postgres@127.0.0.1:5432/postgres

1. load bars     varon load (binary COPY into staging + INSERT ... ON CONFLICT DO NOTHING)
                 vs psql \\copy of the same rows as CSV straight into the table (no idempotency)
2. load trades   the same for trades
3. reload        varon load of the same rows again (every row a conflict, nothing added)
4. export bars   varon export of every bar to an Arrow stream file, in (ts, venue, symbol) order,
                 vs psql \\copy of the same ordered SELECT to /dev/null in binary (no parsing at all)

The benchmark creates its own database (varon_bench_<random>) and drops it.
Both sides start from an emptied table whose monthly partitions exist. Figures
are rows/s and ratios (varon / psql: above 1, varon is faster); nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from benchkit import rate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from varon_cli.db import pgdrain  # noqa: E402
from varon_cli.db.dsn import Dsn, parse_dsn  # noqa: E402
from varon_cli.db.export import ExportQuery, export_to  # noqa: E402
from varon_cli.db.load import LoadSettings, load_file, prepare  # noqa: E402
from varon_cli.db.migrate import migrate  # noqa: E402
from varon_cli.db.tables import TABLES, quoted, table_named  # noqa: E402
from varon_cli.schemas import BARS, INTERVAL_KEY, TRADES  # noqa: E402

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000_000_000
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD", "AVAX-USD", "LINK-USD", "XRP-USD", "ADA-USD",
           "DOT-USD", "LTC-USD", "BCH-USD", "ATOM-USD"]


def make_bars(n: int) -> pa.Table:
    rng = np.random.default_rng(1)
    k = len(SYMBOLS)
    close = 100 + rng.random(n)
    columns = {
        "ts": T0 + (np.arange(n) // k) * MINUTE, "venue": ["coinbase"] * n,
        "symbol": np.array(SYMBOLS)[np.arange(n) % k], "open": close - 0.5, "high": close + 1, "low": close - 1,
        "close": close, "volume": rng.random(n), "buy_volume": rng.random(n), "vwap": close,
        "trades": rng.integers(0, 100, n), "partial": np.zeros(n, bool),
    }
    schema = BARS.schema_with({INTERVAL_KEY: b"1m"})
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in BARS.schema}, schema=schema)


def make_trades(n: int) -> pa.Table:
    rng = np.random.default_rng(2)
    ts = T0 + np.sort(rng.integers(0, 30 * 86_400_000_000, n)) * 1000
    columns = {
        "ts": ts, "recv_ts": ts + 1000, "venue": ["coinbase"] * n, "symbol": np.array(SYMBOLS[:4])[np.arange(n) % 4],
        "trade_id": (np.arange(n) + 700_000_000).astype(str), "price": 40_000 + rng.random(n), "size": rng.random(n),
        "side": np.where(rng.random(n) < 0.5, "buy", "sell"), "seq": np.arange(n),
    }
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in TRADES.schema}, schema=TRADES.schema_with())


def execute(dsn: Dsn, sql: str, params: tuple | None = None) -> list[tuple]:
    with psycopg.connect(dsn.text, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def psql(dsn: Dsn, command: str) -> float:
    started = time.perf_counter()
    subprocess.run(["psql", dsn.text, "-v", "ON_ERROR_STOP=1", "-q", "-c", command], check=True, capture_output=True)
    return time.perf_counter() - started


def csv_of(table: pa.Table, spec_name: str, context: dict[str, str], path: Path) -> None:
    """The rows as the table's columns in order, times as microseconds (what the database stores)."""
    prepared, _ = prepare(table, TABLES[spec_name], context, "bench")
    columns = [c.cast(pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(c.type) else c for c in prepared.columns]
    pacsv.write_csv(pa.Table.from_arrays(columns, names=prepared.column_names), path,
                    pacsv.WriteOptions(include_header=False, quoting_style="needed"))


def bench_load(dsn: Dsn, name: str, table: pa.Table, context: dict[str, str], work: Path) -> None:
    spec = TABLES[name]
    source = work / f"{name}.parquet"
    pq.write_table(table, source)
    csv = work / f"{name}.csv"
    csv_of(table, name, context, csv)
    execute(dsn, f"SELECT varon_ensure_partitions('{name}', %s::timestamptz[])",
            ([f"2024-{m:02d}-01T00:00:00Z" for m in range(1, 13)],))
    execute(dsn, f"TRUNCATE {name}")
    t_psql = psql(dsn, f"\\copy {name} ({quoted(spec.columns)}) FROM '{csv}' (FORMAT csv)")
    execute(dsn, f"TRUNCATE {name}")
    execute(dsn, "CHECKPOINT")
    settings = LoadSettings(batch_rows=1_000_000)
    started = time.perf_counter()
    stats = load_file(dsn, str(source), settings, executor=context.get("executor"), progress=False)
    t_varon = time.perf_counter() - started
    started = time.perf_counter()
    again = load_file(dsn, str(source), settings, executor=context.get("executor"), progress=False)
    t_again = time.perf_counter() - started
    n = table.num_rows
    assert stats.rows_added == n and again.rows_added == 0, (stats, again)
    print(f"load {name:<8} varon  {t_varon:6.2f} s  {rate(n, t_varon, 'rows')}")
    print(f"load {name:<8} psql   {t_psql:6.2f} s  {rate(n, t_psql, 'rows')}   (\\copy CSV, no conflict handling)")
    print(f"load {name:<8} ratio  {t_psql / t_varon:.2f}x (varon / psql throughput)")
    print(f"reload {name:<6} varon  {t_again:6.2f} s  {rate(n, t_again, 'rows')}   (every row already there)")


def bench_export(dsn: Dsn, n: int, work: Path) -> None:
    execute(dsn, "VACUUM ANALYZE market_data")
    out = work / "bars.arrows"
    query = ExportQuery(table_named("bars"))
    times = {}
    for native in (True, False):
        pgdrain.enabled = native
        export_to(dsn, query, str(out))  # warm: caches, and the numba kernel compiled or loaded
        started = time.perf_counter()
        stats = export_to(dsn, query, str(out))
        times[native] = time.perf_counter() - started
        assert stats.rows == n
        label = "varon" if native else "varon (psycopg copy)"
        print(f"export bars  {label:<23} {times[native]:6.2f} s  {rate(n, times[native], 'rows')}  "
              f"-> {out.stat().st_size / 1e6:.0f} MB Arrow")
    pgdrain.enabled = True
    t_varon = times[True]
    select = ("SELECT ts, open, high, low, close, volume, buy_volume, vwap, trades, partial FROM market_data "
              "ORDER BY ts, venue, symbol, interval")
    t_psql = _psql_export(dsn, select)
    print(f"export bars  {'psql (binary, no parse)':<23} {t_psql:6.2f} s  {rate(n, t_psql, 'rows')}")
    print(f"export bars  ratio {t_psql / t_varon:.2f}x (varon / psql throughput, native copy)")


def _psql_export(dsn: Dsn, select: str) -> float:
    started = time.perf_counter()
    subprocess.run(["psql", dsn.text, "-v", "ON_ERROR_STOP=1", "-q", "-c", "SET work_mem = '256MB'",
                    "-c", f"\\copy ({select}) TO '/dev/null' (FORMAT binary)"], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of bars and of trades (default 1M)")
    parser.add_argument("--admin", default=os.environ.get("VARON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="a DSN allowed to create and drop databases")
    args = parser.parse_args()
    if shutil.which("psql") is None:
        sys.exit("bench_db: psql is not on PATH")
    name = f"varon_bench_{uuid.uuid4().hex[:8]}"
    execute(parse_dsn(args.admin), f'CREATE DATABASE "{name}"')
    dsn = parse_dsn(args.admin.rsplit("/", 1)[0] + "/" + name)
    server = execute(dsn, "SHOW server_version")[0][0]
    print(f"bench_db: {args.rows:,} rows each; PostgreSQL {server}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}")
    try:
        migrate(dsn)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            bars = make_bars(args.rows)
            bench_load(dsn, "market_data", bars, {"interval": "1m"}, work)
            bench_load(dsn, "trades", make_trades(args.rows), {}, work)
            bench_export(dsn, args.rows, work)
    finally:
        execute(parse_dsn(args.admin), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

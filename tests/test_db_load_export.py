"""`varon db load` / `export` / `verify-audit` against a real PostgreSQL (and DuckDB), never a mock.

The module creates one uniquely named database on $VARON_TEST_PG (default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it, and drops it at
the end. Round trips compare exactly (NaN and null kept apart). Times are
whole microseconds unless a test is about flooring nanoseconds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from helpers import assert_same_table
from varon_cli.db import pgdrain
from varon_cli.db.audit import check_all, load_audit, verify_audit
from varon_cli.db.connect import RetryPolicy
from varon_cli.db.dsn import Dsn, parse_dsn
from varon_cli.db.errors import DbError, DbUnavailable
from varon_cli.db.export import ExportQuery, export_to, parse_time
from varon_cli.db.load import LoadSettings, load_file
from varon_cli.db.migrate import migrate
from varon_cli.db.tables import TABLES, table_named
from varon_cli.errors import InputError, UsageError
from varon_cli.execution.audit import AuditError, AuditLog
from varon_cli.schemas import BARS, EQUITY, FILLS, FUNDING, INTERVAL_KEY, ORDERS, SIGNALS, TRADES, StreamKind

REPO = Path(__file__).resolve().parents[1]
ADMIN = os.environ.get("VARON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z in ns
MINUTE = 60_000_000_000
FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, connect_timeout=2)


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg() -> Iterator[Dsn]:
    name = f"varon_test_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = parse_dsn(ADMIN.rsplit("/", 1)[0] + "/" + name)
    migrate(dsn)
    yield dsn
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(pg: Dsn) -> Dsn:
    """The module's database with its stream tables emptied (audit_log cannot be: tests use their own executors)."""
    with psycopg.connect(pg.text, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES))
    return pg


@pytest.fixture(params=[True, False], ids=["native-copy", "psycopg-copy"])
def copy_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(pgdrain, "enabled", request.param)
    return request.param


def count(dsn: Dsn, table: str, where: str = "") -> int:
    with psycopg.connect(dsn.text) as conn:
        return conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0]


def settings(batch_rows: int = 1_000_000) -> LoadSettings:
    return LoadSettings(batch_rows=batch_rows, flush_interval=60.0, retry=FAST)


def write(tmp_path: Path, table: pa.Table, name: str) -> str:
    path = tmp_path / name
    pq.write_table(table, path)
    return str(path)


def export(dsn: Dsn, table: str, tmp_path: Path, **kw) -> pa.Table:  # noqa: ANN003
    out = tmp_path / f"export-{uuid.uuid4().hex[:6]}.arrows"
    filters = {k: tuple(v.split(",")) for k, v in kw.items() if k not in ("start", "end")}
    query = ExportQuery(table_named(table), parse_time(kw.get("start"), "--start"), parse_time(kw.get("end"), "--end"),
                        filters)
    export_to(dsn, query, str(out), FAST)
    return ipc.open_stream(str(out)).read_all()


def stream(kind: StreamKind, columns: dict, meta: dict | None = None) -> pa.Table:
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in kind.schema}, schema=kind.schema_with(meta))


# -- data: sorted as an export sorts (ts, then the table's key) -----------------------------
def make_bars(n_times: int = 2000, symbols: tuple[str, ...] = ("BTC-USD", "ETH-USD", "SOL-USD"),
              interval: str = "1m", venue: str = "coinbase", step: int = MINUTE) -> pa.Table:
    rng = np.random.default_rng(7)
    k = len(symbols)
    n = n_times * k
    close = 100 + rng.random(n)
    buy = rng.random(n)
    buy[::17] = np.nan  # NaN: unknown, and kept apart from null
    vwap = close.tolist()
    vwap[5] = None  # a null number travels as null
    trades = rng.integers(0, 50, n).tolist()
    trades[8] = None
    partial = np.zeros(n, bool)
    partial[:k] = True
    return stream(BARS, {
        "ts": np.repeat(T0 + np.arange(n_times) * step, k), "venue": [venue] * n,
        "symbol": list(symbols) * n_times, "open": close - 0.5, "high": close + 1, "low": close - 1, "close": close,
        "volume": rng.random(n) * 10, "buy_volume": buy, "vwap": vwap, "trades": trades, "partial": partial,
    }, {INTERVAL_KEY: interval.encode()})


def make_trades(n: int = 3000) -> pa.Table:
    rng = np.random.default_rng(3)
    ts = T0 + np.sort(rng.integers(0, 10 * 86_400_000_000, n)) * 1000  # whole microseconds over ten days
    venues = np.where(np.arange(n) % 3 == 0, "coinbase", "hyperliquid")
    ids = [str(uuid.UUID(int=int(i) * 7919)) if v == "coinbase" else str(i * 13) for i, v in zip(range(n), venues)]
    seq = list(range(n))
    seq[4] = None
    table = stream(TRADES, {
        "ts": ts, "recv_ts": ts + 1_000, "venue": venues, "symbol": ["BTC-USD"] * n, "trade_id": ids,
        "price": 40_000 + rng.random(n), "size": rng.random(n), "side": np.where(rng.random(n) < 0.5, "buy", "sell"),
        "seq": seq,
    })
    return table.sort_by([("ts", "ascending"), ("venue", "ascending"), ("symbol", "ascending"),
                          ("trade_id", "ascending")]).replace_schema_metadata(table.schema.metadata)


def make_funding(n: int = 500) -> pa.Table:
    ts = T0 + np.arange(n) * 3_600_000_000_000
    mark = np.full(n, np.nan)
    mark[::2] = 42_000.0
    return stream(FUNDING, {
        "ts": ts, "recv_ts": ts, "venue": ["hyperliquid"] * n, "symbol": ["ETH-USD"] * n,
        "funding_rate": np.linspace(-1e-5, 1e-5, n), "premium": np.full(n, np.nan), "mark_price": mark,
        "oracle_price": np.full(n, 41_990.5), "open_interest": np.arange(n, dtype=float),
    })


def make_fills(n: int = 400) -> pa.Table:
    ts = T0 + np.arange(n) * MINUTE
    return stream(FILLS, {
        "ts": ts, "symbol": np.where(np.arange(n) % 2 == 0, "BTC-USD", "ETH-USD"),
        "cloid": [f"0x{i:032x}" for i in range(n)], "venue_order_id": ["" if i % 50 == 0 else str(9_000_000 + i) for i in range(n)],
        "side": np.where(np.arange(n) % 3 == 0, "sell", "buy"), "size": np.full(n, 0.01), "price": 40_000 + np.arange(n),
        "fee": np.full(n, 0.018), "status": ["filled"] * n, "reason": ["entry" if i % 4 else "stop_loss: prix dépassé ✓" for i in range(n)],
        "strategy": ["ema-cross"] * n,
    })


def make_signals(n: int = 300) -> pa.Table:
    ts = T0 + np.arange(n) * MINUTE
    stop = np.full(n, np.nan)
    stop[::3] = 39_000.0
    return stream(SIGNALS, {
        "ts": ts + MINUTE, "bar_ts": ts, "symbol": ["BTC-USD"] * n, "strategy": ["ema-cross"] * n,
        "target": np.sin(np.arange(n)), "leverage": np.full(n, 2.0), "stop_loss": stop, "take_profit": np.full(n, np.nan),
        "price": 40_000 + np.arange(n), "model_id": [None] * n,  # rule strategy: every model_id null
        "venue": [None if i % 10 == 0 else "paper" for i in range(n)], "bar_open": np.full(n, 1.0),
        "bar_high": np.full(n, 2.0), "bar_low": np.full(n, 0.5),
    })


def make_orders(n: int = 200) -> pa.Table:
    ts = T0 + np.arange(n) * MINUTE
    return stream(ORDERS, {
        "ts": ts, "symbol": ["ETH-USD"] * n, "cloid": [f"0x{i:032x}" for i in range(n)],
        "venue_order_id": [None if i % 7 == 0 else str(i) for i in range(n)], "side": ["buy"] * n,
        "size": np.full(n, 0.5), "price": np.full(n, 2_000.0), "fee": np.zeros(n),
        "status": ["rejected" if i % 7 == 0 else "new" for i in range(n)],
        "reason": ["rejected: exposure above the strategy's limit of 20% " * (1 + i % 3) if i % 7 == 0 else "entry"
                   for i in range(n)], "strategy": ["breakout"] * n,
    })


def make_equity(n: int = 100) -> pa.Table:
    ts = np.repeat(T0 + np.arange(n) * MINUTE, 2)  # two symbols: two rows per strategy at each ts
    return stream(EQUITY, {
        "ts": ts, "strategy": ["ema-cross"] * (2 * n), "equity": 10_000 + np.arange(2 * n, dtype=float),
        "position": np.tile([0.1, 0.2], n), "pnl": np.arange(2 * n, dtype=float), "drawdown": np.zeros(2 * n),
    })


# -- round trips ------------------------------------------------------------------------------
def test_bars_round_trip_exactly_and_a_reload_adds_nothing(db: Dsn, tmp_path: Path, copy_path: bool) -> None:
    bars = make_bars()
    path = write(tmp_path, bars, "bars.parquet")
    stats = load_file(db, path, settings(batch_rows=2500))
    assert (stats.table, stats.rows_read, stats.rows_added, stats.batches) == ("market_data", bars.num_rows, bars.num_rows, 3)
    out = export(db, "bars", tmp_path)
    assert_same_table(out, bars)  # columns, types, NaN vs null, and metadata: kind, version, interval
    assert out.schema.metadata[INTERVAL_KEY] == b"1m"
    again = load_file(db, path, settings())
    assert (again.rows_read, again.rows_added) == (bars.num_rows, 0)
    assert count(db, "market_data") == bars.num_rows
    parts = {r[0] for r in psycopg.connect(db.text).execute("SELECT tableoid::regclass::text FROM market_data")}
    assert parts == {"market_data_p202401"}


def test_a_load_that_overlaps_adds_only_the_new_rows(db: Dsn, tmp_path: Path) -> None:
    bars = make_bars(1000)
    assert load_file(db, write(tmp_path, bars.slice(0, 1300), "head.parquet"), settings()).rows_added == 1300
    # Batches of 500: the first three overlap what is there (straight COPY refused, staged insert), the rest are new.
    stats = load_file(db, write(tmp_path, bars, "all.parquet"), settings(batch_rows=500))
    assert (stats.rows_read, stats.rows_added, stats.batches) == (3000, 1700, 6)
    assert_same_table(export(db, "bars", tmp_path), bars)


def test_trades_round_trip_across_partitions(db: Dsn, tmp_path: Path, copy_path: bool) -> None:
    trades = make_trades()
    assert load_file(db, write(tmp_path, trades, "t.parquet"), settings(batch_rows=1000)).rows_added == trades.num_rows
    assert_same_table(export(db, "trades", tmp_path), trades)
    assert load_file(db, write(tmp_path, trades.slice(100, 500), "t2.parquet"), settings()).rows_added == 0


def test_funding_and_fills_round_trip(db: Dsn, tmp_path: Path, copy_path: bool) -> None:
    funding, fills = make_funding(), make_fills()
    assert load_file(db, write(tmp_path, funding, "f.parquet"), settings()).rows_added == funding.num_rows
    assert_same_table(export(db, "funding", tmp_path), funding)
    assert load_file(db, write(tmp_path, fills, "fills.parquet"), settings(), executor="paper-1").rows_added == fills.num_rows
    assert load_file(db, write(tmp_path, fills.slice(0, 10), "x.parquet"), settings(), executor="paper-1").rows_added == 0
    assert load_file(db, write(tmp_path, fills.slice(0, 10), "y.parquet"), settings(), executor="live").rows_added == 10
    assert_same_table(export(db, "fills", tmp_path, executor="paper-1"), fills)
    assert export(db, "fills", tmp_path, executor="live").num_rows == 10


def test_signals_orders_and_equity_round_trip(db: Dsn, tmp_path: Path, copy_path: bool) -> None:
    for name, table, kw in (("signals", make_signals(), {}), ("orders", make_orders(), {"executor": "paper"}),
                            ("equity", make_equity(), {"executor": "paper"})):
        path = write(tmp_path, table, f"{name}.parquet")
        assert load_file(db, path, settings(), **kw).rows_added == table.num_rows, name
        assert load_file(db, path, settings(), **kw).rows_added == 0, name
        assert_same_table(export(db, name, tmp_path), table)


def test_nanoseconds_are_floored_to_the_microsecond(db: Dsn, tmp_path: Path) -> None:
    trades = make_trades(50)
    recv = pa.array(trades["recv_ts"].cast(pa.int64()).to_numpy() + 789, pa.int64()).cast(trades["recv_ts"].type)
    fine = trades.set_column(1, "recv_ts", recv)
    stats = load_file(db, write(tmp_path, fine, "ns.parquet"), settings())
    assert stats.floored == 50
    assert_same_table(export(db, "trades", tmp_path), trades)  # back to the microsecond, floored


def test_export_filters_and_time_range(db: Dsn, tmp_path: Path) -> None:
    bars = make_bars(n_times=3 * 1440, step=MINUTE)  # three days
    load_file(db, write(tmp_path, bars, "b.parquet"), settings())
    day2 = export(db, "bars", tmp_path, symbol="ETH-USD", start="2024-01-02", end="2024-01-03T00:00:00Z")
    want = bars.filter(pa.compute.and_(
        pa.compute.equal(bars["symbol"], "ETH-USD"),
        pa.compute.and_(pa.compute.greater_equal(bars["ts"].cast(pa.int64()), T0 + 1440 * MINUTE),
                        pa.compute.less(bars["ts"].cast(pa.int64()), T0 + 2 * 1440 * MINUTE))))
    assert day2.num_rows == 1440
    assert_same_table(day2, want)
    two = export(db, "bars", tmp_path, symbol="BTC-USD,SOL-USD", venue="coinbase", start="2024-01-03")
    assert set(two["symbol"].to_pylist()) == {"BTC-USD", "SOL-USD"} and two.num_rows == 2 * 1440
    # A second interval of the same symbols: a bars stream has one, so the export asks which.
    load_file(db, write(tmp_path, make_bars(n_times=10, interval="5m", step=5 * MINUTE), "b5.parquet"), settings())
    with pytest.raises(UsageError, match="several intervals"):
        export(db, "bars", tmp_path, symbol="BTC-USD")
    five = export(db, "bars", tmp_path, symbol="BTC-USD", interval="5m")
    assert five.num_rows == 10 and five.schema.metadata[INTERVAL_KEY] == b"5m"
    with pytest.raises(UsageError, match="no executor column"):
        export(db, "bars", tmp_path, executor="x")
    empty = export(db, "trades", tmp_path, symbol="NOPE-USD")
    assert empty.num_rows == 0 and empty.schema.metadata[b"varon.kind"] == b"trades"


# -- refusals ------------------------------------------------------------------------------------
def test_a_stream_of_another_kind_is_refused(db: Dsn, tmp_path: Path) -> None:
    path = write(tmp_path, make_trades(20), "t.parquet")
    with pytest.raises(InputError, match="a trades stream cannot be loaded into market_data"):
        load_file(db, path, settings(), table="bars")
    with pytest.raises(InputError, match="cannot be loaded into funding"):
        load_file(db, path, settings(), table="funding")
    with pytest.raises(UsageError, match="unknown table"):
        load_file(db, path, settings(), table="nope")
    with pytest.raises(UsageError, match="--interval applies to bars"):
        load_file(db, path, settings(), interval="1m")
    assert count(db, "trades") == 0


def test_bars_need_an_interval(db: Dsn, tmp_path: Path) -> None:
    bars = make_bars(5)
    path = write(tmp_path, bars.replace_schema_metadata({b"varon.kind": b"bars", b"varon.version": b"1"}), "b.parquet")
    with pytest.raises(InputError, match="pass --interval"):
        load_file(db, path, settings())
    with pytest.raises(InputError, match="says its bars are 1m"):
        load_file(db, write(tmp_path, bars, "b1.parquet"), settings(), interval="5m")
    assert load_file(db, path, settings(), interval="15m").rows_added == bars.num_rows
    assert export(db, "bars", tmp_path).schema.metadata[INTERVAL_KEY] == b"15m"


def test_a_failing_batch_leaves_nothing_of_itself(db: Dsn, tmp_path: Path) -> None:
    trades = make_trades(300)
    ids = trades["trade_id"].to_pylist()
    ids[250] = "bad\x00id"  # PostgreSQL text cannot hold NUL: the COPY of the third batch fails
    bad = trades.set_column(trades.schema.get_field_index("trade_id"), "trade_id", pa.array(ids))
    with pytest.raises(DbError) as info:
        load_file(db, write(tmp_path, bad, "bad.parquet"), settings(batch_rows=100))
    assert "\n" not in info.value.message and "load trades" in info.value.message
    assert count(db, "trades") == 200  # the two batches before it, whole; nothing of the third


# -- connections -------------------------------------------------------------------------------
def test_wrong_password_and_unreachable_host_never_show_the_password(pg: Dsn, tmp_path: Path) -> None:
    role, secret = f"varon_pw_{uuid.uuid4().hex[:6]}", "s3cret-Hunter2"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-password'")
    try:
        host = pg.text.split("@", 1)[1]
        wrong = parse_dsn(f"postgresql://{role}:{secret}@{host}")
        try:
            migrate(wrong, policy=FAST)  # this server trusts 127.0.0.1: any password is accepted
        except DbError as exc:
            assert secret not in exc.message and "***" in exc.message
        # So check the redaction where a connection surely fails: nothing listens on port 1 ...
        with pytest.raises(DbUnavailable) as info:
            migrate(parse_dsn(f"postgresql://{role}:{secret}@127.0.0.1:1/varon"), policy=FAST)
        assert secret not in info.value.message and f"{role}:***@127.0.0.1:1" in info.value.message
        # ... and where the server answers with an error: a database that does not exist.
        with pytest.raises(DbError) as info:
            migrate(parse_dsn(f"postgresql://{role}:{secret}@{host}_missing"), policy=FAST)
        assert secret not in info.value.message and "does not exist" in info.value.message
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_a_dead_database_is_retried_then_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, make_funding(5), "f.parquet")
    dead = parse_dsn("postgresql://varon@127.0.0.1:1/varon")
    with caplog.at_level(logging.WARNING, logger="varon.db"), pytest.raises(DbUnavailable) as info:
        load_file(dead, path, settings())
    assert "unavailable after 3 attempts" in info.value.message and "\n" not in info.value.message
    assert info.value.exit_code == 69
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 2


def test_a_database_that_goes_away_mid_load_is_retried(db: Dsn, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    trades = make_trades(1000)
    killed = []

    def kill_loader(stats) -> None:  # noqa: ANN001 - after the first batch, cut the loader's connection
        if not killed:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                killed.extend(conn.execute("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                              WHERE application_name = 'varon' AND datname = %s""",
                                           (db.text.rsplit("/", 1)[1],)).fetchall())

    from varon_cli.db import load as load_module
    from varon_cli.streamio import open_input

    with caplog.at_level(logging.WARNING, logger="varon.db"), open_input(write(tmp_path, trades, "t.parquet"), (TRADES,)) as src:
        stats = load_module.load_stream(db, src, TABLES["trades"], {}, settings(batch_rows=250), kill_loader)
    assert killed and stats.rows_added == trades.num_rows and count(db, "trades") == trades.num_rows
    assert any("retrying in" in r.getMessage() for r in caplog.records)


# -- audit logs --------------------------------------------------------------------------------
def write_log(path: Path, records: int) -> Path:
    with AuditLog(path) as log:
        for i in range(records):
            log.append("signal" if i % 3 else "order_intent", symbol="BTC-USD", target=i / 10, stop=float("nan"),
                       note="café ✓", cloid=f"0x{i:04x}", size=1e-05 * i, nested={"a": [1, 2.5, None]})
    return path


def tamper(dsn: Dsn, sql: str, params: tuple) -> None:
    """As a superuser who disables the append-only trigger first."""
    with psycopg.connect(dsn.text, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        try:
            conn.execute(sql, params)
        finally:
            conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")


def test_audit_log_load_verify_and_tampering_named(pg: Dsn, tmp_path: Path) -> None:
    executor = f"exec-{uuid.uuid4().hex[:6]}"
    path = write_log(tmp_path / f"{executor}.jsonl", 20)
    assert load_audit(pg, path, executor).rows_added == 20
    assert load_audit(pg, path, executor).rows_added == 0  # again: nothing
    write_log(path, 5)  # the executor goes on: 5 more records
    assert load_audit(pg, path, executor).rows_added == 5
    assert [(c.rows, c.ok) for c in check_all(pg, executor)] == [(25, True)]

    tamper(pg, "UPDATE audit_log SET record = jsonb_set(record, '{target}', '9.9') WHERE executor = %s AND seq = 7",
           (executor,))
    with pytest.raises(AuditError) as info:
        check_all(pg, executor)
    assert f"executor {executor}: record 7:" in info.value.message and "\n" not in info.value.message


def test_audit_rewritten_line_and_deleted_row_are_found(pg: Dsn, tmp_path: Path) -> None:
    import hashlib
    import json

    from varon_cli.execution.audit import record_hash

    a, b = f"exec-{uuid.uuid4().hex[:6]}", f"exec-{uuid.uuid4().hex[:6]}"
    for executor in (a, b):
        load_audit(pg, write_log(tmp_path / f"{executor}.jsonl", 12), executor)
    # a: record 5 rewritten consistently (its own hash recomputed): record 6 no longer follows it.
    line = psycopg.connect(pg.text).execute("SELECT line FROM audit_log WHERE executor = %s AND seq = 5", (a,)).fetchone()[0]
    record = json.loads(line)
    record["target"] = 99.0
    record["hash"] = record_hash(record)
    new_line = json.dumps(record, separators=(",", ":"))
    tamper(pg, "UPDATE audit_log SET line = %s, record = %s::jsonb, hash = %s WHERE executor = %s AND seq = 5",
           (new_line, new_line, record["hash"], a))
    assert hashlib.sha256(new_line.encode()).hexdigest() != hashlib.sha256(line.encode()).hexdigest()
    # b: record 9 deleted.
    tamper(pg, "DELETE FROM audit_log WHERE executor = %s AND seq = 9", (b,))
    checks = {c.executor: c for c in verify_audit(pg)}
    assert (checks[a].broken_seq, checks[a].rows) == (6, 5) and "does not follow record 5" in checks[a].reason
    assert (checks[b].broken_seq, checks[b].rows) == (9, 8) and "missing" in checks[b].reason


def test_audit_file_that_disagrees_with_the_database_is_refused(pg: Dsn, tmp_path: Path) -> None:
    executor = f"exec-{uuid.uuid4().hex[:6]}"
    load_audit(pg, write_log(tmp_path / "one.jsonl", 6), executor)
    with pytest.raises(AuditError, match="record 6 differs"):
        load_audit(pg, write_log(tmp_path / "other.jsonl", 8), executor)  # another log under the same name
    broken = write_log(tmp_path / "broken.jsonl", 4)
    lines = broken.read_bytes().splitlines(keepends=True)
    broken.write_bytes(lines[0] + lines[1].replace(b"BTC-USD", b"ETH-USD") + b"".join(lines[2:]))
    with pytest.raises(AuditError, match="record 2 does not match its hash"):
        load_audit(pg, broken, f"{executor}-b")


# -- DuckDB --------------------------------------------------------------------------------------
def test_duckdb_round_trip(tmp_path: Path) -> None:
    dsn = parse_dsn(f"duckdb:///{tmp_path}/db/varon.duckdb")
    migrate(dsn)
    bars, trades, fills = make_bars(300), make_trades(500), make_fills(100)
    for table, name, kw in ((bars, "bars", {}), (trades, "trades", {}), (fills, "fills", {"executor": "paper"})):
        path = write(tmp_path, table, f"{name}.parquet")
        assert load_file(dsn, path, settings(batch_rows=128), **kw).rows_added == table.num_rows
        assert load_file(dsn, path, settings(), **kw).rows_added == 0
        assert_same_table(export(dsn, name, tmp_path), table)
    assert_same_table(export(dsn, "bars", tmp_path, symbol="ETH-USD", start="2024-01-01T01:00:00"),
                      bars.filter(pa.compute.and_(pa.compute.equal(bars["symbol"], "ETH-USD"),
                                                  pa.compute.greater_equal(bars["ts"].cast(pa.int64()), T0 + 60 * MINUTE))))
    log_path = write_log(tmp_path / "duck.jsonl", 5)
    assert load_audit(dsn, log_path, "duck").rows_added == 5
    assert [(c.executor, c.rows, c.ok) for c in verify_audit(dsn)] == [("duck", 5, True)]


# -- the command ----------------------------------------------------------------------------------
def varon(*args: str, cwd: Path, dsn: Dsn | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env.update(PYTHONPATH=str(REPO), VARON_DB__RETRY_INITIAL="10ms", VARON_DB__ATTEMPTS="2")
    if dsn is not None:
        env["VARON_DB__DSN"] = dsn.text
    return subprocess.run([sys.executable, "-m", "commands.main", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, timeout=120)


@pytest.mark.slow
def test_cli_load_export_into_features(db: Dsn, tmp_path: Path) -> None:
    bars = make_bars(400)
    path = write(tmp_path, bars, "bars.parquet")
    loaded = varon("db", "load", "-i", path, cwd=tmp_path, dsn=db)
    assert loaded.returncode == 0, loaded.stderr.decode()
    assert b"market_data: 1200 rows read, 1200 added" in loaded.stderr and loaded.stdout == b""
    exported = varon("db", "export", "bars", "--symbol", "BTC-USD", "--start", "2024-01-01", cwd=tmp_path, dsn=db)
    assert exported.returncode == 0, exported.stderr.decode()
    features = varon("features", "-o", "feat.parquet", cwd=tmp_path, stdin=exported.stdout)
    assert features.returncode == 0, features.stderr.decode()
    feat = pq.read_table(tmp_path / "feat.parquet")
    assert feat.schema.metadata[b"varon.kind"] == b"features" and feat.num_rows == 400
    # Piped straight back in: the same rows, nothing added.
    again = varon("db", "load", cwd=tmp_path, dsn=db, stdin=exported.stdout)
    assert again.returncode == 0 and b"400 rows read, 0 added" in again.stderr


@pytest.mark.slow
def test_cli_errors_are_one_line(db: Dsn, tmp_path: Path) -> None:
    path = write(tmp_path, make_trades(10), "t.parquet")
    wrong = varon("db", "load", "-i", path, "--table", "market_data", cwd=tmp_path, dsn=db)
    lines = wrong.stderr.decode().strip().splitlines()
    assert wrong.returncode == 65 and lines == [f"varon db: error: {path}: a trades stream cannot be loaded into "
                                                "market_data, which holds bars streams"]
    dead = varon("db", "export", "trades", "--dsn", "postgresql://u:hunter2@127.0.0.1:1/x", cwd=tmp_path)
    text = dead.stderr.decode()
    assert dead.returncode == 69 and "hunter2" not in text and text.strip().splitlines()[-1].startswith("varon db: error:")
    assert "--dsn carries a password" in text
    log = write_log(tmp_path / "ex.jsonl", 3)
    assert varon("db", "load", "-i", str(log), cwd=tmp_path, dsn=db).returncode == 0
    ok = varon("db", "verify-audit", "--executor", "ex", cwd=tmp_path, dsn=db)
    assert ok.returncode == 0 and b"audit_log ex: 3 records, chain intact" in ok.stderr


def test_progress_is_log_lines_away_from_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    from varon_cli.db.load import LoadStats
    from varon_cli.db.progress import LoadProgress

    with caplog.at_level(logging.INFO, logger="varon.db.load"), LoadProgress("in.parquet", live=False, every=0) as report:
        report(LoadStats("trades", rows_read=2_000_000, rows_added=1_500_000, batches=2, seconds=4.0))
    assert [r.getMessage() for r in caplog.records] == [
        "in.parquet -> trades: 2,000,000 rows read, 1,500,000 added, 500,000 rows/s"]

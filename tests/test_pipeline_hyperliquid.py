"""The whole live pipeline ending on Hyperliquid (the fake) agrees with the same pipeline on the paper venue.

`collect replay | bars | features | signal` runs as real processes on the
bundled real trades (relabelled BTC-USD, the symbol Hyperliquid lists). Its
signals go to two executors: the paper venue, and `execute --venue
hyperliquid` against the fake. A small relay in the test sits before the
Hyperliquid executor and moves the fake's market: before it hands over the
decision of bar t it sets the fake's mid to bar t+1's open, the first price
after the decision, which is exactly where the paper venue fills it. The fake
then fills at its ask or bid (2 bps spread, outward on the price grid) and
the paper venue at that open plus 1 bp slippage, so the two agree fill for
fill up to the venue's price step and lot size.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from fakes.hyperliquid_venue import FakeHyperliquidVenue
from hl_support import AGENT, REPO, USER, VARON, audit, execute_args, fills, hl_env, triggers

pytestmark = pytest.mark.slow


def _usd_trades(tmp_path: Path) -> Path:
    table = pq.read_table(REPO / "data" / "sample" / "btcusdt-trades.parquet")
    table = table.set_column(table.schema.get_field_index("symbol"), "symbol",
                             pa.array(["BTC-USD"] * table.num_rows, pa.string()))
    path = tmp_path / "btcusd-trades.parquet"
    pq.write_table(table, path)
    return path


def _signals(tmp_path: Path, state: Path) -> pa.Table:
    trades = _usd_trades(tmp_path)
    varon = " ".join(VARON)
    shell = (f"{varon} collect replay {trades} --speed max | {varon} bars --interval 1s"
             f" | {varon} features --spec configs/features-fast.toml"
             f" | {varon} signal --strategy ema-cross --param fast=2 --param slow=5")
    done = subprocess.run(shell, shell=True, cwd=REPO, env=hl_env(state), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return ipc.open_stream(done.stdout).read_all()


def _paper(signals: pa.Table, tmp_path: Path, state: Path) -> list[dict]:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, signals.schema) as writer:
        writer.write_table(signals)
    out = tmp_path / "paper"
    out.mkdir()
    done = subprocess.run([*VARON, "execute", "--venue", "paper", "--clock", "event", "--name", "paper",
                           "-o", str(out / "fills.arrows")], cwd=REPO, env=hl_env(state),
                          input=sink.getvalue().to_pybytes(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return fills(out)


def _hyperliquid(signals: pa.Table, fake: FakeHyperliquidVenue, tmp_path: Path, state: Path) -> list[dict]:
    out = tmp_path / "hl"
    out.mkdir()
    proc = subprocess.Popen(execute_args(fake.url, out) + ["--name", "hl"], cwd=REPO, env=hl_env(state),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    writer = ipc.new_stream(proc.stdin, signals.schema)
    opens = signals.column("bar_open").to_pylist()
    try:
        for i in range(signals.num_rows - 1):  # the last decision has no next price: the paper venue cancels it
            fake.set_mid("BTC", opens[i + 1])
            writer.write_table(signals.slice(i, 1))
            proc.stdin.flush()
            deadline = time.monotonic() + 20
            log = state / "audit" / "hl.jsonl"
            while not log.exists() or sum(r["kind"] == "signal" for r in audit(state, "hl")) < i + 1:  # handled
                assert time.monotonic() < deadline, "the executor did not take the signal in time"
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.01)
    finally:
        writer.close()
        proc.stdin.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=30)
    assert code == 0, err
    return fills(out)


def test_the_pipeline_on_hyperliquid_fills_what_the_paper_venue_fills(tmp_path: Path) -> None:
    state = tmp_path / "state"
    signals = _signals(tmp_path, state)
    assert signals.num_rows > 20 and pc.all(pc.equal(signals.column("symbol"), "BTC-USD")).as_py()
    paper = _paper(signals, tmp_path, state)
    with FakeHyperliquidVenue(user=USER, agents={AGENT: USER}, mids={"BTC": signals.column("price")[0].as_py()},
                              spread_bps=2.0) as fake:
        live = _hyperliquid(signals, fake, tmp_path, state)
        assert fake.errors == []
        held = fake.position("BTC")
        stops = triggers(fake)
    decided = {r["cloid"]: r for r in paper if r["reason"] in ("entry", "exit", "reduce", "flip")}
    venue = {r["cloid"]: r for r in live if r["reason"] in ("entry", "exit", "reduce", "flip")}
    assert len(decided) >= 4, decided
    assert venue.keys() == decided.keys()  # the same decisions became the same orders
    for cloid, mine in venue.items():
        theirs = decided[cloid]
        assert mine["side"] == theirs["side"]
        assert mine["price"] == pytest.approx(theirs["price"], abs=1.0)  # BTC's price step at 5 significant figures
        assert mine["size"] == pytest.approx(theirs["size"], rel=2e-3, abs=1e-5)  # lots of 0.00001 BTC
        assert mine["fee"] == pytest.approx(theirs["fee"], rel=2e-3, abs=1e-4)
        assert mine["venue_order_id"] != ""
    # whatever is still open on the venue is protected by exactly one stop
    assert (held == 0.0 and stops == []) or (held != 0.0 and len(stops) == 1)

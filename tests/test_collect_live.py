"""`varon collect` as a subprocess against the fake exchanges (tests/fakes/).

The fakes speak the real protocols and misbehave on request; these tests hold
the collector to its promises: every trade the server sent arrives exactly once
through drops, gaps and stalls, a capture replays to the same bytes, recording
survives kill -9, and bad input is counted while the collector carries on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from fakes.coinbase_ws import CoinbaseWsFake, Fault
from fakes.tape import synthetic_tape
from varon_cli.recorder import recover
from varon_cli.schemas import BOOK, TRADES
from varon_cli.streamio import open_input

REPO = Path(__file__).resolve().parents[1]
VARON = [sys.executable, "-m", "commands.main"]
pytestmark = pytest.mark.slow

FAST = {  # quick reconnects so the tests take seconds, not minutes
    "VARON_COLLECT__WATCHDOG": "1s",
    "VARON_COLLECT__BACKOFF_INITIAL": "50ms",
    "VARON_COLLECT__BACKOFF_MAX": "300ms",
    "VARON_COLLECT__WATERMARK_DELAY": "200ms",
}


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    out.update(FAST)
    out.update(extra)
    return out


def collect(*args: str, stdout=subprocess.DEVNULL, **extra: str) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen([*VARON, "collect", *args], cwd=REPO, env=env(**extra), stdout=stdout,
                            stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err.decode()


def read(path: Path, kind=TRADES) -> pa.Table:  # noqa: ANN001
    with open_input(str(path), expect=(kind,)) as src:
        return src.read_all()


def trade_ids(table: pa.Table, symbol: str) -> list[str]:
    return [tid for tid, sym in zip(table.column("trade_id").to_pylist(), table.column("symbol").to_pylist())
            if sym == symbol]


def assert_exactly_once(table: pa.Table, fake, products: list[str]) -> None:  # noqa: ANN001
    for product in products:
        got = trade_ids(table, product)
        assert len(got) == len(set(got)), f"{product}: duplicates"
        assert set(got) == {str(i) for i in fake.sent_trade_ids(product)}, f"{product}: lost or invented trades"


def test_every_sent_trade_arrives_once_through_a_drop_a_gap_and_a_stall_and_the_capture_replays_exactly(
        tmp_path: Path) -> None:
    products = ["BTC-USD", "ETH-USD"]
    tape = synthetic_tape(products, 240, seed=3)
    plan = [Fault("drop", after_trades=120), Fault("skip_sequence", after_trades=240),
            Fault("stall", after_trades=360, seconds=2.0)]
    live, capture = tmp_path / "live.arrows", tmp_path / "capture.jsonl.zst"
    with CoinbaseWsFake("advanced", tape, rate=120, heartbeat_interval=0.1, plan=plan) as fake:
        proc = collect("coinbase", "--symbols", ",".join(products), "--url", fake.url, "--raw-out", str(capture),
                       "-o", str(live), "--book-out", str(tmp_path / "book.arrows"))
        fake.wait_done(timeout=40)
        time.sleep(0.5)
        code, err = stop(proc)
    assert code == 130, err
    assert fake.faults_done["drop"] == 1 and fake.faults_done["skip_sequence"] == 1 and fake.faults_done["stall"] == 1
    assert fake.connections >= 4, err  # first, after the drop, after the gap, after the watchdog
    assert "sequence gap" in err and "watchdog" in err
    table = read(live)
    assert table.num_rows > 0
    assert_exactly_once(table, fake, products)

    replayed = tmp_path / "replay.arrows"
    done = subprocess.run([*VARON, "collect", "replay", str(capture), "-o", str(replayed),
                           "--book-out", str(tmp_path / "book-replay.arrows")],
                          cwd=REPO, env=env(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert replayed.read_bytes() == live.read_bytes()
    assert (tmp_path / "book-replay.arrows").read_bytes() == (tmp_path / "book.arrows").read_bytes()


def test_exchange_feed_gap_refreshes_only_that_product(tmp_path: Path) -> None:
    products = ["BTC-USD", "ETH-USD"]
    tape = synthetic_tape(products, 60, seed=5)
    with CoinbaseWsFake("exchange", tape, rate=100, heartbeat_interval=0.1,
                        plan=[Fault("skip_sequence", after_trades=40)]) as fake:
        out, book = tmp_path / "t.arrows", tmp_path / "b.arrows"
        proc = collect("coinbase", "--feed", "exchange", "--symbols", ",".join(products), "--url", fake.url,
                       "-o", str(out), "--book-out", str(book))
        fake.wait_done(timeout=30)
        time.sleep(0.5)
        code, err = stop(proc, signal.SIGTERM)
    assert code == 143, err
    assert "trade-id gap" in err
    unsubscribes = [m for m in fake.received if isinstance(m, dict) and m.get("type") == "unsubscribe"]
    assert len(unsubscribes) == 1
    refreshed = {p for c in unsubscribes[0]["channels"] for p in c["product_ids"]}
    assert len(refreshed) == 1 and fake.connections == 1
    assert_exactly_once(read(out), fake, products)
    books = read(book, BOOK)
    snapshots = {}
    for symbol, snap in zip(books.column("symbol").to_pylist(), books.column("snapshot").to_pylist()):
        if snap:
            snapshots[symbol] = snapshots.get(symbol, 0) + 1
    (gapped,) = refreshed
    other = next(p for p in products if p != gapped)
    assert snapshots[gapped] == 2 * snapshots[other]  # the gapped product got a fresh snapshot, the other did not


def test_bad_frames_and_a_refused_product_are_counted_while_collect_carries_on(tmp_path: Path) -> None:
    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 60, seed=9)
    # a frame that is not JSON hides its sequence number: the collector must resync, so it comes last
    plan = [Fault("reject_subscription", target="ETH-USD")] + [
        Fault("malformed", after_trades=10 + 20 * i, variant=v)
        for i, v in enumerate(["unknown_type", "missing_field", "bad_price", "truncated"])]
    with CoinbaseWsFake("advanced", tape, rate=200, heartbeat_interval=0.1, plan=plan) as fake:
        out = tmp_path / "t.arrows"
        proc = collect("coinbase", "--symbols", "BTC-USD,ETH-USD", "--url", fake.url, "-o", str(out))
        fake.wait_done(timeout=30)
        time.sleep(0.3)
        code, err = stop(proc)
    assert code == 130
    assert fake.faults_done["malformed"] == 4
    assert "venue error" in err and "is not a valid product" in err
    assert "malformed frame skipped" in err and "unknown message" in err and "bad value skipped" in err
    summary = next(line for line in err.splitlines() if "frames," in line)
    assert "1 unknown" in summary and "1 bad values" in summary
    assert "2 malformed" in summary  # not JSON, and a trade without its price
    assert "1 sequence gaps" in summary  # only the frame that is not JSON: the others' numbers were read
    table = read(out)
    assert set(table.column("symbol").to_pylist()) == {"BTC-USD"}
    assert_exactly_once(table, fake, ["BTC-USD"])


def test_an_unreachable_venue_is_retried_then_a_clear_error(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = collect("coinbase", "--symbols", "BTC-USD", "--url", "ws://127.0.0.1:9", "--max-retries", "2")
    _, err = proc.communicate(timeout=30)
    err = err.decode()
    assert proc.returncode == 1
    assert err.count("reconnecting in") == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("varon collect: error: ws://127.0.0.1:9: giving up after 3 failed attempt(s)")
    assert time.monotonic() - started < 20


def test_recording_to_a_dataset_survives_kill_9_losing_at_most_the_last_second(tmp_path: Path) -> None:
    products = ["BTC-USD", "ETH-USD"]
    tape = synthetic_tape(products, 80, seed=11)
    dataset, capture = tmp_path / "trades", tmp_path / "cap.jsonl.zst"
    with CoinbaseWsFake("advanced", tape, rate=200, heartbeat_interval=0.1) as fake:
        proc = collect("coinbase", "--symbols", ",".join(products), "--url", fake.url, "-o", str(dataset),
                       "--raw-out", str(capture))
        fake.wait_done(timeout=30)
        time.sleep(1.6)  # more than a second after the last trade
        proc.kill()
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert not list(dataset.rglob("*.parquet"))  # the hour was still open: rows sit in the spool
    recovered = recover(dataset, TRADES.schema_with())
    table = read(dataset)
    assert recovered == table.num_rows
    assert_exactly_once(table, fake, products)
    # the capture was synced too: its replay holds the same trades
    replayed = tmp_path / "replayed.arrows"
    done = subprocess.run([*VARON, "collect", "replay", str(capture), "-o", str(replayed)], cwd=REPO, env=env(),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(read(replayed).column("trade_id").to_pylist()) == \
        sorted(table.column("trade_id").to_pylist())


def test_a_slow_reader_fills_the_buffer_loudly_and_loses_nothing(tmp_path: Path) -> None:
    tape = synthetic_tape(["BTC-USD"], 6000, seed=13)
    with CoinbaseWsFake("advanced", tape, rate=float("inf"), heartbeat_interval=0.2) as fake:
        proc = collect("coinbase", "--symbols", "BTC-USD", "--url", fake.url, stdout=subprocess.PIPE,
                       VARON_COLLECT__BUFFER_ROWS="1000", VARON_COLLECT__WATCHDOG="30s")
        time.sleep(3)  # nobody reads stdout: the pipe fills, then the collector's buffer
        reader = ipc.open_stream(proc.stdout)
        batches = []
        done = threading.Event()

        def read_all() -> None:
            for batch in reader:
                batches.append(batch)
            done.set()

        thread = threading.Thread(target=read_all, daemon=True)
        thread.start()
        fake.wait_done(timeout=30)
        time.sleep(0.5)
        code, err = stop(proc)
        done.wait(10)
        thread.join(10)
    assert code == 130, err
    assert "output buffer full" in err
    table = pa.Table.from_batches([b for b in batches if b.num_rows], schema=reader.schema)
    assert_exactly_once(table, fake, ["BTC-USD"])


def test_an_idle_market_still_closes_bars_through_watermarks(tmp_path: Path) -> None:
    # watermarks follow the local clock (exchange time is about local time), so the tape starts now
    tape = synthetic_tape(["BTC-USD"], 40, start_ns=time.time_ns(), seed=17, mean_gap_ms=5)
    with CoinbaseWsFake("advanced", tape, rate=200, heartbeat_interval=0.1) as fake:
        up = collect("coinbase", "--symbols", "BTC-USD", "--url", fake.url, stdout=subprocess.PIPE)
        down = subprocess.Popen([*VARON, "bars", "--interval", "1s"], cwd=REPO, env=env(), stdin=up.stdout,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        up.stdout.close()
        bars: list[pa.RecordBatch] = []
        reader_done = threading.Event()

        def read_bars() -> None:
            for batch in ipc.open_stream(down.stdout):
                if batch.num_rows:
                    bars.append(batch)
            reader_done.set()

        threading.Thread(target=read_bars, daemon=True).start()
        fake.wait_done(timeout=30)
        last_trade_ns = max(t.time_ns for t in tape)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            closed = [ts for b in bars for ts in b.column("ts").cast(pa.int64()).to_pylist()]
            if closed and max(closed) >= last_trade_ns // 10**9 * 10**9:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the last bar was not closed while the market was idle")
        assert up.poll() is None  # closed by a watermark, not by the end of input
        stop(up)
        down.communicate(timeout=20)
        reader_done.wait(10)


def test_hyperliquid_trades_books_and_funding_with_a_reconnect(tmp_path: Path) -> None:
    from fakes.hyperliquid_info import FakeHyperliquidInfo
    from fakes.hyperliquid_ws import HyperliquidWsFake

    from varon_cli.schemas import FUNDING

    tape = synthetic_tape(["BTC-USD", "ETH-USD"], 60, seed=19)
    out, book, funding = tmp_path / "t.arrows", tmp_path / "b.arrows", tmp_path / "f.arrows"
    with FakeHyperliquidInfo() as info, \
            HyperliquidWsFake(tape, rate=100, book_interval=0.2, plan=[Fault("drop", after_trades=60)]) as fake:
        proc = collect("hyperliquid", "--symbols", "BTC,ETH-USD", "--url", fake.url, "--info-url", info.url,
                       "-o", str(out), "--book-out", str(book), "--funding-out", str(funding),
                       VARON_COLLECT__FUNDING_INTERVAL="300ms")
        fake.wait_done(timeout=30)
        time.sleep(0.8)
        code, err = stop(proc)
    assert code == 130, err
    assert fake.connections == 2
    table = read(out)
    for product in ("BTC-USD", "ETH-USD"):
        got = trade_ids(table, product)
        assert len(got) == len(set(got))
        assert set(got) == {str(i) for i in fake.sent_trade_ids(product)}
    assert set(table.column("venue").to_pylist()) == {"hyperliquid"}
    books = read(book, BOOK)
    assert books.num_rows > 0 and all(books.column("snapshot").to_pylist())
    rates = read(funding, FUNDING)
    assert set(rates.column("symbol").to_pylist()) == {"BTC-USD", "ETH-USD"}
    assert rates.num_rows >= 4  # several polls
    assert all(0 < p for p in rates.column("mark_price").to_pylist())


def test_a_trades_file_replays_with_its_timing(tmp_path: Path) -> None:
    source = REPO / "data" / "sample" / "btcusdt-trades.parquet"  # 2,001 prints over 46 s
    out = tmp_path / "fast.arrows"
    started = time.monotonic()
    done = subprocess.run([*VARON, "collect", "replay", str(source), "--speed", "25", "-o", str(out)], cwd=REPO,
                          env=env(), capture_output=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()
    with open_input(str(source), expect=(TRADES,)) as src:
        original = src.read_all()
    replayed = read(out)
    assert replayed.equals(original.select(replayed.column_names))
    assert elapsed >= 45.9 / 25 * 0.9  # paced by the prints' own times, not as fast as possible
    bad = subprocess.run([*VARON, "collect", "replay", str(source), "--speed", "fast"], cwd=REPO, env=env(),
                         capture_output=True, timeout=60)
    assert bad.returncode == 64 and b"--speed 'fast'" in bad.stderr


def test_a_capture_replays_at_a_multiple_of_its_recorded_speed(tmp_path: Path) -> None:
    capture = REPO / "data" / "sample" / "coinbase-capture.jsonl.zst"
    timed = {}
    for speed in ("max", "2"):
        out = tmp_path / f"{speed}.arrows"
        started = time.monotonic()
        done = subprocess.run([*VARON, "collect", "replay", str(capture), "--speed", speed, "-o", str(out)],
                              cwd=REPO, env=env(), capture_output=True, timeout=60)
        timed[speed] = time.monotonic() - started
        assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "max.arrows").read_bytes() == (tmp_path / "2.arrows").read_bytes()  # pace changes no byte
    assert read(tmp_path / "max.arrows").num_rows == 2001
    assert timed["2"] > timed["max"] + 0.5  # the recording spans about 3 s: half of it at 2x

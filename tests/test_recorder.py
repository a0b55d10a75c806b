"""RecordingSink: the live `collect -o DIR` dataset, its rotation, and what survives a crash."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from varon_cli.recorder import SPOOL_DIR, RecordingSink, recover
from varon_cli.schemas import TRADES
from varon_cli.streamio import open_input

SCHEMA = TRADES.schema_with()
ROWS_PER_BATCH = 10
MIDNIGHT_NS = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z
HOUR_NS = 3_600_000_000_000
PARTITIONS = [("coinbase", "BTC-USD"), ("hyperliquid", "ETH-USD")]
REPO = Path(__file__).resolve().parents[1]


def trades_batch(i: int, start_ns: int = MIDNIGHT_NS - 60_000_000_000, step_ns: int = 1_000_000_000) -> pa.RecordBatch:
    """Batch i of a deterministic feed: alternating partitions, ts rising by `step_ns` per row across batches."""
    venue, symbol = PARTITIONS[i % len(PARTITIONS)]
    first = i * ROWS_PER_BATCH
    ts = [start_ns + (first + j) * step_ns for j in range(ROWS_PER_BATCH)]
    return pa.RecordBatch.from_pydict(
        {
            "ts": pa.array(ts, pa.timestamp("ns", tz="UTC")),
            "recv_ts": pa.array([t + 5_000_000 for t in ts], pa.timestamp("ns", tz="UTC")),
            "venue": [venue] * ROWS_PER_BATCH,
            "symbol": [symbol] * ROWS_PER_BATCH,
            "trade_id": [str(first + j) for j in range(ROWS_PER_BATCH)],
            "price": [100.0 + first + j for j in range(ROWS_PER_BATCH)],
            "size": [0.5] * ROWS_PER_BATCH,
            "side": ["buy" if j % 2 else "sell" for j in range(ROWS_PER_BATCH)],
            "seq": pa.array([first + j for j in range(ROWS_PER_BATCH)], pa.int64()),
        },
        schema=SCHEMA,
    )


class FakeClock:
    def __init__(self, now_ns: int) -> None:
        self.now = now_ns

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def collect_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture varon.collect directly: configure_logging (run by CLI tests) stops `varon` propagating to the root."""
    logger = logging.getLogger("varon.collect")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def read_dataset(directory: Path) -> pa.Table:
    with open_input(str(directory), [TRADES]) as stream:
        return stream.read_all()


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("part-*.parquet"))


def spools(directory: Path) -> list[Path]:
    return sorted((directory / SPOOL_DIR).iterdir())


def leftovers(directory: Path) -> list[Path]:
    """Temporary files, hidden or not, that a finished write must not leave."""
    return [p for p in directory.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith("."))]


def test_round_trip_partitions_by_venue_symbol_and_utc_date(tmp_path: Path) -> None:
    out = tmp_path / "trades"
    batches = [trades_batch(i) for i in range(16)]  # 160 rows, 1 s apart, from 23:59 to 00:01:40
    with RecordingSink(out, SCHEMA) as sink:
        for b in batches:
            sink.write(b)
    expected = pa.Table.from_batches(batches)

    folders = {str(p.parent.relative_to(out)) for p in part_files(out)}
    assert folders == {
        f"venue={v}/symbol={s}/date={d}" for v, s in PARTITIONS for d in ("2024-12-31", "2025-01-01")
    }
    assert len(part_files(out)) == 4 and spools(out) == [] and leftovers(out) == []
    meta = pq.ParquetFile(part_files(out)[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"

    got = read_dataset(out)
    assert got.schema.names == SCHEMA.names
    assert got.num_rows == expected.num_rows
    for venue, symbol in PARTITIONS:
        mine = lambda t: t.filter((pc.field("venue") == venue) & (pc.field("symbol") == symbol))  # noqa: E731
        assert mine(got).equals(mine(expected))


def test_part_file_keeps_arrival_order(tmp_path: Path) -> None:
    """Rows arrive out of event-time order (several connections); a part file keeps them as received."""
    out = tmp_path / "trades"
    late, early = trades_batch(0, start_ns=MIDNIGHT_NS + HOUR_NS), trades_batch(2, start_ns=MIDNIGHT_NS)
    with RecordingSink(out, SCHEMA) as sink:
        sink.write(late)
        sink.write(early)
    (only,) = part_files(out)
    assert pq.read_table(only)["trade_id"].to_pylist() == late["trade_id"].to_pylist() + early["trade_id"].to_pylist()


def test_rotation_writes_a_file_per_hour_and_renames_it_into_place(tmp_path: Path) -> None:
    out = tmp_path / "trades"
    clock = FakeClock(MIDNIGHT_NS + 10 * HOUR_NS + HOUR_NS - 1)  # 10:59:59.999999999
    sink = RecordingSink(out, SCHEMA, clock=clock)
    sink.write(trades_batch(0, start_ns=MIDNIGHT_NS))
    sink.write(trades_batch(1, start_ns=MIDNIGHT_NS))
    assert part_files(out) == []  # nothing in Parquet before the hour ends

    clock.now += 1  # 11:00: this write rotates hour 10 into Parquet and starts a new spool
    sink.write(trades_batch(2, start_ns=MIDNIGHT_NS))
    assert [p.name.split("-")[1] for p in part_files(out)] == ["20250101T10", "20250101T10"]
    assert read_dataset(out)["trade_id"].to_pylist() == [str(i) for i in range(20)]  # readable mid-run
    assert len(spools(out)) == 1

    clock.now += HOUR_NS  # 12:00 with no trade since: the timer's sync closes hour 11
    sink.sync()
    assert sorted(p.name.split("-")[1] for p in part_files(out)) == ["20250101T10", "20250101T10", "20250101T11"]
    assert spools(out) == []
    sink.commit()
    assert len(part_files(out)) == 3 and leftovers(out) == []
    assert read_dataset(out)["trade_id"].to_pylist() == [str(i) for i in range(30)]


def test_restart_in_the_same_hour_adds_a_file(tmp_path: Path) -> None:
    out = tmp_path / "trades"
    clock = FakeClock(MIDNIGHT_NS + 5 * HOUR_NS)
    for i in (0, 2):  # the same partition twice, in two runs
        with RecordingSink(out, SCHEMA, clock=clock) as sink:
            sink.write(trades_batch(i, start_ns=MIDNIGHT_NS))
    files = part_files(out)
    assert len(files) == 2 and files[0].parent == files[1].parent
    assert read_dataset(out)["trade_id"].to_pylist() == [str(i) for i in range(10)] + [str(i) for i in range(20, 30)]


def test_empty_run_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "trades"
    with RecordingSink(out, SCHEMA) as sink:
        sink.write(trades_batch(0).slice(0, 0))
    assert part_files(out) == [] and spools(out) == [] and leftovers(out) == []


def test_sync_makes_rows_readable_in_the_spool(tmp_path: Path) -> None:
    out = tmp_path / "trades"
    sink = RecordingSink(out, SCHEMA, sync_interval_s=3600)
    sink.write(trades_batch(0))
    sink.sync()
    (spool,) = spools(out)
    assert ipc.open_stream(pa.memory_map(str(spool))).read_all().num_rows == ROWS_PER_BATCH
    sink.commit()

    due = RecordingSink(out, SCHEMA, sync_interval_s=0)  # every write is due
    due.write(trades_batch(1))
    (spool,) = spools(out)
    assert ipc.open_stream(pa.memory_map(str(spool))).read_all().num_rows == ROWS_PER_BATCH
    due.commit()


def test_failed_run_keeps_its_rows_for_the_next_recorder(tmp_path: Path, collect_log: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "trades"
    with pytest.raises(RuntimeError), RecordingSink(out, SCHEMA) as sink:
        sink.write(trades_batch(0))
        sink.write(trades_batch(1))
        raise RuntimeError("feed broke")
    assert part_files(out) == [] and len(spools(out)) == 1
    assert "20 received rows are kept" in collect_log.text

    # Same pid, still alive: the spool is recovered all the same, because nobody holds its lock.
    with RecordingSink(out, SCHEMA):
        pass
    assert spools(out) == []
    assert read_dataset(out)["trade_id"].to_pylist() == [str(i) for i in range(20)]


def test_a_live_writers_spool_is_not_taken(tmp_path: Path) -> None:
    """A second recorder on the same directory (another collector) must leave a running one's spool alone."""
    out = tmp_path / "trades"
    first = RecordingSink(out, SCHEMA, sync_interval_s=0)
    first.write(trades_batch(0))
    with RecordingSink(out, SCHEMA):
        pass
    assert part_files(out) == [] and len(spools(out)) == 1
    first.write(trades_batch(2))
    first.commit()
    assert read_dataset(out).num_rows == 2 * ROWS_PER_BATCH


def test_torn_spool_tail_is_dropped_with_a_warning(tmp_path: Path, collect_log: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "trades"
    sink = RecordingSink(out, SCHEMA, sync_interval_s=0)
    sizes = []
    for i in range(3):
        sink.write(trades_batch(i))
        sizes.append(spools(out)[0].stat().st_size)
    sink.discard()
    (spool,) = spools(out)
    os.truncate(spool, (sizes[1] + sizes[2]) // 2)  # a kill -9 in the middle of the third batch

    assert recover(out, SCHEMA) == 2 * ROWS_PER_BATCH
    assert "torn tail after 20 rows" in collect_log.text
    assert spools(out) == []
    assert read_dataset(out)["trade_id"].to_pylist() == [str(i) for i in range(20)]


def test_converting_a_spool_twice_does_not_duplicate_rows(tmp_path: Path) -> None:
    """A crash after the part files are renamed but before the spool is deleted converts it again."""
    out = tmp_path / "trades"
    sink = RecordingSink(out, SCHEMA)
    for i in range(4):
        sink.write(trades_batch(i))
    sink.discard()
    (spool,) = spools(out)
    copy = tmp_path / "spool-copy"
    shutil.copyfile(spool, copy)
    assert recover(out, SCHEMA) == 40
    first = part_files(out)

    shutil.copyfile(copy, spool)  # as if the deletion never happened
    assert recover(out, SCHEMA) == 40
    assert part_files(out) == first
    assert read_dataset(out).num_rows == 40


def test_spool_of_another_stream_is_left_alone(tmp_path: Path, collect_log: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "trades"
    sink = RecordingSink(out, SCHEMA)
    sink.write(trades_batch(0))
    sink.discard()
    other = pa.schema([("ts", pa.timestamp("ns", tz="UTC")), ("venue", pa.string()), ("symbol", pa.string())])
    assert recover(out, other) == 0
    assert len(spools(out)) == 1 and "holds another stream" in collect_log.text


# -- a real process, killed -------------------------------------------------------

CHILD = """
import itertools, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_recorder import SCHEMA, trades_batch
from varon_cli.recorder import RecordingSink
from varon_cli.runtime import Interrupted, install_signal_handlers

install_signal_handlers()
sink = RecordingSink(Path(sys.argv[1]), SCHEMA, sync_interval_s=float(sys.argv[2]))
pause = float(sys.argv[4])
try:
    with sink:
        for i in itertools.count():
            started = time.monotonic()  # system-wide on Linux: the parent compares it with its own
            sink.write(trades_batch(i))
            print(i, started, flush=True)
            time.sleep(pause)
except Interrupted as exc:
    print("rows", sink.rows_written, flush=True)
    sys.exit(exc.exit_code)
"""


def start_writer(out: Path, sync_interval_s: float, pause_s: float) -> subprocess.Popen:
    """A recorder in a child process, writing batch after batch; after each it prints the index and when its write began."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CHILD, str(out), str(sync_interval_s), str(Path(__file__).parent), str(pause_s)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def wait_for(proc: subprocess.Popen, index: int = 0, began: float = 0.0) -> float:
    """Read the writer's reports up to a batch >= `index` whose write began at or after `began`; return when it began."""
    for line in proc.stdout:
        i, started = line.split()
        if int(i) >= index and float(started) >= began:
            return float(started)
    raise AssertionError(f"writer ended early with code {proc.wait()}")


def expected_ids(rows: int) -> list[str]:
    return [str(i) for i in range(rows)]


@pytest.mark.slow
def test_kill_9_loses_at_most_the_last_sync_interval(tmp_path: Path) -> None:
    out, interval = tmp_path / "trades", 0.2
    # Slow enough that the rows do not fill the spool's buffer (2 kB a batch, 64 kB): only a sync saves them.
    proc = start_writer(out, interval, pause_s=0.05)
    try:
        after_5 = wait_for(proc, index=6)  # batches 0..5 were written before this time ...
        wait_for(proc, began=after_5 + interval)  # ... so this later write found a sync due (or one had happened)
        proc.kill()
    finally:
        proc.wait()
    assert part_files(out) == [] and len(spools(out)) == 1

    recovered = recover(out, SCHEMA)
    ids = read_dataset(out)["trade_id"].to_pylist()
    assert recovered == len(ids) >= 6 * ROWS_PER_BATCH and len(ids) % ROWS_PER_BATCH == 0
    assert ids == expected_ids(len(ids))  # in order, nothing twice, nothing skipped
    assert spools(out) == []


@pytest.mark.slow
def test_sigterm_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "trades"
    proc = start_writer(out, 3600, pause_s=0.005)  # no sync while running: SIGTERM alone must save everything
    try:
        wait_for(proc, index=20)
        proc.send_signal(signal.SIGTERM)
        tail, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    written = int(tail.strip().splitlines()[-1].split()[1])
    assert written >= 21 * ROWS_PER_BATCH
    assert read_dataset(out)["trade_id"].to_pylist() == expected_ids(written)
    assert spools(out) == [] and leftovers(out) == []


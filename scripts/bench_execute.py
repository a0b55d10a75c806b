"""Executor overhead on Hyperliquid: from a signal read to its signed order on the wire (target p99 < 2 ms).

The real live path runs in-process against the fake venue on loopback: the
executor (`LiveExecutor.handle`: risk engine, the order intent appended and
fsynced to the audit log, sizing and rounding, EIP-712 signing, the HTTP
request) with its state directory on disk. The clock starts when a one-row
signal batch is read from the pipe its IPC stream arrives on and stops when the /exchange POST
carrying the IOC leaves for the socket; the venue's answer, the stop-loss
that follows and the state save are after the send and not counted.

Beside it: the official SDK's own `Exchange.order` from the call to the same
POST (signing and wire format only: no risk engine, no audit log), the
floor any SDK-based executor starts from.

Run: .venv/bin/python scripts/bench_execute.py [--signals 400]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import pyarrow as pa  # noqa: E402
import pyarrow.ipc as ipc  # noqa: E402

from hl_support import AGENT, AGENT_KEY, USER, signal_rows  # noqa: E402


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3  # noqa: E731
    return f"p50 {p(0.50):.3f} ms, p90 {p(0.90):.3f} ms, p99 {p(0.99):.3f} ms, max {ordered[-1] * 1e3:.3f} ms"


class _Wire:
    """Stamps the moment an IOC order's request body is handed to the socket (http.client.HTTPConnection.send)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._send = http.client.HTTPConnection.send
        wire = self

        def send(conn, data):  # noqa: ANN001, ANN202
            if isinstance(data, (bytes, bytearray)) and b'"Ioc"' in data:
                wire.stamps.append(time.perf_counter())
            return wire._send(conn, data)

        http.client.HTTPConnection.send = send


def bench_varon(url: str, n: int, state_dir: Path, wire: _Wire) -> list[float]:
    from varon_cli.config import load_config
    from varon_cli.execution.live import ExecuteRequest, LiveExecutor
    from varon_cli.execution.statedir import StateDir

    os.environ["VARON_HL_SECRET_KEY"] = AGENT_KEY
    cfg = load_config(environ={"VARON_HYPERLIQUID__ACCOUNT_ADDRESS": USER, "VARON_RISK__MAX_SIGNAL_AGE": "1000d",
                               "VARON_RISK__DAILY_LOSS_LIMIT": "1", "VARON_RISK__MAX_DRAWDOWN": "1"})
    request = ExecuteRequest(["-"], "-", None, None, "bench", "event", venue="hyperliquid", url=url)
    live = LiveExecutor(cfg, request, 60_000_000_000, StateDir(state_dir))
    live.start_venue()
    samples = []
    read_end, write_end = os.pipe()  # the signals arrive on a pipe, as from `varon signal`
    source = os.fdopen(write_end, "wb", buffering=0)
    writer = reader = None
    for i in range(n):
        target = 1.0 if i % 2 == 0 else -1.0
        table = signal_rows([{"bar": i + 1, "target": target, "close": 60000.0}])
        if writer is None:
            writer = ipc.new_stream(source, table.schema)
        writer.write_table(table)
        if reader is None:
            reader = ipc.open_stream(pa.PythonFile(os.fdopen(read_end, "rb", buffering=0), mode="r"))
        time.sleep(0.003)  # signals come one bar apart; the venue's mids keep streaming meanwhile
        before = len(wire.stamps)
        t0 = time.perf_counter()
        batch = reader.read_next_batch()  # the signal read
        live.handle(batch, [None, None, None])
        if len(wire.stamps) > before:
            samples.append(wire.stamps[before] - t0)
    live.finish()
    return samples


def bench_sdk(url: str, n: int, wire: _Wire) -> list[float]:
    from eth_account import Account
    from hyperliquid.exchange import Exchange

    ex = Exchange(Account.from_key(AGENT_KEY), base_url=url, account_address=USER)
    samples = []
    for i in range(n):
        before = len(wire.stamps)
        t0 = time.perf_counter()
        ex.order("BTC", i % 2 == 0, 0.001, 61000.0 if i % 2 == 0 else 59000.0, {"limit": {"tif": "Ioc"}})
        samples.append(wire.stamps[before] - t0)
    return samples


FAKE = """
import sys, time, select
sys.path[:0] = [{repo!r}, {tests!r}]
from fakes.hyperliquid_venue import FakeHyperliquidVenue
with FakeHyperliquidVenue(user={user!r}, agents={{{agent!r}: {user!r}}}, balance=1e6) as fake:
    print(fake.url, flush=True)
    i = 0
    while not select.select([sys.stdin], [], [], 0.2)[0]:  # mids move every 0.2 s, as blocks push them
        i += 1
        fake.set_mid("BTC", 60000.0 + i % 7)
"""


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signals", type=int, default=400)
    args = parser.parse_args()
    # the venue in its own process: its threads must not share this interpreter's lock with the executor's
    code = FAKE.format(repo=str(REPO), tests=str(REPO / "tests"), user=USER, agent=AGENT)
    fake = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = fake.stdout.readline().strip()
        wire = _Wire()
        with tempfile.TemporaryDirectory(dir=REPO) as tmp:
            varon = bench_varon(url, args.signals, Path(tmp) / "state", wire)
        sdk = bench_sdk(url, args.signals, wire)
    finally:
        fake.stdin.close()
        fake.wait(timeout=10)
    warm = varon[20:]  # numba and the first connection warm up on the first signals
    print(f"varon execute --venue hyperliquid, signal read -> signed IOC on the socket ({len(warm)} signals, audit "
          f"fsync on disk): {percentiles(warm)}")
    print(f"hyperliquid-python-sdk Exchange.order, call -> request on the socket ({len(sdk)} orders, no risk, no "
          f"audit): {percentiles(sdk)}")
    ratio = statistics.median(warm) / statistics.median(sdk)
    p99 = sorted(warm)[int(0.99 * len(warm))]
    print(f"varon / bare SDK (median): {ratio:.2f}x; target p99 < 2 ms: {'met' if p99 < 0.002 else 'NOT met'}")


if __name__ == "__main__":
    main()

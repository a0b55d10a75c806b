"""Shared by the Hyperliquid execution tests: keys, signals, and `varon execute --venue hyperliquid` runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from varon_cli.execution.audit import iter_records
from varon_cli.schemas import FILLS, INTERVAL_KEY, ORDERS, SIGNALS
from varon_cli.streamio import open_input

REPO = Path(__file__).resolve().parents[1]
VARON = [sys.executable, "-m", "commands.main"]
AGENT_KEY = "0x0123456789012345678901234567890123456789012345678901234567890123"
AGENT = "0x14791697260E4c9A71f18484C9f997B308e59325"  # the address of AGENT_KEY (the SDK's test vector)
OTHER_KEY = "0x" + "42" * 32
USER = "0x" + "ab" * 20
MINUTE_NS = 60_000_000_000
T0 = 1_700_000_000_000_000_000 // MINUTE_NS * MINUTE_NS


def signal_rows(rows: list[dict[str, Any]], interval: str = "1m") -> pa.Table:
    """Signals on 1m bars: each row names its bar number, target and optionally close, leverage, sl, tp."""
    schema = SIGNALS.schema_with({INTERVAL_KEY: interval.encode()})
    out: dict[str, list] = {f.name: [] for f in schema}
    for r in rows:
        bar = T0 + int(r["bar"]) * MINUTE_NS
        close = float(r.get("close", 60000.0))
        row = dict(ts=bar + MINUTE_NS, bar_ts=bar, symbol=r.get("symbol", "BTC-USD"), strategy=r.get("strategy", "s1"),
                   target=float(r["target"]), leverage=float(r.get("leverage", 2.0)),
                   stop_loss=float(r.get("sl", math.nan)), take_profit=float(r.get("tp", math.nan)), price=close,
                   model_id=None, venue="hyperliquid", bar_open=close, bar_high=close * 1.001, bar_low=close * 0.999)
        for name in out:
            out[name].append(row[name])
    return pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in out.items()}, schema=schema)


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def write_signals(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(ipc_bytes(signal_rows(rows)))
    return path


def hl_env(state: Path, *, key: str | None = AGENT_KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["VARON_EXECUTE__STATE_DIR"] = str(state)
    env["VARON_HYPERLIQUID__ACCOUNT_ADDRESS"] = USER
    env["VARON_HYPERLIQUID__REQUEST_TIMEOUT"] = "1s"
    if key is not None:
        env["VARON_HL_SECRET_KEY"] = key
    env.update(extra)
    return env


def execute_args(url: str, tmp: Path, *more: str) -> list[str]:
    return [*VARON, "execute", "--venue", "hyperliquid", "--url", url, "--clock", "event", "-o", str(tmp / "fills.arrows"),
            "--orders-out", str(tmp / "orders.arrows"), *more]


def run_execute(url: str, tmp: Path, state: Path, signals: Path | None = None, *more: str,
                timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    args = execute_args(url, tmp, *more) + (["-i", str(signals)] if signals is not None else [])
    return subprocess.run(args, cwd=REPO, env=hl_env(state, **env), capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL if signals is not None else None)


def read_rows(path: Path, kind=FILLS) -> list[dict[str, Any]]:  # noqa: ANN001
    with open_input(str(path), expect=(kind,)) as src:
        table = src.read_all()
    return table.drop_columns(["ts"]).to_pylist()


def orders(tmp: Path) -> list[dict[str, Any]]:
    return read_rows(tmp / "orders.arrows", ORDERS)


def fills(tmp: Path) -> list[dict[str, Any]]:
    return read_rows(tmp / "fills.arrows", FILLS)


def audit(state: Path, name: str = "default") -> list[dict[str, Any]]:
    return list(iter_records(state / "audit" / f"{name}.jsonl"))


def saved_state(state: Path, name: str = "default") -> dict[str, Any]:
    return json.loads((state / "state" / f"{name}.json").read_text())


def executor_position(state: Path, symbol: str = "BTC-USD", name: str = "default") -> float:
    """The executor's saved position in `symbol`, summed over its strategies."""
    from varon_cli.execution import kernel as K

    saved = saved_state(state, name)["executor"]
    arrays = saved["arrays"]["slot_f"]
    n_sym = len(saved["symbols"])
    s = saved["symbols"].index(symbol)
    rows = [arrays["data"][i:i + arrays["shape"][1]] for i in range(0, len(arrays["data"]), arrays["shape"][1])]
    return sum(row[K.POS] for j, row in enumerate(rows) if j % n_sym == s)


def iocs(fake) -> list[dict[str, Any]]:  # noqa: ANN001
    """Every IOC order the venue took (filled at least in part): the market-like entries and exits."""
    out = []
    for r in fake.requests:
        if not r.applied or r.body["action"].get("type") != "order":
            continue
        statuses = r.answer["response"]["data"]["statuses"]
        for order, status in zip(r.body["action"]["orders"], statuses):
            if order["t"].get("limit", {}).get("tif") == "Ioc" and isinstance(status, dict) and "filled" in status:
                out.append(order)
    return out


def triggers(fake) -> list[dict[str, Any]]:  # noqa: ANN001
    return [o for o in fake.open_orders(USER) if o.get("isTrigger")]


class LiveExecutor:
    """`varon execute --venue hyperliquid` reading signals from a pipe that stays open, as in a live pipeline."""

    def __init__(self, fake, tmp_path: Path, state: Path, **env: str) -> None:  # noqa: ANN001
        self.proc = subprocess.Popen(execute_args(fake.url, tmp_path) + ["--name", "live"], cwd=REPO,
                                     env=hl_env(state, VARON_HYPERLIQUID__SYNC_INTERVAL="1s", **env),
                                     stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.writer = None

    def send(self, rows: list[dict[str, Any]]) -> None:
        table = signal_rows(rows)
        if self.writer is None:
            self.writer = ipc.new_stream(self.proc.stdin, table.schema)
        self.writer.write_table(table)
        self.proc.stdin.flush()

    def finish(self) -> tuple[int, str]:
        """End the input; the exit code and the log."""
        if self.writer is not None:
            self.writer.close()
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode()
        return self.proc.wait(timeout=30), err


def wait_until(predicate, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def open_by_hand(fake, size: float = 0.01) -> None:  # noqa: ANN001
    """A position opened outside varon (the web UI), with the user's agent key through the SDK."""
    from eth_account import Account
    from hyperliquid.exchange import Exchange

    ex = Exchange(Account.from_key(AGENT_KEY), base_url=fake.url, account_address=USER)
    answer = ex.order("BTC", True, size, 60300.0, {"limit": {"tif": "Ioc"}})
    assert "filled" in answer["response"]["data"]["statuses"][0]


@pytest.fixture
def hyperliquid_fake():
    """A fake venue for USER, traded by the AGENT key; it must end without a server-side error."""
    from fakes.hyperliquid_venue import FakeHyperliquidVenue

    with FakeHyperliquidVenue(user=USER, agents={AGENT: USER}) as venue:
        yield venue
        assert venue.errors == []

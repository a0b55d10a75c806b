"""`varon execute`, `varon backtest` and the whole pipeline as real processes.

The kill switch and the breakers are tested end to end with processes; a crash
between an order intent and its send must not duplicate the order; a restart
continues where the executor stopped; and the backtest fills exactly what the
live pipeline fills on the same real data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from varon_cli.execution.audit import iter_records, verify
from varon_cli.schemas import FILLS, SIGNALS
from varon_cli.streamio import open_input

REPO = Path(__file__).resolve().parents[1]
VARON = [sys.executable, "-m", "commands.main"]
pytestmark = pytest.mark.slow


def env(state: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    out["VARON_EXECUTE__STATE_DIR"] = str(state)
    out.update(extra)
    return out


def varon(*args: str, state: Path, stdin: bytes | None = None, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VARON, *args], cwd=REPO, env=env(state, **extra), input=stdin, capture_output=True,
                          timeout=120)


def read(path: Path, kind=FILLS) -> pa.Table:  # noqa: ANN001
    with open_input(str(path), expect=(kind,)) as src:
        return src.read_all()


@pytest.fixture(scope="module")
def signals_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real data: the bundled 5m candles -> 1h bars -> features -> ema-cross signals."""
    root = tmp_path_factory.mktemp("signals")
    state = root / "state"
    bars = varon("bars", "--interval", "1h", "-i", "data/sample/btc-eth-5m.parquet", state=state)
    assert bars.returncode == 0, bars.stderr.decode()
    feats = varon("features", state=state, stdin=bars.stdout)
    sig = varon("signal", "--strategy", "ema-cross", "-o", str(root / "signals.arrows"), state=state,
                stdin=feats.stdout)
    assert sig.returncode == 0, sig.stderr.decode()
    return root / "signals.arrows"


def test_a_crash_between_intent_and_send_never_duplicates_an_order(signals_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    crashed = varon("execute", "--clock", "event", "-i", str(signals_file), "-o", str(tmp_path / "f1.arrows"),
                    state=state, VARON_TEST_CRASH_AFTER_INTENT="1")
    assert crashed.returncode == 137
    audit = state / "audit" / "default.jsonl"
    intents = [r for r in iter_records(audit) if r["kind"] == "order_intent"]
    assert intents, "the intent was recorded (durably) before the crash"
    again = varon("execute", "--clock", "event", "-i", str(signals_file), "-o", str(tmp_path / "f2.arrows"),
                  state=state)
    assert again.returncode == 0, again.stderr.decode()
    records = list(iter_records(audit))
    cloids = [r["cloid"] for r in records if r["kind"] == "order_intent"]
    assert len(cloids) == len(set(cloids))  # no intent recorded twice
    orders = [r["cloid"] for r in records if r["kind"] == "order" and r.get("event") == "order"]
    assert len(orders) == len(set(orders))  # and no order sent twice
    assert verify(audit)[0]

    clean = tmp_path / "clean"
    reference = varon("execute", "--clock", "event", "-i", str(signals_file), "-o", str(tmp_path / "ref.arrows"),
                      state=clean)
    assert reference.returncode == 0
    restarted, ref = read(tmp_path / "f2.arrows"), read(tmp_path / "ref.arrows")
    assert restarted.select(["ts", "symbol", "cloid", "side", "size", "price", "fee"]).equals(
        ref.select(["ts", "symbol", "cloid", "side", "size", "price", "fee"]))


def test_a_restart_continues_where_the_executor_stopped(signals_file: Path, tmp_path: Path) -> None:
    signals = read(signals_file, SIGNALS)
    half = signals.num_rows // 2
    first, second = tmp_path / "a.arrows", tmp_path / "b.arrows"
    for part, path in ((signals.slice(0, half), first), (signals.slice(half), second)):
        with ipc.new_stream(path, part.schema) as writer:
            writer.write_table(part)
    state = tmp_path / "state"
    for path, out in ((first, "fa.arrows"), (second, "fb.arrows")):
        done = varon("execute", "--clock", "event", "-i", str(path), "-o", str(tmp_path / out), state=state)
        assert done.returncode == 0, done.stderr.decode()
    whole = varon("execute", "--clock", "event", "-i", str(signals_file), "-o", str(tmp_path / "fw.arrows"),
                  state=tmp_path / "state2")
    assert whole.returncode == 0
    split = pa.concat_tables([read(tmp_path / "fa.arrows"), read(tmp_path / "fb.arrows")])
    assert split.equals(read(tmp_path / "fw.arrows"))
    # replaying the first half again orders nothing: every bar was already decided
    replay = varon("execute", "--clock", "event", "-i", str(first), "-o", str(tmp_path / "fr.arrows"), state=state)
    assert replay.returncode == 0
    assert read(tmp_path / "fr.arrows").num_rows == 0


def _slow_executor(signals_file: Path, state: Path, tmp_path: Path) -> tuple[subprocess.Popen, subprocess.Popen]:
    """An executor fed the signals a few rows at a time by a writer that keeps the pipe open."""
    feeder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time, pyarrow.ipc as ipc
table = ipc.open_stream(open({str(signals_file)!r}, 'rb')).read_all()
with ipc.new_stream(sys.stdout.buffer, table.schema) as w:
    for i in range(0, table.num_rows, 50):
        w.write_table(table.slice(i, 50)); sys.stdout.flush(); time.sleep(0.05)
    time.sleep(60)
"""], stdout=subprocess.PIPE)
    executor = subprocess.Popen([*VARON, "execute", "--clock", "event", "-o", str(tmp_path / "fills.arrows")],
                                cwd=REPO, env=env(state), stdin=feeder.stdout, stderr=subprocess.PIPE)
    feeder.stdout.close()
    return feeder, executor


def _wait_for_positions(state: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        audit = state / "audit" / "default.jsonl"
        if audit.exists() and any(r["kind"] == "fill" for r in iter_records(audit)):
            return
        time.sleep(0.1)
    raise AssertionError("the executor never filled anything")


@pytest.mark.parametrize("how", ["command", "sigusr1", "file"])
def test_the_kill_switch_flattens_and_stops_within_a_second_and_stays_engaged(
        signals_file: Path, tmp_path: Path, how: str) -> None:
    state = tmp_path / "state"
    feeder, executor = _slow_executor(signals_file, state, tmp_path)
    try:
        _wait_for_positions(state)
        started = time.monotonic()
        if how == "command":
            killed = varon("execute", "kill", "--reason", "test", "--wait", "0", state=state)
            assert killed.returncode == 0, killed.stderr.decode()
        elif how == "sigusr1":
            executor.send_signal(signal.SIGUSR1)
        else:
            (state / "KILL").write_text("dropped by hand\n")
        _, err = executor.communicate(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        feeder.kill()
    assert executor.returncode == 3, err.decode()
    assert elapsed < 1.5 + (0.5 if how == "command" else 0.0)  # the CLI itself takes a moment to start
    records = list(iter_records(state / "audit" / "default.jsonl"))
    assert any(r["kind"] == "kill" for r in records)
    saved = json.loads(next((state / "state").glob("default*")).read_text()) if (state / "state").is_dir() else None
    fills = read(tmp_path / "fills.arrows")
    assert "kill_switch" in fills.column("reason").to_pylist()
    if saved is not None:
        arrays = saved.get("state", saved)["executor"]["arrays"] if "executor" not in saved else saved["executor"]["arrays"]
        slot = arrays["slot_f"]
        positions = slot["data"][0::slot["shape"][1]]
        assert all(p == 0.0 for p in positions)  # flat
    if how != "sigusr1":
        refused = varon("execute", "--clock", "event", "-i", str(signals_file), "-o", str(tmp_path / "x.arrows"),
                        state=state)
        assert refused.returncode == 3 and b"kill switch engaged" in refused.stderr
        assert varon("execute", "reset", state=state).returncode == 0
        resumed = varon("execute", "--clock", "event", "-i", str(signals_file), "-o", str(tmp_path / "y.arrows"),
                        state=state)
        assert resumed.returncode == 0, resumed.stderr.decode()


def test_the_daily_loss_breaker_stops_new_entries_end_to_end(signals_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = varon("execute", "--clock", "event", "-i", str(signals_file), "-o", str(tmp_path / "f.arrows"),
                 "--orders-out", str(tmp_path / "o.arrows"), state=state,
                 VARON_RISK__DAILY_LOSS_LIMIT="0.001", VARON_RISK__STRATEGY_EXPOSURE="1.0")
    assert done.returncode == 0, done.stderr.decode()
    assert b"daily loss breaker tripped" in done.stderr
    records = list(iter_records(state / "audit" / "default.jsonl"))
    assert any(r["kind"] == "breaker" for r in records)
    orders = read(tmp_path / "o.arrows", __import__("varon_cli.schemas", fromlist=["ORDERS"]).ORDERS)
    assert "rejected: breaker engaged, reduce only" in orders.column("reason").to_pylist()


def test_bad_config_is_refused_before_trading(signals_file: Path, tmp_path: Path) -> None:
    for key, value, words in (("VARON_RISK__STRATEGY_EXPOSURE", "3.0", b"risk.strategy_exposure"),
                              ("VARON_RISK__MAX_LEVERAGE", "200", b"risk.max_leverage")):
        done = varon("execute", "-i", str(signals_file), state=tmp_path / "s", **{key: value})
        assert done.returncode == 78 and words in done.stderr
        assert len(done.stderr.decode().strip().splitlines()) == 1


def test_backtest_and_the_live_pipeline_fill_the_same_orders_on_real_data(tmp_path: Path) -> None:
    """collect replay | bars | features | signal | execute  ==  varon backtest, fill for fill."""
    state = tmp_path / "state"
    features = tmp_path / "features.arrows"
    shell = (f"{' '.join(VARON)} collect replay data/sample/btcusdt-trades.parquet --speed max"
             f" | {' '.join(VARON)} bars --interval 1s"
             f" | {' '.join(VARON)} features --spec configs/features-fast.toml -o {features}")
    built = subprocess.run(shell, shell=True, cwd=REPO, env=env(state), capture_output=True, timeout=120)
    assert built.returncode == 0, built.stderr.decode()
    live_fills = tmp_path / "live.arrows"
    shell = (f"{' '.join(VARON)} collect replay data/sample/btcusdt-trades.parquet --speed max"
             f" | {' '.join(VARON)} bars --interval 1s"
             f" | {' '.join(VARON)} features --spec configs/features-fast.toml"
             f" | {' '.join(VARON)} signal --strategy ema-cross --param fast=2 --param slow=5"
             f" | {' '.join(VARON)} execute --venue paper --clock event -o {live_fills}")
    live = subprocess.run(shell, shell=True, cwd=REPO, env=env(state), capture_output=True, timeout=120)
    assert live.returncode == 0, live.stderr.decode()
    bt = varon("backtest", "--strategy", "ema-cross", "--param", "fast=2", "--param", "slow=5", "-i", str(features),
               "--fills-out", str(tmp_path / "bt.arrows"), "--json", state=state)
    assert bt.returncode == 0, bt.stderr.decode()
    columns = ["ts", "symbol", "side", "size", "price", "fee", "reason"]
    backtest_fills, pipeline_fills = read(tmp_path / "bt.arrows").select(columns), read(live_fills).select(columns)
    assert pipeline_fills.num_rows >= 4
    assert backtest_fills.equals(pipeline_fills)
    report = json.loads(bt.stdout)
    assert report is not None


def test_several_strategies_feed_one_account(signals_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    bars = varon("bars", "--interval", "1h", "-i", "data/sample/btc-eth-5m.parquet", state=state)
    feats = varon("features", state=state, stdin=bars.stdout)
    momentum = varon("signal", "--strategy", "momentum", "-o", str(tmp_path / "momentum.arrows"), state=state,
                     stdin=feats.stdout)
    assert momentum.returncode == 0, momentum.stderr.decode()
    done = varon("execute", "--clock", "event", "-i", str(signals_file), "-i", str(tmp_path / "momentum.arrows"),
                 "-o", str(tmp_path / "fills.arrows"), "--orders-out", str(tmp_path / "orders.arrows"), state=state,
                 VARON_RISK__STRATEGIES__MOMENTUM__EXPOSURE="0.1")
    assert done.returncode == 0, done.stderr.decode()
    fills = read(tmp_path / "fills.arrows")
    assert set(fills.column("strategy").to_pylist()) == {"ema-cross", "momentum"}
    orders = read(tmp_path / "orders.arrows", __import__("varon_cli.schemas", fromlist=["ORDERS"]).ORDERS)
    assert "rejected: bar older than the symbol's last" not in orders.column("reason").to_pylist()

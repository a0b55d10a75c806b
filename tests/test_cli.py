"""The `varon` command line: real subprocesses and pipes (B), and Typer's CliRunner (C)."""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from commands.main import app
from varon_cli.bars import BarSettings, bars_from_table
from varon_cli.config import VaronConfig
from varon_cli.schemas import BARS
from helpers import assert_same_table

REPO = Path(__file__).resolve().parents[1]
TRADES_FILE = REPO / "data" / "sample" / "btcusdt-trades.parquet"
BARS_FILE = REPO / "data" / "sample" / "btc-eth-5m.parquet"
VARON = [sys.executable, "-m", "commands.main"]
TIMEOUT = 60
SECOND = 1_000_000_000


# -- helpers -------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def varon(*args: str, cwd: Path, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VARON, *args], cwd=cwd, input=stdin, capture_output=True, timeout=TIMEOUT, env=env or clean_env()
    )


def popen(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([*VARON, *args], cwd=cwd, env=env or clean_env(), **kw)


def err_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.strip()]


def no_traceback(stderr: bytes) -> None:
    assert b"Traceback" not in stderr, stderr.decode()


def hidden_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def trades() -> pa.Table:
    return pq.read_table(TRADES_FILE)


def write_trades(tmp_path: Path, table: pa.Table, name: str) -> Path:
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def with_column(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values))


# == B. real subprocesses ===========================================================
@pytest.mark.slow
def test_bars_then_features_files(tmp_path: Path, trades: pa.Table) -> None:
    bars_out, feats_out = tmp_path / "b.parquet", tmp_path / "f.parquet"
    r = varon("bars", "--interval", "10s", "-i", str(TRADES_FILE), "-o", str(bars_out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    bars = pq.read_table(bars_out)
    assert bars.schema.metadata[b"varon.kind"] == b"bars"
    assert bars.schema.metadata[b"varon.interval"] == b"10s"
    # Same bars as the library computes in memory.
    assert_same_table(bars, bars_from_table(trades, BarSettings(interval_ns=10 * SECOND)))
    assert pc.sum(bars["trades"]).as_py() == trades.num_rows
    assert b"2001 trades in" in r.stderr  # logs go to stderr

    r = varon("features", "-i", str(bars_out), "-o", str(feats_out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    feats = pq.read_table(feats_out)
    assert feats.schema.metadata[b"varon.kind"] == b"features"
    assert b"varon.feature_hash" in feats.schema.metadata
    assert feats.num_rows == bars.num_rows
    assert_same_table(feats.select(BARS.column_names), bars, check_metadata=False)
    assert "warmup" in feats.column_names and len(feats.column_names) > len(BARS.column_names) + 1
    assert hidden_files(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "bars_args",
    [["--interval", "1s", "-i", str(TRADES_FILE)], ["--interval", "1h", "-i", str(BARS_FILE)]],
    ids=["trades-1s", "bars-5m-to-1h"],
)
def test_pipe_equals_files(tmp_path: Path, bars_args: list[str]) -> None:
    b_file, f_file, f_pipe = tmp_path / "b.parquet", tmp_path / "f_file.parquet", tmp_path / "f_pipe.parquet"
    assert varon("bars", *bars_args, "-o", str(b_file), cwd=tmp_path).returncode == 0
    assert varon("features", "-i", str(b_file), "-o", str(f_file), cwd=tmp_path).returncode == 0

    # bars to stdout equals bars to a file
    r = varon("bars", *bars_args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    streamed = ipc.open_stream(pa.py_buffer(r.stdout)).read_all()
    assert_same_table(streamed, pq.read_table(b_file))

    # bars | features equals bars -> file -> features
    up = popen("bars", *bars_args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    down = popen("features", "-o", str(f_pipe), cwd=tmp_path, stdin=up.stdout, stderr=subprocess.PIPE)
    up.stdout.close()
    _, down_err = down.communicate(timeout=TIMEOUT)
    _, up_err = up.communicate(timeout=TIMEOUT)
    assert up.returncode == 0, up_err.decode()
    assert down.returncode == 0, down_err.decode()
    assert_same_table(pq.read_table(f_pipe), pq.read_table(f_file))


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["bars", "--interval", "10m", "-i", str(BARS_FILE)], ["features", "-i", str(BARS_FILE)]],
    ids=["bars", "features"],
)
def test_closed_pipe_ends_quietly(tmp_path: Path, args: list[str]) -> None:
    # Megabytes of output: far more than a pipe buffer, so the writer must meet the closed pipe.
    p = popen(*args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = p.stdout.read(100)
    p.stdout.close()
    _, err = p.communicate(timeout=TIMEOUT)
    assert len(head) == 100
    assert p.returncode == 0, err.decode()
    no_traceback(err)
    assert b"error" not in err.lower()


@pytest.mark.slow
def test_shell_pipe_into_head(tmp_path: Path) -> None:
    cmd = f"set -o pipefail; {' '.join(VARON)} bars --interval 10m -i {BARS_FILE} | head -c 100 | wc -c"
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, timeout=TIMEOUT, env=clean_env())
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.strip() == b"100"
    no_traceback(r.stderr)


@pytest.mark.slow
def test_features_stream_into_bars_is_refused(tmp_path: Path) -> None:
    feats = popen("features", "-i", str(BARS_FILE), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    bars = popen("bars", "--interval", "1h", "-o", str(tmp_path / "x.parquet"), cwd=tmp_path,
                 stdin=feats.stdout, stderr=subprocess.PIPE)
    feats.stdout.close()
    _, bars_err = bars.communicate(timeout=TIMEOUT)
    _, feats_err = feats.communicate(timeout=TIMEOUT)
    assert bars.returncode == 65
    lines = err_lines(bars_err)
    assert len(lines) == 1, lines
    assert "expected trades or bars, got features" in lines[0]
    assert lines[0].startswith("varon bars: error:")
    # The upstream sees its reader go away and ends quietly.
    assert feats.returncode == 0, feats_err.decode()
    no_traceback(feats_err)
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_unknown_interval(tmp_path: Path) -> None:
    r = varon("bars", "--interval", "7x", "-i", str(TRADES_FILE), "-o", str(tmp_path / "x.parquet"), cwd=tmp_path)
    assert r.returncode != 0
    no_traceback(r.stderr)
    lines = err_lines(r.stderr)
    assert len(lines) == 1, lines
    assert "'7x'" in lines[0] and "interval" in lines[0]
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_bad_toml_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[bars]\ninterval = \n")
    r = varon("bars", "--config", str(bad), "-i", str(TRADES_FILE), "-o", str(tmp_path / "x.parquet"), cwd=tmp_path)
    assert r.returncode == 78
    no_traceback(r.stderr)
    lines = err_lines(r.stderr)
    assert len(lines) == 1 and str(bad) in lines[0] and "TOML" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "column,row,value,message",
    [("price", 100, float("nan"), "row 100: field price is nan"), ("size", 200, -1.0, "row 200: field size is -1.0")],
)
def test_invalid_row_named_and_no_output(tmp_path: Path, trades: pa.Table, column: str, row: int, value: float, message: str) -> None:
    values = trades[column].to_numpy().copy()
    values[row] = value
    src = write_trades(tmp_path, with_column(trades, column, values), "bad.parquet")
    out = tmp_path / "out.parquet"
    r = varon("bars", "--interval", "1s", "-i", str(src), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 65
    no_traceback(r.stderr)
    lines = err_lines(r.stderr)
    assert len(lines) == 1 and message in lines[0], lines
    assert str(src) in lines[0]
    assert not out.exists()
    assert hidden_files(tmp_path) == []


def _unsorted(trades: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Trade 50 moved to row 1800 (well behind event time), and the table without it."""
    idx = list(range(trades.num_rows))
    moved = idx.pop(50)
    without = trades.take(idx)
    idx.insert(1800, moved)
    return trades.take(idx), without


@pytest.mark.slow
def test_unsorted_trades_fail_by_default_and_drop_on_request(tmp_path: Path, trades: pa.Table) -> None:
    unsorted, without = _unsorted(trades)
    src = write_trades(tmp_path, unsorted, "unsorted.parquet")
    out = tmp_path / "out.parquet"

    r = varon("bars", "--interval", "1s", "-i", str(src), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 65
    no_traceback(r.stderr)
    lines = err_lines(r.stderr)
    assert len(lines) == 1 and "row 1800" in lines[0] and "not sorted" in lines[0], lines
    assert not out.exists()

    r = varon("bars", "--interval", "1s", "--late", "drop", "-i", str(src), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert "late" in r.stderr.decode() and "1800" in r.stderr.decode()
    # Dropping the late trade gives exactly the bars of the trades without it.
    assert_same_table(pq.read_table(out), bars_from_table(without, BarSettings(interval_ns=SECOND)))


@pytest.mark.slow
def test_unsorted_trades_on_a_pipe_are_dropped_by_default(tmp_path: Path, trades: pa.Table) -> None:
    unsorted, _ = _unsorted(trades)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, unsorted.schema) as w:
        w.write_table(unsorted, max_chunksize=250)
    r = varon("bars", "--interval", "1s", "-o", str(tmp_path / "o.parquet"), cwd=tmp_path, stdin=sink.getvalue().to_pybytes())
    assert r.returncode == 0, r.stderr.decode()
    assert "late record(s) dropped" in r.stderr.decode()


@pytest.mark.slow
def test_flag_beats_environment(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    r = varon("bars", "--interval", "10s", "-i", str(TRADES_FILE), "-o", str(out), cwd=tmp_path,
              env=clean_env(VARON_BARS__INTERVAL="1m"))
    assert r.returncode == 0, r.stderr.decode()
    assert pq.read_schema(out).metadata[b"varon.interval"] == b"10s"
    r = varon("bars", "-i", str(TRADES_FILE), "-o", str(tmp_path / "p.parquet"), cwd=tmp_path,
              env=clean_env(VARON_BARS__INTERVAL="30s"))
    assert r.returncode == 0, r.stderr.decode()
    assert pq.read_schema(tmp_path / "p.parquet").metadata[b"varon.interval"] == b"30s"


@pytest.mark.slow
def test_empty_input_to_dataset_directory(tmp_path: Path, trades: pa.Table) -> None:
    """BUG demonstration: an empty result written to a dataset directory crashes with a traceback."""
    src = write_trades(tmp_path, trades.slice(0, 0), "empty.parquet")
    r = varon("bars", "--interval", "1s", "-i", str(src), "-o", str(tmp_path / "outdir"), cwd=tmp_path)
    no_traceback(r.stderr)
    assert r.returncode == 0


def _start_stream(p: subprocess.Popen, schema: pa.Schema) -> ipc.RecordBatchStreamWriter:
    return ipc.new_stream(p.stdin, schema)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["out.parquet", "out.arrows"])
def test_sigterm_flushes_and_commits(tmp_path: Path, trades: pa.Table, name: str) -> None:
    out = tmp_path / name
    p = popen("bars", "--interval", "1s", "-o", str(out), cwd=tmp_path,
              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fed = trades.slice(0, 1000)
    try:
        writer = _start_stream(p, trades.schema)
        for batch in fed.to_batches(max_chunksize=200):
            writer.write_batch(batch)
        p.stdin.flush()
        # Start-up is done once the sink's temporary file exists; then let it take the batches.
        tmp = tmp_path / f".{name}.tmp-{p.pid}"
        deadline = time.monotonic() + TIMEOUT
        while not tmp.exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert tmp.exists(), "bars never opened its output"
        time.sleep(1.5)
        assert p.poll() is None, "bars ended although its stdin is still open"
        p.send_signal(signal.SIGTERM)
        rc = p.wait(TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
        try:
            p.stdin.close()
        except OSError:
            pass
    err = p.stderr.read()
    assert rc == 143, err.decode()
    no_traceback(err)
    assert b"SIGTERM" in err
    assert out.exists()
    assert hidden_files(tmp_path) == []
    got = pq.read_table(out) if name.endswith(".parquet") else ipc.open_stream(pa.OSFile(str(out))).read_all()
    # The bars of every trade it accepted, the last one flagged partial, as a file run would give.
    expected = bars_from_table(fed, BarSettings(interval_ns=SECOND))
    assert_same_table(got, expected)
    assert got["partial"][-1].as_py() is True


@pytest.mark.slow
def test_live_emission_before_end_of_input(tmp_path: Path, trades: pa.Table) -> None:
    p = popen("bars", "--interval", "1s", cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    received: list[tuple[int, dict | None, pa.RecordBatch]] = []
    failure: list[BaseException] = []

    def reader() -> None:
        try:
            stream = ipc.open_stream(p.stdout)
            while True:
                try:
                    item = stream.read_next_batch_with_custom_metadata()
                except StopIteration:
                    return
                meta = dict(item.custom_metadata) if item.custom_metadata is not None else None
                received.append((item.batch.num_rows, meta, item.batch))
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    fed = trades.slice(0, 1000)
    try:
        writer = _start_stream(p, trades.schema)
        for batch in fed.to_batches(max_chunksize=100):
            writer.write_batch(batch)
            p.stdin.flush()
            time.sleep(0.15)
        deadline = time.monotonic() + TIMEOUT
        while not any(n for n, _, _ in received) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        rows_before_close = sum(n for n, _, _ in received)
        assert p.poll() is None
        assert rows_before_close > 0, "no bars came out while the input was still open"
        writer.close()
        p.stdin.close()
        rc = p.wait(TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
    thread.join(TIMEOUT)
    err = p.stderr.read()
    assert rc == 0, err.decode()
    assert not failure, failure
    # Watermarks (empty batches with varon.watermark) travel with the bars and never go back.
    marks = [int(m[b"varon.watermark"]) for n, m, _ in received if m and b"varon.watermark" in m]
    assert marks and marks == sorted(marks)
    got = pa.Table.from_batches([b for n, _, b in received if n])
    assert_same_table(got, bars_from_table(fed, BarSettings(interval_ns=SECOND)))
    assert rows_before_close < got.num_rows  # the last bar waited for the end of input


@pytest.mark.slow
def test_terminal_stdout_gets_a_table(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        p = popen("bars", "--interval", "10s", "-i", str(TRADES_FILE), cwd=tmp_path, env=clean_env(COLUMNS="300"),
                  stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        os.close(slave)
        chunks = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        rc = p.wait(TIMEOUT)
    finally:
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert rc == 0, p.stderr.read().decode()
    assert "bars: rows 1" in text
    assert "BTC-USDT" in text
    assert "ARROW1" not in text and "\ufffd" not in text


# == C. Typer CliRunner ===============================================================
@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch):
    """A CliRunner with no VARON_* variables, restoring signal handlers and logging it changes."""
    for key in list(os.environ):
        if key.startswith("VARON_"):
            monkeypatch.delenv(key)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    log = logging.getLogger("varon")
    saved = (list(log.handlers), log.level, log.propagate)
    yield CliRunner()
    for s, h in handlers.items():
        signal.signal(s, h)
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


def test_help_lists_commands(runner: CliRunner) -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in ("bars", "features", "config"):
        assert name in res.stdout


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    res = runner.invoke(app, [])
    assert "bars" in res.output and "features" in res.output


def test_config_show_defaults(runner: CliRunner) -> None:
    res = runner.invoke(app, ["config", "show"])
    assert res.exit_code == 0, res.output
    shown = tomllib.loads(res.stdout)
    assert shown == VaronConfig().to_dict()
    assert shown["bars"]["interval"] == "1m" and shown["bars"]["late"] == "auto"
    assert 'interval = "1m"' in res.stdout


def test_config_show_environment(runner: CliRunner) -> None:
    res = runner.invoke(app, ["config", "show"], env={"VARON_BARS__INTERVAL": "5m"})
    assert res.exit_code == 0, res.output
    assert 'interval = "5m"' in res.stdout
    assert tomllib.loads(res.stdout)["bars"]["interval"] == "5m"


def test_config_show_layering(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "varon.toml"
    cfg.write_text('[bars]\ninterval = "15m"\nlateness = "2s"\n[log]\nlevel = "debug"\n')
    res = runner.invoke(app, ["config", "show", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    shown = tomllib.loads(res.stdout)
    assert shown["bars"]["interval"] == "15m" and shown["bars"]["lateness"] == "2s"
    assert shown["log"]["level"] == "debug"
    assert shown["bars"]["partial"] == "flag"  # untouched keys keep their defaults

    res = runner.invoke(app, ["config", "show", "--config", str(cfg)], env={"VARON_BARS__INTERVAL": "5m"})
    shown = tomllib.loads(res.stdout)
    assert shown["bars"]["interval"] == "5m"  # env beats file
    assert shown["bars"]["lateness"] == "2s"  # file still beats defaults

    res = runner.invoke(app, ["config", "show"], env={"VARON_CONFIG": str(cfg)})
    assert tomllib.loads(res.stdout)["bars"]["interval"] == "15m"


def test_config_show_redacts_dsn(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "db.toml"
    cfg.write_text('[db]\ndsn = "postgresql://u:hunter2@h/db"\n')
    for fmt in ("toml", "json"):
        res = runner.invoke(app, ["config", "show", "--config", str(cfg), "--format", fmt])
        assert res.exit_code == 0, res.output
        assert "hunter2" not in res.output
        assert "postgresql://u:***@h/db" in res.stdout
    res = runner.invoke(app, ["config", "show"], env={"VARON_DB__DSN": "postgresql://u:hunter2@h/db"})
    assert "hunter2" not in res.output and "u:***@h/db" in res.stdout


def test_config_show_json(runner: CliRunner) -> None:
    res = runner.invoke(app, ["config", "show", "--format", "json"], env={"VARON_BARS__LATE": "drop"})
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    expected = VaronConfig().to_dict()
    expected["bars"]["late"] = "drop"
    assert data == expected


def test_config_unknown_key(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text('[bars]\nintervall = "5m"\n')
    res = runner.invoke(app, ["config", "show", "--config", str(cfg)])
    assert res.exit_code == 78
    assert "bars.intervall" in res.stderr and "unknown setting" in res.stderr
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["config", "show"], env={"VARON_NOPE__KEY": "1"})
    assert res.exit_code == 78 and "nope" in res.stderr


def test_config_bad_value_named(runner: CliRunner) -> None:
    res = runner.invoke(app, ["config", "show"], env={"VARON_BARS__LATE": "sometimes"})
    assert res.exit_code == 78
    assert "bars.late" in res.stderr and "sometimes" in res.stderr


def test_config_bad_toml_named(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[bars\n")
    res = runner.invoke(app, ["config", "show", "--config", str(cfg)])
    assert res.exit_code == 78
    assert str(cfg) in res.stderr


def test_config_missing_file_named(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(app, ["config", "show", "--config", str(tmp_path / "absent.toml")])
    assert res.exit_code == 78
    assert "absent.toml" in res.stderr and "not found" in res.stderr


def test_version(runner: CliRunner) -> None:
    from varon_cli import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert __version__ in res.stdout

"""`varon status` and the metrics every long-running command publishes (issue 8, part 2).

In-process: the publisher's file (written, replaced atomically, removed), its
numbers, the health rules on hand-made files, the Prometheus text. As
processes: a replay | bars pipeline and a paper executor show up in
`varon status --once/--json`; `--on-alert` runs on a kill, a breaker trip and
a collector that gives up; the Prometheus endpoint answers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from commands.main import app
from varon_cli.config import load_config
from varon_cli.runtime import Watermark
from varon_cli.status import metrics
from varon_cli.status.prometheus import render

REPO = Path(__file__).resolve().parents[1]
VARON = [sys.executable, "-m", "commands.main"]
ALERT_CMD = 'printf "%s|%s\\n" "$VARON_ALERT_KIND" "$VARON_ALERT_MESSAGE" >> '


def wait_for(condition, timeout: float = 20.0, every: float = 0.1):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch):
    """`varon` in-process, with no VARON_* variables; restores the signal handlers and logging it changes."""
    for key in list(os.environ):
        if key.startswith("VARON_"):
            monkeypatch.delenv(key)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    log = logging.getLogger("varon")
    saved = (list(log.handlers), log.level, log.propagate)
    yield lambda *args: CliRunner().invoke(app, list(args))
    for s, h in handlers.items():
        signal.signal(s, h)
    log.handlers[:], log.level, log.propagate = saved


def status_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["status", "--status-dir", str(tmp_path / "run"), "--state-dir", str(tmp_path / "state"), *extra]


def trades_batch(n: int, last_ts_ns: int) -> pa.RecordBatch:
    ts = pa.array([last_ts_ns - (n - 1 - i) * 1_000_000 for i in range(n)], pa.int64()).cast(pa.timestamp("ns", "UTC"))
    return pa.RecordBatch.from_arrays([ts, pa.array([1.0] * n)], names=["ts", "price"])


class publishing:  # noqa: N801 - used as `with publishing(...)`
    """The publisher of this process, as `commands.common.run` and `setup` drive it."""

    def __init__(self, directory: Path, command: str = "bars", **status: object) -> None:
        self.cfg = load_config(overrides={"status": {"dir": str(directory), **status}}, environ={})
        self.command = command

    def __enter__(self) -> metrics.Publisher:
        self.token = metrics.arm(self.command)
        metrics.configure(self.cfg)
        assert metrics.current() is not None
        return metrics.current()

    def __exit__(self, *exc: object) -> None:
        metrics.shutdown(self.token)


# -- the publisher ------------------------------------------------------------------------------------------
def test_nothing_is_tracked_when_nothing_publishes() -> None:
    source = [trades_batch(3, 10)]
    assert metrics.current() is None
    assert metrics.track_stage(source) is source  # the hot path is untouched
    write = print
    assert metrics.track_feed(object(), write) is write


def test_the_publisher_writes_replaces_atomically_and_removes_its_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = run / f"{os.getpid()}.json"
    seen, bad = [], []
    stop = threading.Event()

    def reader() -> None:  # every read, while the publisher rewrites, finds a whole file
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_bytes())["heartbeat_ns"])
            except FileNotFoundError:
                pass
            except ValueError as exc:
                bad.append(exc)

    with publishing(run):
        assert path.exists()  # written at once, before the first second
        first = json.loads(path.read_bytes())
        assert first["pid"] == os.getpid() and first["command"] == "bars" and first["rows_in"] == 0
        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(2.3)
        stop.set()
        thread.join()
    assert not path.exists() and not run.exists()  # removed on a clean exit, with the folder it had to create
    assert not bad and len(set(seen)) >= 2  # replaced (heartbeat moved on), never read half-written


def test_published_numbers_rows_lag_latency_and_rates(tmp_path: Path) -> None:
    now = time.time_ns()
    items = [trades_batch(100, now - 6_000_000_000), trades_batch(100, now - 5_000_000_000),
             Watermark(now - 4_000_000_000), trades_batch(50, now - 3_000_000_000)]

    class Sink:
        rows_written = 0

    sink = Sink()
    with publishing(tmp_path) as pub:
        for item in metrics.track_stage(items, sink):
            if not isinstance(item, Watermark):
                time.sleep(0.01)  # the work on a batch
                sink.rows_written += 2
        snap = pub.snapshot()
    assert snap["rows_in"] == 250 and snap["rows_out"] == 6 and snap["batches"] == 3
    assert 2.9 < snap["lag_s"] < 4.0  # now minus the latest event time handled (a watermark counts)
    # the first batch (start-up costs) is not sampled
    assert snap["latency_samples"] == 2 and 0.009 < snap["latency_p50_s"] <= snap["latency_p99_s"] < 0.5


# -- health rules on hand-made files --------------------------------------------------------------------------
def fake_record(pid: int, command: str = "collect", age_s: float = 0.0, **extra: object) -> dict:
    now = time.time_ns()
    return {"version": 1, "pid": pid, "proc_start": None, "command": command, "label": command,
            "started_ns": now - 60 * 10**9, "heartbeat_ns": now - int(age_s * 1e9), "rows_in": 10, "rows_out": 5,
            **extra}


def write_record(tmp_path: Path, record: dict) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    path = run / f"{record['pid']}.json"
    path.write_text(json.dumps(record))
    return path


def test_nothing_running_is_healthy_unless_expected(runner, tmp_path: Path) -> None:
    assert runner(*status_args(tmp_path, "--once")).exit_code == 0
    res = runner(*status_args(tmp_path, "--once", "--expect", "collect,execute"))
    assert res.exit_code == 1
    assert "expected collect: no healthy process running" in res.stderr
    assert "expected execute" in res.stderr


def test_a_stale_heartbeat_is_unhealthy(runner, tmp_path: Path) -> None:
    write_record(tmp_path, fake_record(os.getpid(), age_s=45))  # alive (this process), silent for 45 s
    res = runner(*status_args(tmp_path, "--once"))
    assert res.exit_code == 1 and "no heartbeat for 45 s (stale after 30 s)" in res.stderr
    assert runner(*status_args(tmp_path, "--once", "--stale-after", "1m")).exit_code == 0
    report = json.loads(runner(*status_args(tmp_path, "--json")).stdout)
    assert report["processes"][0]["state"] == "stale" and not report["healthy"]


def test_a_dead_pid_is_unhealthy_until_pruned(runner, tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    path = write_record(tmp_path, fake_record(gone.pid, command="bars"))
    res = runner(*status_args(tmp_path, "--once", "--prune"))
    assert res.exit_code == 1 and "not running" in res.stderr
    assert not path.exists()  # --prune forgot it after reporting it
    assert runner(*status_args(tmp_path, "--once")).exit_code == 0


def test_an_engaged_kill_switch_is_unhealthy(runner, tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "KILL").write_text(json.dumps({"reason": "feed looks wrong"}))
    res = runner(*status_args(tmp_path, "--once"))
    assert res.exit_code == 1 and "kill switch engaged" in res.stderr and "feed looks wrong" in res.stderr
    report = json.loads(runner(*status_args(tmp_path, "--json")).stdout)
    assert report["kill_switch"] == {"engaged": True, "reason": "feed looks wrong"}


def test_a_tripped_breaker_and_a_lost_feed_are_unhealthy(runner, tmp_path: Path) -> None:
    executor = {"name": "btc", "venue": "paper", "equity": 9400.0, "breakers": {"daily": True, "drawdown": False,
                                                                                "killed": False}}
    write_record(tmp_path, fake_record(os.getpid(), command="execute", label="execute btc", executor=executor))
    res = runner(*status_args(tmp_path, "--once"))
    assert res.exit_code == 1 and "executor btc" in res.stderr and "daily breaker engaged" in res.stderr
    feed = {"state": "lost", "silent_s": 25.0, "reconnects": 3, "gaps": 1}
    (tmp_path / "run" / f"{os.getpid()}.json").unlink()
    write_record(tmp_path, fake_record(os.getpid(), command="collect", label="collect coinbase", feed=feed))
    res = runner(*status_args(tmp_path, "--once", "--expect", "collect"))
    assert res.exit_code == 1 and "feed lost: nothing received for 25 s" in res.stderr


def test_prometheus_text_names_every_process(tmp_path: Path) -> None:
    from varon_cli.status.view import collect

    write_record(tmp_path, fake_record(os.getpid(), command="bars", rate_in=12.5, lag_s=1.5, latency_p50_s=0.0002,
                                       latency_p99_s=0.001))
    text = render(collect(tmp_path / "run", tmp_path / "state", 30.0))
    assert "# TYPE varon_rows_in_total counter" in text
    assert f'varon_rows_in_total{{command="bars",label="bars",pid="{os.getpid()}"}} 10' in text
    assert f'varon_batch_seconds{{command="bars",label="bars",pid="{os.getpid()}",quantile="0.99"}} 0.001' in text
    assert "varon_healthy 1" in text and "varon_kill_switch_engaged" in text


# -- real processes -------------------------------------------------------------------------------------------
def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    out["VARON_STATUS__DIR"] = str(tmp_path / "run")
    out["VARON_EXECUTE__STATE_DIR"] = str(tmp_path / "state")
    out.update(extra)
    return out


def varon_status(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VARON, "status", *args], cwd=REPO, env=env(tmp_path), capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_running_pipeline_shows_up_with_plausible_numbers_and_on_prometheus(tmp_path: Path) -> None:
    port = free_port()
    e = env(tmp_path, VARON_STATUS__PROMETHEUS_PORT=str(port))
    up = subprocess.Popen([*VARON, "collect", "replay", "data/sample/btcusdt-trades.parquet", "--speed", "1"],
                          cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    down = subprocess.Popen([*VARON, "bars", "--interval", "1s"], cwd=REPO, env=e, stdin=up.stdout,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    up.stdout.close()
    run = tmp_path / "run"
    try:
        def both_busy() -> bool:
            records = [json.loads(p.read_bytes()) for p in run.glob("[0-9]*.json")]
            return len(records) == 2 and all(r["rows_in"] > 0 and r["latency_samples"] > 0 for r in records)

        wait_for(both_busy, timeout=30)
        time.sleep(1.2)  # one more publication: rates over a whole second
        once = varon_status(tmp_path, "--once", "--expect", "collect,bars")
        assert once.returncode == 0, once.stderr.decode()
        text = once.stdout.decode()
        assert "collect replay" in text and "bars" in text and "HEALTHY" in text
        done = varon_status(tmp_path, "--json", "--expect", "collect replay,bars")
        assert done.returncode == 0
        report = json.loads(done.stdout)
        assert report["healthy"] and report["problems"] == []
        by_label = {p["label"]: p for p in report["processes"]}
        assert set(by_label) == {"collect replay", "bars"}
        replay, bars = by_label["collect replay"], by_label["bars"]
        for p in (replay, bars):
            assert p["state"] == "ok" and p["alive"] and p["heartbeat_age_s"] < 2.5
            assert p["rows_in"] > 0 and p["rate_in"] is not None and p["rate_in"] >= 0
            # the bundled trades are from the past: the lag is the data's age (at recorded speed, steady)
            assert p["lag_s"] > 86400
            assert 0 < p["latency_p50_s"] <= p["latency_p99_s"] < 5
        assert replay["rows_out"] >= bars["rows_in"] - 1000  # what bars read, the replay wrote
        scrape = wait_for(lambda: _scrape(port), timeout=10)
        assert f'varon_rows_in_total{{command="bars",label="bars",pid="{down.pid}"}}' in scrape
        assert f'label="collect replay",pid="{up.pid}"' in scrape
    finally:
        up.terminate()
        down.terminate()
        up.wait(timeout=20)
        down.wait(timeout=20)
    assert not list(run.glob("*.json"))  # both removed their files on SIGTERM


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return answer.read().decode()
    except OSError:
        return None


@pytest.fixture(scope="module")
def signals_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real data: the bundled 5m candles -> 1h bars -> features -> ema-cross signals."""
    root = tmp_path_factory.mktemp("signals")
    e = env(root)
    bars = subprocess.run([*VARON, "bars", "--interval", "1h", "-i", "data/sample/btc-eth-5m.parquet"], cwd=REPO,
                          env=e, capture_output=True, timeout=120, check=True)
    feats = subprocess.run([*VARON, "features"], cwd=REPO, env=e, input=bars.stdout, capture_output=True,
                           timeout=120, check=True)
    subprocess.run([*VARON, "signal", "--strategy", "ema-cross", "-o", str(root / "signals.arrows")], cwd=REPO, env=e,
                   input=feats.stdout, capture_output=True, timeout=120, check=True)
    return root / "signals.arrows"


@pytest.mark.slow
def test_a_paper_executor_shows_its_account_and_alerts_when_killed(signals_file: Path, tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.txt"
    feeder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time, pyarrow.ipc as ipc
table = ipc.open_stream(open({str(signals_file)!r}, 'rb')).read_all()
with ipc.new_stream(sys.stdout.buffer, table.schema) as w:
    for i in range(0, table.num_rows, 50):
        w.write_table(table.slice(i, 50)); sys.stdout.flush(); time.sleep(0.05)
    time.sleep(60)
"""], stdout=subprocess.PIPE)
    executor = subprocess.Popen([*VARON, "execute", "--clock", "event", "-o", str(tmp_path / "fills.arrows"),
                                 "--on-alert", ALERT_CMD + str(alerts)],
                                cwd=REPO, env=env(tmp_path), stdin=feeder.stdout, stderr=subprocess.PIPE)
    feeder.stdout.close()
    try:
        path = tmp_path / "run" / f"{executor.pid}.json"

        def positions() -> dict | None:
            try:
                record = json.loads(path.read_bytes())
            except (FileNotFoundError, ValueError):
                return None
            return record if (record.get("executor") or {}).get("positions") else None

        wait_for(positions, timeout=30)
        shown = varon_status(tmp_path, "--json", "--expect", "execute")
        assert shown.returncode == 0, shown.stderr.decode()
        report = json.loads(shown.stdout)
        (ex,) = report["executors"]
        assert ex["name"] == "default" and ex["venue"] == "paper" and ex["pid"] == executor.pid
        assert ex["equity"] > 0 and ex["positions"] and ex["fills"] > 0
        assert ex["breakers"] == {"daily": False, "drawdown": False, "killed": False}
        assert 0 < ex["exposure"]["fraction"] <= ex["exposure"]["limit"] + 1e-9
        assert ex["strategies"]["ema-cross"]["exposure"] <= ex["strategies"]["ema-cross"]["limit"] + 1e-6
        assert abs(sum(p["notional"] for p in ex["positions"])) > 0
        text = varon_status(tmp_path, "--once").stdout.decode()
        assert "executor default" in text and "ema-cross" in text and "kill switch: off" in text

        killed = subprocess.run([*VARON, "execute", "kill", "--reason", "status test", "--wait", "5"], cwd=REPO,
                                env=env(tmp_path), capture_output=True, timeout=60)
        assert killed.returncode == 0, killed.stderr.decode()
        _, err = executor.communicate(timeout=20)
    finally:
        feeder.kill()
        executor.kill()
    assert executor.returncode == 3, err.decode()
    fired = wait_for(lambda: alerts.exists() and alerts.read_text(), timeout=5)
    assert fired.startswith("kill_switch|executor default: kill switch fired (status test)")
    assert "on-alert command started" in err.decode()
    assert not path.exists()  # a kill is a clean stop: the metrics file is gone
    after = varon_status(tmp_path, "--once")
    assert after.returncode == 1 and b"kill switch engaged" in after.stderr


@pytest.mark.slow
def test_on_alert_runs_when_a_breaker_trips(signals_file: Path, tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.txt"
    done = subprocess.run([*VARON, "execute", "--clock", "event", "-i", str(signals_file), "-o",
                           str(tmp_path / "f.arrows"), "--on-alert", ALERT_CMD + str(alerts)], cwd=REPO,
                          env=env(tmp_path, VARON_RISK__DAILY_LOSS_LIMIT="0.001", VARON_RISK__STRATEGY_EXPOSURE="1.0"),
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    fired = wait_for(lambda: alerts.exists() and alerts.read_text(), timeout=5)
    assert fired.startswith("breaker|executor default: daily loss breaker tripped")


@pytest.mark.slow
def test_on_alert_runs_when_the_collector_gives_up(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.txt"
    done = subprocess.run([*VARON, "collect", "coinbase", "--symbols", "BTC-USD", "--url", "ws://127.0.0.1:9",
                           "--max-retries", "1", "--on-alert", ALERT_CMD + str(alerts)], cwd=REPO,
                          env=env(tmp_path, VARON_COLLECT__BACKOFF_INITIAL="50ms", VARON_COLLECT__BACKOFF_MAX="100ms"),
                          capture_output=True, timeout=60)
    assert done.returncode == 1
    fired = wait_for(lambda: alerts.exists() and alerts.read_text(), timeout=5)
    assert fired.startswith("feed_lost|collect coinbase advanced BTC-USD: gave up: ws://127.0.0.1:9: giving up")
    assert not list((tmp_path / "run").glob("*.json"))


@pytest.mark.slow
def test_the_cron_health_check_alerts_when_an_expected_command_is_missing(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.txt"
    e = env(tmp_path, HEALTH_EXPECT="collect,execute", ALERT_COMMAND=ALERT_CMD + str(alerts))
    done = subprocess.run(["bash", str(REPO / "scripts" / "cron" / "healthcheck.sh")], env=e, capture_output=True,
                          timeout=60)
    assert done.returncode == 1
    kind, message = alerts.read_text().split("|", 1)
    assert kind == "health" and "expected collect: no healthy process running" in message
    assert "expected execute" in message

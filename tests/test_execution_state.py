"""The executor's operational safety: state directory, audit log, kill switch, and their commands.

Locks, durability and the kill switch are checked across real processes (marked
slow: they still run by default), since that is where they have to hold.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from varon_cli.errors import VaronError
from varon_cli.execution import audit
from varon_cli.execution.audit import AuditError, AuditLog, find_intents, iter_records, verify
from varon_cli.execution.killswitch import (KILL_FILE, KillRequested, KillSwitch, consume_reset, engage, is_engaged,
                                            release, request_reset)
from varon_cli.execution.statedir import StateCorrupt, StateDir, StateLocked

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# == state directory =================================================================
def test_state_round_trip_is_exact_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "state-dir")
    assert sd.load_state("btc") is None
    state = {"positions": {"BTC-USD": {"size": 0.125, "entry": 64_000.5}}, "peak": float("inf"), "pnl": float("nan"),
             "orders": [1, 2, 3], "seq": np.int64(7), "equity": np.float64(10_000.25)}
    sd.save_state("btc", state)
    sd.save_state("btc", {**state, "orders": [1, 2, 3, 4]})  # replaces, not appends
    back = sd.load_state("btc")
    assert back["positions"] == state["positions"] and back["orders"] == [1, 2, 3, 4]
    assert back["peak"] == math.inf and math.isnan(back["pnl"]) and back["seq"] == 7 and back["equity"] == 10_000.25
    assert sorted(p.name for p in (sd.path / "state").iterdir()) == ["btc.json"]


@pytest.mark.parametrize("content", [b'{"positions": {"BTC-USD": ', b"[1, 2]", b"\xff\xfe"])
def test_corrupt_state_is_an_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    sd = StateDir(tmp_path)
    sd.state_path("btc").write_bytes(content)
    with pytest.raises(StateCorrupt) as err:
        sd.load_state("btc")
    assert str(sd.state_path("btc")) in err.value.message and "corrupt" in err.value.message
    assert err.value.exit_code == 65


def test_executor_names_must_be_plain_file_names(tmp_path: Path) -> None:
    sd = StateDir(tmp_path)
    for bad in ("../escape", "", ".hidden", "a/b"):
        with pytest.raises(VaronError):
            sd.save_state(bad, {})
    assert not (tmp_path / "escape.json").exists()


def test_registration_lists_live_executors_only(tmp_path: Path) -> None:
    sd = StateDir(tmp_path)
    with sd.register("alpha") as me:
        [info] = sd.running()
        assert (info.pid, info.name, info.argv) == (os.getpid(), "alpha", sys.argv)
        assert info == me and abs(info.started_ns - time.time_ns()) < 60e9
    assert sd.running() == [] and list((tmp_path / "executors").iterdir()) == []

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    record = {"pid": dead_pid, "name": "ghost", "started_ns": 1, "argv": [], "proc_start": None}
    (tmp_path / "executors" / f"{dead_pid}.json").write_text(json.dumps(record))
    # our own pid, recorded with another start time: a recycled pid, not an executor
    recycled = {**record, "pid": os.getpid(), "proc_start": 12345}
    (tmp_path / "executors" / f"{os.getpid()}.json").write_text(json.dumps(recycled))
    assert sd.running() == []
    assert list((tmp_path / "executors").iterdir()) == []  # both cleaned by the reader


@pytest.mark.slow
def test_lock_refuses_a_second_holder_and_names_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from varon_cli.execution.statedir import StateDir
            with StateDir(sys.argv[1]).lock("alpha"):
                print("locked", flush=True)
                time.sleep(30)
        """), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        sd = StateDir(tmp_path)
        with pytest.raises(StateLocked) as err:
            with sd.lock("alpha"):
                pytest.fail("a second holder got the lock")
        assert f"pid {holder.pid}" in err.value.message and "alpha" in err.value.message
        with sd.lock("beta"):  # another name is another lock
            pass
    finally:
        holder.kill()  # kill -9: the kernel must release the lock
        holder.wait()
    with StateDir(tmp_path).lock("alpha"):
        assert (tmp_path / "locks" / "alpha.lock").read_text() == str(os.getpid())


# == audit log =========================================================================
def write_log(path: Path, n: int) -> None:
    with AuditLog(path) as log:
        for i in range(n):
            log.append("signal", symbol="BTC-USD", target=i / 10)


def test_audit_records_are_chained_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=iter(range(100, 200)).__next__) as log:
        assert log.append("start", argv=["varon", "execute"]) == 1
        assert log.append("order_intent", durable=True, cloid="0xabc", size=0.5) == 2
        assert log.head[0] == 2
    first, second = [json.loads(line) for line in lines(path)]
    assert list(first)[:3] == ["seq", "ts", "kind"] and (first["ts"], second["ts"]) == (100, 101)
    assert first["prev"] == audit.GENESIS
    assert second["prev"] == audit._line_hash(lines(path)[0].rstrip(b"\n"))
    assert second["hash"] == audit.record_hash(second) and second["cloid"] == "0xabc"
    assert verify(path) == (True, None)


def test_verify_finds_a_changed_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    text = lines(path)
    text[2] = text[2].replace(b'"target":0.2', b'"target":0.9')
    path.write_bytes(b"".join(text))
    assert verify(path) == (False, 3)


def test_verify_finds_a_changed_line_even_with_its_hash_recomputed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    text = lines(path)
    record = json.loads(text[2])
    record["target"] = 0.9
    record["hash"] = audit.record_hash(record)
    text[2] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(text))
    assert verify(path) == (False, 4)  # the next record no longer follows it


def test_verify_finds_a_deleted_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    text = lines(path)
    del text[2]
    path.write_bytes(b"".join(text))
    assert verify(path) == (False, 3)


def test_reopening_continues_the_sequence_and_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    with AuditLog(path) as log:
        assert log.head[0] == 3 and log.recovered_tail is None
        assert log.append("stop", reason="done") == 4
    assert [r["seq"] for r in iter_records(path)] == [1, 2, 3, 4]
    assert verify(path) == (True, None)


def test_a_torn_last_line_is_moved_aside_and_the_chain_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    torn = b'{"seq":4,"ts":17,"kind":"order_intent","cloid":"0x'
    with path.open("ab") as f:
        f.write(torn)
    assert verify(path) == (False, 4)
    assert [r["seq"] for r in iter_records(path)] == [1, 2, 3]  # readers skip it too
    with caplog.at_level(logging.WARNING, logger="varon.execute.audit"), AuditLog(path) as log:
        assert log.recovered_tail is not None and log.recovered_tail.read_bytes() == torn
        assert log.append("start") == 4
    assert "cut short" in caplog.text
    assert verify(path) == (True, None)
    assert len(lines(path)) == 4


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    path.write_bytes(path.read_bytes()[:-1])
    assert [r["seq"] for r in iter_records(path)] == [1, 2, 3]
    with AuditLog(path) as log:
        assert log.recovered_tail is None and log.head[0] == 3
        assert log.append("start") == 4
    assert verify(path) == (True, None)


def test_a_corrupt_last_record_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    path.write_bytes(path.read_bytes().replace(b'"target":0.1', b'"target":0.7'))
    with pytest.raises(AuditError, match="last record is corrupt"):
        AuditLog(path)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path):
        with pytest.raises(AuditError, match="another process"):
            AuditLog(path)
    with AuditLog(path) as log:  # released on close
        log.append("start")


def test_values_json_cannot_hold_never_stop_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("risk", nan=float("nan"), inf=math.inf, ninf=-math.inf, np_nan=np.float64("nan"), n=np.int64(3),
                   arr=np.array([1.5, np.inf]), nested={"x": (float("nan"), {1: 2})}, when=Path("/x"))
    raw = path.read_text()

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    record = json.loads(raw, parse_constant=no_constants)
    assert (record["nan"], record["inf"], record["ninf"], record["np_nan"]) == ("NaN", "Infinity", "-Infinity", "NaN")
    assert record["n"] == 3 and record["arr"] == [1.5, "Infinity"]
    assert record["nested"] == {"x": ["NaN", {"1": 2}]} and record["when"] == "/x"
    assert verify(path) == (True, None)


def test_append_refuses_unknown_kinds_and_reserved_fields(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.jsonl") as log:
        with pytest.raises(ValueError, match="kind"):
            log.append("oops")
        with pytest.raises(ValueError, match="seq"):
            log.append("order", seq=3)
        assert log.append("order") == 1  # nothing was written by the refusals


def test_find_intents_by_cloid(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    assert find_intents(path) == {}
    with AuditLog(path) as log:
        log.append("order_intent", durable=True, cloid="0x01", symbol="BTC-USD", size=0.1)
        log.append("order", cloid="0x01", status="filled")
        log.append("order_intent", durable=True, cloid="0x02", symbol="ETH-USD", size=2.0)
    intents = find_intents(path)
    assert sorted(intents) == ["0x01", "0x02"]
    assert intents["0x02"]["symbol"] == "ETH-USD" and intents["0x02"]["kind"] == "order_intent"


@pytest.mark.slow
def test_durable_append_is_fsynced_and_readable_by_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    log = AuditLog(path)
    try:
        synced.clear()
        log.append("signal", symbol="BTC-USD")
        assert synced == []  # plain records wait for sync()
        log.append("order_intent", durable=True, cloid="0xfeed", size=1.25)
        assert synced == [log._fd]
        reader = subprocess.run(
            [sys.executable, "-c", "import sys, json; from varon_cli.execution.audit import find_intents; "
                                   "print(json.dumps(find_intents(sys.argv[1])))", str(path)],
            capture_output=True, text=True, env=child_env(), timeout=30)
        assert reader.returncode == 0, reader.stderr
        assert json.loads(reader.stdout)["0xfeed"]["size"] == 1.25  # while the writer still holds the file open
        log.sync()
        assert synced == [log._fd, log._fd]
    finally:
        log.close()


# == kill switch: files and resets =================================================
def test_kill_file_contents_give_the_reason(tmp_path: Path) -> None:
    assert is_engaged(tmp_path) is None
    assert engage(tmp_path, "feed looks wrong") == []
    assert is_engaged(tmp_path) == "feed looks wrong"
    record = json.loads((tmp_path / KILL_FILE).read_text())
    assert record["pid"] == os.getpid() and record["user"] and record["ts_ns"] > 0
    assert release(tmp_path) is True and is_engaged(tmp_path) is None and release(tmp_path) is False
    (tmp_path / KILL_FILE).write_text("")
    assert "present" in is_engaged(tmp_path)  # any file named KILL engages it
    (tmp_path / KILL_FILE).write_text("stop\nnow")
    assert is_engaged(tmp_path) == "stop now"


def test_each_executor_consumes_each_reset_once(tmp_path: Path) -> None:
    StateDir(tmp_path)
    assert consume_reset(tmp_path, "alpha") is False
    assert request_reset(tmp_path) == 1
    assert consume_reset(tmp_path, "alpha") is True
    assert consume_reset(tmp_path, "alpha") is False
    assert consume_reset(tmp_path, "beta") is True  # an executor stopped at reset time gets it when it starts
    assert request_reset(tmp_path) == 2
    assert [consume_reset(tmp_path, n) for n in ("alpha", "beta", "alpha")] == [True, True, False]
    (tmp_path / "RESET").write_text("{")
    with pytest.raises(StateCorrupt, match="RESET"):
        consume_reset(tmp_path, "alpha")


def test_check_refuses_while_engaged(tmp_path: Path) -> None:
    ks = KillSwitch(tmp_path)
    ks.check()
    engage(tmp_path, "drill")
    with pytest.raises(KillRequested) as err:
        ks.check()
    assert err.value.reason == "drill" and err.value.exit_code == 3


# == kill switch: across processes ===================================================
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from varon_cli import runtime
    from varon_cli.execution.killswitch import KillRequested, KillSwitch
    from varon_cli.execution.statedir import StateDir

    state, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    ks = KillSwitch(state)
    stage = "refused"
    try:
        ks.check()
        with ks, StateDir(state).register("child"):
            stage = "killed"
            if mode == "critical":
                with runtime.critical():
                    out.write_text("in-critical")
                    time.sleep(0.6)
                    out.write_text("critical-done")
            else:
                out.write_text("ready")
            while True:
                time.sleep(0.05)
    except KillRequested as exc:
        with out.open("a") as f:
            f.write(f"|{stage}:{exc.reason}")
        sys.exit(exc.exit_code)
""")


class Child:
    """An executor stand-in: `KillSwitch.install()`, register, then sleep until killed."""

    def __init__(self, tmp_path: Path, state: Path, mode: str = "plain") -> None:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        self.out = tmp_path / f"child-{time.monotonic_ns()}.txt"
        self.proc = subprocess.Popen([sys.executable, str(script), str(state), str(self.out), mode], env=child_env())

    def text(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def wait_started(self, marker: str = "ready") -> None:
        wait_for(lambda: self.text().startswith(marker) or self.proc.poll() is not None, what="the child to start")
        assert self.proc.poll() is None, f"child exited with {self.proc.returncode}: {self.text()!r}"

    def exit_within(self, seconds: float) -> float:
        started = time.monotonic()
        try:
            rc = self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"child still running {seconds} s after the kill") from None
        assert rc == 3, (rc, self.text())
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def children(tmp_path: Path):
    made: list[Child] = []
    yield lambda state, mode="plain": made.append(Child(tmp_path, state, mode)) or made[-1]
    for child in made:
        child.stop()


@pytest.mark.slow
def test_engage_signals_a_running_executor(tmp_path: Path, children) -> None:  # noqa: ANN001
    state = tmp_path / "state"
    child = children(state)
    child.wait_started()
    assert [e.pid for e in StateDir(state).running()] == [child.proc.pid]
    signalled = engage(state, "drill one")
    assert [e.pid for e in signalled] == [child.proc.pid]
    child.exit_within(1.0)
    assert child.text() == "ready|killed:drill one"
    assert StateDir(state).running() == []  # it deregistered on the way out


@pytest.mark.slow
def test_a_kill_file_made_by_hand_stops_an_executor(tmp_path: Path, children) -> None:  # noqa: ANN001
    state = tmp_path / "state"
    child = children(state)
    child.wait_started()
    with open(state / KILL_FILE, "w") as f:  # no signal: only the watcher can notice
        f.write("operator says stop\n")
    child.exit_within(1.0)
    assert child.text() == "ready|killed:operator says stop"


@pytest.mark.slow
def test_a_kill_during_a_critical_write_waits_for_it(tmp_path: Path, children) -> None:  # noqa: ANN001
    state = tmp_path / "state"
    child = children(state, "critical")
    child.wait_started("in-critical")
    engage(state, "mid-write")
    child.exit_within(1.5)
    assert child.text() == "critical-done|killed:mid-write"  # the write finished, then the kill


@pytest.mark.slow
def test_an_engaged_switch_refuses_to_start_until_released(tmp_path: Path, children) -> None:  # noqa: ANN001
    state = tmp_path / "state"
    engage(state, "stay down")
    refused = children(state)
    refused.exit_within(15.0)  # includes the interpreter's start-up
    assert refused.text() == "|refused:stay down"
    assert release(state) is True
    child = children(state)
    child.wait_started()
    time.sleep(0.5)  # several watcher polls: nothing left to stop it
    assert child.proc.poll() is None
    engage(state, "done")
    child.exit_within(1.0)


@pytest.mark.slow
def test_a_signal_without_a_kill_file_still_stops(tmp_path: Path, children) -> None:  # noqa: ANN001
    state = tmp_path / "state"
    child = children(state)
    child.wait_started()
    os.kill(child.proc.pid, signal.SIGUSR1)
    child.exit_within(1.0)
    assert child.text() == "ready|killed:SIGUSR1 received without a kill file"


# == the commands ====================================================================
@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch):
    """`kill` and `reset` under a CliRunner; restores the signal handlers and logging they change."""
    import typer
    from typer.testing import CliRunner

    from commands.execute_ops import kill, reset

    for key in list(os.environ):
        if key.startswith("VARON_"):
            monkeypatch.delenv(key)
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("kill")(kill)
    app.command("reset")(reset)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    log = logging.getLogger("varon")
    saved = (list(log.handlers), log.level, log.propagate)
    yield lambda *args: CliRunner().invoke(app, list(args))
    for s, h in handlers.items():
        signal.signal(s, h)
    log.handlers[:], log.level, log.propagate = saved


def test_kill_and_reset_commands(runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    state = tmp_path / "state"
    res = runner("kill", "--state-dir", str(state), "--reason", "cli drill")
    assert res.exit_code == 0, res.output
    assert "kill switch engaged" in res.stderr and "no executor running" in res.stderr and res.stdout == ""
    assert is_engaged(state) == "cli drill"
    res = runner("reset", "--state-dir", str(state))
    assert res.exit_code == 0, res.output
    assert "released" in res.stderr and "reset #1" in res.stderr
    assert is_engaged(state) is None and consume_reset(state, "alpha") is True

    monkeypatch.chdir(tmp_path)  # the default comes from config execute.state_dir
    res = runner("kill")
    assert res.exit_code == 0, res.output
    assert is_engaged(tmp_path / ".varon" / "state") == "manual"

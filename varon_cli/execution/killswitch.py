"""The kill switch: one file that stops every executor on a state directory and keeps them stopped.

`engage` writes STATE_DIR/KILL and sends SIGUSR1 to each registered executor;
inside an executor, `KillSwitch` turns SIGUSR1 into `KillRequested` in the main
thread (exit code 3), and a watcher thread polls for the file every 0.2 s, so a
kill file dropped by hand (`touch .varon/state/KILL`, or from another machine
over a shared disk where signals cannot reach) stops trading within a second.
While the file exists `KillSwitch.check()` refuses to start. Only
`varon execute reset` (`release`) removes it: a kill is never undone by a
restart.

Circuit breakers that stay tripped until an operator says otherwise (the
drawdown breaker) are cleared the same way. `request_reset` writes STATE_DIR/RESET,
{"seq", "token", ...}; every executor calls `consume_reset(state_dir, name)`
at start and once per batch, which answers True once per new token and
remembers it in STATE_DIR/resets/<name>.json. A counter rather than a file that
the first reader deletes, so every executor sees each reset, including one that
was stopped when the reset was made.

Exit code 3 means "stopped by the kill switch": apart from 1 (error), 64-78
(sysexits) and 128+n (signals), so a supervisor can tell a kill from a crash
and must not restart the executor.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from varon_cli import runtime
from varon_cli.execution.statedir import ExecutorInfo, StateCorrupt, StateDir, check_name, fsync_dir, write_atomic

log = logging.getLogger("varon.execute.kill")

KILL_FILE = "KILL"
RESET_FILE = "RESET"
KILL_EXIT_CODE = 3
POLL_S = 0.2


class KillRequested(BaseException):
    """The kill switch is engaged: stop trading now. A BaseException, like `runtime.Interrupted`,
    so a broad `except Exception` in the trading loop cannot swallow it."""

    exit_code = KILL_EXIT_CODE

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _who() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    now = time.time_ns()
    return {"ts_ns": now, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1e9)),
            "user": user, "host": socket.gethostname(), "pid": os.getpid()}


# -- operator side -----------------------------------------------------------------
def engage(state_dir: Path | str, reason: str) -> list[ExecutorInfo]:
    """Engage the kill switch and signal every running executor; returns those signalled.

    The file is written first, so an executor starting at the same moment either
    is registered (and signalled) or finds the file. The calling process is not
    signalled: an executor that engages the switch itself knows it did."""
    sd = StateDir(state_dir)
    write_atomic(sd.path / KILL_FILE, json.dumps({"reason": reason, **_who()}, indent=1).encode())
    signalled = []
    for info in sd.running():
        if info.pid == os.getpid():
            continue
        try:
            os.kill(info.pid, signal.SIGUSR1)
        except ProcessLookupError:
            continue  # stopped in between
        except PermissionError:
            log.warning("cannot signal %s: not permitted; it stops at its next kill file poll", info.describe())
            continue
        signalled.append(info)
    return signalled


def release(state_dir: Path | str) -> bool:
    """Remove the kill file; returns whether the switch was engaged."""
    path = Path(state_dir) / KILL_FILE
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def is_engaged(state_dir: Path | str) -> str | None:
    """The reason the kill switch is engaged, or None.

    Any file named KILL engages it, whatever it holds (a hand-made empty or
    plain-text file too); one that cannot be read still counts: fail closed."""
    path = Path(state_dir) / KILL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"kill file {path} present (unreadable: {exc.strerror})"
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        record = None
    if isinstance(record, dict) and isinstance(record.get("reason"), str) and record["reason"].strip():
        return record["reason"].strip()
    text = data.decode(errors="replace").strip()
    return " ".join(text.split())[:200] if text else f"kill file {path} present"


def request_reset(state_dir: Path | str) -> int:
    """Ask every executor on the state directory to clear its circuit breakers; returns the reset's seq."""
    sd = StateDir(state_dir)
    previous = _read_reset(sd.path)
    seq = int(previous.get("seq", 0)) + 1 if previous else 1
    who = _who()
    record = {"seq": seq, "token": f"{seq}-{who['ts_ns']}-{os.getpid()}", **who}
    write_atomic(sd.path / RESET_FILE, json.dumps(record, indent=1).encode())
    return seq


def consume_reset(state_dir: Path | str, name: str) -> bool:
    """True once for each reset requested since executor `name` last consumed one.

    The executor clears its breakers (and writes a `reset` audit record) when it
    gets True. An executor that never consumed one (no resets/<name>.json) gets
    True for the latest reset, which clears nothing it has not already restored."""
    root = Path(state_dir)
    current = _read_reset(root)
    if not current:
        return False
    seen_path = root / "resets" / f"{check_name(name)}.json"
    try:
        seen = json.loads(seen_path.read_bytes()).get("token")
    except FileNotFoundError:
        seen = None
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise StateCorrupt(f"reset acknowledgement {seen_path} is corrupt; delete it") from None
    if seen == current["token"]:
        return False
    seen_path.parent.mkdir(exist_ok=True)
    write_atomic(seen_path, json.dumps({"token": current["token"], "seq": current.get("seq")}).encode())
    return True


def _read_reset(root: Path) -> dict[str, Any] | None:
    path = root / RESET_FILE
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("token"), str):
        raise StateCorrupt(f"reset file {path} is corrupt; run `varon execute reset` again")
    return record


# -- executor side -------------------------------------------------------------------
def _in_critical() -> bool:
    """Whether a write guarded by `runtime.critical()` is under way.

    Reads runtime's private counter: critical() can only re-raise the SIGINT/SIGTERM
    it deferred as `Interrupted`, so a deferred kill is re-sent by the watcher
    instead (at most POLL_S after the write ends)."""
    return bool(runtime._state["critical"])


class KillSwitch:
    """The kill switch as seen from inside one executor.

    Use: `ks.check()` before trading, then `with ks:` (install/uninstall) around
    `StateDir.register()` and the trading loop; catch `KillRequested`, cancel and
    flush, and exit with its `exit_code`."""

    def __init__(self, state_dir: Path | str, poll_s: float = POLL_S) -> None:
        self.state_dir = Path(state_dir)
        self.poll_s = poll_s
        self.fired = False  # KillRequested has been raised; later signals are ignored so cleanup runs in peace
        self._pending = False  # a kill arrived during a critical write
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._previous: Any = None

    def check(self) -> None:
        """Raise `KillRequested` if the switch is engaged: an engaged switch refuses to start trading."""
        reason = is_engaged(self.state_dir)
        if reason is not None:
            raise KillRequested(reason)

    def install(self) -> None:
        """Handle SIGUSR1 and start watching for the kill file (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("KillSwitch.install() must run in the main thread")
        if self._watcher is not None:
            return
        self._previous = signal.signal(signal.SIGUSR1, self._on_signal)
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="varon-killswitch", daemon=True)
        self._watcher.start()

    def uninstall(self) -> None:
        """Stop watching and restore the previous SIGUSR1 handler (after deregistering the executor)."""
        if self._watcher is None:
            return
        self._stop.set()
        self._watcher.join()  # no signal may come from it once the old handler is back
        self._watcher = None
        signal.signal(signal.SIGUSR1, self._previous if self._previous is not None else signal.SIG_DFL)

    def __enter__(self) -> KillSwitch:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _on_signal(self, _signum: int, _frame: object) -> None:
        if self.fired:
            return
        if _in_critical():
            self._pending = True
            return
        self.fired, self._pending = True, False
        raise KillRequested(is_engaged(self.state_dir) or "SIGUSR1 received without a kill file")

    def _watch(self) -> None:
        path = str(self.state_dir / KILL_FILE)
        while not self._stop.wait(self.poll_s):
            if self.fired:
                return
            if self._pending or os.path.lexists(path):
                os.kill(os.getpid(), signal.SIGUSR1)


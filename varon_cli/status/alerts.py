"""--on-alert: run an operator's shell command when something needs a person, never waiting for it.

An alert is logged (WARNING) whether or not a command is set. With one set
(`--on-alert CMD` on collect and execute, or `status.on_alert`), `sh -c CMD`
starts from a short-lived thread, in its own session, with stdin from
/dev/null and its stdout and stderr on the command's stderr (the log; never
on stdout, which carries data), and with

    VARON_ALERT_KIND     breaker | kill_switch | feed_lost | feed_restored
    VARON_ALERT_MESSAGE  one line saying what happened
    VARON_ALERT_COMMAND  the varon command that raised it (execute, collect)
    VARON_ALERT_PID      its pid
    VARON_ALERT_TIME     UTC, ISO 8601

added to the environment. Nothing waits for it: the trading loop only starts
a thread; the thread starts the process and reaps it, logging a non-zero exit.
A command that exits right after an alert (the kill switch) gives the thread
at most FLUSH_S to start the process, which then outlives it. At most
MAX_RUNNING commands run at once; further alerts are logged and not run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

log = logging.getLogger("varon.alert")

MAX_RUNNING = 8
FLUSH_S = 2.0

_settings = {"command": "", "source": ""}
_lock = threading.Lock()
_starting: list[threading.Event] = []  # set once its process has started (or failed to)
_running = [0]


def configure(command: str, source: str) -> None:
    """The shell command to run on alerts ('' = log only) and the varon command raising them."""
    _settings["command"] = command or ""
    _settings["source"] = source


def fire(kind: str, message: str) -> None:
    """Log the alert and start the --on-alert command for it; returns at once."""
    log.warning("ALERT %s: %s", kind, message)
    command = _settings["command"]
    if not command:
        return
    started = threading.Event()
    with _lock:
        if _running[0] >= MAX_RUNNING:
            log.error("ALERT %s: %d on-alert commands still running; not starting another", kind, _running[0])
            return
        _running[0] += 1
        _starting.append(started)
    threading.Thread(target=_run, args=(command, kind, message, started), name="varon-alert", daemon=True).start()


def flush(timeout: float = FLUSH_S) -> None:
    """Give alert threads up to `timeout` to start their processes before this process exits.

    Only the start is waited for: the commands themselves outlive us."""
    deadline = time.monotonic() + timeout
    with _lock:
        pending = list(_starting)
    for started in pending:
        started.wait(max(deadline - time.monotonic(), 0.0))


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # an embedding runner's stderr: no descriptor
        return subprocess.DEVNULL


def _run(command: str, kind: str, message: str, started: threading.Event) -> None:
    try:
        env = dict(os.environ)
        env.update({"VARON_ALERT_KIND": kind, "VARON_ALERT_MESSAGE": message,
                    "VARON_ALERT_COMMAND": _settings["source"], "VARON_ALERT_PID": str(os.getpid()),
                    "VARON_ALERT_TIME": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        err = _stderr_fd()
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL, stdout=err,
                                    stderr=err, start_new_session=True, close_fds=True)
        except OSError as exc:
            log.error("ALERT %s: cannot run the on-alert command: %s", kind, exc)
            return
        finally:
            started.set()
            with _lock:
                _starting.remove(started)
        log.info("ALERT %s: on-alert command started (pid %d)", kind, proc.pid)
        code = proc.wait()
        if code:
            log.warning("ALERT %s: on-alert command exited with %d", kind, code)
    finally:
        with _lock:
            _running[0] -= 1

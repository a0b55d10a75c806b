"""The state directory an executor runs in: who is running, its saved state, its lock.

Everything an operator or a restarted executor needs lives under one directory
(config `execute.state_dir`), as small files a person can read:

    executors/<pid>.json   one per running executor (name, start time, argv)
    locks/<name>.lock      flock held while an executor of that name runs
    state/<name>.json      the executor's last saved state
    audit/<name>.jsonl     its audit log (see audit.py; `StateDir.audit_path`)
    KILL, RESET, resets/   the kill switch and breaker resets (see killswitch.py)

State files are replaced atomically (temporary name, fsync, rename, fsync of
the folder), so a crash leaves either the old state or the new one, never half
of each (DESIGN principle 7). A process that dies without cleaning up leaves a
registration behind; readers check that the pid is still alive and is still
the same process (its kernel start time), so a recycled pid is never mistaken
for an executor - and never sent a kill signal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from varon_cli.errors import UsageError, VaronError
from varon_cli.runtime import critical

log = logging.getLogger("varon.execute.state")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class StateCorrupt(VaronError):
    """A state file that cannot be read: never treated as empty, or the executor would forget positions."""

    exit_code = 65  # EX_DATAERR


class StateLocked(VaronError):
    """Another executor of the same name runs on this state directory."""

    exit_code = 75  # EX_TEMPFAIL: try again when the other one has stopped


@dataclass(frozen=True)
class ExecutorInfo:
    """A running executor, as it registered itself."""

    pid: int
    name: str
    started_ns: int  # wall-clock time of registration, ns since the epoch
    argv: list[str]

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"


def check_name(name: str) -> str:
    """An executor name doubles as a file name, so it must be a plain one."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"executor name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, not starting with '.')")
    return name


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash at any point leaves the old file or the new one.

    The write runs inside `runtime.critical()`: SIGINT/SIGTERM wait until it ends."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with critical():
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)  # the rename itself survives a power cut


def fsync_dir(path: Path) -> None:
    """Make the entries of a folder (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _proc_start(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where /proc has no such entry.

    Together with the pid it names one process for the life of the machine; a
    zombie (exited, not yet reaped) counts as gone and gives -1."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return -1 if fields[0] in ("Z", "X") else int(fields[19])


def pid_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether `pid` runs and, when its recorded `proc_start` is given, is still the same process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    now = _proc_start(pid)
    if now == -1:
        return False
    return proc_start is None or now is None or now == proc_start


class StateDir:
    """One executor state directory; creating the object creates the directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            for sub in ("executors", "locks", "state"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VaronError(f"state directory {self.path}: {exc.strerror}") from None

    def audit_path(self, name: str) -> Path:
        """Where the executor `name` keeps its audit log."""
        return self.path / "audit" / f"{check_name(name)}.jsonl"

    # -- running executors -------------------------------------------------------
    @contextlib.contextmanager
    def register(self, name: str) -> Iterator[ExecutorInfo]:
        """Record this process as the running executor `name` until the block ends.

        Install the kill switch before registering: `engage` signals every
        registered pid, and SIGUSR1 without a handler terminates a process."""
        pid = os.getpid()
        info = ExecutorInfo(pid=pid, name=check_name(name), started_ns=time.time_ns(), argv=list(sys.argv))
        record = {"pid": pid, "name": info.name, "started_ns": info.started_ns, "argv": info.argv,
                  "proc_start": _proc_start(pid)}
        path = self.path / "executors" / f"{pid}.json"
        write_atomic(path, json.dumps(record).encode())
        try:
            yield info
        finally:
            path.unlink(missing_ok=True)

    def running(self) -> list[ExecutorInfo]:
        """Registered executors whose process is alive, oldest first; registrations of dead ones are removed."""
        found = []
        for path in (self.path / "executors").glob("*.json"):
            try:
                pid = int(path.stem)
                record = json.loads(path.read_bytes())
                info = ExecutorInfo(pid=pid, name=str(record["name"]), started_ns=int(record["started_ns"]),
                                    argv=[str(a) for a in record["argv"]])
                alive = pid_alive(pid, record.get("proc_start"))
            except FileNotFoundError:
                continue  # it deregistered while we looked
            except (ValueError, TypeError, KeyError, AttributeError):
                log.warning("ignoring unreadable executor registration %s", path)
                continue
            if not alive:
                log.debug("removing the registration of dead executor pid %d", pid)
                path.unlink(missing_ok=True)
                continue
            found.append(info)
        return sorted(found, key=lambda e: (e.started_ns, e.pid))

    # -- exclusive run -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the exclusive right to run executor `name` on this directory until the block ends.

        An flock: the kernel drops it when the holder dies, even by kill -9, so a
        crashed executor never blocks its own restart. The holder's pid is written
        into the lock file so the refusal can say who holds it."""
        path = self.path / "locks" / f"{check_name(name)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise StateLocked(f"executor {name!r} is already running on {self.path} (pid {holder}); "
                                  "stop it first or run under another name") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the flock; the file stays (unlinking it would race the next holder)

    # -- saved state ---------------------------------------------------------------
    def state_path(self, name: str) -> Path:
        return self.path / "state" / f"{check_name(name)}.json"

    def save_state(self, name: str, state: dict[str, Any]) -> None:
        """Replace the saved state of executor `name`, atomically and durably.

        Floats round-trip exactly, NaN and infinities included (Python's JSON
        dialect: NaN, Infinity); numpy scalars are stored as plain numbers."""
        data = json.dumps(state, default=_plain, indent=1).encode()
        write_atomic(self.state_path(name), data)

    def load_state(self, name: str) -> dict[str, Any] | None:
        """The saved state of executor `name`, or None if it never saved one.

        A file that exists but does not parse raises `StateCorrupt`: an executor
        that silently started from nothing would forget its open positions."""
        path = self.state_path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateCorrupt(f"state file {path} is corrupt ({exc}); restore it or move it aside to start afresh") from None
        if not isinstance(state, dict):
            raise StateCorrupt(f"state file {path} is corrupt (holds a {type(state).__name__}, not an object); "
                               "restore it or move it aside to start afresh")
        return state


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain Python values; anything else is a bug in the caller."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"cannot store a {type(value).__name__} in executor state")

"""The executor's audit log: append-only JSON lines chained by SHA-256.

Every decision the executor takes (a signal seen, a risk refusal, an order
intent, an order, a fill, a breaker, a kill) is one line:

    {"seq": 7, "ts": <ns>, "kind": "order_intent", ...fields..., "prev": <hex>, "hash": <hex>}

`seq` counts from 1 with no gaps; `ts` is wall-clock ns since the epoch; `prev`
is the SHA-256 of the previous line's bytes (without its newline; 64 zeros for
the first record); `hash` is the SHA-256 of the record without `hash`, as
canonical JSON (sorted keys, no spaces, ASCII). Editing, inserting or deleting
a line therefore breaks the chain at that line, which `verify` reports. The
chain cannot show that lines were cut from the end: anchor it by saving
`AuditLog.head` with the executor's state.

Why the care with durability: an order intent is written with `durable=True`
(flushed and fsynced) before the order is sent, so after a crash `find_intents`
knows every client order id that may have reached the venue and none is ever
sent twice (DESIGN principle 7). Other records reach the kernel at once (no
user-space buffer, so another process reads them) and reach the disk on
`sync()`, which the executor calls once per batch.

A crash in the middle of a write leaves a line without its newline. Opening
the log repairs that: a fragment that is a whole, valid record gets its newline
back; anything else is moved to `<log>.torn-<ns>` and cut off, with a warning,
and the chain continues from the last good record. Non-finite floats are
written as the strings "NaN", "Infinity", "-Infinity"; values JSON cannot hold
(numpy scalars, datetimes, ...) as plain numbers or strings: logging never fails
on a value.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from varon_cli.errors import VaronError
from varon_cli.execution.statedir import fsync_dir
from varon_cli.runtime import critical

log = logging.getLogger("varon.execute.audit")

GENESIS = "0" * 64
KINDS = frozenset({"signal", "risk", "order_intent", "order", "fill", "breaker", "kill", "reset",
                   "start", "stop", "reconcile"})
RESERVED = frozenset({"seq", "ts", "kind", "prev", "hash"})


class AuditError(VaronError):
    """An audit log that cannot be continued: corrupt, or written by another process."""

    exit_code = 65  # EX_DATAERR


# -- encoding ----------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """`value` as plain JSON types; never raises, so a strange value cannot stop the log."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    for method in ("tolist", "item"):  # numpy arrays and scalars
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return _jsonable(convert())
            except Exception:  # noqa: BLE001 - try the next form, at worst the text one
                continue
    return str(value)


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    """The `hash` a record must carry: SHA-256 of its canonical JSON without `hash`."""
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _parse(line: bytes) -> dict[str, Any] | None:
    """A line (without newline) as a record whose own hash holds, else None."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or record.get("hash") != record_hash(record) or not isinstance(record.get("seq"), int):
        return None
    return record


# -- writing -------------------------------------------------------------------------
class AuditLog:
    """The writer of one audit log; one process at a time (an flock on the file says so)."""

    def __init__(self, path: Path | str, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(path)
        self._clock = clock
        self._mutex = threading.Lock()
        self.recovered_tail: Path | None = None  # where a torn last line was moved on open, if any
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditError(f"audit log {self.path} is being written by another process") from None
            if not existed:
                fsync_dir(self.path.parent)
            self.seq, self._prev, self._size = self._recover()
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def head(self) -> tuple[int, str]:
        """(last seq, SHA-256 of the last line): save it with the state to detect a log cut short."""
        return self.seq, self._prev

    def _recover(self) -> tuple[int, str, int]:
        """Where the chain goes on: (last seq, hash of the last line, file size), repairing a torn tail."""
        size = os.fstat(self._fd).st_size
        pos, buf = size, b""
        while pos > 0 and buf.count(b"\n") < 2:
            step = min(1 << 16, pos)
            pos -= step
            buf = os.pread(self._fd, step, pos) + buf
        cut = buf.rfind(b"\n") + 1
        body, torn = buf[:cut], buf[cut:]
        seq, prev = 0, GENESIS
        if body:
            last = body[body.rfind(b"\n", 0, len(body) - 1) + 1:-1]
            record = _parse(last)
            if record is None:
                raise AuditError(f"audit log {self.path}: its last record is corrupt; check it with verify and "
                                 "move the file aside to start a new log")
            seq, prev = record["seq"], _line_hash(last)
        if not torn:
            return seq, prev, size
        record = _parse(torn)
        if record is not None and record["seq"] == seq + 1 and record.get("prev") == prev:
            os.write(self._fd, b"\n")  # whole record, only its newline lost
            os.fsync(self._fd)
            log.info("audit log %s: completed record %d that a crash left without its newline", self.path, seq + 1)
            return seq + 1, _line_hash(torn), size + 1
        side = self.path.with_name(f"{self.path.name}.torn-{time.time_ns()}")
        side.write_bytes(torn)
        os.ftruncate(self._fd, pos + cut)
        os.fsync(self._fd)
        self.recovered_tail = side
        log.warning("audit log %s: %d bytes of a record cut short by a crash moved to %s; the log goes on from record %d",
                    self.path, len(torn), side, seq)
        return seq, prev, pos + cut

    def append(self, kind: str, *, durable: bool = False, **fields: Any) -> int:
        """Write one record and return its seq. `durable=True` returns only once it is on disk.

        A record is never cut by SIGINT/SIGTERM (`runtime.critical()`); a failed
        write is rolled back so the chain stays whole."""
        if kind not in KINDS:
            raise ValueError(f"audit record kind {kind!r}: not one of {sorted(KINDS)}")
        clash = RESERVED & fields.keys()
        if clash:
            raise ValueError(f"audit record fields {sorted(clash)} are set by the log itself")
        with self._mutex, critical():
            if self._fd < 0:
                raise ValueError(f"audit log {self.path} is closed")
            seq = self.seq + 1
            record = {"seq": seq, "ts": self._clock(), "kind": kind, **_jsonable(fields), "prev": self._prev}
            record["hash"] = record_hash(record)
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
            try:
                view = memoryview(line + b"\n")
                while view:
                    view = view[os.write(self._fd, view):]
                if durable:
                    os.fsync(self._fd)
            except BaseException:
                os.ftruncate(self._fd, self._size)  # no half record stays behind to break the chain
                raise
            self.seq, self._prev, self._size = seq, _line_hash(line), self._size + len(line) + 1
        return seq

    def sync(self) -> None:
        """Put every record written so far on disk."""
        with self._mutex:
            if self._fd >= 0:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._mutex:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading -------------------------------------------------------------------------
def iter_records(path: Path | str) -> Iterator[dict[str, Any]]:
    """The records of a log in order. A corrupt line raises `AuditError`, except a torn last line,
    which is skipped with a warning unless it is a whole record (as `AuditLog` treats it on open)."""
    path = Path(path)
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                record = _parse(line)
                if record is None:
                    log.warning("audit log %s: skipping line %d, cut short by a crash", path, number)
                    return
                yield record
                return
            try:
                record = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict):
                raise AuditError(f"audit log {path}: line {number} is not a JSON record")
            yield record


def find_intents(path: Path | str) -> dict[str, dict[str, Any]]:
    """Every order intent in the log by client order id ({} when there is no log yet).

    On restart the executor checks each against the venue before sending
    anything, so an intent written before a crash is never sent twice."""
    intents: dict[str, dict[str, Any]] = {}
    if not Path(path).exists():
        return intents
    for record in iter_records(path):
        if record.get("kind") != "order_intent":
            continue
        cloid = record.get("cloid")
        if not isinstance(cloid, str):
            log.warning("audit log %s: order intent %s has no cloid", path, record.get("seq"))
            continue
        if cloid in intents:
            log.warning("audit log %s: cloid %s has intents at seq %s and %s", path, cloid,
                        intents[cloid].get("seq"), record.get("seq"))
        intents[cloid] = record
    return intents


def verify(path: Path | str) -> tuple[bool, int | None]:
    """(True, None) if the whole chain holds, else (False, seq of the first line that breaks it).

    The seq reported is the position in the chain: for a deleted record it is the
    missing record's seq. The reason goes to the log as a warning. A log that is
    being written may end in a line not yet complete, which counts as broken."""
    path = Path(path)
    prev, expected = GENESIS, 1
    with path.open("rb") as f:
        for line in f:
            problem = _problem(line, expected, prev)
            if problem:
                log.warning("audit log %s: record %d: %s", path, expected, problem)
                return False, expected
            prev, expected = _line_hash(line[:-1]), expected + 1
    return True, None


def _problem(line: bytes, seq: int, prev: str) -> str | None:
    if not line.endswith(b"\n"):
        return "cut short (no end of line)"
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("seq") != seq:
        return f"has seq {record.get('seq')!r} (records missing or reordered)"
    if record.get("prev") != prev:
        return "does not follow the previous line (a line before it was changed or removed)"
    if record.get("hash") != record_hash(record):
        return "its content does not match its hash (changed)"
    return None

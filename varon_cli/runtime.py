"""Process life-cycle: signals, closed pipes, and the pump every command runs.

SIGINT and SIGTERM become an `Interrupted` exception so a command can flush
what it has accepted and exit. A signal that lands while a record batch is
being written waits until the write ends, so an output is never cut mid-message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from varon_cli.status.metrics import track_stage  # [status hook]


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the command should flush and stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class PipeClosed(Exception):
    """The reader of stdout went away (`| head`): stop quietly with exit 0."""


_state = {"critical": 0, "pending": 0}


def _on_signal(signum: int, _frame: object) -> None:
    if _state["critical"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Turn SIGINT/SIGTERM into `Interrupted` (main thread only)."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Defer SIGINT/SIGTERM until the block ends (one output write)."""
    _state["critical"] += 1
    try:
        yield
    finally:
        _state["critical"] -= 1
        if not _state["critical"] and _state["pending"]:
            signum, _state["pending"] = _state["pending"], 0
            raise Interrupted(signum)


def silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so interpreter exit cannot fail on it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@dataclass(frozen=True)
class Watermark:
    """Event time has reached `ts_ns` on the upstream: nothing older will follow."""

    ts_ns: int


StreamItem = pa.RecordBatch | Watermark


class Processor(Protocol):
    """A stage: batches and watermarks in, batches and watermarks out, flushed at the end.

    A stage decides what event-time progress to pass on: one that holds rows back
    (bars within their lateness) sends its own, smaller watermark."""

    def push(self, batch: pa.RecordBatch) -> Iterable[StreamItem]: ...

    def advance(self, watermark: Watermark) -> Iterable[StreamItem]: ...

    def finish(self) -> Iterable[StreamItem]: ...


class Sink(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def watermark(self, watermark: Watermark) -> None: ...


def pump(source: Iterable[StreamItem], processor: Processor, sink: Sink) -> None:
    """Feed `source` through `processor` into `sink`; on interrupt, flush what was accepted.

    Output batches are written as soon as the processor yields them, so a live
    consumer sees each result when it is ready, not at exit.
    """

    def emit(items: Iterable[StreamItem]) -> None:
        for out in items:
            if isinstance(out, Watermark):
                sink.watermark(out)
            else:
                sink.write(out)

    source = track_stage(source, sink)  # [status hook] counts and times each batch for `varon status`; no-op unless publishing
    try:
        for item in source:
            emit(processor.advance(item) if isinstance(item, Watermark) else processor.push(item))
    except Interrupted:
        with critical():
            emit(processor.finish())
        raise
    emit(processor.finish())

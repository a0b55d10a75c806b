"""Backfill progress on stderr: a rich bar for a person at a terminal, periodic log lines otherwise.

Cron and CI capture stderr as a log, where a redrawn bar is noise; there a
line every few seconds (logger `varon.collect.backfill`) says how far the run is.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("varon.collect.backfill")

LOG_EVERY_S = 10.0


class Progress(Protocol):
    def advance(self, n: int, note: str) -> None:
        """`n` more units done; `note` says where the fetch is (symbol and time)."""

    def close(self) -> None: ...


class LogProgress:
    """A log line at most every `every_s` seconds."""

    def __init__(self, label: str, total: int, unit: str, every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self._every_s = every_s
        self._clock = clock
        self._started = self._last = clock()

    def advance(self, n: int, note: str) -> None:
        self.done += n
        now = self._clock()
        if now - self._last >= self._every_s:
            self._last = now
            pct = 100.0 * self.done / self.total if self.total else 100.0
            rate = self.done / max(now - self._started, 1e-9)
            log.info("%s: %d/%d %s (%.0f%%), at %s, %.0f %s/s", self.label, self.done, self.total, self.unit,
                     pct, note, rate, self.unit)

    def close(self) -> None:
        pass


class RichProgress:
    """A transient rich progress bar on stderr."""

    def __init__(self, label: str, total: int, unit: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.label = label
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn(unit), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(label, total=total)

    def advance(self, n: int, note: str) -> None:
        self._bar.update(self._task, advance=n, description=f"{self.label} {note}")

    def close(self) -> None:
        self._bar.stop()


def make_progress(label: str, total: int, unit: str, tty: bool | None = None) -> Progress:
    """The rich bar when stderr is a terminal, log lines otherwise."""
    if tty is None:
        tty = sys.stderr.isatty()
    return RichProgress(label, total, unit) if tty else LogProgress(label, total, unit)

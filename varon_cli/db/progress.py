"""Progress of a long `varon db load` on stderr: a live line at a terminal, log lines otherwise.

At a terminal a rich status line shows rows read, rows added and the rate
(a large input file already shows streamio's reading bar, and rich allows one
live display at a time, so then only the log lines remain). Elsewhere, for
cron and CI, one log line every `every` seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from varon_cli.db.load import LoadStats

log = logging.getLogger("varon.db.load")


class LoadProgress:
    def __init__(self, label: str, live: bool | None = None, every: float = 10.0) -> None:
        self.label = label
        self.every = every
        self.live = sys.stderr.isatty() if live is None else live
        self._last = time.monotonic()
        self._display = None
        self._task = None

    def __enter__(self) -> LoadProgress:
        if self.live:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._display = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
            try:
                self._display.start()
            except Exception:  # noqa: BLE001 - another live display (streamio's bar) is showing
                self._display = None
            else:
                self._task = self._display.add_task(f"loading {self.label}")
        return self

    def __exit__(self, et: type | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._display is not None:
            self._display.stop()

    def __call__(self, stats: LoadStats) -> None:
        rate = stats.rows_read / stats.seconds if stats.seconds > 0 else 0.0
        text = (f"{self.label} -> {stats.table}: {stats.rows_read:,} rows read, {stats.rows_added:,} added, "
                f"{rate:,.0f} rows/s")
        if self._display is not None:
            self._display.update(self._task, description=text)
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            log.info("%s", text)

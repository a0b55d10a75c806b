"""Coverage-aware writers: a partitioned dataset (one file per venue/symbol/day) or one Parquet file.

Each file carries, in its schema metadata under `varon.backfill`, the time
spans it has fetched. A rerun asks the store what is covered and fetches only
the rest, so empty buckets (absent rows) are never asked for twice. Files are
written under a hidden temporary name, fsynced and renamed, so a run killed at
any instant (even kill -9) leaves either the old file or the new one, never a
partial or doubled one; readers skip hidden names, and the next run deletes
the leftovers. An exclusive lock keeps two runs (overlapping cron jobs) from
writing the same output.
"""

from __future__ import annotations

import abc
import fcntl
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from varon_cli.backfill.ranges import DAY_NS, Range, clip, days, merge
from varon_cli.backfill.rows import ts_ns, within
from varon_cli.backfill.source import Page
from varon_cli.errors import InputError, UsageError, VaronError
from varon_cli.runtime import critical
from varon_cli.schemas import INTERVAL_KEY, KIND_KEY, StreamKind

log = logging.getLogger("varon.collect.backfill")

COVERAGE_KEY = b"varon.backfill"
PART_NAME = "part-0.parquet"
LOCK_NAME = ".varon-backfill.lock"
TMP_MARK = ".tmp-"
FILE_FLUSH_EVERY_S = 60.0
PARTITION_KEYS = ("venue", "symbol")


class OutputBusy(VaronError):
    """Another backfill holds the output's lock (an overlapping cron run)."""

    exit_code = 75  # EX_TEMPFAIL: try again later


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds: its kind, venue, network and (for bars) interval; files must agree."""

    kind: StreamKind
    venue: str
    network: str = "mainnet"
    interval: str | None = None

    def describe(self) -> str:
        text = f"{self.venue} {self.network} {self.kind.name}"
        return f"{text} at {self.interval}" if self.interval else text


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write Parquet (zstd) under a hidden temporary name, fsync, and rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    with critical():
        try:
            pq.write_table(table, tmp, compression="zstd")
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class _Lock:
    """An exclusive flock on a hidden file; the kernel drops it when the process dies, even by kill -9."""

    def __init__(self, path: Path, output: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise OutputBusy(f"{output}: another backfill (pid {holder}) is writing here; try again when it ends") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class CoverageStore(abc.ABC):
    """Rows plus the spans they prove fetched, kept per symbol; pending pages are written by `flush`."""

    def __init__(self, path: Path, spec: StoreSpec) -> None:
        self.path = path
        self.spec = spec
        self.rows_written = 0
        self._lock: _Lock | None = None

    # -- metadata ------------------------------------------------------------------
    def _metadata(self, coverage: dict) -> dict[bytes, bytes]:
        record = {"venue": self.spec.venue, "network": self.spec.network, **coverage}
        extra = {COVERAGE_KEY: json.dumps(record, separators=(",", ":")).encode()}
        if self.spec.interval:
            extra[INTERVAL_KEY] = self.spec.interval.encode()
        return self.spec.kind.metadata(extra)

    def _check(self, path: Path, metadata: dict[bytes, bytes] | None) -> dict:
        """The file's coverage record, after checking that it holds what this run writes."""
        metadata = metadata or {}
        raw = metadata.get(COVERAGE_KEY)
        if raw is None:
            raise UsageError(f"{path}: not written by varon collect backfill (no coverage record); "
                             f"write the backfill to a new place")
        try:
            record = json.loads(raw)
        except ValueError:
            raise InputError(f"{path}: the backfill coverage record is not valid JSON") from None
        kind = metadata.get(KIND_KEY, b"").decode()
        interval = metadata.get(INTERVAL_KEY, b"").decode() or None
        found = StoreSpec(self.spec.kind, record.get("venue", "?"), record.get("network", "?"), interval)
        if kind != self.spec.kind.name or found != self.spec:
            held = f"{found.venue} {found.network} {kind}" + (f" at {interval}" if interval else "")
            raise UsageError(f"{path}: holds {held}, not {self.spec.describe()}; write this backfill to another place")
        return record

    # -- interface -------------------------------------------------------------------
    @abc.abstractmethod
    def covered(self, symbol: str, lo: int, hi: int) -> list[Range]:
        """The spans within [lo, hi) already fetched for `symbol`."""

    @abc.abstractmethod
    def add(self, symbol: str, page: Page) -> None:
        """Accept one fetched page; it is on disk after the next flush (which may happen now)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Write every pending page."""

    @abc.abstractmethod
    def _open(self) -> None:
        """Take the lock, remove leftovers of killed runs, read what is there."""

    def __enter__(self) -> CoverageStore:
        try:
            self._open()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        return self

    def __exit__(self, et: type | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        # Pages already fetched are correct whatever stopped the run (an error, a
        # signal): keep them, so the rerun starts after them.
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - do not mask the error that ended the run
            if ev is None:
                raise
            log.error("could not save fetched pages to %s: %s", self.path, exc)
        finally:
            if self._lock is not None:
                self._lock.release()


def _file_schema(kind: StreamKind, dataset: bool) -> pa.Schema:
    """Dataset files leave venue and symbol to their partition directories, as the dataset sink does."""
    if not dataset:
        return kind.schema
    return pa.schema([f for f in kind.schema if f.name not in PARTITION_KEYS])


def _outside(table: pa.Table, ranges: list[Range]) -> pa.Table:
    """Rows whose ts lies in none of `ranges` (rows inside are about to be replaced by a fresh fetch)."""
    if not table.num_rows or not ranges:
        return table
    ts = ts_ns(table)
    inside = np.zeros(len(ts), dtype=bool)
    for lo, hi in ranges:
        inside |= (ts >= lo) & (ts < hi)
    return table.filter(pa.array(~inside)) if inside.any() else table


class DatasetStore(CoverageStore):
    """A hive dataset venue=/symbol=/date=/part-0.parquet; each day file carries its own coverage.

    A day is written once the fetch has moved past it (and whatever is pending
    when the run ends or stops), so a killed run loses at most the day in hand.
    """

    def __init__(self, path: Path, spec: StoreSpec) -> None:
        super().__init__(path, spec)
        self._schema = _file_schema(spec.kind, dataset=True)
        self._pending: dict[tuple[str, int], tuple[list[pa.Table], list[Range]]] = defaultdict(lambda: ([], []))

    def _open(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"{self.path}: exists and is not a directory")
        self._lock = _Lock(self.path / LOCK_NAME, self.path)
        checked = False
        for folder, _dirs, files in os.walk(self.path):
            for name in files:
                if name.startswith(".") and TMP_MARK in name:
                    Path(folder, name).unlink(missing_ok=True)  # a run killed mid-write
                elif not checked and name.endswith(".parquet") and not name.startswith((".", "_")):
                    file = Path(folder, name)
                    self._check(file, pq.read_schema(file).metadata)
                    checked = True

    def day_path(self, symbol: str, day: int) -> Path:
        date = np.datetime64(day, "ns").astype("datetime64[D]")
        return (self.path / f"venue={quote(self.spec.venue, safe='')}" / f"symbol={quote(symbol, safe='-')}"
                / f"date={date}" / PART_NAME)

    def _day_record(self, path: Path) -> dict | None:
        if not path.exists():
            return None
        return self._check(path, pq.read_schema(path).metadata)

    def covered(self, symbol: str, lo: int, hi: int) -> list[Range]:
        out: list[Range] = []
        for day in days(lo, hi):
            record = self._day_record(self.day_path(symbol, day))
            if record is not None:
                out += clip((tuple(r) for r in record.get("covered", [])), max(lo, day), min(hi, day + DAY_NS))
        return merge(out)

    def add(self, symbol: str, page: Page) -> None:
        if page.hi <= page.lo and not page.rows.num_rows:
            return
        ts = ts_ns(page.rows)
        for day in days(page.lo, page.hi):
            a, b = np.searchsorted(ts, [day, day + DAY_NS])
            tables, ranges = self._pending[(symbol, day)]
            tables.append(page.rows.slice(a, b - a))
            ranges += clip([(page.lo, page.hi)], day, day + DAY_NS)
        for key in [k for k in self._pending if k[0] == symbol and k[1] + DAY_NS <= page.hi]:
            self._write_day(*key)

    def flush(self) -> None:
        for key in sorted(self._pending):
            self._write_day(*key)

    def _write_day(self, symbol: str, day: int) -> None:
        tables, ranges = self._pending[(symbol, day)]
        path = self.day_path(symbol, day)
        record = self._day_record(path)
        names = self._schema.names
        fresh = pa.concat_tables([t.select(names) for t in tables]) if tables else self._schema.empty_table()
        if record is not None:
            old = pq.read_table(path).select(names).cast(self._schema)
            fresh = pa.concat_tables([_outside(old, ranges), fresh.cast(self._schema)])
            ranges = ranges + [tuple(r) for r in record.get("covered", [])]
        table = within(fresh.cast(self._schema), day, day + DAY_NS)
        coverage = merge(clip(ranges, day, day + DAY_NS))
        write_atomic(table.replace_schema_metadata(self._metadata({"symbol": symbol, "covered": coverage})), path)
        self.rows_written += sum(t.num_rows for t in tables)
        del self._pending[(symbol, day)]


class FileStore(CoverageStore):
    """One Parquet file holding every symbol; its coverage is a map symbol -> spans.

    Each flush rewrites the whole file atomically, so flushes are spaced out
    (every minute, and when the run ends or stops)."""

    def __init__(self, path: Path, spec: StoreSpec, flush_every_s: float = FILE_FLUSH_EVERY_S) -> None:
        super().__init__(path, spec)
        self._schema = _file_schema(spec.kind, dataset=False)
        self._tables: dict[str, pa.Table] = {}
        self._coverage: dict[str, list[Range]] = {}
        self._pending: dict[str, tuple[list[pa.Table], list[Range]]] = defaultdict(lambda: ([], []))
        self._flush_every_s = flush_every_s
        self._flushed_at = time.monotonic()

    def _open(self) -> None:
        if self.path.is_dir():
            raise UsageError(f"{self.path}: is a directory; name a .parquet file or use the directory as a dataset")
        self._lock = _Lock(self.path.with_name(f".{self.path.name}.lock"), self.path)
        if self.path.parent.exists():
            for leftover in self.path.parent.glob(f".{self.path.name}{TMP_MARK}*"):
                leftover.unlink(missing_ok=True)
        if not self.path.exists():
            return
        try:
            table = pq.read_table(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{self.path}: cannot read: {str(exc).splitlines()[0]}") from None
        record = self._check(self.path, table.schema.metadata)
        self._coverage = {s: merge(tuple(r) for r in spans) for s, spans in record.get("covered", {}).items()}
        table = table.select(self._schema.names).cast(self._schema)
        for symbol in pc.unique(table["symbol"]).to_pylist():
            self._tables[symbol] = table.filter(pc.equal(table["symbol"], symbol))

    def covered(self, symbol: str, lo: int, hi: int) -> list[Range]:
        return merge(clip(self._coverage.get(symbol, []), lo, hi))

    def add(self, symbol: str, page: Page) -> None:
        if page.hi <= page.lo and not page.rows.num_rows:
            return
        tables, ranges = self._pending[symbol]
        tables.append(page.rows)
        ranges.append((page.lo, page.hi))
        if time.monotonic() - self._flushed_at >= self._flush_every_s:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        for symbol, (tables, ranges) in self._pending.items():
            old = self._tables.get(symbol, self._schema.empty_table())
            merged = pa.concat_tables([_outside(old, ranges)] + [t.select(self._schema.names).cast(self._schema) for t in tables])
            self._tables[symbol] = within(merged, -(2**63), 2**63 - 1)
            self._coverage[symbol] = merge(self._coverage.get(symbol, []) + ranges)
            self.rows_written += sum(t.num_rows for t in tables)
        table = pa.concat_tables(list(self._tables.values())) if self._tables else self._schema.empty_table()
        if table.num_rows:
            table = table.sort_by([("ts", "ascending"), ("symbol", "ascending")])
        coverage = {s: spans for s, spans in sorted(self._coverage.items())}
        write_atomic(table.replace_schema_metadata(self._metadata({"covered": coverage})), self.path)
        self._pending.clear()
        self._flushed_at = time.monotonic()


def open_store(path: str | Path, spec: StoreSpec) -> CoverageStore:
    """A dataset directory, or a single file when the name ends in .parquet."""
    target = Path(path)
    if str(path) == "-":
        raise UsageError("backfill cannot write to stdout: it resumes from what its output holds; "
                         "give -o DIR (a dataset) or -o FILE.parquet")
    suffix = target.suffix.lower()
    if suffix == ".parquet":
        return FileStore(target, spec)
    if suffix and not target.is_dir():
        raise UsageError(f"{path}: backfill writes a dataset directory or a .parquet file, not {suffix}")
    return DatasetStore(target, spec)

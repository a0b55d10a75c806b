"""The recording sink behind `varon collect ... -o DIR`: a live, crash-safe Parquet dataset.

DIR is a hive dataset (venue=/symbol=/date= of `ts` in UTC, zstd Parquet), the
layout `DatasetSink` writes and `open_input` reads. A Parquet file cannot be read
until its footer is written, so rows do not go to Parquet as they arrive: every
accepted batch is appended to a write-ahead spool, an Arrow IPC stream in
DIR/.spool/ that is readable up to its last complete message. The spool is
flushed and fsynced at most every `sync_interval_s` (on a write when due, or when
the collector's timer calls `sync()`), which bounds what a `kill -9` loses.

Every `rotate_ns` of the clock the spool becomes one Parquet file per partition,
each written under a hidden temporary name and renamed when complete, and the
spool is deleted. `commit()` (normal end, SIGINT/SIGTERM) does the same for the
spool in progress; `discard()` (a failed run) keeps it, because received rows
are data whatever made the run fail.

Who converts a left-over spool: its writer holds an exclusive `flock` on it for
as long as it lives, and the kernel drops the lock when the writer dies, however
it dies. A new sink converts every spool it can lock. A pid check could not do
this: pids are reused (after a reboot the dead writer's pid may be alive again),
and "not mine" would steal the spool of a second collector writing into the same
directory.

Part files are named after their spool (`part-<period>-<pid>-<token>.parquet`):
converting one spool twice, after a crash between the renames and the spool's
deletion, rewrites the same files with the same rows rather than duplicating
them, while two runs in one period never share a name.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import operator
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from varon_cli.runtime import critical
from varon_cli.sinks import Sink

log = logging.getLogger("varon.collect")

HOUR_NS = 3_600_000_000_000
SPOOL_DIR = ".spool"
SPOOL_SUFFIX = ".arrows"
SPOOL_BUFFER = 1 << 16  # bytes gathered between syscalls; a sync or a full buffer writes them out
REQUIRED_COLUMNS = ("ts", "venue", "symbol")


class RecordingSink(Sink):
    """Record a live stream into DIR as hourly Parquet files, losing nothing on SIGTERM.

    Rotation follows the clock (wall-clock time of receipt), not the rows'
    `recv_ts`: its job is to bound how much sits in the spool and how late rows
    become readable as Parquet, which is a matter of wall time. It must happen on
    time when the feed is idle (a `sync()` from the timer rotates) and must not
    depend on timestamps the rows carry, which may be absent, replayed history
    (`collect replay` sets recv_ts = ts), or out of order across venues.

    Call `write` and `sync` from one thread (the collector's event loop), as for
    every `Sink`: signals are deferred with `runtime.critical()`, which is
    main-thread state.
    """

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema,
        rotate_ns: int = HOUR_NS,
        sync_interval_s: float = 1.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(schema)
        missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
        if missing:
            raise ValueError(f"a recorded stream needs columns {', '.join(missing)} to be partitioned")
        if rotate_ns <= 0:
            raise ValueError("rotate_ns must be positive")
        self.directory = Path(directory)
        self.rotate_ns = rotate_ns
        self.sync_interval_s = sync_interval_s
        self._clock = clock
        self._spool: _Spool | None = None
        (self.directory / SPOOL_DIR).mkdir(parents=True, exist_ok=True)  # fail now, not at the first trade
        recover(self.directory, schema)

    def _write(self, batch: pa.RecordBatch) -> None:
        period = self._clock() // self.rotate_ns
        ended = None
        if self._spool is not None and self._spool.period != period:
            ended, self._spool = self._spool, None
        try:
            if self._spool is None:
                self._spool = _Spool(self.directory / SPOOL_DIR, self.schema, period, self.rotate_ns)
            self._spool.append(batch)
            if time.monotonic() - self._spool.synced_at >= self.sync_interval_s:
                self._spool.sync()
        finally:
            if ended is not None:  # after the new rows are in the new spool: a failed conversion cannot lose them
                self._retire(ended)

    def sync(self) -> None:
        """Make every accepted row durable now, and rotate if the period has ended.

        The collector calls this from a timer (about every `sync_interval_s`), so
        the last rows before a quiet spell, and the files of an hour that ended
        without a trade after it, do not wait for the next write."""
        with critical():
            spool = self._spool
            if spool is None:
                return
            if self._clock() // self.rotate_ns != spool.period:
                self._spool = None
                self._retire(spool)
            elif spool.dirty:
                spool.sync()

    def commit(self) -> None:
        """Turn the spool in progress into Parquet part files."""
        spool, self._spool = self._spool, None
        if spool is not None:
            self._retire(spool)

    def discard(self) -> None:
        """Keep the spool for the next recorder on DIR (or `recover`) to convert: received rows are never thrown away."""
        spool, self._spool = self._spool, None
        if spool is None:
            return
        try:
            with contextlib.suppress(OSError):  # a full disk must not hide the error that ended the run
                spool.close()
        finally:
            spool.release()
        log.warning("the run failed; its %d received rows are kept in %s for the next recorder on this directory",
                    spool.rows, spool.path)

    def _retire(self, spool: _Spool) -> None:
        """End a spool and turn it into part files. Its lock is dropped after the spool is
        deleted (so no recovery converts it too), or on failure, leaving it for recovery."""
        try:
            spool.close()
            _drain(spool.path, self.directory, self.schema)
        finally:
            spool.release()


class _Spool:
    """One period's spool: an Arrow IPC stream that its writer holds an exclusive flock on."""

    def __init__(self, spool_dir: Path, schema: pa.Schema, period: int, rotate_ns: int) -> None:
        self.period = period
        self.rows = 0
        self.dirty = False
        self.path = spool_dir / f"{_period_label(period * rotate_ns, rotate_ns)}-{os.getpid()}-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
        # Lock under a hidden name, then rename: the spool appears already locked, so a
        # recovery running beside us can never lock (and delete) it in between. The lock
        # lives on its own descriptor, which also serves fsync (it syncs the whole file).
        hidden = self.path.with_name(f".{self.path.name}.new")
        self._lock_fd = os.open(hidden, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, self.path)
        self._sink = pa.BufferedOutputStream(pa.OSFile(str(self.path), "wb"), SPOOL_BUFFER)
        self._writer = ipc.new_stream(self._sink, schema)
        self.synced_at = time.monotonic()

    def append(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.dirty = True

    def sync(self) -> None:
        self._sink.flush()
        os.fsync(self._lock_fd)
        self.synced_at = time.monotonic()
        self.dirty = False

    def close(self) -> None:
        """End the stream (its end-of-stream marker) and make it durable; the lock stays held."""
        self._writer.close()
        self.sync()

    def release(self) -> None:
        """Close the file and drop the lock (the kernel does both if the process dies)."""
        try:
            self._sink.close()
        finally:
            os.close(self._lock_fd)


def recover(directory: Path, schema: pa.Schema) -> int:
    """Convert the spools in DIR/.spool/ that no live writer holds into part files; return their rows.

    A spool is read up to its last complete batch (a torn tail, left by a
    `kill -9` mid-write, is dropped with a warning). A spool of another schema is
    left alone with a warning rather than mixed into this dataset."""
    directory = Path(directory)
    rows = 0
    for path in sorted((directory / SPOOL_DIR).glob(f"*{SPOOL_SUFFIX}")):
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue  # converted by another recorder since the listing
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            if os.fstat(handle.fileno()).st_nlink == 0:
                continue  # another recorder converted and deleted it while we waited for the lock
            n = _drain(path, directory, schema)
            rows += n
            log.warning("%s: recovered %d rows from %s, left by a recorder that did not finish", directory, n, path.name)
    return rows


def _drain(spool: Path, directory: Path, schema: pa.Schema) -> int:
    """Write a locked spool's rows as part files, then delete it; return the row count."""
    table = _read_spool(spool)
    if table is not None and not table.schema.equals(schema, check_metadata=False):
        log.warning("%s: holds another stream (%s), not this recorder's; left alone", spool, table.schema.names)
        return 0
    if table is not None and table.num_rows:
        _write_parts(table, directory, f"part-{spool.stem}.parquet")
    spool.unlink()
    return 0 if table is None else table.num_rows


def _read_spool(path: Path) -> pa.Table | None:
    """The spool's complete batches (None when not even its schema was written out)."""
    try:
        reader = ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError):
        log.warning("%s: spool ends before its schema; it holds no rows", path)
        return None
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as exc:
            log.warning("%s: torn tail after %d rows ignored (%s)", path, sum(b.num_rows for b in batches), exc)
            break
    return pa.Table.from_batches(batches, schema=reader.schema)


def _write_parts(table: pa.Table, directory: Path, name: str) -> None:
    """Write one Parquet file `name` per venue/symbol/date partition, rows in arrival order.

    A hash group-by lists each partition's row numbers in one pass (several times
    faster than sorting on the string keys); sorting those numbers restores arrival
    order without relying on the engine's. Each partition is gathered on its own,
    so only one partition is copied at a time."""
    keys = ["venue", "symbol", "date"]
    table = table.combine_chunks()  # a live spool is thousands of small batches: one copy makes the rest fast
    date = table["ts"].cast(pa.timestamp("ns")).cast(pa.date32())  # ns without a zone are UTC: the UTC date
    rows = pa.array(np.arange(table.num_rows))
    groups = pa.table([table["venue"], table["symbol"], date, rows], names=[*keys, "rows"])
    groups = groups.group_by(keys, use_threads=False).aggregate([("rows", "list")])
    partitioning = ds.partitioning(groups.select(keys).schema, flavor="hive")
    folders = set()
    for group, part_rows in zip(groups.select(keys).to_pylist(), groups["rows_list"], strict=True):
        match = functools.reduce(operator.and_, [ds.field(k).is_null() if v is None else ds.field(k) == v for k, v in group.items()])
        folder = directory / partitioning.format(match)[0]  # the reader's own encoding of the values
        arrival = np.sort(part_rows.values.to_numpy())
        _write_file(table.take(arrival).drop_columns(["venue", "symbol"]), folder / name)
        folders.add(folder)
    for folder in folders:  # the renames are durable before the spool is deleted
        _fsync(folder)


def _write_file(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: dataset readers skip it
    try:
        pq.write_table(table, tmp, compression="zstd")
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _period_label(start_ns: int, rotate_ns: int) -> str:
    """The period's UTC start, as precise as the rotation needs: 20250101T13 for hourly files."""
    fmt = "%Y%m%dT%H" if rotate_ns % HOUR_NS == 0 else "%Y%m%dT%H%M%S"
    return time.strftime(fmt, time.gmtime(start_ns // 1_000_000_000))

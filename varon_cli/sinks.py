"""Output sinks: where a command's stream goes.

File outputs are written under a temporary name beside the target and renamed
when complete, so a failed run never leaves a partial file under the final
name. An interrupted run (SIGINT/SIGTERM) still commits what it accepted.
"""

from __future__ import annotations

import abc
import os
import shutil
import sys
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from varon_cli.errors import UsageError
from varon_cli.runtime import Interrupted, PipeClosed, Watermark, critical
from varon_cli.schemas import WATERMARK_KEY

PARQUET_ROW_GROUP = 1 << 20


class Sink(abc.ABC):
    """Base sink: casts batches to the output schema and commits or discards on exit."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows_written = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if not batch.schema.equals(self.schema, check_metadata=False):
            batch = pa.RecordBatch.from_arrays(
                [batch.column(f.name).cast(f.type) for f in self.schema], schema=self.schema
            )
        with critical():
            self._write(batch)
        self.rows_written += batch.num_rows

    def watermark(self, watermark: Watermark) -> None:
        """Pass event-time progress downstream (only streams carry it)."""

    @abc.abstractmethod
    def _write(self, batch: pa.RecordBatch) -> None:
        """Write one batch (called with signals deferred)."""

    def commit(self) -> None:
        """Make the output final."""

    def discard(self) -> None:
        """Remove whatever was written: the run failed."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, et: type | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if ev is None or not isinstance(ev, Exception):
            # success, or a deliberate stop (SIGINT/SIGTERM, the kill switch): keep what was accepted
            with critical():
                self.commit()
        elif isinstance(ev, PipeClosed):
            pass
        else:
            self.discard()


class IpcStreamSink(Sink):
    """An Arrow IPC stream on stdout (or any binary file object), flushed per batch."""

    def __init__(self, schema: pa.Schema, handle) -> None:  # noqa: ANN001 - a binary file object
        super().__init__(schema)
        self._handle = handle
        self._writer = None
        self._guard(lambda: self._open())

    def _open(self) -> None:
        self._writer = ipc.new_stream(self._handle, self.schema)
        self._handle.flush()

    def _guard(self, action) -> None:  # noqa: ANN001
        try:
            action()
        except BrokenPipeError:
            raise PipeClosed() from None
        except OSError as exc:
            if "Broken pipe" in str(exc) or getattr(exc, "errno", None) == 32:
                raise PipeClosed() from None
            raise

    def _write(self, batch: pa.RecordBatch) -> None:
        def action() -> None:
            self._writer.write_batch(batch)
            self._handle.flush()

        self._guard(action)

    def watermark(self, watermark: Watermark) -> None:
        batch = empty_batch(self.schema)

        def action() -> None:
            self._writer.write_batch(batch, custom_metadata={WATERMARK_KEY: str(watermark.ts_ns).encode()})
            self._handle.flush()

        with critical():
            self._guard(action)

    def commit(self) -> None:
        self._guard(self._close)

    def discard(self) -> None:
        try:
            self._close()
        except OSError:
            pass

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._handle.flush()


class _AtomicFileSink(Sink):
    """A file written under a temporary name and renamed into place on commit."""

    def __init__(self, schema: pa.Schema, path: Path) -> None:
        super().__init__(schema)
        self.path = path
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def commit(self) -> None:
        self._close()
        os.replace(self.tmp_path, self.path)

    def discard(self) -> None:
        try:
            self._close()
        finally:
            self.tmp_path.unlink(missing_ok=True)

    @abc.abstractmethod
    def _close(self) -> None:
        """Finish the temporary file so it can be renamed."""


class IpcFileSink(_AtomicFileSink):
    def __init__(self, schema: pa.Schema, path: Path, stream: bool) -> None:
        super().__init__(schema, path)
        self._sink = pa.OSFile(str(self.tmp_path), "wb")
        self._writer = (ipc.new_stream if stream else ipc.new_file)(self._sink, schema)
        self._stream = stream

    def _write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        if self._stream:
            self._sink.flush()

    def watermark(self, watermark: Watermark) -> None:
        if self._stream:
            with critical():
                self._writer.write_batch(
                    empty_batch(self.schema), custom_metadata={WATERMARK_KEY: str(watermark.ts_ns).encode()}
                )

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None


class ParquetSink(_AtomicFileSink):
    """Parquet (zstd); small live batches are gathered into row groups."""

    def __init__(self, schema: pa.Schema, path: Path) -> None:
        super().__init__(schema, path)
        self._writer = pq.ParquetWriter(str(self.tmp_path), schema, compression="zstd")
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def _write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= PARQUET_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self.schema))
            self._pending, self._pending_rows = [], 0

    def _close(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None


class DatasetSink(Sink):
    """A hive-partitioned Parquet dataset (venue/symbol/date), written whole on commit."""

    def __init__(self, schema: pa.Schema, path: Path) -> None:
        super().__init__(schema)
        if path.exists() and any(path.iterdir()):
            raise UsageError(f"{path}: output directory is not empty; choose a new directory")
        self.path = path
        self.tmp_path = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._batches: list[pa.RecordBatch] = []

    def _write(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)

    def commit(self) -> None:
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        if table.num_rows == 0:  # keep the schema (and kind) even with no rows
            self.tmp_path.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, self.tmp_path / "part-0.parquet", compression="zstd")
            self._replace()
            return
        keys = [k for k in ("venue", "symbol") if k in table.column_names]
        if "ts" in table.column_names:
            table = table.append_column("date", pc.strftime(table["ts"], format="%Y-%m-%d"))
            keys.append("date")
        ds.write_dataset(
            table,
            str(self.tmp_path),
            format="parquet",
            partitioning=ds.partitioning(pa.schema([table.schema.field(k) for k in keys]), flavor="hive"),
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
            existing_data_behavior="overwrite_or_ignore",
        )
        self._replace()

    def _replace(self) -> None:
        if self.path.exists():
            self.path.rmdir()
        os.replace(self.tmp_path, self.path)

    def discard(self) -> None:
        shutil.rmtree(self.tmp_path, ignore_errors=True)


def open_sink(path: str | None, schema: pa.Schema) -> Sink:
    """Choose the sink for `path`: stdout (binary or table), or a file by extension."""
    from varon_cli.streamio import STDIO, _format_of
    from varon_cli.terminal import TableSink

    if path in (None, STDIO):
        if sys.stdout.isatty():
            return TableSink(schema, sys.stdout)
        return IpcStreamSink(schema, sys.stdout.buffer)
    target = Path(path)
    if target.exists() and not target.is_dir() and not target.is_file():
        # /dev/null, a named pipe, a terminal device: an Arrow IPC stream written straight to it
        try:
            return IpcStreamSink(schema, open(target, "wb"))
        except OSError as exc:
            raise UsageError(f"{path}: cannot open for writing: {exc.strerror}") from None
    fmt = _format_of(str(path))
    if fmt == "ipc-stream":
        return IpcFileSink(schema, target, stream=True)
    if fmt == "ipc-file":
        return IpcFileSink(schema, target, stream=False)
    if fmt == "parquet":
        return ParquetSink(schema, target)
    return DatasetSink(schema, target)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A zero-row batch: the carrier of a watermark in an IPC stream."""
    return pa.RecordBatch.from_pylist([], schema=schema)

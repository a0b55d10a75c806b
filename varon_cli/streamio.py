"""Reading and writing varon streams: stdin/stdout, Arrow IPC, Parquet, datasets.

The format follows the path: `-` or nothing is stdin/stdout (an Arrow IPC
stream, or a table when stdout is a terminal), `.arrows` an IPC stream file,
`.arrow`/`.ipc`/`.feather` an IPC file, `.parquet` a Parquet file, and a
directory (or a path without extension) a hive-partitioned Parquet dataset.
Readers check `varon.kind` and conform looser inputs to the declared types;
writers stamp the kind and write each batch as soon as it is produced.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from rich.console import Console

from varon_cli.errors import InputError, UsageError
from varon_cli.runtime import StreamItem, Watermark
from varon_cli.schemas import KIND_KEY, KINDS, TS, VERSION_KEY, WATERMARK_KEY, StreamKind
from varon_cli.sinks import Sink, open_sink

STDIO = "-"
IPC_FILE_SUFFIXES = {".arrow", ".ipc", ".feather"}
READ_BATCH_ROWS = 1 << 20
PROGRESS_MIN_ROWS = 5_000_000


def describe(path: str | None) -> str:
    return "stdin" if path in (None, STDIO) else str(path)


def _format_of(path: str) -> str:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".arrows":
        return "ipc-stream"
    if suffix in IPC_FILE_SUFFIXES:
        return "ipc-file"
    if suffix == ".parquet":
        return "parquet"
    if p.is_dir() or suffix == "":
        return "dataset"
    raise UsageError(f"{path}: unknown file extension {suffix!r}; use .arrows, .arrow, .feather, .parquet or a directory")


class InputStream:
    """An open input: its stream kind, schema metadata, and items in arrival order."""

    def __init__(self, path: str | None, expect: Sequence[StreamKind], kind: str | None = None) -> None:
        self.label = describe(path)
        self._path = path
        self._expect = tuple(expect)
        self._override = KINDS[kind] if kind else None
        self._items: Iterator[StreamItem] | None = None
        self._closers: list = []
        self.schema: pa.Schema
        self.kind: StreamKind
        self.metadata: dict[bytes, bytes] = {}
        self.rows_read = 0
        self.total_rows: int | None = None  # known for files; drives the progress bar
        self._columns: list[str] | None = None
        self.is_file = path not in (None, STDIO)

    # -- opening ---------------------------------------------------------
    def __enter__(self) -> InputStream:
        try:
            self._items = self._open()
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            raise InputError(f"{self.label}: cannot read: {_arrow_message(exc)}") from None
        self.metadata = dict(self.schema.metadata or {})
        self.kind = self._check_kind()
        return self

    def __exit__(self, et: type | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        for close in self._closers:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing must not mask the real error
                pass

    def _open(self) -> Iterator[StreamItem]:
        if not self.is_file:
            if sys.stdin is None or sys.stdin.isatty():
                raise InputError("no input: pipe a varon stream into stdin or pass -i FILE")
            try:
                reader = ipc.open_stream(sys.stdin.buffer)
            except pa.ArrowInvalid as exc:
                raise InputError(f"stdin: not an Arrow IPC stream ({_arrow_message(exc)})") from None
            self.schema = reader.schema
            return self._iter_ipc_stream(reader)
        path = str(self._path)
        if not Path(path).exists():
            raise InputError(f"{path}: no such file or directory")
        fmt = _format_of(path)
        if fmt == "ipc-stream":
            handle = pa.OSFile(path, "rb")
            self._closers.append(handle.close)
            reader = ipc.open_stream(handle)
            self.schema = reader.schema
            return self._iter_ipc_stream(reader)
        if fmt == "ipc-file":
            reader = ipc.open_file(path)
            self.schema = reader.schema
            return self._iter_ipc_file(reader)
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            self._closers.append(pf.close)
            self.schema = pf.schema_arrow
            self.total_rows = pf.metadata.num_rows
            return self._iter_parquet(pf)
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
        if not dataset.files:
            raise InputError(f"{path}: dataset directory holds no Parquet files")
        self.schema = dataset.schema
        self.total_rows = dataset.count_rows()
        return self._iter_dataset(dataset)

    def _check_kind(self) -> StreamKind:
        declared = self.metadata.get(KIND_KEY, b"").decode() or None
        names = " or ".join(k.name for k in self._expect)
        if self._override is not None:
            if declared and declared != self._override.name:
                raise InputError(f"{self.label}: --kind {self._override.name} given but the stream says it holds {declared}")
            kind = self._override
        elif declared is None:
            raise InputError(f"{self.label}: no varon.kind in the schema metadata; expected {names} (pass --kind to read a plain file)")
        elif declared not in KINDS:
            raise InputError(f"{self.label}: unknown stream kind {declared!r}; expected {names}")
        else:
            kind = KINDS[declared]
        if kind not in self._expect:
            raise InputError(f"{self.label}: wrong stream kind: expected {names}, got {kind.name}")
        version = self.metadata.get(VERSION_KEY)
        if declared and version is not None and int(version) > kind.version:
            raise InputError(f"{self.label}: {kind.name} stream version {int(version)} is newer than this varon reads ({kind.version})")
        missing = [n for n in kind.column_names if n not in self.schema.names and n not in _DEFAULTABLE]
        if missing:
            raise InputError(f"{self.label}: {kind.name} stream lacks column(s) {', '.join(missing)}")
        return kind

    def project(self, columns: Sequence[str]) -> None:
        """Read only `columns` from a columnar file (Parquet, dataset); the rest get their defaults.

        Call after opening and before iterating; streams ignore it."""
        self._columns = [c for c in columns if c in self.schema.names]

    # -- iteration ---------------------------------------------------------
    def __iter__(self) -> Iterator[StreamItem]:
        assert self._items is not None, "use InputStream as a context manager"
        with _progress(self.label, self.total_rows) as advance:
            try:
                for item in self._items:
                    if isinstance(item, pa.RecordBatch):
                        item = conform(item, self.kind, self.label, self.rows_read)
                        self.rows_read += item.num_rows
                        advance(item.num_rows)
                    yield item
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
                raise InputError(f"{self.label}: input is malformed or truncated after {self.rows_read} rows: {_arrow_message(exc)}") from None

    def _iter_ipc_stream(self, reader: ipc.RecordBatchStreamReader) -> Iterator[StreamItem]:
        while True:
            try:
                item = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                return
            yield from _split_watermark(item.batch, item.custom_metadata)

    def _iter_ipc_file(self, reader: ipc.RecordBatchFileReader) -> Iterator[StreamItem]:
        for i in range(reader.num_record_batches):
            item = reader.get_batch_with_custom_metadata(i)
            yield from _split_watermark(item.batch, item.custom_metadata)

    def _iter_parquet(self, pf: pq.ParquetFile) -> Iterator[StreamItem]:
        yield from pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=self._columns)

    def _iter_dataset(self, dataset: ds.Dataset) -> Iterator[StreamItem]:
        # A hive dataset is laid out by symbol and date, not by time: read it in
        # event-time order so a multi-symbol dataset is one time-ordered stream.
        table = dataset.to_table(columns=self._columns)
        if "date" in table.column_names and "date" not in self.kind.column_names:
            table = table.drop_columns(["date"])  # a partition key the sink derived from ts
        if "ts" in table.column_names and table.num_rows:
            table = table.take(pc.sort_indices(table, [("ts", "ascending")]))
        yield from table.to_batches(max_chunksize=READ_BATCH_ROWS)

    def read_all(self) -> pa.Table:
        """Read the remaining batches into one table (watermarks are dropped)."""
        batches = [b for b in self if isinstance(b, pa.RecordBatch)]
        table = pa.Table.from_batches(batches) if batches else self.kind.schema.empty_table()
        return table.replace_schema_metadata(self.metadata or None)  # the stream's kind, interval, spec, hash


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator:
    """A progress bar on stderr for a large file read by a person at a terminal; silent otherwise."""
    if not total or total < PROGRESS_MIN_ROWS or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"reading {label}", total=total)
        yield lambda n: bar.advance(task, n)


def _split_watermark(batch: pa.RecordBatch, custom: object) -> Iterator[StreamItem]:
    if custom is not None and WATERMARK_KEY in dict(custom):
        if batch.num_rows:
            yield batch
        yield Watermark(int(dict(custom)[WATERMARK_KEY]))
    elif batch.num_rows:
        yield batch


# Columns a reader fills in when a plain file lacks them.
_DEFAULTABLE = {"recv_ts", "seq", "venue", "partial", "buy_volume", "vwap", "trades", "trade_id", "warmup"}


def conform(batch: pa.RecordBatch, kind: StreamKind, label: str = "input", offset: int = 0) -> pa.RecordBatch:
    """Cast a batch to the kind's declared column types (plain strings, ns UTC timestamps, float64)."""
    if batch.schema.equals(kind.schema, check_metadata=False):
        return batch
    columns: list[pa.Array] = []
    names: list[str] = []
    present = set(batch.schema.names)
    for field in kind.schema:
        if field.name in present:
            arr = batch.column(field.name)
            columns.append(_cast(arr, field, label))
        else:
            columns.append(_default_column(field, batch, kind))
        names.append(field.name)
    if kind.extra_columns:
        for field in batch.schema:
            if field.name not in kind.schema.names:
                arr = batch.column(field.name)
                if pa.types.is_dictionary(arr.type):
                    arr = arr.cast(arr.type.value_type)
                columns.append(arr)
                names.append(field.name)
    return pa.RecordBatch.from_arrays(columns, names=names)


def _cast(arr: pa.Array, field: pa.Field, label: str) -> pa.Array:
    if arr.type == field.type:
        return arr
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    try:
        if pa.types.is_timestamp(field.type) and pa.types.is_timestamp(arr.type) and arr.type.tz is None:
            arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))
        if field.name == "trade_id" and not pa.types.is_string(arr.type):
            return pc.cast(arr, pa.string())
        if field.name == "side" and pa.types.is_boolean(arr.type):
            raise InputError(f"{label}: column side is boolean; expected 'buy'/'sell' strings")
        return arr.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{label}: column {field.name} has type {arr.type}, expected {field.type}: {_arrow_message(exc)}") from None


def _default_column(field: pa.Field, batch: pa.RecordBatch, kind: StreamKind) -> pa.Array:
    n = batch.num_rows
    if field.name == "recv_ts":
        return _cast(batch.column("ts"), pa.field("ts", TS), "input")
    if field.name == "venue":
        return pa.array(["unknown"] * n, pa.string())
    if field.name in ("partial", "warmup"):
        return pa.array([False] * n, pa.bool_())
    if field.name in ("buy_volume", "vwap"):
        return pa.array([float("nan")] * n, pa.float64())
    return pa.nulls(n, field.type)


def _arrow_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_input(path: str | None, expect: Sequence[StreamKind], kind: str | None = None) -> InputStream:
    """Open `path` (or stdin) as one of the expected stream kinds."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown --kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return InputStream(path, expect, kind)


def open_output(path: str | None, schema: pa.Schema) -> Sink:
    """Open `path` (or stdout) for a stream with `schema` (a kind's `schema_with(...)`)."""
    if KIND_KEY not in (schema.metadata or {}):
        raise AssertionError("output schema lacks varon.kind")
    return open_sink(path, schema)

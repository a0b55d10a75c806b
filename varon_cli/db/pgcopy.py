"""PostgreSQL's binary COPY format, written and read with numpy: no Python loop per row.

Why binary: it is the fastest way into and out of PostgreSQL (no text parsing
on either side) and exact for floats. Why numpy: a load aims at 500,000 rows/s
and an export at 1,000,000, which a Python loop over rows cannot reach.

The format (PostgreSQL docs, "COPY", binary format): an 11-byte signature, an
int32 flags word and an int32 header-extension length; then per row an int16
field count and, per field, an int32 byte length (-1 for NULL) and the bytes,
all big-endian; then an int16 -1. timestamptz is an int64 of microseconds since
2000-01-01 UTC, float8 an IEEE double, int8 an int64, bool one byte, text its
UTF-8 bytes.

Writing (`encode`): fixed-width columns without nulls come first in the COPY
column list, the rest (text, and fixed columns with nulls) after. Rows are
grouped by layout, the byte length of each of those later fields; COPY does not
care about row order, and within a group every row has the same shape, so the
group is a numpy structured array, filled field by field a few thousand rows
at a time (a block that stays in cache).

Reading (`RowReader`): an export selects only fixed-width fields: numbers, and
text as its byte length plus its bytes padded to the longest value in the range
(see export.py). Every row then has the same width and a payload is a numpy
structured array; `text_column` turns padded bytes back into an Arrow string
column with a boolean mask, again without a loop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in microseconds since 1970
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = b"\xff\xff"
ENCODE_CHUNK_ROWS = 1 << 16  # rows converted from Arrow at a time: bounds memory
BLOCK_ROWS = 4096  # rows laid out at a time (a block that fits in cache)

# Fixed-width types: their big-endian numpy dtype.
FIXED = {"timestamptz": np.dtype(">i8"), "float8": np.dtype(">f8"), "int8": np.dtype(">i8"),
         "int4": np.dtype(">i4"), "bool": np.dtype("u1")}


def pg_type(arrow_type: pa.DataType) -> str:
    """The PostgreSQL type a stream column of `arrow_type` is written as."""
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz"
    if pa.types.is_floating(arrow_type):
        return "float8"
    if pa.types.is_integer(arrow_type):
        return "int8"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    raise TypeError(f"no PostgreSQL type for Arrow {arrow_type}")


def ns_to_pg(ns: np.ndarray) -> np.ndarray:
    """Nanoseconds since 1970 as PostgreSQL microseconds since 2000 (floored: timestamptz holds microseconds)."""
    return np.floor_divide(ns, 1000) - PG_EPOCH_US


def pg_to_ns(us: np.ndarray) -> np.ndarray:
    return (us.astype(np.int64) + PG_EPOCH_US) * 1000


# -- writing ---------------------------------------------------------------------------
@dataclass
class _Fixed:
    name: str
    values: np.ndarray  # native-endian values of the PostgreSQL type (numpy byte-swaps on assignment)
    valid: np.ndarray | None  # None: no nulls
    dtype: np.dtype  # the big-endian wire dtype

    def take(self, rows: np.ndarray) -> _Fixed:
        return _Fixed(self.name, self.values[rows], None if self.valid is None else self.valid[rows], self.dtype)


@dataclass
class _Text:
    name: str
    padded: np.ndarray  # (n, longest) uint8: each value's bytes, left-aligned
    lengths: np.ndarray  # int64 byte length, -1 for null

    def take(self, rows: np.ndarray) -> _Text:
        return _Text(self.name, self.padded[rows], self.lengths[rows])


def _fixed(name: str, arr: pa.Array, pgtype: str) -> _Fixed:
    valid = None
    if arr.null_count:
        valid = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)
    if pgtype == "timestamptz":
        values = ns_to_pg(arr.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).fill_null(0).to_numpy())
    elif pgtype == "bool":
        values = arr.fill_null(False).to_numpy(zero_copy_only=False).view(np.uint8)
    else:
        values = arr.fill_null(0).to_numpy(zero_copy_only=False)
    return _Fixed(name, values, valid, FIXED[pgtype])


def _text(name: str, arr: pa.Array) -> _Text:
    n = len(arr)
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[arr.offset:arr.offset + n + 1].astype(np.int64)
    sizes = np.diff(offsets)  # a null slot may span bytes too: keep them aligned, drop them below
    longest = int(sizes.max()) if n else 0
    padded = np.zeros((n, longest), dtype=np.uint8)
    if longest:
        data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]:offsets[-1]]
        padded[np.arange(longest) < sizes[:, None]] = data
    if arr.null_count:
        sizes[~np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)] = -1
    return _Text(name, padded, sizes)


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def copy_columns(table: pa.Table, types: dict[str, str]) -> list[str]:
    """The COPY column list `encode` writes: fixed-width columns without nulls first, then the others."""
    fixed = [c for c, t in types.items() if t != "text" and table.column(c).null_count == 0]
    return fixed + [c for c in types if c not in fixed]


def encode(table: pa.Table, types: dict[str, str], chunk_rows: int = ENCODE_CHUNK_ROWS) -> Iterator[memoryview | bytes]:
    """The binary COPY payload of `table`'s columns `types` (name -> PostgreSQL type), in pieces.

    The columns go in the order of `copy_columns(table, types)`, which the COPY
    statement must name in the same order. Each piece is valid only until the
    next is asked for (one scratch buffer is reused: fresh memory for every
    piece costs more in page faults than the encoding itself), so write each
    before taking the next, as psycopg's `Copy.write` does."""
    order = copy_columns(table, types)
    scratch = _Scratch()
    yield HEADER
    for start in range(0, table.num_rows, chunk_rows):
        part = table.slice(start, chunk_rows)
        fields: list[_Fixed | _Text] = []
        for name in order:
            arr = _combined(part.column(name))
            fields.append(_text(name, arr) if types[name] == "text" else _fixed(name, arr, types[name]))
        yield from _encode_rows(fields, part.num_rows, scratch)
    yield TRAILER


class _Scratch:
    """A reusable output buffer."""

    def __init__(self) -> None:
        self.buf = np.empty(0, dtype=np.uint8)

    def records(self, dtype: np.dtype, rows: int) -> np.ndarray:
        size = dtype.itemsize * rows
        if self.buf.size < size:
            self.buf = np.empty(size, dtype=np.uint8)
        return self.buf[:size].view(dtype)


def _row_dtype(head: list[_Fixed], rest: list[_Fixed | _Text], layout: tuple[int, ...]) -> np.dtype:
    entries: list[tuple[str, object]] = [("count", ">i2")]
    for i, f in enumerate(head):
        entries += [(f"len{i}", ">i4"), (f"val{i}", f.dtype)]
    for i, (f, size) in enumerate(zip(rest, layout), len(head)):
        entries.append((f"len{i}", ">i4"))
        if size > 0:
            entries.append((f"val{i}", f.dtype if isinstance(f, _Fixed) else np.dtype((np.void, size))))
    return np.dtype(entries)


def _encode_rows(fields: list[_Fixed | _Text], n: int, scratch: _Scratch) -> Iterator[memoryview]:
    head = [f for f in fields if isinstance(f, _Fixed) and f.valid is None]
    rest = fields[len(head):]
    lengths = [f.lengths if isinstance(f, _Text) else np.where(f.valid, f.dtype.itemsize, -1) for f in rest]
    order, groups = _layouts(lengths, n)
    if order is not None:  # one gather per column; each group is then a contiguous slice
        fields = [f.take(order) for f in fields]
        head, rest = fields[:len(head)], fields[len(head):]
    for first, last, layout in groups:
        dtype = _row_dtype(head, rest, layout)
        # Fill a few thousand rows at a time: a block that stays in cache takes every column's pass cheaply.
        for a in range(first, last, BLOCK_ROWS):
            b = min(a + BLOCK_ROWS, last)
            rec = scratch.records(dtype, b - a)
            rec["count"] = len(fields)
            for i, f in enumerate(head):
                rec[f"len{i}"] = f.dtype.itemsize
                rec[f"val{i}"] = f.values[a:b]
            raw = rec.view(np.uint8).reshape(b - a, dtype.itemsize)
            for i, (f, size) in enumerate(zip(rest, layout), len(head)):
                rec[f"len{i}"] = size
                if size <= 0:
                    continue
                if isinstance(f, _Fixed):
                    rec[f"val{i}"] = f.values[a:b]
                else:
                    at = dtype.fields[f"val{i}"][1]
                    raw[:, at:at + size] = f.padded[a:b, :size]
            yield memoryview(raw.reshape(-1))


def _layouts(lengths: list[np.ndarray], n: int) -> tuple[np.ndarray | None, list[tuple[int, int, tuple[int, ...]]]]:
    """Rows grouped by the tuple of their variable field lengths.

    Returns (a row order, or None to keep the rows as they are) and the groups
    as (start, end, lengths) slices of the rows in that order."""
    if n == 0:
        return None, []
    if not lengths:
        return None, [(0, n, ())]
    key = np.zeros(n, dtype=np.int64)
    for x in lengths:
        span = int(x.max()) + 2  # lengths run from -1
        if (int(key.max()) + 1) * span >= 1 << 62:
            key = np.unique(key, return_inverse=True)[1].astype(np.int64)  # re-number densely
        key = key * span + (x + 1)
    if key.min() == key.max():
        return None, [(0, n, tuple(int(x[0]) for x in lengths))]
    order = np.argsort(key, kind="stable")
    cuts = [0, *(np.flatnonzero(np.diff(key[order])) + 1).tolist(), n]
    groups = [(a, b, tuple(int(x[order[a]]) for x in lengths)) for a, b in zip(cuts, cuts[1:])]
    return order, groups


# -- reading ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One fixed-width field of an export row: `pgtype` in FIXED, or "padded" text of `width` bytes."""

    name: str
    pgtype: str
    width: int = 0


def row_dtype(fields: Sequence[Field]) -> np.dtype:
    entries: list[tuple[str, object]] = [("_count", ">i2")]
    for f in fields:
        entries.append((f"_len_{f.name}", ">i4"))
        entries.append((f.name, FIXED[f.pgtype] if f.pgtype in FIXED else np.dtype((np.void, f.width))))
    return np.dtype(entries)


def field_width(f: Field) -> int:
    return FIXED[f.pgtype].itemsize if f.pgtype in FIXED else f.width


class RowReader:
    """Cuts a binary COPY byte stream of fixed-width rows into structured arrays.

    Feed it the pieces COPY TO STDOUT sends; `take` returns the complete rows
    received so far. Every row's field count and field lengths are checked, so
    a payload that is not what the query promised fails loudly, never silently
    misaligned."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self.fields = list(fields)
        self.dtype = row_dtype(self.fields)
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._tail = b""
        self._started = False
        self.finished = False

    @property
    def pending_rows(self) -> int:
        return (self._pending_bytes + len(self._tail)) // self.dtype.itemsize

    def feed(self, data: bytes | memoryview) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)

    def take(self) -> np.ndarray:
        buf = self._tail + b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        if not self._started:
            if len(buf) < len(HEADER):
                self._tail = buf
                return np.zeros(0, self.dtype)
            if buf[:len(SIGNATURE)] != SIGNATURE:
                raise ValueError("not a binary COPY payload (bad signature)")
            extension = struct.unpack(">i", buf[15:19])[0]
            buf = buf[19 + extension:]
            self._started = True
        count = len(buf) // self.dtype.itemsize
        tail = bytes(buf[count * self.dtype.itemsize:])
        if tail == TRAILER:  # a row starts with its field count, never -1: this is the end
            self.finished, tail = True, b""
        rows = np.frombuffer(buf, dtype=self.dtype, count=count)
        self._tail = tail
        self._check(rows)
        return rows

    def _check(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        if (rows["_count"] != len(self.fields)).any():
            raise ValueError(f"binary COPY rows do not have {len(self.fields)} fields")
        for f in self.fields:
            if (rows[f"_len_{f.name}"] != field_width(f)).any():
                raise ValueError(f"binary COPY field {f.name} is not {field_width(f)} bytes wide in every row")


def text_column(rows: np.ndarray, name: str, lengths: np.ndarray) -> pa.Array:
    """A string column from a padded field `name` of `rows` and the values' byte lengths (-1: null)."""
    n = len(rows)
    width = rows.dtype[name].itemsize
    valid = lengths >= 0
    sizes = np.where(valid, lengths, 0).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    if width:
        raw = rows.view(np.uint8).reshape(n, rows.dtype.itemsize)
        start = rows.dtype.fields[name][1]
        data = raw[:, start:start + width][np.arange(width) < sizes[:, None]]
    else:
        data = np.zeros(0, np.uint8)
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls)

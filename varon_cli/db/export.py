"""`varon db export`: a time range of a table as a varon stream of its kind.

`varon db export bars --symbol BTC-USD --start 2024-01-01 | varon features`
works because the output is an ordinary stream: the kind's columns and types,
`varon.kind`, and for bars `varon.interval`. Rows come in ts order, then the
table's key (tables.py), so two exports of the same rows are byte-identical.

PostgreSQL: one read-only REPEATABLE READ transaction sees a single snapshot.
A first query finds the range's groups (venue, symbol, interval: the `series`
columns), each text column's longest value and which number columns hold
nulls. The COPY (SELECT ...) TO STDOUT (FORMAT BINARY) that follows then
selects only fixed-width fields: a group number instead of the series text
(the group's strings are added back in Arrow), text as its byte length plus
its bytes padded to the longest, nullable numbers with nulls as 0 and a null
bit mask. Every row has the same width, so pgcopy.RowReader parses a payload
as one numpy structured array.

DuckDB: a plain ordered SELECT read as Arrow batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from varon_cli.db import pgcopy
from varon_cli.db.connect import RetryPolicy, Session, message
from varon_cli.db.dsn import Dsn
from varon_cli.db.errors import DbError
from varon_cli.db.migrate import duckdb_connect
from varon_cli.db.pgdrain import copy_out
from varon_cli.db.tables import TableSpec, quoted
from varon_cli.errors import UsageError
from varon_cli.schemas import INTERVAL_KEY, TS
from varon_cli.streamio import open_output

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("varon.db.export")

FILTER_COLUMNS = ("symbol", "venue", "interval", "executor", "strategy")
EXPORT_WORK_MEM = "256MB"  # the ORDER BY of a multi-symbol range sorts in memory up to this


@dataclass(frozen=True)
class ExportQuery:
    spec: TableSpec
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> accepted values
    batch_rows: int = 1 << 20

    def __post_init__(self) -> None:
        for column in self.filters:
            if column not in self.spec.columns:
                raise UsageError(f"--{column} does not apply to {self.spec.name}, which has no {column} column")
        if self.start and self.end and self.start >= self.end:
            raise UsageError(f"--start {self.start.isoformat()} is not before --end {self.end.isoformat()}")


@dataclass
class ExportStats:
    table: str
    rows: int = 0
    seconds: float = 0.0


def parse_time(text: str | None, option: str) -> datetime | None:
    """An ISO date or date-time (UTC unless it says otherwise), e.g. 2024-01-01 or 2024-01-01T12:00:00Z."""
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), timezone.utc)
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected an ISO date or date-time, e.g. 2024-01-01 or "
                         "2024-01-01T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def export_to(dsn: Dsn, query: ExportQuery, output: str | None, retry: RetryPolicy | None = None) -> ExportStats:
    """Write the rows `query` selects to `output` (a path, or - for stdout) as a stream of the table's kind."""
    started = time.monotonic()
    stats = ExportStats(query.spec.name)
    reader = _PgExport(dsn, query, retry) if dsn.is_postgres else _DuckExport(dsn, query)
    with reader:
        schema = reader.open()
        with open_output(output, schema) as sink:
            for batch in reader.batches():
                sink.write(batch)
                stats.rows += batch.num_rows
    stats.seconds = time.monotonic() - started
    return stats


def _schema(spec: TableSpec, intervals: list[str], query: ExportQuery) -> pa.Schema:
    if "interval" not in spec.context:
        return spec.kind.schema_with()
    wanted = query.filters.get("interval", ())
    if len(intervals) > 1:
        raise UsageError(f"{spec.name} holds bars of several intervals ({', '.join(intervals)}) for this selection; "
                         "a bars stream has one: pick it with --interval")
    interval = intervals[0] if intervals else (wanted[0] if len(wanted) == 1 else None)
    return spec.kind.schema_with({INTERVAL_KEY: interval.encode()} if interval else None)


def _conditions(query: ExportQuery) -> list[tuple[str, str, Any]]:
    """(column, operator, value) for each filter: ts >= start, ts < end, column = value or IN values."""
    out: list[tuple[str, str, Any]] = []
    if query.start:
        out.append(("ts", ">=", query.start))
    if query.end:
        out.append(("ts", "<", query.end))
    for column, values in query.filters.items():
        out.append((column, "=", values[0]) if len(values) == 1 else (column, "in", list(values)))
    return out


# -- PostgreSQL ------------------------------------------------------------------------
class _PgExport:
    def __init__(self, dsn: Dsn, query: ExportQuery, retry: RetryPolicy | None) -> None:
        self.dsn, self.query, self.spec = dsn, query, query.spec
        self.session = Session(dsn, retry)
        self.groups: list[tuple[str, ...]] = []
        self.fields: list[pgcopy.Field] = []
        self.nullable: list[str] = []
        self.select = ""
        self.params: list[Any] = []

    def __enter__(self) -> _PgExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def open(self) -> pa.Schema:
        import psycopg

        def begin(conn: psycopg.Connection) -> tuple[list[tuple], list[str]]:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.execute(f"SET LOCAL work_mem = '{EXPORT_WORK_MEM}'")
            try:
                survey = conn.execute(*self._survey()).fetchall()
            except psycopg.errors.UndefinedTable:
                raise DbError(f"export {self.spec.name}: the database has no {self.spec.name} table; "
                              "run `varon db migrate` first") from None
            nullable = self._nullable_columns()
            if nullable and any(row[-1] for row in survey):  # some nulls: which columns hold them (rare)
                where, params = self._where()
                checks = ", ".join(f'bool_or("{c}" IS NULL)' for c in nullable)
                flags = conn.execute(f"SELECT {checks} FROM {self.spec.name}{where}", params).fetchone()
                return survey, [c for c, flag in zip(nullable, flags) if flag]
            return survey, []

        survey, self.nullable = self.session.run(begin, f"export {self.spec.name}")
        self._plan(survey)
        intervals = sorted({g[self.spec.series.index("interval")] for g in self.groups}) \
            if "interval" in self.spec.series else []
        return _schema(self.spec, intervals, self.query)

    def _where(self, prefix: str = "") -> tuple[str, list[Any]]:
        parts, params = [], []
        for column, op, value in _conditions(self.query):
            if op == "in":
                parts.append(f'{prefix}"{column}" = ANY(%s)')
            else:
                parts.append(f'{prefix}"{column}" {op} %s')
            params.append(value)
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

    def _text_columns(self) -> list[str]:
        return [c for c in self.spec.stream_columns
                if pgcopy.pg_type(self.spec.db_type(c)) == "text" and c not in self.spec.series]

    def _fixed_columns(self) -> list[str]:
        return [c for c in self.spec.stream_columns if pgcopy.pg_type(self.spec.db_type(c)) != "text"]

    def _nullable_columns(self) -> list[str]:
        return [c for c in self._fixed_columns() if c not in self.spec.required]

    def _survey(self) -> tuple[str, list[Any]]:
        """Groups, longest text values, and whether any number is null, in one pass over the range."""
        where, params = self._where()
        series = quoted(self.spec.series)
        aggregates = ["count(*)"]
        aggregates += [f'coalesce(max(octet_length("{c}")), 0)' for c in self._text_columns()]
        nullable = self._nullable_columns()
        aggregates.append(f"bool_or(num_nulls({quoted(nullable)}) > 0)" if nullable else "false")
        select = ", ".join([series, *aggregates] if series else aggregates)
        group = f" GROUP BY {series} ORDER BY {series}" if series else ""
        return f"SELECT {select} FROM {self.spec.name}{where}{group}", params

    def _plan(self, survey: list[tuple]) -> None:
        k = len(self.spec.series)
        texts = self._text_columns()
        survey = [row for row in survey if row[k]]  # no series: one row, maybe with a count of 0
        self.groups = [tuple(row[:k]) for row in survey]
        widths = {c: max((row[k + 1 + i] for row in survey), default=0) for i, c in enumerate(texts)}
        select: list[str] = []
        fields: list[pgcopy.Field] = []
        if len(self.groups) > 1:
            select.append("g.gid")
            fields.append(pgcopy.Field("gid", "int4"))
        for c in self.spec.stream_columns:
            if c in self.spec.series:
                continue
            pgtype = pgcopy.pg_type(self.spec.db_type(c))
            if pgtype == "text":
                width = widths[c]
                select.append(f'coalesce(octet_length(t."{c}"), -1)')
                fields.append(pgcopy.Field(f"{c}__len", "int4"))
                select.append(f"overlay(decode(repeat('00', {width}), 'hex') placing "
                              f"convert_to(coalesce(t.\"{c}\", ''), 'UTF8') from 1)" if width else "''::bytea")
                fields.append(pgcopy.Field(c, "padded", width))
            elif c in self.nullable:
                zero = {"timestamptz": "'epoch'::timestamptz", "bool": "false"}.get(pgtype, "0")
                select.append(f'coalesce(t."{c}", {zero})')
                fields.append(pgcopy.Field(c, pgtype))
            else:
                select.append(f't."{c}"')
                fields.append(pgcopy.Field(c, pgtype))
        if self.nullable:
            bits = " | ".join(f'((t."{c}" IS NULL)::int::int8 << {i})' for i, c in enumerate(self.nullable))
            select.append(f"({bits})")
            fields.append(pgcopy.Field("__nulls", "int8"))
        where, params = self._where("t.")
        join = ""
        if len(self.groups) > 1:
            rows = ", ".join("(" + ", ".join(['%s COLLATE "C"'] * k + ["%s::int4"]) + ")" for _ in self.groups)
            join = f" JOIN (VALUES {rows}) AS g({quoted(self.spec.series)}, gid) USING ({quoted(self.spec.series)})"
            params = [v for i, g in enumerate(self.groups) for v in (*g, i)] + params
        order = ", ".join(f't."{c}"' for c in self.spec.order)
        self.select = f"SELECT {', '.join(select)} FROM {self.spec.name} AS t{join}{where} ORDER BY {order}"
        self.params = params
        self.fields = fields

    def batches(self) -> Iterator[pa.RecordBatch]:
        import psycopg

        if not self.groups:
            return
        conn = self.session.connection()
        reader = pgcopy.RowReader(self.fields)
        try:
            sql = psycopg.ClientCursor(conn).mogrify(f"COPY ({self.select}) TO STDOUT (FORMAT BINARY)", self.params)
            for data in copy_out(conn, sql.encode()):
                reader.feed(data)
                if reader.pending_rows >= self.query.batch_rows:
                    yield self._batch(reader.take())
            rows = reader.take()
            if len(rows):
                yield self._batch(rows)
            conn.rollback()  # read-only: nothing to keep
        except psycopg.Error as exc:
            raise DbError(f"export {self.spec.name}: {self.dsn.redacted}: {message(exc, self.dsn)}") from None
        if not reader.finished:
            raise DbError(f"export {self.spec.name}: the COPY payload ended early")

    def _batch(self, rows: np.ndarray) -> pa.RecordBatch:
        n = len(rows)
        nulls = rows["__nulls"].astype(np.int64) if self.nullable else None
        gid = rows["gid"].astype(np.int32) if len(self.groups) > 1 else np.zeros(n, np.int32)
        arrays = []
        for c in self.spec.stream_columns:
            if c in self.spec.series:
                values = pa.array([g[self.spec.series.index(c)] for g in self.groups], pa.string())
                arrays.append(values.take(pa.array(gid)))
                continue
            pgtype = pgcopy.pg_type(self.spec.db_type(c))
            if pgtype == "text":
                arrays.append(pgcopy.text_column(rows, c, rows[f"{c}__len"].astype(np.int64)))
                continue
            mask = ((nulls >> self.nullable.index(c)) & 1).astype(bool) if c in self.nullable else None
            raw = rows[c]
            if pgtype == "timestamptz":
                arrays.append(pa.array(pgcopy.pg_to_ns(raw), pa.int64(), mask=mask).cast(TS))
            elif pgtype == "bool":
                arrays.append(pa.array(raw.astype(bool), pa.bool_(), mask=mask))
            else:
                arrays.append(pa.array(raw.astype(raw.dtype.newbyteorder("=")), self.spec.db_type(c), mask=mask))
        return pa.RecordBatch.from_arrays(arrays, schema=self.spec.kind.schema)


# -- DuckDB ----------------------------------------------------------------------------
class _DuckExport:
    def __init__(self, dsn: Dsn, query: ExportQuery) -> None:
        self.dsn, self.query, self.spec = dsn, query, query.spec
        self._open = duckdb_connect(dsn)
        self.con: Any = None

    def __enter__(self) -> _DuckExport:
        self.con = self._open.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._open.__exit__(None, None, None)

    def _where(self) -> tuple[str, list[Any]]:
        parts, params = [], []
        for column, op, value in _conditions(self.query):
            if column == "ts":
                parts.append(f'"ts" {op} CAST(? AS TIMESTAMPTZ)')
                params.append(value.isoformat())
            elif op == "in":
                parts.append(f'"{column}" IN ({", ".join("?" for _ in value)})')
                params.extend(value)
            else:
                parts.append(f'"{column}" = ?')
                params.append(value)
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

    def open(self) -> pa.Schema:
        import duckdb

        where, params = self._where()
        intervals: list[str] = []
        try:
            if "interval" in self.spec.context:
                rows = self.con.execute(f'SELECT DISTINCT "interval" FROM {self.spec.name}{where} ORDER BY 1',
                                        params).fetchall()
                intervals = [r[0] for r in rows]
            else:
                self.con.execute(f"SELECT 1 FROM {self.spec.name} LIMIT 0")
        except duckdb.CatalogException:
            raise DbError(f"export {self.spec.name}: the database has no {self.spec.name} table; "
                          "run `varon db migrate` first") from None
        return _schema(self.spec, intervals, self.query)

    def batches(self) -> Iterator[pa.RecordBatch]:
        where, params = self._where()
        order = quoted(self.spec.order)
        sql = f"SELECT {quoted(self.spec.stream_columns)} FROM {self.spec.name}{where} ORDER BY {order}"
        reader = self.con.sql(sql, params=params).to_arrow_reader(self.query.batch_rows)
        for batch in reader:
            arrays = [batch.column(i).cast(f.type) for i, f in enumerate(self.spec.kind.schema)]
            yield pa.RecordBatch.from_arrays(arrays, schema=self.spec.kind.schema)

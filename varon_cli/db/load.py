"""`varon db load`: any varon stream or file into the table of its kind, idempotently.

Rows are gathered into batches (`batch_rows`, or what arrived within
`flush_interval` on a live pipe) and each batch is one transaction:

    PostgreSQL: make the batch's monthly partitions; COPY the batch in binary
                format into a temporary staging table; INSERT INTO the table
                SELECT ... FROM the staging table ON CONFLICT DO NOTHING.
                (While batches bring only new keys, the COPY goes straight
                into the table instead, twice as fast: see _PgWriter.)
    DuckDB:     INSERT INTO the table SELECT ... FROM the Arrow batch where no
                row with the same key exists (an anti-join: DuckDB has no
                NULLS NOT DISTINCT constraint to lean on).

So loading the same data twice adds nothing, a failed batch leaves nothing
of itself behind, and a load that stopped part-way is finished by running it
again. A connection that fails is retried with backoff (connect.py). A key
that comes twice with different values keeps the row that arrived first
(within one batch, whichever the database inserts first).

Times: PostgreSQL and DuckDB timestamps hold microseconds; stream times carry
nanoseconds. Loading floors each time to its microsecond (and says how many
had a sub-microsecond part); an export gives back the floored time.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa

from varon_cli.db import pgcopy
from varon_cli.db.connect import RetryPolicy, Session
from varon_cli.db.dsn import Dsn
from varon_cli.db.errors import DbError
from varon_cli.db.migrate import duckdb_connect
from varon_cli.db.tables import TableSpec, quoted
from varon_cli.errors import InputError
from varon_cli.runtime import Interrupted, Watermark, critical
from varon_cli.schemas import INTERVAL_KEY, TS
from varon_cli.streamio import InputStream

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("varon.db.load")

US = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class LoadSettings:
    batch_rows: int = 1_000_000  # rows per transaction at most
    flush_interval: float = 1.0  # seconds a live pipe's rows may wait for a batch to fill
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class LoadStats:
    table: str
    rows_read: int = 0
    rows_added: int = 0
    batches: int = 0
    floored: int = 0  # times with a sub-microsecond part, floored
    seconds: float = 0.0


def prepare(batch: pa.Table, spec: TableSpec, context: dict[str, str], label: str) -> tuple[pa.Table, int]:
    """The batch as the table's columns (context ones added as constants), checked for the NOT NULL columns.

    Returns the table and how many of its times had a sub-microsecond part."""
    n = batch.num_rows
    columns, floored = [], 0
    for name in spec.columns:
        if name in spec.context:
            columns.append(pa.array([context[name]], pa.string()).take(pa.array(np.zeros(n, np.int32))))
            continue
        column = batch.column(name)
        if pa.types.is_timestamp(column.type):
            floored += int(np.count_nonzero(_nanoseconds(column)[0] % 1000))
        columns.append(column)
    table = pa.Table.from_arrays(columns, names=spec.columns)
    for name in spec.required:
        missing = table.column(name).null_count
        if missing:
            raise InputError(f"{label}: {missing} row(s) have no {name}; {spec.name} needs one in every row "
                             f"(its key is {', '.join(spec.key)})")
    return table, floored


def load_stream(dsn: Dsn, src: InputStream, spec: TableSpec, context: dict[str, str],
                settings: LoadSettings | None = None,
                on_batch: Callable[[LoadStats], None] | None = None) -> LoadStats:
    """Load everything `src` holds into `spec`'s table; `on_batch` hears after each committed batch."""
    settings = settings or LoadSettings()
    stats = LoadStats(spec.name)
    started = time.monotonic()
    writer: _Writer = _PgWriter(dsn, spec, settings.retry) if dsn.is_postgres else _DuckWriter(dsn, spec)
    extra = [n for n in src.schema.names if n not in spec.stream_columns]
    if extra:
        log.warning("%s: column(s) %s are not part of %s and are not stored", src.label, ", ".join(extra), spec.name)
    pending: list[pa.RecordBatch] = []
    pending_rows, first_at = 0, 0.0

    def flush() -> None:
        nonlocal pending, pending_rows
        if not pending_rows:
            return
        rest = pa.Table.from_batches(pending).select(spec.stream_columns)
        while rest.num_rows:
            chunk, rest = rest.slice(0, settings.batch_rows), rest.slice(settings.batch_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows  # what a signal after this batch leaves
            prepared, floored = prepare(chunk, spec, context, src.label)
            with critical():  # a signal waits for the batch's transaction to end
                added = writer.write(prepared)
            stats.rows_added += added
            stats.batches += 1
            stats.floored += floored
            stats.seconds = time.monotonic() - started
            if on_batch:
                on_batch(stats)

    try:
        for item in src:
            if isinstance(item, pa.RecordBatch):
                if not pending_rows:
                    first_at = time.monotonic()
                pending.append(item)
                pending_rows += item.num_rows
                stats.rows_read += item.num_rows
            if pending_rows >= settings.batch_rows or (
                    pending_rows and (isinstance(item, Watermark) or time.monotonic() - first_at >= settings.flush_interval)):
                flush()
        flush()
    except Interrupted:
        flush()  # keep what was read: it is whole rows, and a re-run adds nothing twice
        raise
    finally:
        writer.close()
        stats.seconds = time.monotonic() - started
    if stats.floored:
        log.info("%d time(s) had nanoseconds and were floored to the microsecond (the database holds microseconds)",
                 stats.floored)
    return stats


class _Writer(Protocol):
    """Writes one prepared batch as one transaction and says how many rows it added."""

    def write(self, table: pa.Table) -> int: ...

    def close(self) -> None: ...


class _PgWriter(_Writer):
    """One transaction per batch: partitions, then the rows, adding only those whose key is new.

    The rows go by binary COPY. While batches bring only new keys (the usual
    case: appending), the COPY goes straight into the table, inside a
    savepoint: about twice as fast as the staged insert on the development
    machine. At the first key already there the server stops that COPY with a
    unique violation, the savepoint is rolled back, and the batch goes the
    idempotent way: COPY into a temporary staging table, then INSERT ...
    SELECT ... ON CONFLICT DO NOTHING. After such a batch the next ones go
    staged straight away, until a batch adds every row it brings."""

    def __init__(self, dsn: Dsn, spec: TableSpec, retry: RetryPolicy) -> None:
        self.spec = spec
        self.session = Session(dsn, retry)
        self.types = {c: pgcopy.pg_type(spec.db_type(c)) for c in spec.columns}
        self.stage = f"varon_stage_{spec.name}"
        self.direct = True  # try the straight COPY first

    def write(self, table: pa.Table) -> int:
        return self.session.run(lambda conn: self._write(conn, table), f"load {self.spec.name}")

    def _write(self, conn: psycopg.Connection, table: pa.Table) -> int:
        import psycopg

        columns = quoted(pgcopy.copy_columns(table, self.types))
        try:
            with conn.transaction():
                conn.execute("SELECT varon_ensure_partitions(%s::regclass, %s::timestamptz[])",
                             (self.spec.name, _months(table.column("ts"))))
                if self.direct:
                    try:
                        with conn.transaction():  # a savepoint
                            self._copy(conn, self.spec.name, columns, table)
                        return table.num_rows
                    except psycopg.errors.UniqueViolation:
                        self.direct = False
                conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} (LIKE {self.spec.name}) "
                             "ON COMMIT DELETE ROWS")
                self._copy(conn, self.stage, columns, table)
                added = conn.execute(f"INSERT INTO {self.spec.name} ({columns}) SELECT {columns} FROM {self.stage} "
                                     "ON CONFLICT DO NOTHING").rowcount
                self.direct = added == table.num_rows
                return added
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction):
            raise DbError(f"load {self.spec.name}: the database has no {self.spec.name} table; "
                          "run `varon db migrate` first") from None

    def _copy(self, conn: psycopg.Connection, target: str, columns: str, table: pa.Table) -> None:
        with conn.cursor().copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            for piece in pgcopy.encode(table, self.types):
                copy.write(piece)

    def close(self) -> None:
        self.session.close()


def _months(ts: pa.ChunkedArray) -> list[datetime]:
    """The first instant of each UTC month `ts` touches."""
    ns = ts.cast(TS).cast(pa.int64()).to_numpy()
    months = np.unique(ns.astype("datetime64[ns]").astype("datetime64[M]"))
    return [datetime.fromisoformat(str(m) + "-01").replace(tzinfo=timezone.utc) for m in months]


class _DuckWriter(_Writer):
    """One transaction per batch: INSERT the batch's rows whose key is not in the table yet."""

    def __init__(self, dsn: Dsn, spec: TableSpec) -> None:
        self.spec = spec
        self._open = duckdb_connect(dsn)
        self.con = self._open.__enter__()
        cols = quoted(spec.columns)
        match = " AND ".join(f't."{k}" IS NOT DISTINCT FROM s."{k}"' for k in spec.key)
        self.sql = (f"INSERT INTO {spec.name} ({cols}) SELECT {cols} FROM "
                    f"(SELECT DISTINCT ON ({quoted(spec.key)}) * FROM varon_stage) AS s "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {spec.name} AS t WHERE {match})")

    def write(self, table: pa.Table) -> int:
        import duckdb

        stage = pa.Table.from_arrays(
            [_floored_us(c) if pa.types.is_timestamp(c.type) else c for c in table.columns], names=table.column_names)
        self.con.begin()
        try:
            self.con.register("varon_stage", stage)
            added = self.con.execute(self.sql).fetchone()[0]
            self.con.commit()
        except duckdb.CatalogException:
            self.con.rollback()
            raise DbError(f"load {self.spec.name}: the database has no {self.spec.name} table; "
                          "run `varon db migrate` first") from None
        except BaseException:
            self.con.rollback()
            raise
        finally:
            self.con.unregister("varon_stage")
        return int(added)

    def close(self) -> None:
        self._open.__exit__(None, None, None)


def _nanoseconds(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """A timestamp column as int64 ns since the epoch (nulls as 0) and its null mask (None: no nulls)."""
    ints = column.cast(TS).cast(pa.int64())
    nulls = ints.is_null().to_numpy(zero_copy_only=False) if ints.null_count else None
    return ints.fill_null(0).to_numpy(), nulls


def _floored_us(column: pa.ChunkedArray) -> pa.Array:
    ns, nulls = _nanoseconds(column)
    return pa.array(np.floor_divide(ns, 1000), pa.int64(), mask=nulls).cast(US)


DEFAULT_EXECUTOR = "default"  # as `varon execute --name`


def load_context(spec: TableSpec, metadata: dict[bytes, bytes], label: str,
                 interval: str | None = None, executor: str | None = None) -> dict[str, str]:
    """Values for the columns a stream lacks: a bars stream's interval (its metadata, or --interval), the executor."""
    from varon_cli.errors import UsageError

    if interval is not None and "interval" not in spec.context:
        raise UsageError(f"--interval applies to bars (market_data), not {spec.name}")
    if executor is not None and "executor" not in spec.context:
        raise UsageError(f"--executor applies to orders, fills, equity and audit logs, not {spec.name}")
    context: dict[str, str] = {}
    if "interval" in spec.context:
        declared = metadata.get(INTERVAL_KEY, b"").decode() or None
        if declared and interval and declared != interval:
            raise InputError(f"{label}: --interval {interval} given but the stream says its bars are {declared}")
        if not (declared or interval):
            raise InputError(f"{label}: bars without varon.interval metadata; pass --interval")
        context["interval"] = declared or interval or ""
    if "executor" in spec.context:
        context["executor"] = executor or DEFAULT_EXECUTOR
    return context


def load_file(dsn: Dsn, path: str | None, settings: LoadSettings, table: str | None = None, kind: str | None = None,
              interval: str | None = None, executor: str | None = None,
              progress: bool | None = None) -> LoadStats:
    """`varon db load`: a stream (file or stdin) into its table, or an executor's audit log (*.jsonl) into audit_log."""
    from varon_cli.db.audit import load_audit
    from varon_cli.db.progress import LoadProgress
    from varon_cli.db.tables import AUDIT_TABLE, LOADABLE_KINDS, table_for
    from varon_cli.streamio import PROGRESS_MIN_ROWS, open_input

    if table == AUDIT_TABLE or (path and path.endswith(".jsonl")):
        if not path or path == "-":
            raise InputError("an audit log loads from its file: pass -i PATH.jsonl")
        started = time.monotonic()
        audit = load_audit(dsn, Path(path), executor or Path(path).stem, settings.retry)
        return LoadStats(AUDIT_TABLE, audit.rows_read, audit.rows_added, 1, 0, time.monotonic() - started)
    with open_input(path, expect=LOADABLE_KINDS, kind=kind) as src:
        spec = table_for(src.kind, table, src.label)
        context = load_context(spec, src.metadata, src.label, interval, executor)
        src.project(spec.stream_columns)
        big_file = bool(src.total_rows and src.total_rows >= PROGRESS_MIN_ROWS)  # streamio shows its own bar
        live = progress if progress is not None else (sys.stderr.isatty() and not big_file)
        with LoadProgress(src.label, live=live) as report:
            return load_stream(dsn, src, spec, context, settings, report)

"""Executors' audit logs in the database: loaded from their JSONL files, and their hash chain checked there.

`load_audit` appends the records of one executor's log (execution/audit.py)
that the table does not hold yet: it checks the file's chain first, and that
the file and the table agree on the last record they share, so the table is
always a prefix-extension of one unbroken log. On PostgreSQL the table is
append-only (triggers refuse UPDATE, DELETE and TRUNCATE; sql/0004).

`verify_audit` re-checks, in the database, what `audit.verify` checks in the
file, row by row in seq order: no seq missing, `prev` is the SHA-256 of the
previous row's `line`, `hash` is `record_hash` of the line's record, and the
`record`, `seq`, `ts` and `kind` columns say what the line says. It reports
the first row that breaks, so a row rewritten by someone able to disable the
triggers is named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from varon_cli.db.connect import RetryPolicy, Session
from varon_cli.db.dsn import Dsn
from varon_cli.db.errors import DbError
from varon_cli.db.migrate import duckdb_connect
from varon_cli.execution.audit import GENESIS, AuditError, record_hash

log = logging.getLogger("varon.db.audit")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INSERT_ROWS = 5000


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts_ns: int
    kind: str
    record: dict[str, Any]
    line: str
    prev: str
    hash: str


@dataclass
class AuditLoadStats:
    executor: str
    rows_read: int = 0
    rows_added: int = 0


@dataclass(frozen=True)
class AuditCheck:
    executor: str
    rows: int
    broken_seq: int | None = None  # the first row that breaks the chain
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def read_log(path: Path) -> list[AuditRow]:
    """The records of an audit log file, checked as a chain (a torn last line is skipped, as the executor does)."""
    rows: list[AuditRow] = []
    prev = GENESIS
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise AuditError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                log.warning("%s: line %d has no end of line (cut short by a crash); not loaded", path, number)
                break
            line = raw[:-1].decode("ascii", errors="replace")
            try:
                record = json.loads(line)
            except ValueError:
                raise AuditError(f"{path}: line {number} is not JSON; check it with the executor's verify") from None
            problem = _problem(record, line, number, prev)
            if problem:
                raise AuditError(f"{path}: record {number} {problem}; nothing was loaded")
            rows.append(AuditRow(record["seq"], int(record["ts"]), str(record["kind"]), record, line,
                                 record["prev"], record["hash"]))
            prev = hashlib.sha256(raw[:-1]).hexdigest()
    return rows


def _problem(record: Any, line: str, seq: int, prev: str) -> str | None:
    if not isinstance(record, dict):
        return "is not a JSON object"
    if record.get("seq") != seq:
        return f"has seq {record.get('seq')!r} (records missing or reordered)"
    if record.get("prev") != prev:
        return "does not follow the previous record (a record before it was changed or removed)"
    if record.get("hash") != record_hash(record):
        return "does not match its hash (changed)"
    if not isinstance(record.get("ts"), int) or not isinstance(record.get("kind"), str):
        return "lacks an integer ts or a kind"
    return None


# -- the two stores, as far as this module needs them ------------------------------------
class _Store:
    """A few statements on PostgreSQL (psycopg) or DuckDB, written once with %s placeholders."""

    def __init__(self, dsn: Dsn, retry: RetryPolicy | None) -> None:
        self.dsn = dsn
        self.session = Session(dsn, retry, autocommit=True) if dsn.is_postgres else None
        self._duck = None if dsn.is_postgres else duckdb_connect(dsn)
        self.con: Any = self._duck.__enter__() if self._duck else None
        self.ts_us = '(extract(epoch FROM ts) * 1000000)::bigint' if dsn.is_postgres else "epoch_us(ts)"

    def run(self, work: Any, what: str) -> Any:
        if self.session is not None:
            return self.session.run(work, what)
        return work(_DuckCursor(self.con))

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        if self._duck is not None:
            self._duck.__exit__(None, None, None)


class _DuckCursor:
    """Enough of a psycopg connection for this module: execute with %s placeholders, a transaction."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.con.execute(sql.replace("%s", "?"), list(params))

    def transaction(self) -> Any:
        con = self.con

        class _Tx:
            def __enter__(self) -> None:
                con.begin()

            def __exit__(self, et: object, *rest: object) -> None:
                con.rollback() if et else con.commit()

        return _Tx()


def _table_missing(exc: BaseException) -> bool:
    return "audit_log" in str(exc) and ("does not exist" in str(exc) or "Catalog Error" in str(exc))


# -- loading -------------------------------------------------------------------------------
def load_audit(dsn: Dsn, path: Path, executor: str, retry: RetryPolicy | None = None) -> AuditLoadStats:
    """Append `executor`'s records from the log at `path` that the database does not hold yet."""
    rows = read_log(path)
    stats = AuditLoadStats(executor, rows_read=len(rows))
    store = _Store(dsn, retry)
    try:
        stats.rows_added = store.run(lambda conn: _append(conn, store, executor, rows, path), "load audit_log")
    finally:
        store.close()
    return stats


def _append(conn: Any, store: _Store, executor: str, rows: list[AuditRow], path: Path) -> int:
    try:
        last = conn.execute("SELECT seq, line FROM audit_log WHERE executor = %s ORDER BY seq DESC LIMIT 1",
                            (executor,)).fetchone()
    except Exception as exc:
        if _table_missing(exc):
            raise DbError("load audit_log: the database has no audit_log table; run `varon db migrate` first") from None
        raise
    held = 0
    if last is not None:
        held, line = int(last[0]), last[1]
        if held > len(rows):
            raise AuditError(f"{path}: ends at record {len(rows)} but the database holds {executor}'s records up to "
                             f"{held}: the file was cut, or is another executor's log")
        if rows[held - 1].line != line:
            raise AuditError(f"{path}: record {held} differs from the one the database holds for {executor}: "
                             "the file was rewritten, or is another executor's log")
    new = rows[held:]
    insert = ("INSERT INTO audit_log (executor, seq, ts, kind, record, line, prev, hash) VALUES "
              "(%s, %s, %s, %s, %s, %s, %s, %s)")
    for start in range(0, len(new), _INSERT_ROWS):
        with conn.transaction():
            params = [_params(store, executor, r) for r in new[start:start + _INSERT_ROWS]]
            if store.session is not None:
                conn.cursor().executemany(insert, params)
            else:
                conn.con.executemany(insert.replace("%s", "?"), params)
    return len(new)


def _params(store: _Store, executor: str, row: AuditRow) -> tuple:
    ts = EPOCH + timedelta(microseconds=row.ts_ns // 1000)
    if store.session is not None:
        from psycopg.types.json import Jsonb

        return executor, row.seq, ts, row.kind, Jsonb(row.record), row.line, row.prev, row.hash
    return executor, row.seq, ts.isoformat(), row.kind, json.dumps(row.record), row.line, row.prev, row.hash


# -- verifying ------------------------------------------------------------------------------
def verify_audit(dsn: Dsn, executor: str | None = None, retry: RetryPolicy | None = None) -> list[AuditCheck]:
    """Check the chain of each executor's rows (or only `executor`'s); one result per executor."""
    store = _Store(dsn, retry)
    try:
        return store.run(lambda conn: _verify_all(conn, store, executor), "verify-audit")
    finally:
        store.close()


def _verify_all(conn: Any, store: _Store, executor: str | None) -> list[AuditCheck]:
    with conn.transaction():  # one snapshot; PostgreSQL's server-side cursor needs a transaction too
        try:
            names = [executor] if executor else [r[0] for r in conn.execute(
                "SELECT DISTINCT executor FROM audit_log ORDER BY executor").fetchall()]
        except Exception as exc:
            if _table_missing(exc):
                raise DbError("verify-audit: the database has no audit_log table; run `varon db migrate` first") \
                    from None
            raise
        checks = []
        for name in names:
            with contextlib.closing(_rows(conn, store, name)) as rows:
                checks.append(_verify(rows, name))
    return checks


def _rows(conn: Any, store: _Store, executor: str) -> Iterator[tuple]:
    sql = (f"SELECT seq, {store.ts_us}, kind, record, line, prev, hash FROM audit_log "
           "WHERE executor = %s ORDER BY seq")
    if store.session is not None:
        with conn.cursor(name="varon_audit_rows") as cur:  # server-side: the log may not fit in memory
            cur.itersize = 10_000
            cur.execute(sql, (executor,))
            yield from cur
    else:
        cur = conn.execute(sql, (executor,))
        while batch := cur.fetchmany(10_000):
            yield from batch


def _verify(rows: Iterator[tuple], executor: str) -> AuditCheck:
    prev, expected = GENESIS, 1
    for seq, ts_us, kind, stored, line, prev_col, hash_col in rows:
        reason = _row_problem(seq, ts_us, kind, stored, line, prev_col, hash_col, expected, prev)
        if reason:
            return AuditCheck(executor, expected - 1, expected, reason)
        prev, expected = hashlib.sha256(line.encode()).hexdigest(), expected + 1
    if expected == 1:
        log.warning("audit_log holds no records for executor %s", executor)
    return AuditCheck(executor, expected - 1)


def _row_problem(seq: int, ts_us: int, kind: str, stored: Any, line: str, prev_col: str, hash_col: str,
                 expected: int, prev: str) -> str | None:
    if seq != expected:
        return f"missing (the next row has seq {seq})"
    try:
        record = json.loads(line)
    except ValueError:
        return "its line is not JSON (changed)"
    if not isinstance(record, dict) or record_hash(record) != record.get("hash") or hash_col != record.get("hash"):
        return "its line does not match its hash (changed)"
    if record.get("prev") != prev or prev_col != prev:
        return f"does not follow record {seq - 1} (a record before it was changed or removed)"
    if isinstance(stored, str):
        stored = json.loads(stored)  # DuckDB's JSON comes back as text
    if stored != record:
        return "its record column differs from its line (changed)"
    if record.get("seq") != seq or record.get("kind") != kind or int(record.get("ts", -1)) // 1000 != ts_us:
        return "its seq, ts or kind column differs from its line (changed)"
    return None


def check_all(dsn: Dsn, executor: str | None = None, retry: RetryPolicy | None = None) -> list[AuditCheck]:
    """`verify_audit`, raising AuditError naming the first broken record (or an executor with no records)."""
    checks = verify_audit(dsn, executor, retry)
    for check in checks:
        if not check.ok:
            raise AuditError(f"audit_log: executor {check.executor}: record {check.broken_seq}: {check.reason} "
                             f"({check.rows} records before it are intact)")
    if executor and (not checks or checks[0].rows == 0):
        raise AuditError(f"audit_log holds no records for executor {executor}")
    if not checks:
        log.warning("audit_log is empty")
    return checks

"""The executor's record in PostgreSQL: intents, orders, fills, equity, positions, audit rows and its state.

Why a second record beside the state directory: the state directory lives on
one machine; the database outlives it and is where operators query. With
`db.dsn` naming a PostgreSQL server, `varon execute`

1. commits each order intent (`order_intents`) before its order is sent, in
   its own transaction, after the intent is fsynced to the local audit log;
2. after the send commits, in one transaction per batch, the executor's state
   (`executor_state`), its positions (replaced), the batch's orders, fills and
   equity rows, and every audit record written since the last commit (the
   JSONL lines verbatim, so `varon db verify-audit` checks the same chain);
3. on start, when the state directory has no state for the executor (a new
   machine, a lost disk) or an older one than the database, rebuilds it from
   the database: the state, and the audit log's lines, so the hash chain and
   the known intents carry on.

A database that goes away is retried with backoff (`varon_cli.db.connect`);
when it stays away the executor stops with a clear error rather than trade
without its record.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from varon_cli.db.connect import RetryPolicy, Session
from varon_cli.db.dsn import Dsn
from varon_cli.db.errors import DbError

log = logging.getLogger("varon.execute.db")


def _when(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


class ExecutorStore:
    """One executor's rows in a migrated PostgreSQL database."""

    def __init__(self, dsn: Dsn, executor: str, audit_path: Path, policy: RetryPolicy | None = None) -> None:
        self.dsn = dsn
        self.executor = executor
        self.audit_path = Path(audit_path)
        self.session = Session(dsn, policy)
        self._audit_offset = 0  # bytes of the local audit log already in the database
        self._stored_seq = 0

        def check(conn) -> int:  # noqa: ANN001
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('executor_state') IS NOT NULL")
                if not cur.fetchone()[0]:
                    raise DbError(f"{dsn.redacted}: no executor_state table: run `varon db migrate --dsn ...` first")
                cur.execute("SELECT coalesce(max(seq), 0) FROM audit_log WHERE executor = %s", (executor,))
                seq = int(cur.fetchone()[0])
            conn.commit()
            return seq

        self._stored_seq = self.session.run(check, "executor store")

    # -- start ---------------------------------------------------------------------------------------
    def load(self) -> tuple[dict[str, Any] | None, int]:
        """(the saved state or None, the audit seq it was saved at)."""
        def work(conn) -> tuple[str | None, int]:  # noqa: ANN001
            with conn.cursor() as cur:
                cur.execute("SELECT state, audit_seq FROM executor_state WHERE executor = %s", (self.executor,))
                row = cur.fetchone()
            conn.commit()
            return (row[0], int(row[1])) if row else (None, 0)

        text, seq = self.session.run(work, "executor state")
        return (json.loads(text) if text else None), seq

    def restore_audit(self) -> int:
        """Write the database's audit lines for this executor to the (missing or shorter) local log."""
        def work(conn) -> list[tuple[int, str]]:  # noqa: ANN001
            with conn.cursor() as cur:
                cur.execute("SELECT seq, line FROM audit_log WHERE executor = %s ORDER BY seq", (self.executor,))
                rows = cur.fetchall()
            conn.commit()
            return rows

        rows = self.session.run(work, "audit log")
        local = self._local_seq()
        missing = [line for seq, line in rows if seq > local]
        if missing:
            self.audit_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.audit_path, "ab") as f:
                for line in missing:
                    f.write(line.encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            log.warning("audit log %s: %d record(s) restored from the database", self.audit_path, len(missing))
        return len(missing)

    def _local_seq(self) -> int:
        if not self.audit_path.exists():
            return 0
        last = 0
        with open(self.audit_path, "rb") as f:
            for line in f:
                try:
                    last = int(json.loads(line)["seq"])
                except (ValueError, KeyError):
                    break
        return last

    def start_tail(self) -> None:
        """Start copying the local audit log after the records the database already holds."""
        self._audit_offset = 0
        if not self.audit_path.exists():
            return
        with open(self.audit_path, "rb") as f:
            for line in f:
                if int(json.loads(line)["seq"]) > self._stored_seq:
                    break
                self._audit_offset += len(line)

    # -- trading -------------------------------------------------------------------------------------
    def record_intents(self, intents: list[dict[str, Any]]) -> None:
        """Commit order intents before their orders are sent; a repeat of one already there adds nothing."""
        rows = [(self.executor, e["cloid"], e["strategy"], e["symbol"],
                 _when(int(e["bar_ts"])) if int(e.get("bar_ts", -1)) >= 0 else None,
                 "buy" if float(e["side"]) > 0 else "sell", float(e["size"])) for e in intents]

        def work(conn) -> None:  # noqa: ANN001
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO order_intents (executor, cloid, strategy, symbol, bar_ts, side, size) "
                                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
            conn.commit()

        self.session.run(work, "order intents")

    def save(self, state: dict[str, Any], audit_seq: int, venue: str, positions: list[dict[str, Any]],
             orders: list[pa.Table], fills: list[pa.Table], equity: list[pa.Table]) -> None:
        """One transaction: state, positions, the batch's rows and the audit records since the last save."""
        text = json.dumps(state)  # Python's JSON: NaN and infinities round-trip (jsonb would refuse them)
        audit_rows, offset = self._new_audit_rows()
        order_rows = [r for t in orders for r in _stream_rows(self.executor, t)]
        fill_rows = [r for t in fills for r in _stream_rows(self.executor, t)]
        equity_rows = [(self.executor, _when(r["ts"]), r["strategy"], r["equity"], r["position"], r["pnl"],
                        r["drawdown"]) for t in equity for r in _plain(t)]
        position_rows = [(self.executor, p["strategy"], p["symbol"], p["size"], p["entry"], _finite(p["stop_loss"]),
                          _finite(p["take_profit"]), p["leverage"]) for p in positions]

        def work(conn) -> None:  # noqa: ANN001
            with conn.cursor() as cur:
                cur.execute("INSERT INTO executor_state (executor, venue, audit_seq, state, updated_at) "
                            "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (executor) DO UPDATE SET venue = "
                            "excluded.venue, audit_seq = excluded.audit_seq, state = excluded.state, "
                            "updated_at = excluded.updated_at", (self.executor, venue, audit_seq, text))
                cur.execute("DELETE FROM positions WHERE executor = %s", (self.executor,))
                if position_rows:
                    cur.executemany("INSERT INTO positions (executor, strategy, symbol, size, entry, stop_loss, "
                                    "take_profit, leverage) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", position_rows)
                for table, rows in (("orders", order_rows), ("fills", fill_rows)):
                    if rows:
                        cur.executemany(f"INSERT INTO {table} (executor, ts, symbol, cloid, venue_order_id, side, "
                                        "size, price, fee, status, reason, strategy) VALUES (%s, %s, %s, %s, %s, %s, "
                                        "%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
                if equity_rows:
                    cur.executemany("INSERT INTO equity (executor, ts, strategy, equity, position, pnl, drawdown) "
                                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", equity_rows)
                if audit_rows:
                    cur.executemany("INSERT INTO audit_log (executor, seq, ts, kind, record, line, prev, hash) "
                                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", audit_rows)
            conn.commit()

        self.session.run(work, "executor record")
        self._audit_offset = offset
        if audit_rows:
            self._stored_seq = audit_rows[-1][1]

    def _new_audit_rows(self) -> tuple[list[tuple], int]:
        if not self.audit_path.exists():
            return [], self._audit_offset
        rows, offset = [], self._audit_offset
        with open(self.audit_path, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a record still being written: the next save takes it
                offset += len(line)
                text = line[:-1].decode()
                record = json.loads(text)
                if int(record["seq"]) <= self._stored_seq:
                    continue
                body = {k: v for k, v in record.items() if k not in ("seq", "ts", "kind", "prev", "hash")}
                rows.append((self.executor, int(record["seq"]), _when(int(record["ts"])), record["kind"],
                             json.dumps(body), text, record["prev"], record["hash"]))
        return rows, offset

    def close(self) -> None:
        self.session.close()


def _plain(table: pa.Table) -> list[dict[str, Any]]:
    if table.num_rows == 0:
        return []
    return table.set_column(0, "ts", table.column("ts").cast(pa.int64())).to_pylist()


def _stream_rows(executor: str, table: pa.Table) -> list[tuple]:
    return [(executor, _when(r["ts"]), r["symbol"], r["cloid"], r["venue_order_id"], r["side"], r["size"],
             r["price"], r["fee"], r["status"], r["reason"], r["strategy"]) for r in _plain(table)]


def _finite(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None

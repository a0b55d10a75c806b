"""The tables that hold stream kinds, and the keys that make loading idempotent.

One `TableSpec` per time-series table of sql/: the stream kind it holds, the
columns the stream lacks and the load supplies (`context`: a bars stream's
interval from its metadata, an executor's name), and the unique key. The key
here must equal the UNIQUE constraint in sql/ (a test compares them): on
PostgreSQL the constraint does the work (ON CONFLICT DO NOTHING); DuckDB has no
NULLS NOT DISTINCT constraint, so the loader anti-joins on these columns.

`series` are the low-cardinality text columns an export fetches once per group
instead of once per row, and exports are ordered by ts, then the key.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from varon_cli.errors import InputError, UsageError
from varon_cli.schemas import BARS, EQUITY, FILLS, FUNDING, ORDERS, SIGNALS, TRADES, StreamKind

AUDIT_TABLE = "audit_log"


@dataclass(frozen=True)
class TableSpec:
    name: str
    kind: StreamKind
    key: tuple[str, ...]
    required: tuple[str, ...]  # the NOT NULL columns
    series: tuple[str, ...] = ()
    context: tuple[str, ...] = ()

    @property
    def stream_columns(self) -> list[str]:
        """The kind's declared columns, in stream order (extension columns are not stored)."""
        return self.kind.column_names

    @property
    def columns(self) -> list[str]:
        """The table's columns: the context ones, then the stream's."""
        return [*self.context, *self.stream_columns]

    @property
    def order(self) -> list[str]:
        """Export order: ts, then the key's other columns."""
        return ["ts", *(c for c in self.key if c != "ts")]

    def db_type(self, column: str) -> pa.DataType:
        """The Arrow type of a column as the stream carries it (context columns are text)."""
        if column in self.context:
            return pa.string()
        return self.kind.schema.field(column).type


TABLES: dict[str, TableSpec] = {t.name: t for t in (
    TableSpec("market_data", BARS, key=("venue", "symbol", "interval", "ts"),
              required=("ts", "venue", "symbol", "interval"), series=("venue", "symbol", "interval"),
              context=("interval",)),
    TableSpec("trades", TRADES, key=("venue", "symbol", "trade_id", "ts"),
              required=("ts", "venue", "symbol", "trade_id"), series=("venue", "symbol")),
    TableSpec("funding", FUNDING, key=("venue", "symbol", "ts"), required=("ts", "venue", "symbol"),
              series=("venue", "symbol")),
    TableSpec("signals", SIGNALS, key=("strategy", "symbol", "bar_ts", "ts"),
              required=("ts", "bar_ts", "symbol", "strategy")),
    TableSpec("orders", ORDERS, key=("executor", "cloid", "venue_order_id", "status", "ts"),
              required=("executor", "ts"), context=("executor",)),
    TableSpec("fills", FILLS, key=("executor", "venue_order_id", "ts", "cloid", "size", "price"),
              required=("executor", "ts"), context=("executor",)),
    TableSpec("equity", EQUITY, key=("executor", "strategy", "ts", "equity", "position", "pnl", "drawdown"),
              required=("executor", "ts", "strategy"), context=("executor",)),
)}
BY_KIND: dict[str, TableSpec] = {t.kind.name: t for t in TABLES.values()}
LOADABLE_KINDS: tuple[StreamKind, ...] = tuple(t.kind for t in TABLES.values())


def table_named(name: str) -> TableSpec:
    """A table by its name or by the stream kind it holds (`bars` is market_data)."""
    spec = TABLES.get(name) or BY_KIND.get(name)
    if spec is None:
        names = ", ".join(f"{t.name} ({t.kind.name})" if t.name != t.kind.name else t.name for t in TABLES.values())
        raise UsageError(f"unknown table {name!r}; tables: {names}")
    return spec


def table_for(kind: StreamKind, requested: str | None, label: str) -> TableSpec:
    """The table a stream of `kind` loads into; an explicit `requested` table must hold that kind."""
    spec = BY_KIND.get(kind.name)
    if requested is not None:
        wanted = table_named(requested)
        if spec is None or wanted.name != spec.name:
            raise InputError(f"{label}: a {kind.name} stream cannot be loaded into {wanted.name}, "
                             f"which holds {wanted.kind.name} streams")
    if spec is None:
        raise InputError(f"{label}: no table holds {kind.name} streams; loadable kinds: {', '.join(BY_KIND)}")
    return spec


def quoted(names: list[str] | tuple[str, ...]) -> str:
    """Column names as a SQL list, each quoted (`interval` is a keyword); the names are ours, never input."""
    return ", ".join(f'"{n}"' for n in names)

"""The stream kinds of the varon data contract, each declared once.

Every command imports its kinds from here, so the contract between stages is
this module. A stream's Arrow schema metadata carries `varon.kind` and
`varon.version`; readers check both and conform looser inputs (dictionary
strings, other timestamp units) to the declared types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

TS = pa.timestamp("ns", tz="UTC")
KIND_KEY = b"varon.kind"
VERSION_KEY = b"varon.version"
INTERVAL_KEY = b"varon.interval"
FEATURE_SPEC_KEY = b"varon.feature_spec"
FEATURE_HASH_KEY = b"varon.feature_hash"
WATERMARK_KEY = b"varon.watermark"


@dataclass(frozen=True)
class StreamKind:
    """One kind of stream: its name, contract version, and required columns.

    `extra_columns` says whether further columns are allowed (features add one
    float64 column per feature; bars may carry extension columns).
    """

    name: str
    version: int
    schema: pa.Schema
    doc: str
    extra_columns: bool = False
    descriptions: dict[str, str] = field(default_factory=dict)

    def metadata(self, extra: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
        meta = {KIND_KEY: self.name.encode(), VERSION_KEY: str(self.version).encode()}
        if extra:
            meta.update(extra)
        return meta

    def schema_with(self, extra: dict[bytes, bytes] | None = None, fields: list[pa.Field] | None = None) -> pa.Schema:
        schema = self.schema
        for f in fields or []:
            schema = schema.append(f)
        return schema.with_metadata(self.metadata(extra))

    @property
    def column_names(self) -> list[str]:
        return self.schema.names


def _kind(name: str, doc: str, columns: list[tuple[str, pa.DataType, str]], extra: bool = False) -> StreamKind:
    return StreamKind(
        name=name,
        version=1,
        schema=pa.schema([(n, t) for n, t, _ in columns]),
        doc=doc,
        extra_columns=extra,
        descriptions={n: d for n, _, d in columns},
    )


TRADES = _kind(
    "trades",
    "One row per trade print, as the venue reported it.",
    [
        ("ts", TS, "exchange event time"),
        ("recv_ts", TS, "local receive time (equal to ts when unknown, e.g. for bundled history)"),
        ("venue", pa.string(), "venue name: coinbase, hyperliquid, binance, ..."),
        ("symbol", pa.string(), "canonical BASE-QUOTE symbol"),
        ("trade_id", pa.string(), "venue trade id"),
        ("price", pa.float64(), "trade price, > 0"),
        ("size", pa.float64(), "trade size in base units, >= 0"),
        ("side", pa.string(), "taker side: buy or sell"),
        ("seq", pa.int64(), "venue sequence number, null when the venue has none"),
    ],
)

BOOK = _kind(
    "book",
    "Level-2 order book: a snapshot, then per-level updates.",
    [
        ("ts", TS, "exchange event time"),
        ("recv_ts", TS, "local receive time"),
        ("venue", pa.string(), "venue name"),
        ("symbol", pa.string(), "canonical symbol"),
        ("side", pa.string(), "bid or ask"),
        ("price", pa.float64(), "level price"),
        ("size", pa.float64(), "size at the level; 0 removes the level"),
        ("snapshot", pa.bool_(), "true for rows of a full snapshot"),
        ("seq", pa.int64(), "venue sequence number"),
    ],
)

BARS = _kind(
    "bars",
    "OHLCV bars stamped with their open time on exchange time; metadata varon.interval.",
    [
        ("ts", TS, "bar open time"),
        ("venue", pa.string(), "venue name"),
        ("symbol", pa.string(), "canonical symbol"),
        ("open", pa.float64(), "first price in the bar (previous close when empty)"),
        ("high", pa.float64(), "highest price"),
        ("low", pa.float64(), "lowest price"),
        ("close", pa.float64(), "last price"),
        ("volume", pa.float64(), "base volume; 0 for an empty bar"),
        ("buy_volume", pa.float64(), "taker-buy base volume; NaN when the source does not say"),
        ("vwap", pa.float64(), "volume-weighted average price; the close when volume is 0"),
        ("trades", pa.int64(), "number of trades; 0 for an empty bar"),
        ("partial", pa.bool_(), "true when the bar does not cover its whole interval (first bar after start, last bar at end of input)"),
    ],
    extra=True,
)

FEATURES = _kind(
    "features",
    "The bars columns plus one float64 column per feature; metadata: the feature spec and its hash.",
    list(zip(BARS.schema.names, BARS.schema.types, [BARS.descriptions[n] for n in BARS.schema.names]))
    + [("warmup", pa.bool_(), "true while some feature has not seen enough bars yet (its value is NaN)")],
    extra=True,
)

SIGNALS = _kind(
    "signals",
    "A strategy's target per symbol per bar.",
    [
        ("ts", TS, "decision time (the close of the bar)"),
        ("bar_ts", TS, "open time of the bar the decision was made on"),
        ("symbol", pa.string(), "canonical symbol"),
        ("strategy", pa.string(), "strategy name"),
        ("target", pa.float64(), "-1..1 of the strategy's allowed exposure"),
        ("leverage", pa.float64(), "requested leverage (capped by the risk engine)"),
        ("stop_loss", pa.float64(), "stop-loss price, NaN for the configured default"),
        ("take_profit", pa.float64(), "take-profit price, NaN for none"),
        ("price", pa.float64(), "reference price at decision time: the close of the bar"),
        ("model_id", pa.string(), "model identifier, null for rule strategies"),
        ("venue", pa.string(), "venue of the bar the decision was made on"),
        ("bar_open", pa.float64(), "open of that bar"),
        ("bar_high", pa.float64(), "high of that bar"),
        ("bar_low", pa.float64(), "low of that bar"),
    ],
)

_ORDER_COLUMNS = [
    ("ts", TS, "event time"),
    ("symbol", pa.string(), "canonical symbol"),
    ("cloid", pa.string(), "client order id derived from the order intent"),
    ("venue_order_id", pa.string(), "the venue's order id"),
    ("side", pa.string(), "buy or sell"),
    ("size", pa.float64(), "base size"),
    ("price", pa.float64(), "limit or fill price"),
    ("fee", pa.float64(), "fee paid in quote currency"),
    ("status", pa.string(), "new, open (resting on the venue), filled, rejected, cancelled; dry_run and unknown (no answer after retries) on a real venue"),
    ("reason", pa.string(), "why: entry, exit, stop_loss, take_profit, rejected: ..."),
    ("strategy", pa.string(), "strategy name"),
]
ORDERS = _kind("orders", "Orders as sent to a venue and their status changes.", _ORDER_COLUMNS)
FILLS = _kind("fills", "Executions reported by a venue.", _ORDER_COLUMNS)

EQUITY = _kind(
    "equity",
    "Equity curve per strategy.",
    [
        ("ts", TS, "time"),
        ("strategy", pa.string(), "strategy name"),
        ("equity", pa.float64(), "equity in quote currency"),
        ("position", pa.float64(), "signed position in base units"),
        ("pnl", pa.float64(), "cumulative profit and loss"),
        ("drawdown", pa.float64(), "drawdown from the running peak, as a fraction"),
    ],
)

FUNDING = _kind(
    "funding",
    "Perpetual-futures funding and prices: polled contexts (rate, mark, oracle, open interest) or settled funding history.",
    [
        ("ts", TS, "exchange time of the observation (settlement time for history, poll receive time for contexts)"),
        ("recv_ts", TS, "local receive time"),
        ("venue", pa.string(), "venue name"),
        ("symbol", pa.string(), "canonical symbol"),
        ("funding_rate", pa.float64(), "funding rate per hour as a fraction (Hyperliquid pays hourly)"),
        ("premium", pa.float64(), "premium index; NaN when unknown"),
        ("mark_price", pa.float64(), "mark price; NaN when unknown (history)"),
        ("oracle_price", pa.float64(), "oracle price funding is paid on; NaN when unknown"),
        ("open_interest", pa.float64(), "open interest in base units; NaN when unknown"),
    ],
)

KINDS: dict[str, StreamKind] = {
    k.name: k for k in (TRADES, BOOK, BARS, FEATURES, SIGNALS, ORDERS, FILLS, EQUITY, FUNDING)
}


def kind_by_name(name: str) -> StreamKind:
    from varon_cli.errors import UsageError

    try:
        return KINDS[name]
    except KeyError:
        raise UsageError(f"unknown stream kind {name!r}; known kinds: {', '.join(KINDS)}") from None


def contract_markdown() -> str:
    """The stream contract as Markdown; docs/streams.md is this text (a test keeps them equal)."""
    lines = [
        "# Streams (the contract between varon commands)",
        "",
        "Generated from `varon_cli/schemas.py` by `python -m varon_cli.schemas > docs/streams.md`.",
        "Every stream carries `varon.kind` and `varon.version` in its Arrow schema metadata;",
        "a command fed the wrong kind stops with a one-line error naming both kinds.",
        "Timestamps are `timestamp[ns, tz=UTC]`; prices and sizes float64 (venue rounding happens at execution).",
        "Readers also accept dictionary-encoded strings, other timestamp units, and plain files when `--kind` names them.",
        "Event-time progress travels as a zero-row batch whose custom metadata holds `varon.watermark` (ns since epoch).",
        "",
        "Deviations from ../shared/DESIGN.md: `bars` adds `partial` (bool); `features` adds `warmup` (bool);",
        "`trade_id` is a string (venues use integers and UUIDs); `funding` is a kind DESIGN.md names",
        "as an output of `collect hyperliquid` without columns, declared here; `signals` add `venue` and the",
        "bar's `bar_open`, `bar_high`, `bar_low` (`price` is its close) so that an executor's paper venue",
        "fills at the first price after a decision and triggers stops on the bar's range, live as in a backtest.",
        "",
    ]
    for kind in KINDS.values():
        lines += [f"## {kind.name} (version {kind.version})", "", kind.doc, "", "| column | type | meaning |", "| --- | --- | --- |"]
        for f in kind.schema:
            lines.append(f"| {f.name} | {f.type} | {kind.descriptions[f.name]} |")
        if kind.extra_columns:
            lines.append("| … | float64 | further columns allowed (one per feature) |" if kind.name == "features" else "| … | | further columns allowed |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(contract_markdown(), end="")

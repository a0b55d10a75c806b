"""The stream contract: declarations and their published documentation agree."""

from pathlib import Path

import pyarrow as pa

from varon_cli.schemas import BARS, FEATURES, KINDS, TRADES, TS, contract_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_docs_are_generated_from_the_declarations() -> None:
    assert (ROOT / "docs" / "streams.md").read_text() == contract_markdown()


def test_every_design_kind_is_declared_once_with_design_columns() -> None:
    assert set(KINDS) == {"trades", "book", "bars", "features", "signals", "orders", "fills", "equity", "funding"}
    assert TRADES.column_names[:9] == ["ts", "recv_ts", "venue", "symbol", "trade_id", "price", "size", "side", "seq"]
    assert BARS.column_names[:11] == ["ts", "venue", "symbol", "open", "high", "low", "close", "volume", "buy_volume", "vwap", "trades"]
    assert FEATURES.column_names[: len(BARS.column_names)] == BARS.column_names


def test_timestamps_are_ns_utc_and_metadata_is_stamped() -> None:
    for kind in KINDS.values():
        assert kind.schema.field("ts").type == TS
        meta = kind.schema_with().metadata
        assert meta[b"varon.kind"] == kind.name.encode() and meta[b"varon.version"] == b"1"
    assert TS == pa.timestamp("ns", tz="UTC")

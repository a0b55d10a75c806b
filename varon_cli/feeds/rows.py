"""Column accumulators that turn normalised feed events into Arrow batches.

A normaliser appends plain Python values to per-column lists (the cheapest
per-event work CPython offers) and the accumulator converts them to one Arrow
record batch per flush. The venue is constant per feed, so it is filled at
flush time rather than appended per row.
"""

from __future__ import annotations

import pyarrow as pa

from varon_cli.schemas import BOOK, FUNDING, TRADES, StreamKind


class _Rows:
    kind: StreamKind
    _fields: tuple[str, ...]

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.schema = self.kind.schema_with()
        for name in self._fields:
            setattr(self, name, [])

    def __len__(self) -> int:
        return len(self.ts)  # type: ignore[attr-defined]

    def take_batch(self) -> pa.RecordBatch | None:
        """The rows accumulated since the last call as one batch (None when empty)."""
        n = len(self)
        if not n:
            return None
        columns = []
        for field in self.schema:
            if field.name == "venue":
                columns.append(pa.array([self.venue] * n, pa.string()))
            else:
                columns.append(pa.array(getattr(self, field.name), field.type))
        for name in self._fields:
            setattr(self, name, [])
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


class TradeRows(_Rows):
    """Trades: ts, recv_ts, symbol, trade_id, price, size, side (taker), seq."""

    kind = TRADES
    _fields = ("ts", "recv_ts", "symbol", "trade_id", "price", "size", "side", "seq")

    def add(self, ts: int, recv_ts: int, symbol: str, trade_id: str, price: float, size: float, side: str,
            seq: int | None) -> None:
        self.ts.append(ts)
        self.recv_ts.append(recv_ts)
        self.symbol.append(symbol)
        self.trade_id.append(trade_id)
        self.price.append(price)
        self.size.append(size)
        self.side.append(side)
        self.seq.append(seq)


class BookRows(_Rows):
    """Book levels: ts, recv_ts, symbol, side (bid/ask), price, size (0 removes), snapshot, seq."""

    kind = BOOK
    _fields = ("ts", "recv_ts", "symbol", "side", "price", "size", "snapshot", "seq")

    def add(self, ts: int, recv_ts: int, symbol: str, side: str, price: float, size: float, snapshot: bool,
            seq: int | None) -> None:
        self.ts.append(ts)
        self.recv_ts.append(recv_ts)
        self.symbol.append(symbol)
        self.side.append(side)
        self.price.append(price)
        self.size.append(size)
        self.snapshot.append(snapshot)
        self.seq.append(seq)


class FundingRows(_Rows):
    """Funding observations: rate, premium, mark, oracle and open interest per symbol."""

    kind = FUNDING
    _fields = ("ts", "recv_ts", "symbol", "funding_rate", "premium", "mark_price", "oracle_price", "open_interest")

    def add(self, ts: int, recv_ts: int, symbol: str, funding_rate: float, premium: float, mark_price: float,
            oracle_price: float, open_interest: float) -> None:
        self.ts.append(ts)
        self.recv_ts.append(recv_ts)
        self.symbol.append(symbol)
        self.funding_rate.append(funding_rate)
        self.premium.append(premium)
        self.mark_price.append(mark_price)
        self.oracle_price.append(oracle_price)
        self.open_interest.append(open_interest)

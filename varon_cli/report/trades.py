"""Round-trip trades rebuilt from fills, for win rate and profit factor.

A fill stream records executions, not trades. The report needs trades: a
position in one symbol for one strategy that opens from flat and ends when it
is flat again or flips to the other side. Rules:

- Fills are taken in time order (stable: fills with equal `ts` keep their
  input order), separately for each (strategy, symbol).
- Adding to a position moves its entry price to the size-weighted average.
- Reducing realises (exit - average entry) x size x direction; a partial close
  stays inside the same trade, which closes only when the position is flat.
- A fill that flips the position closes the trade and opens a new one with the
  remainder at the fill's price; the fill's fee is split in proportion to the
  size that closed and the size that opened.
- A trade's PnL is net of the fees of all of its fills; funding is not
  attributed to trades (it is in equity and in the `funding` total).
- A position still open at the end is not a trade (its unrealised PnL is in
  the equity curve).
- Rows that are not executions are skipped: a status of rejected, canceled,
  cancelled or expired, a size that is not positive, or a price that is not a
  positive number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from varon_cli.errors import InputError
from varon_cli.schemas import TS

NOT_EXECUTED = frozenset({"rejected", "canceled", "cancelled", "expired"})

# A position smaller than this fraction of the size it had is float residue of
# partial closes, not a position: the trade is closed.
FLAT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class RoundTrip:
    """One closed trade: direction +1 long, -1 short; PnL and fees in quote currency."""

    strategy: str
    symbol: str
    direction: int
    open_ns: int
    close_ns: int
    gross_pnl: float
    fees: float

    @property
    def net_pnl(self) -> float:
        return self.gross_pnl - self.fees


@dataclass
class _Open:
    """The open trade of one (strategy, symbol) while fills are replayed."""

    direction: int
    size: float
    entry: float
    open_ns: int
    fees: float
    gross: float = 0.0


@dataclass(frozen=True)
class Executions:
    """The executed rows of a fills table as plain arrays, in time order."""

    ts: np.ndarray
    strategy: list[str]
    symbol: list[str]
    signed_size: np.ndarray
    price: np.ndarray
    fee: np.ndarray

    @property
    def notional(self) -> float:
        """Sum of |size x price| over the executions, in quote currency."""
        return float(np.abs(self.signed_size * self.price).sum())


def executions(fills: pa.Table | None) -> Executions:
    """Pick the executed rows of a FILLS table and order them by time."""
    if fills is None or fills.num_rows == 0:
        empty = np.zeros(0)
        return Executions(np.zeros(0, np.int64), [], [], empty, empty, empty)
    ts = fills.column("ts").cast(TS).cast(pa.int64()).to_numpy(zero_copy_only=False)
    size = _floats(fills, "size", np.nan)
    price = _floats(fills, "price", np.nan)
    fee = _floats(fills, "fee", 0.0)
    side = _strings(fills, "side")
    status = _strings(fills, "status")
    strategy = _strings(fills, "strategy")
    symbol = _strings(fills, "symbol")
    sign = np.array([_side_sign(s) for s in side], dtype=np.float64)
    status_ok = np.array([s.lower() not in NOT_EXECUTED for s in status], dtype=bool)
    keep = status_ok & (size > 0) & np.isfinite(price) & (price > 0)
    order = np.flatnonzero(keep)[np.argsort(ts[keep], kind="stable")]
    return Executions(
        ts=ts[order],
        strategy=[strategy[i] for i in order],
        symbol=[symbol[i] for i in order],
        signed_size=(size * sign)[order],
        price=price[order],
        fee=fee[order],
    )


def round_trips(fills: pa.Table | None) -> list[RoundTrip]:
    """The closed round trips in `fills`, in the order they closed."""
    ex = executions(fills)
    open_trades: dict[tuple[str, str], _Open] = {}
    closed: list[RoundTrip] = []
    for i in range(len(ex.ts)):
        key = (ex.strategy[i], ex.symbol[i])
        ts, qty, price, fee = int(ex.ts[i]), float(ex.signed_size[i]), float(ex.price[i]), float(ex.fee[i])
        direction = 1 if qty > 0 else -1
        size = abs(qty)
        trade = open_trades.get(key)
        if trade is None:
            open_trades[key] = _Open(direction, size, price, ts, fee)
            continue
        if direction == trade.direction:
            trade.entry = (trade.entry * trade.size + price * size) / (trade.size + size)
            trade.size += size
            trade.fees += fee
            continue
        closing = min(size, trade.size)
        trade.gross += closing * (price - trade.entry) * trade.direction
        trade.fees += fee * closing / size
        left = trade.size - closing
        if left > FLAT_TOLERANCE * trade.size:
            trade.size = left
            continue
        closed.append(RoundTrip(key[0], key[1], trade.direction, trade.open_ns, ts, trade.gross, trade.fees))
        del open_trades[key]
        opened = size - closing
        if opened > FLAT_TOLERANCE * size:
            open_trades[key] = _Open(direction, opened, price, ts, fee * opened / size)
    return closed


def _side_sign(side: str) -> float:
    text = side.lower()
    if text == "buy":
        return 1.0
    if text == "sell":
        return -1.0
    raise InputError(f"fills: side must be buy or sell, got {side!r}")


def _floats(table: pa.Table, name: str, null: float) -> np.ndarray:
    column = table.column(name).cast(pa.float64()).fill_null(null)
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _strings(table: pa.Table, name: str) -> list[str]:
    """A string column as Python strings (dictionary-encoded too); null reads as ''."""
    return ["" if v is None else str(v) for v in table.column(name).to_pylist()]

"""The market the fake exchanges replay: a tape of trades and the small book they move.

Both fake servers (Coinbase and Hyperliquid) share one market model so that a
test can compare what a client recorded with what the market actually did:

- `FakeTrade` is one print, venue-neutral. Trade ids are contiguous per product
  (as on Coinbase), so a missing id is a real, detectable gap.
- `synthetic_tape` makes a deterministic random walk for any products.
- `tape_from_parquet` replays the real Binance prints bundled with varon.
- `SyntheticBook` keeps ten price levels a side around the last trade. Each trade
  re-centres it (the maker side starts at the trade price), so the book is never
  crossed and a trade changes only the few levels near the touch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import pyarrow.parquet as pq

Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class FakeTrade:
    """One trade of the tape. `taker_side` is the aggressor; exchanges that report
    the maker's side (Coinbase) send the opposite."""

    product: str
    trade_id: int
    price: float
    size: float
    taker_side: Side
    time_ns: int


# Starting prices of the synthetic walk; products not listed start at 100.
_BASE_PRICE = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}


def synthetic_tape(
    products: Iterable[str] = ("BTC-USD", "ETH-USD"),
    n_per_product: int = 200,
    start_ns: int = 1_767_225_600_000_000_000,  # 2026-01-01T00:00:00Z
    seed: int = 0,
    mean_gap_ms: float = 50.0,
) -> list[FakeTrade]:
    """A deterministic tape: per product a walk in cent ticks (steps of -2..+2),
    taker side following the step, exponential gaps between prints.

    Trade ids are contiguous per product from 1_000_000 * (index + 1) + 1, so two
    products never share an id (a client mixing products up shows). The result is
    sorted by time (ties by product order), as a market would print it.
    """
    rng = random.Random(seed)
    rows: list[tuple[int, int, FakeTrade]] = []
    for index, product in enumerate(dict.fromkeys(products)):
        cents = round(_BASE_PRICE.get(product.split("-")[0], 100.0) * 100)
        t_ns = start_ns + index * 1_000  # keep products' prints from sharing a nanosecond
        first_id = 1_000_000 * (index + 1) + 1
        for k in range(n_per_product):
            step = rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2))
            cents = max(1, cents + step)
            if step > 0:
                side: Side = "buy"
            elif step < 0:
                side = "sell"
            else:
                side = rng.choice(("buy", "sell"))
            size = max(1e-8, round(rng.lognormvariate(-3.0, 1.2), 8))
            t_ns += max(1_000, int(rng.expovariate(1.0 / mean_gap_ms) * 1_000_000))
            trade = FakeTrade(product, first_id + k, cents / 100, size, side, t_ns)
            rows.append((t_ns, index, trade))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rows]


def tape_from_parquet(path: str | Path, product: str = "BTC-USD") -> list[FakeTrade]:
    """Real prints from a varon `trades` file (ts, trade_id, price, size, side = taker).

    The prints are renamed to `product` and numbered first_id, first_id + 1, ...
    in time order, where first_id is the file's first id when it is numeric
    (the bundled Binance file is already contiguous, so its ids are kept).
    """
    cols = pq.read_table(path, columns=["ts", "trade_id", "price", "size", "side"]).to_pydict()
    order = sorted(range(len(cols["ts"])), key=lambda i: (cols["ts"][i], str(cols["trade_id"][i])))
    first = str(cols["trade_id"][order[0]]) if order else "1"
    first_id = int(first) if first.isdigit() else 1
    tape = []
    for k, i in enumerate(order):
        ts = cols["ts"][i]
        # to_pydict gives datetimes (micro precision is all the bundled data has).
        time_ns = int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1_000
        side = cols["side"][i]
        if side not in ("buy", "sell"):
            raise ValueError(f"{path}: row {i}: side {side!r} is not buy/sell")
        tape.append(FakeTrade(product, first_id + k, float(cols["price"][i]), float(cols["size"][i]), side, time_ns))
    return tape


def price_decimals(trades: Iterable[FakeTrade], limit: int = 1000) -> int:
    """Decimals of the tape's price grid (2 for cents), read off the first prints."""
    best = 0
    for n, t in enumerate(trades):
        if n >= limit:
            break
        text = f"{t.price:.8f}".rstrip("0")
        best = max(best, len(text.split(".")[1]))
    return best


def format_ticks(ticks: int, decimals: int) -> str:
    """An integer number of ticks as an exact decimal string (no float rounding)."""
    if decimals == 0:
        return str(ticks)
    sign = "-" if ticks < 0 else ""
    whole, frac = divmod(abs(ticks), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}"


BookChange = tuple[str, int, float]  # ("bid" | "ask", price in ticks, new size; 0 removes)


class SyntheticBook:
    """A small L2 book driven by the tape, prices held as integer ticks.

    After a trade at price P the maker side's best level is P and the other side
    starts one tick away, `depth` levels each. Levels that stay keep their size,
    the traded level loses the trade's size (refilled when it would empty) and new
    levels get a pseudo-random size, so the change a trade causes is a handful of
    levels near the touch, never a crossed book.
    """

    def __init__(self, decimals: int, depth: int = 10, seed: int | str = 0) -> None:
        self.decimals = decimals
        self.depth = depth
        self.bids: dict[int, float] = {}
        self.asks: dict[int, float] = {}
        self._rng = random.Random(seed)

    def ticks(self, price: float) -> int:
        return round(price * 10**self.decimals)

    def price(self, ticks: int) -> str:
        return format_ticks(ticks, self.decimals)

    def seed(self, price: float) -> None:
        """Fill both sides around `price` before any trade has happened."""
        self.apply(FakeTrade("", 0, price, 0.0, "buy", 0))

    def _fresh(self) -> float:
        return round(self._rng.uniform(0.01, 3.0), 8)

    def apply(self, trade: FakeTrade) -> list[BookChange]:
        """Move the book for one trade; return the levels that changed."""
        p = self.ticks(trade.price)
        if trade.taker_side == "buy":  # lifted an offer at p
            best_bid, best_ask = p - 1, p
        else:  # hit a bid at p
            best_bid, best_ask = p, p + 1
        new_bids = {best_bid - i: self.bids.get(best_bid - i) or self._fresh() for i in range(self.depth)}
        new_asks = {best_ask + i: self.asks.get(best_ask + i) or self._fresh() for i in range(self.depth)}
        maker = new_asks if trade.taker_side == "buy" else new_bids
        left = round(maker[p] - trade.size, 8)
        maker[p] = left if left > 0 else self._fresh()
        changes = _diff("bid", self.bids, new_bids) + _diff("ask", self.asks, new_asks)
        self.bids, self.asks = new_bids, new_asks
        return changes

    def levels(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(bids best first = descending, asks best first = ascending)."""
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())


def _diff(side: str, old: dict[int, float], new: dict[int, float]) -> list[BookChange]:
    gone = [(side, px, 0.0) for px in old if px not in new]
    changed = [(side, px, sz) for px, sz in new.items() if old.get(px) != sz]
    return gone + changed

"""Hyperliquid's price and size grid, and its $10 minimum (protocols.md 4e).

A price has at most 5 significant figures (an integer price is always valid)
and at most 6 - szDecimals decimals; a size has at most szDecimals decimals.
Rounding always goes the safe way for the caller: an IOC's price cap toward
less slippage, a size toward less exposure, so rounding never lets an order
go beyond what the risk engine allowed.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

MIN_ORDER_VALUE = 10.0  # USD, perps
PRICE_SIG_FIGS = 5
PERP_PRICE_DECIMALS = 6

_MODES = {"down": ROUND_FLOOR, "up": ROUND_CEILING, "nearest": ROUND_HALF_EVEN}


def price_decimals(px: float, sz_decimals: int) -> int:
    """How many decimals a price near `px` may carry."""
    if px <= 0 or not math.isfinite(px):
        raise ValueError(f"price {px!r} is not a positive number")
    magnitude = math.floor(math.log10(px))
    return max(0, min(PRICE_SIG_FIGS - 1 - magnitude, PERP_PRICE_DECIMALS - sz_decimals))


def round_price(px: float, sz_decimals: int, mode: str = "nearest") -> float:
    """`px` on the venue's price grid, rounded down, up or to the nearest valid price."""
    places = price_decimals(px, sz_decimals)
    value = Decimal(repr(px)).quantize(Decimal(1).scaleb(-places), rounding=_MODES[mode])
    out = float(value)
    if out <= 0:
        raise ValueError(f"price {px!r} is below the smallest price step of an asset with {sz_decimals} size decimals")
    # quantizing to the decimals can leave 6 significant figures when rounding carried a digit up (99999.5 -> 100000)
    return out if valid_price(out, sz_decimals) else round_price(out, sz_decimals, mode)


def round_size(sz: float, sz_decimals: int, mode: str = "down") -> float:
    """A size in the asset's lots (down by default: never more than was allowed)."""
    return float(Decimal(repr(abs(sz))).quantize(Decimal(1).scaleb(-sz_decimals), rounding=_MODES[mode]))


def valid_price(px: float, sz_decimals: int) -> bool:
    """True if the venue accepts `px` for an asset with `sz_decimals`."""
    if not (px > 0 and math.isfinite(px)):
        return False
    d = Decimal(repr(px)).normalize()
    decimals = max(0, -d.as_tuple().exponent)
    if decimals > PERP_PRICE_DECIMALS - sz_decimals:
        return False
    if d == d.to_integral_value():
        return True
    return len(d.as_tuple().digits) <= PRICE_SIG_FIGS


def below_minimum(sz: float, px: float) -> bool:
    return sz * px < MIN_ORDER_VALUE

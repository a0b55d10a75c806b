"""Half-open time ranges [lo, hi) in nanoseconds: the unit of backfill coverage.

A backfill records which spans of time it has fetched, not which candles it
got, because a venue legitimately omits buckets without trades. "What is still
missing" is then the requested range minus the recorded coverage, which these
helpers compute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

Range = tuple[int, int]

DAY_NS = 86_400_000_000_000


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, disjoint ranges covering the same time; touching ranges are joined, empty ones dropped."""
    out: list[Range] = []
    for lo, hi in sorted(r for r in ranges if r[1] > r[0]):
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def subtract(want: Range, have: Iterable[Range]) -> list[Range]:
    """The parts of `want` that no range of `have` covers, in time order."""
    lo, hi = want
    out: list[Range] = []
    for a, b in merge(have):
        if b <= lo or a >= hi:
            continue
        if a > lo:
            out.append((lo, a))
        lo = max(lo, b)
        if lo >= hi:
            break
    if lo < hi:
        out.append((lo, hi))
    return out


def clip(ranges: Iterable[Range], lo: int, hi: int) -> list[Range]:
    """Each range cut to [lo, hi); ranges left empty are dropped."""
    return [(max(a, lo), min(b, hi)) for a, b in ranges if min(b, hi) > max(a, lo)]


def total(ranges: Iterable[Range]) -> int:
    return sum(b - a for a, b in ranges)


def day_of(ts_ns: int) -> int:
    """Start of the UTC day holding `ts_ns`."""
    return ts_ns - ts_ns % DAY_NS


def days(lo: int, hi: int) -> Iterator[int]:
    """Starts of the UTC days that [lo, hi) touches."""
    day = day_of(lo)
    while day < hi:
        yield day
        day += DAY_NS

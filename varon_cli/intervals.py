"""Bar intervals as strings (`1s`, `5m`, `1h`, `1d`) and nanoseconds."""

from __future__ import annotations

import re

from varon_cli.errors import UsageError

_UNITS_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: str, what: str = "interval") -> int:
    """Return a duration such as '5m' in nanoseconds; '0' and '0s' are zero."""
    if text.strip() == "0":
        return 0
    match = _PATTERN.match(text)
    if not match:
        raise UsageError(f"unknown {what} {text!r}: use a number and a unit, e.g. 1s, 500ms, 1m, 5m, 1h, 1d")
    return int(match.group(1)) * _UNITS_NS[match.group(2)]


def parse_interval(text: str) -> int:
    """Return a bar interval in nanoseconds; it must be positive and divide a day evenly."""
    ns = parse_duration(text, "interval")
    if ns <= 0:
        raise UsageError(f"interval {text!r} must be positive")
    day = _UNITS_NS["d"]
    if ns < day and day % ns != 0:
        raise UsageError(f"interval {text!r} does not divide a day evenly, so bars would drift across days")
    if ns > day and ns % day != 0:
        raise UsageError(f"interval {text!r} longer than a day must be whole days")
    return ns


def format_interval(ns: int) -> str:
    """The shortest exact string for an interval: 300e9 -> '5m', 0 -> '0s'."""
    if ns == 0:
        return "0s"
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS_NS[unit]
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"

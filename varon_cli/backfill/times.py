"""User-facing times for --start/--end: ISO dates and datetimes, `now`, or `now-7d`.

Relative forms exist for cron: `--start now-2d` asks for "the last two days"
every time the job runs, and coverage makes each run fetch only what is new.
Times without a zone are UTC; everything is nanoseconds since the epoch.
"""

from __future__ import annotations

import datetime as dt
import re
import time

from varon_cli.errors import UsageError
from varon_cli.intervals import parse_duration

_RELATIVE = re.compile(r"^now\s*(?:-\s*(.+))?$", re.I)


def parse_time(text: str, option: str, now_ns: int | None = None) -> int:
    """Parse one --start/--end value into ns since the epoch (UTC)."""
    raw = text.strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    match = _RELATIVE.match(raw)
    if match:
        ago = match.group(1)
        return now_ns - (parse_duration(ago, f"{option} offset") if ago else 0)
    if re.fullmatch(r"\d{9,11}", raw):  # UNIX seconds, as the venues use
        return int(raw) * 1_000_000_000
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected a date (2025-01-01), a UTC datetime (2025-01-01T12:00), "
                         f"UNIX seconds, now, or now-<duration> such as now-7d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def iso(ts_ns: int) -> str:
    """A compact UTC timestamp for messages: 2025-01-01T00:00:00Z."""
    seconds, rest = divmod(ts_ns, 1_000_000_000)
    text = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if rest:
        text += f".{rest // 1_000_000:03d}"
    return text + "Z"

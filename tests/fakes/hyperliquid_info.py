"""A local fake of Hyperliquid's `POST /info`, shaped after the SDK's recorded cassettes.

Answers `meta` (with or without `"dex"`), `metaAndAssetCtxs`, `allMids`,
`l2Book`, `candleSnapshot` and `fundingHistory` over a deterministic synthetic
market, with the real limits: candleSnapshot serves only the most recent 5000
candles (the one still forming included) and returns every candle that
overlaps [startTime, endTime]; fundingHistory answers at most 500 entries,
oldest first, hourly with millisecond jitter as settlements are stamped. A body
that is not JSON, or a request type it does not know, gets HTTP 422 text/plain
as the real API answers. Asset contexts move a little on every call, for
pollers. Faults and the request log come from `FakeRestServer`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from typing import Any

from .coinbase_rest import FakeRestServer, Recorded, Reply, decimals, json_reply, synthetic_ohlcv, unit

UNIVERSE = [
    {"szDecimals": 5, "name": "BTC", "maxLeverage": 40, "marginTableId": 56},
    {"szDecimals": 4, "name": "ETH", "maxLeverage": 25, "marginTableId": 55},
    {"szDecimals": 2, "name": "SOL", "maxLeverage": 20, "marginTableId": 54},
    {"szDecimals": 0, "name": "kPEPE", "maxLeverage": 10, "marginTableId": 52},
    {"szDecimals": 1, "name": "LOOM", "maxLeverage": 3, "marginTableId": 3, "isDelisted": True,
     "marginMode": "strictIsolated", "onlyIsolated": True},
]
MARGIN_TABLES = [[56, {"description": "", "marginTiers": [{"lowerBound": "0.0", "maxLeverage": 40}]}],
                 [55, {"description": "", "marginTiers": [{"lowerBound": "0.0", "maxLeverage": 25}]}]]
INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
               "2h": 7_200_000, "4h": 14_400_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
               "3d": 259_200_000, "1w": 604_800_000}
CANDLES_SERVED = 5000
RANGE_ITEMS = 500
HOUR_MS = 3_600_000
UNPROCESSABLE = "Failed to deserialize the JSON body into the target type"


def ms(text: str) -> int:
    """'2025-01-01' or '2025-01-01T12:00' (UTC) -> epoch milliseconds."""
    when = dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def _text(status: int, message: str) -> Reply:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, message.encode()


class FakeHyperliquidInfo(FakeRestServer):
    """`POST /info` over a synthetic market.

    now_ms: the fake's clock (None: the real clock); it bounds the 5000-candle
      window and the funding history, and moves the forming candle.
    funding_since_ms: first funding settlement of every coin.
    """

    def __init__(self, now_ms: int | None = None, funding_since_ms: int = ms("2023-05-12")) -> None:
        super().__init__()
        self.now_ms = now_ms
        self.funding_since_ms = funding_since_ms
        self.ctx_calls = 0

    def _now(self) -> int:
        return int(time.time() * 1000) if self.now_ms is None else self.now_ms

    @property
    def coins(self) -> list[str]:
        return [a["name"] for a in UNIVERSE]

    # -- the truth, for tests ---------------------------------------------------------
    def earliest_candle_ms(self, interval: str) -> int:
        step = INTERVAL_MS[interval]
        return (self._now() // step - (CANDLES_SERVED - 1)) * step

    def candle(self, coin: str, interval: str, t_ms: int) -> dict[str, Any]:
        """The candle opening at t_ms, shaped as the venue sends it (still forming if it holds now)."""
        step = INTERVAL_MS[interval]
        o, h, low, c, v, n = synthetic_ohlcv(coin, t_ms // 1000, step // 1000, "hyperliquid")
        now = self._now()
        if t_ms + step > now:
            share = max(now - t_ms, 0) / step
            c, v, n = o + (c - o) * share, v * share, int(n * share)
        d = decimals(o)
        return {"T": t_ms + step - 1, "c": f"{c:.{d}f}", "h": f"{h:.{d}f}", "i": interval, "l": f"{low:.{d}f}",
                "n": n, "o": f"{o:.{d}f}", "s": coin, "t": t_ms, "v": f"{v:.5f}"}

    def history(self, coin: str, interval: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Closed candles lying wholly in [start_ms, end_ms) that the venue still serves, oldest first."""
        step = INTERVAL_MS[interval]
        first = max(-(-start_ms // step) * step, self.earliest_candle_ms(interval))
        forming = self._now() // step * step  # the candle holding now is not history yet
        return [self.candle(coin, interval, t) for t in range(first, min(end_ms // step * step, forming), step)]

    def funding(self, coin: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Settlements with start_ms <= time <= end_ms that have happened, oldest first."""
        out = []
        first_hour = max(start_ms, self.funding_since_ms) // HOUR_MS
        for hour in range(first_hour, min(end_ms, self._now()) // HOUR_MS + 1):
            stamp = hour * HOUR_MS + int(100 * unit("funding-jitter", coin, hour))
            if not (start_ms <= stamp <= end_ms and stamp <= self._now() and stamp >= self.funding_since_ms):
                continue
            premium = 0.004 * (unit("premium", coin, hour) - 0.5)
            rate = premium + max(-0.0005, min(0.0005, 0.0000125 - premium))
            out.append({"coin": coin, "fundingRate": f"{rate:.10f}".rstrip("0").rstrip(".") or "0",
                        "premium": f"{premium:.10f}".rstrip("0").rstrip(".") or "0", "time": stamp})
        return out

    def meta(self) -> dict[str, Any]:
        return {"universe": [dict(a) for a in UNIVERSE], "marginTables": MARGIN_TABLES, "collateralToken": 0}

    def asset_ctx(self, coin: str, k: int) -> dict[str, Any]:
        """Context of one coin at call number k: prices drift with k so a poller sees change."""
        t_s = self._now() // 1000
        o, *_ = synthetic_ohlcv(coin, t_s - t_s % 60, 60, "hyperliquid")
        mark = o * (1 + 0.0005 * math.sin(k / 3))
        oracle = mark * (1 + 0.0002 * math.cos(k / 5))
        d = decimals(mark)
        delisted = any(a["name"] == coin and a.get("isDelisted") for a in UNIVERSE)
        premium = (mark - oracle) / oracle
        funding = premium / 8 + 0.0000125
        return {
            "funding": f"{funding:.10f}",
            "openInterest": f"{1000 + 10 * math.sin(k) + 500 * unit('oi', coin):.4f}",
            "prevDayPx": f"{o * 0.99:.{d}f}",
            "dayNtlVlm": f"{1e6 * (1 + unit('vlm', coin, k)):.4f}",
            "premium": None if delisted else f"{premium:.10f}",
            "oraclePx": f"{oracle:.{d}f}",
            "markPx": f"{mark:.{d}f}",
            "midPx": None if delisted else f"{mark:.{d}f}",
            "impactPxs": None if delisted else [f"{mark * 0.9999:.{d}f}", f"{mark * 1.0001:.{d}f}"],
            "dayBaseVlm": f"{1e6 / o:.4f}",
        }

    # -- serving --------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Reply:
        if method != "POST" or path != "/info":
            return _text(404, "Not Found")
        try:
            body = json.loads(raw)
        except ValueError:
            return _text(422, UNPROCESSABLE)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return _text(422, UNPROCESSABLE)
        kind = body["type"]
        try:
            if kind == "meta":
                return json_reply(self.meta())
            if kind == "metaAndAssetCtxs":
                self.ctx_calls += 1
                return json_reply([self.meta(), [self.asset_ctx(c, self.ctx_calls) for c in self.coins]])
            if kind == "allMids":
                return json_reply({c: self.asset_ctx(c, self.ctx_calls)["markPx"] for c, a in zip(self.coins, UNIVERSE)
                                   if not a.get("isDelisted")})
            if kind == "l2Book":
                return json_reply(self._book(str(body["coin"])))
            if kind == "candleSnapshot":
                req = body["req"]
                return json_reply(self._candles(str(req["coin"]), str(req["interval"]), int(req["startTime"]),
                                                int(req["endTime"])))
            if kind == "fundingHistory":
                end = body.get("endTime")
                entries = self.funding(str(body["coin"]), int(body["startTime"]),
                                       int(end) if end is not None else self._now())
                return json_reply(entries[:RANGE_ITEMS])
        except (KeyError, TypeError, ValueError):
            return _text(422, UNPROCESSABLE)
        return _text(422, UNPROCESSABLE)

    def _candles(self, coin: str, interval: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        if coin not in self.coins or interval not in INTERVAL_MS:
            return []
        step = INTERVAL_MS[interval]
        now = self._now()
        first = max(start_ms // step * step, self.earliest_candle_ms(interval))
        last = min(end_ms, now) // step * step
        return [self.candle(coin, interval, t) for t in range(first, last + 1, step)]

    def _book(self, coin: str) -> dict[str, Any]:
        mid = float(self.asset_ctx(coin, self.ctx_calls)["markPx"])
        d = decimals(mid)
        tick = 10 ** -d
        bids = [{"px": f"{mid - tick * (i + 1):.{d}f}", "sz": f"{1 + unit('bsz', coin, i) * 5:.5f}",
                 "n": 1 + i % 4} for i in range(20)]
        asks = [{"px": f"{mid + tick * (i + 1):.{d}f}", "sz": f"{1 + unit('asz', coin, i) * 5:.5f}",
                 "n": 1 + i % 3} for i in range(20)]
        return {"coin": coin, "time": self._now(), "levels": [bids, asks]}

    def info_requests(self, kind: str) -> list[Recorded]:
        """Requests of one `type` answered 200."""
        with self._lock:
            return [r for r in self.requests if r.status == 200 and isinstance(r.body, dict) and r.body.get("type") == kind]

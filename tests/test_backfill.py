"""`collect backfill`: REST candles and funding into resumable datasets, against local fakes.

The fakes serve deterministic synthetic histories (tests/fakes), so every test
compares the output with the exact truth: no bucket missing, none doubled,
values as the venue sent them. The library is driven in-process with a fast
rate limit and tiny backoff; the CLI runs in subprocesses (marked slow) where
exit codes, one-line errors and kill -9 matter.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests

from fakes.coinbase_rest import FakeCoinbaseRest
from fakes.hyperliquid_info import FakeHyperliquidInfo, ms
from varon_cli.backfill import hyperliquid as hyperliquid_source
from varon_cli.backfill.http import FetchError, RequestRejected, RestClient, RetryPolicy, TokenBucket, parse_retry_after
from varon_cli.backfill.progress import LogProgress, make_progress
from varon_cli.backfill.ranges import merge, subtract
from varon_cli.backfill.run import BackfillRequest, default_funding_path, run_backfill
from varon_cli.backfill.store import COVERAGE_KEY, LOCK_NAME, DatasetStore, OutputBusy, StoreSpec
from varon_cli.backfill.times import parse_time
from varon_cli.errors import UsageError
from varon_cli.schemas import BARS, FUNDING, INTERVAL_KEY
from varon_cli.streamio import open_input
from helpers import assert_same_table

REPO = Path(__file__).resolve().parents[1]
T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86_400
NS = 1_000_000_000
HL_NOW_MS = ms("2025-03-01T12:00:30")
APP = ("import typer; from commands.collect_backfill import backfill; "
       "app = typer.Typer(add_completion=False, pretty_exceptions_enable=False); app.command()(backfill); app()")


# -- helpers ------------------------------------------------------------------------
def fast_client(venue: str, retries: int = 3, timeout: float = 2.0) -> RestClient:
    """No rate limit to speak of and millisecond backoff, so fault tests run fast."""
    return RestClient(venue, TokenBucket(10_000, 10_000), RetryPolicy(max_retries=retries, base_delay=0.005, max_delay=0.02),
                      timeout=timeout)


def coinbase(fake: FakeCoinbaseRest, out: Path, start: str = "2025-01-01", end: str = "2025-01-03", **kw) -> BackfillRequest:
    return BackfillRequest("coinbase", kw.pop("symbols", "BTC-USD,ETH-USD"), start, str(out), end=end, url=fake.url, **kw)


def hyperliquid(fake: FakeHyperliquidInfo, out: Path, start: str, end: str, **kw) -> BackfillRequest:
    return BackfillRequest("hyperliquid", kw.pop("symbols", "BTC-USD,ETH"), start, str(out), end=end, url=fake.url, **kw)


def hl_now() -> int:
    return HL_NOW_MS * 1_000_000


def read(path: Path, kind=BARS) -> tuple[pa.Table, dict[bytes, bytes]]:
    with open_input(str(path), (kind,)) as src:
        return src.read_all(), src.metadata


def rows_of(table: pa.Table, symbol: str) -> pa.Table:
    return table.filter(pc.equal(table["symbol"], symbol))


def seconds(table: pa.Table) -> list[int]:
    return (table["ts"].cast(pa.int64()).to_numpy() // NS).tolist()


def assert_coinbase_truth(table: pa.Table, fake: FakeCoinbaseRest, symbol: str, start_s: int, end_s: int, g: int = 60) -> None:
    """The bars of `symbol` are exactly the fake's non-empty candles of [start_s, end_s)."""
    got = rows_of(table, symbol)
    want = fake.history(symbol, g, start_s, end_s)
    assert seconds(got) == [int(c["start"]) for c in want]
    for column, key in (("open", "open"), ("high", "high"), ("low", "low"), ("close", "close"), ("volume", "volume")):
        assert got[column].to_pylist() == [float(c[key]) for c in want], column


def assert_unique(table: pa.Table) -> None:
    keys = pa.table({"s": table["symbol"], "t": table["ts"]}).group_by(["s", "t"]).aggregate([([], "count_all")])
    assert keys.num_rows == table.num_rows, "duplicate (symbol, ts) rows"


def visible_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.fixture
def cb():
    with FakeCoinbaseRest() as fake:
        yield fake


@pytest.fixture
def hl():
    with FakeHyperliquidInfo(now_ms=HL_NOW_MS) as fake:
        yield fake


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture):
    """Backfill log records (a CLI test run in-process may have stopped 'varon' from propagating)."""
    root = logging.getLogger("varon")
    saved = root.propagate
    root.propagate = True
    caplog.set_level(logging.INFO, logger="varon.collect.backfill")
    yield caplog
    root.propagate = saved


# -- pure parts ------------------------------------------------------------------------
def test_ranges_subtract_and_merge() -> None:
    assert merge([(5, 7), (0, 2), (2, 3), (6, 9), (4, 4)]) == [(0, 3), (5, 9)]
    assert subtract((0, 10), [(2, 3), (5, 7)]) == [(0, 2), (3, 5), (7, 10)]
    assert subtract((0, 10), [(-5, 20)]) == []
    assert subtract((0, 10), []) == [(0, 10)]


def test_parse_time_forms() -> None:
    now = (T0 + 3600) * NS
    assert parse_time("2025-01-01", "--start") == T0 * NS
    assert parse_time("2025-01-01T00:30", "--start") == (T0 + 1800) * NS
    assert parse_time("2025-01-01T01:00:00+01:00", "--start") == T0 * NS
    assert parse_time(str(T0), "--start") == T0 * NS
    assert parse_time("now", "--end", now) == now
    assert parse_time("now-1h", "--start", now) == T0 * NS
    with pytest.raises(UsageError, match="--start 'soon'"):
        parse_time("soon", "--start")


def test_token_bucket_waits_for_tokens_and_carries_debt() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    bucket = TokenBucket(rate=10.0, capacity=2.0, clock=lambda: clock[0], sleep=sleep)
    assert bucket.acquire() == 0 and bucket.acquire() == 0  # the burst
    assert bucket.acquire() == pytest.approx(0.1)  # then one token per 0.1 s
    bucket.charge(5)  # a heavy answer: 5 tokens of debt
    assert bucket.acquire() == pytest.approx(0.6)
    assert sum(slept) == pytest.approx(0.7)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    import random

    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    for retry, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        delays = [policy.delay(retry, None, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert policy.delay(1, 7.0, rng) == 7.0
    assert RetryPolicy(max_retry_after=60).delay(1, 3600, rng) == 60
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:00:10 GMT", now=T0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None


def test_progress_logs_plain_lines_when_not_a_terminal(logs: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    progress = LogProgress("coinbase 1m bars", 1000, "bars", every_s=10, clock=lambda: clock[0])
    progress.advance(100, "BTC-USD 2025-01-01T01:40:00Z")  # too soon for a line
    clock[0] = 11
    progress.advance(200, "BTC-USD 2025-01-01T05:00:00Z")
    lines = [r.getMessage() for r in logs.records]
    assert lines == ["coinbase 1m bars: 300/1000 bars (30%), at BTC-USD 2025-01-01T05:00:00Z, 27 bars/s"]
    assert isinstance(make_progress("x", 1, "bars", tty=False), LogProgress)


# -- the fakes behave like the venues ----------------------------------------------------------
def test_fake_coinbase_rejects_wide_spans_and_answers_newest_first(cb: FakeCoinbaseRest) -> None:
    url = f"{cb.url}/api/v3/brokerage/market/products/BTC-USD/candles"
    wide = requests.get(url, params={"start": T0, "end": T0 + 350 * 60, "granularity": "ONE_MINUTE"}, timeout=5)
    assert wide.status_code == 400
    assert "number of candles requested should be less than 350" in wide.json()["error_details"]
    ok = requests.get(url, params={"start": T0, "end": T0 + 349 * 60 - 1, "granularity": "ONE_MINUTE"}, timeout=5)
    starts = [int(c["start"]) for c in ok.json()["candles"]]
    assert starts == sorted(starts, reverse=True)
    assert 300 < len(starts) < 349  # some empty buckets are omitted
    assert all(isinstance(v, str) for c in ok.json()["candles"] for v in c.values())
    assert requests.get(url.replace("BTC-USD", "NOPE-USD"), params={"start": T0, "end": T0 + 60,
                                                                   "granularity": "ONE_MINUTE"}, timeout=5).status_code == 404


def test_fake_hyperliquid_shapes(hl: FakeHyperliquidInfo) -> None:
    info = f"{hl.url}/info"
    bad = requests.post(info, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 422 and bad.headers["Content-Type"].startswith("text/plain")
    meta = requests.post(info, json={"type": "meta", "dex": ""}, timeout=5).json()
    assert [a["name"] for a in meta["universe"]][:2] == ["BTC", "ETH"]
    first, second = (requests.post(info, json={"type": "metaAndAssetCtxs"}, timeout=5).json() for _ in range(2))
    assert first[0]["universe"] == meta["universe"] and len(first[1]) == len(meta["universe"])
    assert first[1][0]["markPx"] != second[1][0]["markPx"]  # contexts move between polls
    assert set(first[1][0]) >= {"funding", "openInterest", "markPx", "oraclePx", "premium", "midPx", "impactPxs"}
    book = requests.post(info, json={"type": "l2Book", "coin": "BTC"}, timeout=5).json()
    assert len(book["levels"][0]) == len(book["levels"][1]) == 20
    assert float(book["levels"][0][0]["px"]) < float(book["levels"][1][0]["px"])
    assert "BTC" in requests.post(info, json={"type": "allMids"}, timeout=5).json()
    # Candles overlapping [startTime, endTime], only the most recent 5000; funding capped at 500.
    candles = requests.post(info, json={"type": "candleSnapshot", "req": {"coin": "BTC", "interval": "1h",
                            "startTime": ms("2025-02-01T00:30"), "endTime": ms("2025-02-01T03:00")}}, timeout=5).json()
    assert [c["t"] for c in candles] == [ms("2025-02-01") + h * 3_600_000 for h in range(4)]
    assert candles[0]["T"] == candles[1]["t"] - 1 and isinstance(candles[0]["n"], int)
    old = requests.post(info, json={"type": "candleSnapshot", "req": {"coin": "BTC", "interval": "1m",
                        "startTime": ms("2025-01-01"), "endTime": HL_NOW_MS}}, timeout=5).json()
    assert len(old) == 5000 and old[0]["t"] == hl.earliest_candle_ms("1m")
    funding = requests.post(info, json={"type": "fundingHistory", "coin": "ETH", "startTime": ms("2025-01-01")},
                            timeout=5).json()
    assert len(funding) == 500 and funding[0]["time"] >= ms("2025-01-01")


# -- Coinbase: paging, faults, resume --------------------------------------------------------
def test_coinbase_pages_cover_the_range_exactly(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    out = tmp_path / "cb"
    summary = run_backfill(coinbase(cb, out, end="2025-01-04"), client=fast_client("coinbase"))
    table, meta = read(out)
    for symbol in ("BTC-USD", "ETH-USD"):
        assert_coinbase_truth(table, cb, symbol, T0, T0 + 3 * DAY)
    assert_unique(table)
    assert meta[INTERVAL_KEY] == b"1m"
    assert table["buy_volume"].is_nan().to_pylist() == [True] * table.num_rows
    assert table["vwap"].is_nan().to_pylist() == [True] * table.num_rows
    assert table["trades"].null_count == table.num_rows  # Coinbase candles carry no trade count
    assert not any(table["partial"].to_pylist())
    assert set(table["venue"].to_pylist()) == {"coinbase"}
    # Pages of 349 buckets, newest-first answers, end one second before the next page.
    requests_made = cb.candle_requests("BTC-USD")
    assert len(requests_made) == -(-3 * 1440 // 349)
    spans = sorted((int(r.query["start"]), int(r.query["end"])) for r in requests_made)
    assert spans[0][0] == T0 and spans[-1][1] == T0 + 3 * DAY - 1
    assert all(b - a + 1 <= 349 * 60 and b2 == b + 1 for (a, b), (b2, _) in zip(spans, spans[1:] + [(spans[-1][1] + 1, 0)]))
    assert summary.bars_written == table.num_rows
    assert visible_files(out) == [f"venue=coinbase/symbol={s}/date=2025-01-0{d}/part-0.parquet"
                                  for s in ("BTC-USD", "ETH-USD") for d in (1, 2, 3)]


def test_rerun_of_a_covered_range_makes_no_candle_request(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    out = tmp_path / "cb"
    run_backfill(coinbase(cb, out), client=fast_client("coinbase"))
    before = read(out)[0]
    stamps = {f: (out / f).stat().st_mtime_ns for f in visible_files(out)}
    cb.reset_log()
    summary = run_backfill(coinbase(cb, out), client=fast_client("coinbase"))
    assert cb.candle_requests() == [] and summary.requests == 0
    assert {f: (out / f).stat().st_mtime_ns for f in visible_files(out)} == stamps  # nothing rewritten
    assert_same_table(read(out)[0], before)
    # A wider range fetches only the new day, and the days join without a seam.
    run_backfill(coinbase(cb, out, start="2024-12-31"), client=fast_client("coinbase"))
    starts = sorted(int(r.query["start"]) for r in cb.candle_requests("BTC-USD"))
    assert starts[0] == T0 - DAY and max(starts) < T0
    table = read(out)[0]
    assert_coinbase_truth(table, cb, "BTC-USD", T0 - DAY, T0 + 2 * DAY)
    assert_unique(table)


@pytest.mark.parametrize("fault", ["429-retry-after", "429", "500", "reset", "stall"])
def test_transient_faults_are_retried(cb: FakeCoinbaseRest, tmp_path: Path, fault: str) -> None:
    if fault == "429-retry-after":
        cb.fail_next(2, 429, retry_after="0.05", after=1)
    elif fault == "429":
        cb.fail_next(3, 429, after=2)
    elif fault == "500":
        cb.fail_next(2, 500)
    elif fault == "reset":
        cb.reset_next(2, after=1)
    else:
        cb.stall_next(1, seconds=1.0, after=1)
    out = tmp_path / "cb"
    started = time.monotonic()
    summary = run_backfill(coinbase(cb, out, symbols="BTC-USD", end="2025-01-02"),
                           client=fast_client("coinbase", retries=4, timeout=0.3))
    assert summary.retries == {"429-retry-after": 2, "429": 3, "500": 2, "reset": 2, "stall": 1}[fault]
    if fault == "429-retry-after":
        assert time.monotonic() - started >= 0.1  # waited what Retry-After said, twice
    assert_coinbase_truth(read(out)[0], cb, "BTC-USD", T0, T0 + DAY)


def test_exhausted_retries_fail_with_one_line(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    cb.fail_next(None, 503, after=2)
    with pytest.raises(FetchError) as err:
        run_backfill(coinbase(cb, tmp_path / "cb", symbols="BTC-USD"), client=fast_client("coinbase", retries=2))
    message = err.value.message
    assert "\n" not in message and err.value.exit_code == 69
    assert "gave up after 2 retries: HTTP 503" in message and "/products/BTC-USD/candles?start=" in message
    # The two pages fetched before the outage are kept.
    assert read(tmp_path / "cb")[0].num_rows > 600


def test_rejected_request_stops_at_once_naming_it(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    cb.fail_next(1, 400, body='{"error":"INVALID_ARGUMENT","error_details":"bad granularity","message":"bad granularity"}')
    with pytest.raises(RequestRejected) as err:
        run_backfill(coinbase(cb, tmp_path / "cb"), client=fast_client("coinbase"))
    assert cb.count("/candles") == 1  # not retried
    assert "GET http://127.0.0.1" in err.value.message and "HTTP 400 INVALID_ARGUMENT: bad granularity" in err.value.message


def test_resume_after_a_failure_fills_exactly_the_holes(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    out = tmp_path / "cb"
    cb.fail_next(None, 400, after=11)  # the run dies on its 12th request
    with pytest.raises(RequestRejected):
        run_backfill(coinbase(cb, out, end="2025-01-05"), client=fast_client("coinbase"))
    partial = read(out)[0]
    assert 0 < partial.num_rows and seconds(rows_of(partial, "ETH-USD")) == []
    cb.clear_faults()
    cb.reset_log()
    run_backfill(coinbase(cb, out, end="2025-01-05"), client=fast_client("coinbase"))
    table = read(out)[0]
    for symbol in ("BTC-USD", "ETH-USD"):
        assert_coinbase_truth(table, cb, symbol, T0, T0 + 4 * DAY)
    assert_unique(table)
    # Only what was missing was asked for: BTC-USD resumed after its 11 pages.
    btc = sorted(int(r.query["start"]) for r in cb.candle_requests("BTC-USD"))
    assert btc[0] == T0 + 11 * 349 * 60 and len(cb.candle_requests("ETH-USD")) == -(-4 * 1440 // 349)


def test_forming_bars_are_left_for_a_later_run(tmp_path: Path) -> None:
    now_s = T0 + DAY + 10 * 3600 + 45  # 2025-01-02T10:00:45: the 10:00 bar is still forming
    out = tmp_path / "cb"
    with FakeCoinbaseRest(now_s=now_s) as fake:
        run_backfill(coinbase(fake, out, symbols="BTC-USD", end="2025-01-03"), client=fast_client("coinbase"),
                     now=lambda: now_s * NS)
        first = read(out)[0]
        assert max(seconds(first)) < T0 + DAY + 10 * 3600
        assert_coinbase_truth(first, fake, "BTC-USD", T0, T0 + DAY + 10 * 3600)
        fake.now_s = now_s = T0 + 3 * DAY
        fake.reset_log()
        run_backfill(coinbase(fake, out, symbols="BTC-USD", end="2025-01-03"), client=fast_client("coinbase"),
                     now=lambda: now_s * NS)
        assert min(int(r.query["start"]) for r in fake.candle_requests()) == T0 + DAY + 10 * 3600
        table = read(out)[0]
    assert_coinbase_truth(table, fake, "BTC-USD", T0, T0 + 2 * DAY)
    assert_unique(table)


def test_single_parquet_file_output_resumes(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    out = tmp_path / "btc.parquet"
    run_backfill(coinbase(cb, out, end="2025-01-02"), client=fast_client("coinbase"))
    cb.reset_log()
    run_backfill(coinbase(cb, out, end="2025-01-03"), client=fast_client("coinbase"))
    assert min(int(r.query["start"]) for r in cb.candle_requests()) == T0 + DAY
    table, meta = read(out)
    for symbol in ("BTC-USD", "ETH-USD"):
        assert_coinbase_truth(table, cb, symbol, T0, T0 + 2 * DAY)
    assert_unique(table)
    assert seconds(table) == sorted(seconds(table))  # one time-ordered stream
    assert json.loads(meta[COVERAGE_KEY])["covered"]["BTC-USD"] == [[T0 * NS, (T0 + 2 * DAY) * NS]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".btc.parquet.lock", "btc.parquet"]


def test_output_holding_other_bars_is_refused(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    out = tmp_path / "cb"
    run_backfill(coinbase(cb, out, symbols="BTC-USD", end="2025-01-02"), client=fast_client("coinbase"))
    with pytest.raises(UsageError, match="holds coinbase mainnet bars at 1m, not coinbase mainnet bars at 5m"):
        run_backfill(coinbase(cb, out, symbols="BTC-USD", interval="5m"), client=fast_client("coinbase"))
    run_backfill(coinbase(cb, out, symbols="BTC-USD"), client=fast_client("coinbase"))  # the refusal let go of the lock


def test_a_second_run_on_the_same_output_is_turned_away(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    out = tmp_path / "cb"
    with DatasetStore(out, StoreSpec(BARS, "coinbase", interval="1m")):
        with pytest.raises(OutputBusy, match=f"another backfill \\(pid {os.getpid()}\\)") as err:
            run_backfill(coinbase(cb, out), client=fast_client("coinbase"))
    assert err.value.exit_code == 75 and cb.candle_requests() == []
    assert (out / LOCK_NAME).exists()


@pytest.mark.parametrize("change, message", [
    ({"start": "2025-01-02", "end": "2025-01-01"}, "--start 2025-01-02T00:00:00Z is not before --end"),
    ({"interval": "3m"}, "coinbase candles have no 3m interval; use one of 1m, 5m"),
    ({"interval": "7m"}, "does not divide a day evenly"),
    ({"symbols": "BTC"}, "'BTC' is not a Coinbase product id"),
    ({"symbols": "NOPE-USD"}, "coinbase does not know product NOPE-USD"),
    ({"start": "2025-01-01T00:00:30", "end": "2025-01-01T00:01:10"}, "no whole 1m bar lies between"),
    ({"funding_out": "x"}, "coinbase candles are spot; there is no funding"),
])
def test_bad_arguments_are_one_line_usage_errors(cb: FakeCoinbaseRest, tmp_path: Path, change: dict, message: str) -> None:
    base = {"symbols": "BTC-USD", "start": "2025-01-01", "end": "2025-01-02"}
    request = BackfillRequest("coinbase", output=str(tmp_path / "cb"), url=cb.url, **{**base, **change})
    with pytest.raises(UsageError, match=message.replace("(", "\\(")) as err:
        run_backfill(request, client=fast_client("coinbase"))
    assert "\n" not in err.value.message and err.value.exit_code == 64


# -- Hyperliquid -----------------------------------------------------------------------------
def test_hyperliquid_warns_about_the_5000_candle_window(hl: FakeHyperliquidInfo, tmp_path: Path,
                                                          logs: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "hl"
    summary = run_backfill(hyperliquid(hl, out, "2025-02-20", "2025-03-02", funding_out="none"),
                           client=fast_client("hyperliquid"), now=hl_now)
    earliest = hl.earliest_candle_ms("1m")
    warning = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "most recent 5000 1m candles" in warning[0] and "varon collect hyperliquid" in warning[0]
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(earliest / 1000)) in warning[0]
    assert summary.unavailable_before == earliest * 1_000_000
    table, meta = read(out)
    for symbol, coin in (("BTC-USD", "BTC"), ("ETH-USD", "ETH")):
        got = rows_of(table, symbol)
        want = hl.history(coin, "1m", ms("2025-02-20"), ms("2025-03-02"))
        assert (got["ts"].cast(pa.int64()).to_numpy() // 1_000_000).tolist() == [c["t"] for c in want]
        assert got["close"].to_pylist() == [float(c["c"]) for c in want]
        assert got["trades"].to_pylist() == [c["n"] for c in want]
    assert_unique(table)
    assert rows_of(table, "BTC-USD").num_rows == 4999  # the 5000th is still forming
    assert not (tmp_path / "hl-funding").exists()
    # The request shapes the venue expects.
    meta_body = hl.info_requests("meta")[0].body
    assert meta_body == {"type": "meta", "dex": ""}
    req = hl.info_requests("candleSnapshot")[0].body["req"]
    assert req["coin"] == "BTC" and req["interval"] == "1m" and isinstance(req["startTime"], int)
    # A rerun warns again, fetches nothing it has, and asks for nothing out of reach.
    hl.reset_log()
    logs.clear()
    run_backfill(hyperliquid(hl, out, "2025-02-20", "2025-03-02", funding_out="none"),
                 client=fast_client("hyperliquid"), now=hl_now)
    assert hl.info_requests("candleSnapshot") == []


def test_hyperliquid_funding_history_pages_past_500(hl: FakeHyperliquidInfo, tmp_path: Path) -> None:
    out = tmp_path / "hl"
    run_backfill(hyperliquid(hl, out, "2025-02-01", "2025-03-01", interval="1h"),
                 client=fast_client("hyperliquid"), now=hl_now)
    funding_dir = default_funding_path(str(out))
    assert funding_dir == tmp_path / "hl-funding"
    table, meta = read(funding_dir, FUNDING)
    assert meta[b"varon.kind"] == b"funding"
    for symbol, coin in (("BTC-USD", "BTC"), ("ETH-USD", "ETH")):
        got = rows_of(table, symbol)
        want = hl.funding(coin, ms("2025-02-01"), ms("2025-03-01") - 1)
        assert len(want) == 28 * 24
        assert (got["ts"].cast(pa.int64()).to_numpy() // 1_000_000).tolist() == [e["time"] for e in want]
        assert got["funding_rate"].to_pylist() == [float(e["fundingRate"]) for e in want]
        assert got["premium"].to_pylist() == [float(e["premium"]) for e in want]
    assert_unique(table)
    assert all(np.isnan(table[c].to_numpy()).all() for c in ("mark_price", "oracle_price", "open_interest"))
    assert table["recv_ts"].equals(table["ts"])
    assert len(hl.info_requests("fundingHistory")) == 4  # two windows of at most 480 hours per coin
    bars = read(out)[0]
    assert rows_of(bars, "BTC-USD").num_rows == 28 * 24 and read(out)[1][INTERVAL_KEY] == b"1h"
    hl.reset_log()
    run_backfill(hyperliquid(hl, out, "2025-02-01", "2025-03-01", interval="1h"),
                 client=fast_client("hyperliquid"), now=hl_now)
    assert hl.info_requests("fundingHistory") == [] and hl.info_requests("candleSnapshot") == []


def test_hyperliquid_funding_continues_after_a_full_answer(hl: FakeHyperliquidInfo, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer of 500 entries may be cut short: the next request starts 1 ms after its last entry."""
    monkeypatch.setattr(hyperliquid_source, "FUNDING_PAGE_NS", 1000 * 3_600_000_000_000)
    out = tmp_path / "hl"
    run_backfill(hyperliquid(hl, out, "2025-02-01", "2025-03-01", symbols="BTC", interval="1d"),
                 client=fast_client("hyperliquid"), now=hl_now)
    asked = [r.body for r in hl.info_requests("fundingHistory")]
    assert len(asked) == 2
    first_answer = hl.funding("BTC", asked[0]["startTime"], asked[0]["endTime"])[:500]
    assert asked[1]["startTime"] == first_answer[-1]["time"] + 1
    table = read(default_funding_path(str(out)), FUNDING)[0]
    want = hl.funding("BTC", ms("2025-02-01"), ms("2025-03-01") - 1)
    assert (table["ts"].cast(pa.int64()).to_numpy() // 1_000_000).tolist() == [e["time"] for e in want]


def test_hyperliquid_symbols_and_intervals(hl: FakeHyperliquidInfo, tmp_path: Path) -> None:
    def attempt(**kw):
        run_backfill(hyperliquid(hl, tmp_path / "hl", "2025-02-28", "2025-03-01", **kw),
                     client=fast_client("hyperliquid"), now=hl_now)

    with pytest.raises(UsageError, match="hyperliquid lists no perpetual 'DOGE' \\(from 'DOGE-USD'\\); it lists BTC, ETH"):
        attempt(symbols="BTC-USD,DOGE-USD")
    with pytest.raises(UsageError, match="quoted in USD; use BTC-USD or BTC"):
        attempt(symbols="BTC-USDT")
    with pytest.raises(UsageError, match="hyperliquid candles have no 6h interval"):
        attempt(interval="6h")
    assert hl.info_requests("candleSnapshot") == []
    attempt(symbols="kpepe", interval="1h", funding_out="none")  # meta's spelling wins: kPEPE
    assert set(read(tmp_path / "hl")[0]["symbol"].to_pylist()) == {"kPEPE-USD"}


# -- the CLI ----------------------------------------------------------------------------------
@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch):
    """A CliRunner over the command alone; restores the signal handlers and logging the command changes."""
    from typer.testing import CliRunner
    import typer

    from commands.collect_backfill import backfill

    for key in list(os.environ):
        if key.startswith("VARON_"):
            monkeypatch.delenv(key)
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(backfill)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    log = logging.getLogger("varon")
    saved = (list(log.handlers), log.level, log.propagate)
    yield lambda *args: CliRunner().invoke(app, list(args))
    for s, h in handlers.items():
        signal.signal(s, h)
    log.handlers[:], log.level, log.propagate = saved


def test_cli_testnet_data_is_kept_apart(runner, tmp_path: Path) -> None:
    out = tmp_path / "hl"
    with FakeHyperliquidInfo() as fake:  # the real clock: the command has no other
        res = runner("hyperliquid", "--symbols", "BTC-USD", "--interval", "1h", "--start", "now-3h", "-o", str(out),
                     "--url", fake.url, "--testnet", "--log-format", "json")
        assert res.exit_code == 0, res.stderr
        lines = [json.loads(line) for line in res.stderr.splitlines()]
        assert lines[-1]["logger"] == "varon.collect.backfill" and lines[-1]["msg"].startswith("done: ")
        assert 1 <= read(out)[0].num_rows <= 3  # whole closed 1h bars in the last 3 h
        assert read(tmp_path / "hl-funding", FUNDING)[0].num_rows >= 2
        res = runner("hyperliquid", "--symbols", "BTC-USD", "--interval", "1h", "--start", "now-3h", "-o", str(out),
                     "--url", fake.url, "--funding-out", "none")
    assert res.exit_code == 64
    assert res.stderr.strip().startswith("varon collect backfill: error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "holds hyperliquid testnet bars at 1h, not hyperliquid mainnet bars at 1h" in res.stderr


# -- the CLI in subprocesses -------------------------------------------------------------------
def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", APP, *args]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_cli_exhausted_retries_exit_non_zero_with_one_line(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    cb.fail_next(None, 500)
    res = subprocess.run(cli("coinbase", "--symbols", "BTC-USD", "--start", "2025-01-01", "--end", "2025-01-02",
                             "-o", str(tmp_path / "cb"), "--url", cb.url, "--max-retries", "1"),
                         capture_output=True, text=True, timeout=60, env=cli_env(), cwd=tmp_path)
    assert res.returncode == 69, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in res.stderr
    assert errors[0].startswith("varon collect backfill: error: coinbase: GET ") and "gave up after 1 retry: HTTP 500" in errors[0]
    assert "retry 1/1" in res.stderr  # the retry was logged
    assert cb.count("/candles") == 2


@pytest.mark.slow
def test_cli_kill_9_mid_run_then_rerun_gives_the_full_range(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    out = tmp_path / "cb"
    args = ("coinbase", "--symbols", "BTC-USD,ETH-USD", "--start", "2025-01-01", "--end", "2025-01-07",
            "-o", str(out), "--url", cb.url, "--log-format", "json")
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env(), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while cb.count("/candles", 200) < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    full = 2 * -(-6 * 1440 // 349)
    assert cb.count("/candles", 200) < full
    # What the killed run left: whole day files only, readable, no duplicates, all true.
    killed = read(out)[0]
    assert 0 < killed.num_rows < 2 * 6 * 1440
    assert_unique(killed)
    truth = {int(c["start"]): float(c["close"]) for c in cb.history("BTC-USD", 60, T0, T0 + 6 * DAY)}
    btc = rows_of(killed, "BTC-USD")
    assert btc["close"].to_pylist() == [truth[t] for t in seconds(btc)]
    # A leftover temporary file (as kill -9 during a write leaves) is ignored by readers and swept by the rerun.
    day = out / "venue=coinbase" / "symbol=BTC-USD" / "date=2025-01-01"
    leftover = day / ".part-0.parquet.tmp-999999"
    leftover.write_bytes(b"half a parquet file")
    assert read(out)[0].num_rows == killed.num_rows
    cb.reset_log()
    run_backfill(BackfillRequest("coinbase", "BTC-USD,ETH-USD", "2025-01-01", str(out), end="2025-01-07", url=cb.url),
                 client=fast_client("coinbase"))
    assert not leftover.exists()
    assert 0 < len(cb.candle_requests()) < full
    table = read(out)[0]
    for symbol in ("BTC-USD", "ETH-USD"):
        assert_coinbase_truth(table, cb, symbol, T0, T0 + 6 * DAY)
    assert_unique(table)
    assert all(pq.read_schema(out / f).metadata[COVERAGE_KEY] for f in visible_files(out))


@pytest.mark.slow
def test_cli_sigterm_saves_the_day_in_hand(cb: FakeCoinbaseRest, tmp_path: Path) -> None:
    out = tmp_path / "cb"
    args = ("coinbase", "--symbols", "BTC-USD", "--start", "2025-01-01", "--end", "2025-01-03", "-o", str(out),
            "--url", cb.url)
    cb.stall_next(None, seconds=0.05)  # slow answers, so the signal lands mid-run
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env(), cwd=tmp_path)
    deadline = time.monotonic() + 30
    while cb.count("/candles", 200) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    fetched = cb.count("/candles", 200)
    assert fetched < -(-2 * 1440 // 349)
    day = pq.read_table(out / "venue=coinbase" / "symbol=BTC-USD" / "date=2025-01-01" / "part-0.parquet")
    covered = json.loads(day.schema.metadata[COVERAGE_KEY])["covered"]
    assert covered and covered[0][0] == T0 * NS and covered[-1][1] < (T0 + DAY) * NS  # part of a day, kept
    assert day.num_rows > 0

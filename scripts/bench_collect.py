#!/usr/bin/env python
"""Benchmarks of `varon collect`: normalisation throughput from a capture, and live added latency.

    .venv/bin/python scripts/bench_collect.py            # full run (about a minute)
    .venv/bin/python scripts/bench_collect.py --quick    # smoke run (a few seconds)

1. normalisation from a capture. The real Coinbase Exchange capture
   shared/data/coinbase/COINBASE.ws.28.0 (matches + level2 of 10 products,
   ~31 s) is turned into a varon capture (.jsonl.zst, coinbase/exchange,
   channels trades+book) and repeated --passes times. Each repeat shifts the
   receive time by the capture's span, and every match's trade_id and sequence
   by a per-product offset, so the normaliser sees new, gap-free trades (no
   duplicates, no gaps; checked). Ticker frames are left out: a collector
   subscribed to trades and book never receives them. Like a busy live
   collector, the capture holds a "flush" event every --flush-every frames and
   a "tick" every --tick-every frames. Messages = WebSocket frames.
     a. `varon collect replay CAPTURE --speed max --book-out TMP.arrows > /dev/null`
        as a subprocess: messages / process wall time (start-up included; the
        start-up-free figure is printed beside it).
     b. in process: `replay_capture` itself (read + decompress + decode the
        capture, normalise, write trades and book .arrows files).
     c. in process: normalise only, capture lines already in memory, Arrow
        batches built at each flush and dropped (what (b) costs beyond I/O).
     d. the peer: cryptofeed's Coinbase feed handler. cryptofeed 3.x's
        `Coinbase` feed speaks only the Advanced Trade protocol, so the same
        frames are converted to Advanced Trade frames carrying the same trades
        and book levels (match -> market_trades, snapshot/l2update -> l2_data,
        one counter sequence_num). cryptofeed runs in its own interpreter
        (--cryptofeed-python or $CRYPTOFEED_PYTHON; it needs Python >= 3.13),
        offline: symbols are loaded from a synthetic product list, the feed
        object is built with no-op TRADES and L2_BOOK callbacks, and
        `await feed.message_handler(frame, conn, receipt_time)` is called for
        every frame in memory. varon's CoinbaseAdvanced normaliser runs on the
        same converted frames (normalise only, as in c) for the ratio.
        Not the same work: cryptofeed keeps a sorted order book per product
        and makes a Trade / book callback per message with Decimal values;
        varon keeps no book and appends float columns, building Arrow batches.

2. added latency, WebSocket frame received -> Arrow batch readable on stdout.
   A local websockets server (a separate process) speaks the Advanced Trade
   protocol (subscriptions ack, heartbeats each second, one sequence_num
   counter per connection) and sends one market_trades frame of one trade
   every --interval-ms, noting each trade's send time (time.time_ns()). The
   collector `varon collect coinbase --symbols BTC-USD --url ws://127.0.0.1:P`
   runs as a subprocess with stdout a pipe; this process reads the Arrow IPC
   stream from it and stamps every batch as it becomes readable. Figures:
     frame received -> batch readable: recv_ts (stamped by the collector when
                      websockets handed it the frame) to the reader's stamp -
                      the collector's added latency, the issue's figure;
     sent -> readable: the server's send stamp to the reader's stamp
                      (adds loopback and the collector's WebSocket parsing);
     sent -> received: the server's send stamp to recv_ts.
   All stamps are time.time_ns() on this machine. The first --warmup trades
   are sent but not counted. The collector is stopped with SIGINT (exit 130).
   For scale, the section first prints this machine's floor: a child process
   writes time.time_ns() to a pipe at the same rate and this process stamps
   each read (one cross-process wake-up; on small VMs its tail is not small).

Figures are throughputs, latencies and ratios; no timing is asserted.
`--profile` adds a cProfile of the in-process replay (top 15 by tottime);
`--save-latencies F.npz` keeps section 2's raw stamps.
Throughputs are the best of --repeat timed runs after one untimed warm-up.
Ratios are varon throughput / cryptofeed throughput: above 1, varon is faster.
The exit status is 1 when a correctness check fails (row counts, gaps,
duplicates, the collector's exit code), so a smoke run notices.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from benchkit import best_of, rate, spread  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CAPTURE = ROOT.parent / "shared" / "data" / "coinbase" / "COINBASE.ws.28.0"
DEFAULT_CRYPTOFEED_PYTHON = "/tmp/cf-venv/bin/python"
VARON_BIN = Path(sys.executable).parent / "varon"
NS = 1_000_000_000


# -- shared helpers (the fake server process needs only these) --------------------------------
def iso_ns(ns: int) -> str:
    """2023-02-09T20:19:35.396251350Z (Advanced Trade envelope times)."""
    secs, frac = divmod(ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def iso_us(ns: int) -> str:
    """2014-11-07T08:19:27.028459Z (trade times)."""
    secs, frac = divmod(ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac // 1000:06d}Z"


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# == 2's fake Advanced Trade server (runs as `bench_collect.py _serve ...`) ====================
def serve_main(argv: list[str]) -> None:
    """A minimal Advanced Trade market-data server that sends timed trades.

    argv: n_warm n interval_ms send_times_path. Prints "PORT p" once listening,
    "DEFLATE yes|no" when the collector subscribed, "SENT" once every trade is
    out and its send time written ("trade_id send_ns" per line). Runs until
    its stdin closes.
    """
    from websockets.asyncio.server import serve

    n_warm, n, interval_ms, out_path = int(argv[0]), int(argv[1]), float(argv[2]), argv[3]
    interval = interval_ms / 1e3

    class Conn:
        def __init__(self, ws) -> None:  # noqa: ANN001
            self.ws = ws
            self.seq = 0

        async def send(self, channel: str, events: list, stamp: list | None = None) -> None:
            seq, self.seq = self.seq, self.seq + 1
            now = time.time_ns()
            text = (f'{{"channel":"{channel}","client_id":"","timestamp":"{iso_ns(now)}","sequence_num":{seq},'
                    f'"events":{dumps(events)}}}')
            if stamp is not None:
                stamp.append(time.time_ns())
            await self.ws.send(text)

    async def heartbeats(conn: Conn) -> None:
        counter = 0
        while True:
            await asyncio.sleep(1.0)
            counter += 1
            now = time.time_ns()
            await conn.send("heartbeats", [{"current_time": iso_ns(now).replace("T", " ")[:-1] + " +0000 UTC",
                                            "heartbeat_counter": counter}])

    async def trades(conn: Conn, product: str) -> None:
        await conn.send("market_trades", [{"type": "snapshot", "trades": []}])
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        sent: list[tuple[int, int]] = []
        due = loop.time()
        price = 60_000.0
        for i in range(1, n_warm + n + 1):
            price += 0.01 if i % 3 else -0.02
            trade = {"trade_id": str(i), "product_id": product, "price": f"{price:.2f}", "size": "0.00123",
                     "side": "BUY" if i % 2 else "SELL", "time": iso_us(time.time_ns())}
            stamp: list[int] = []
            await conn.send("market_trades", [{"type": "update", "trades": [trade]}], stamp)
            sent.append((i, stamp[0]))
            due += interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        with open(out_path, "w") as f:
            f.writelines(f"{i} {t}\n" for i, t in sent)
        print("SENT", flush=True)

    async def handler(ws) -> None:  # noqa: ANN001
        conn = Conn(ws)
        subs: dict[str, list[str]] = {}
        tasks = []
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") != "subscribe":
                    continue
                channel = msg.get("channel", "")
                subs[channel] = msg.get("product_ids", [])
                await conn.send("subscriptions", [{"subscriptions": subs}])
                if channel == "heartbeats":
                    tasks.append(asyncio.create_task(heartbeats(conn)))
                elif channel == "market_trades":
                    ext = [type(e).__name__ for e in (ws.protocol.extensions or [])]
                    print(f"DEFLATE {'yes' if ext else 'no'}", flush=True)
                    tasks.append(asyncio.create_task(trades(conn, subs[channel][0])))
        finally:
            for t in tasks:
                t.cancel()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            print(f"PORT {port}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


# == everything below runs in the benchmark process ============================================
def _imports() -> None:
    global np, pa, ipc, Console, console
    global CaptureHeader, CaptureWriter, read_capture, make_normaliser, replay_capture, FeedPipeline
    global EXCHANGE_URL, ADVANCED_URL
    import numpy as np
    import pyarrow as pa
    import pyarrow.ipc as ipc
    from rich.console import Console

    from varon_cli.feeds.capture import CaptureHeader, CaptureWriter, read_capture
    from varon_cli.feeds.coinbase import ADVANCED_URL, EXCHANGE_URL
    from varon_cli.feeds.collector import make_normaliser, replay_capture
    from varon_cli.feeds.pipeline import FeedPipeline

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


FAILED: list[str] = []








def check(label: str, ok: bool, detail: str) -> None:
    console.print(f"check {label}: {'[green]OK[/]' if ok else '[red]FAILED[/]'} - {detail}")
    if not ok:
        FAILED.append(label)


# -- 1. data: the real capture, repeated, as Exchange and as Advanced Trade frames -------------
def load_exchange_frames(path: Path) -> tuple[list[tuple[int, str, dict]], int]:
    """(recv ns, frame text, decoded frame) for every frame but tickers; and the tickers left out."""
    frames = []
    tickers = 0
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("wss://"):
                continue
            stamp, _, text = line.rstrip("\n").partition(": ")
            msg = json.loads(text)
            if msg.get("type") == "ticker":
                tickers += 1
                continue
            frames.append((int(round(float(stamp) * 1e9)), text, msg))
    return frames, tickers


def _at_head(channel: str, timestamp: str) -> str:
    return f'{{"channel":"{channel}","client_id":"","timestamp":"{timestamp}","sequence_num":'


def to_advanced(msg: dict, recv_ns: int) -> tuple[str, str] | None:
    """The same content as an Advanced Trade frame: (text before sequence_num, text after)."""
    kind = msg["type"]
    if kind in ("match", "last_match"):
        trade = {"trade_id": str(msg["trade_id"]), "product_id": msg["product_id"], "price": msg["price"],
                 "size": msg["size"], "side": msg["side"].upper(), "time": msg["time"]}
        event = {"type": "snapshot" if kind == "last_match" else "update", "trades": [trade]}
        return _at_head("market_trades", msg["time"]), ',"events":' + dumps([event]) + "}"
    if kind == "snapshot":
        updates = [{"side": side, "event_time": "1970-01-01T00:00:00Z", "price_level": p, "new_quantity": q}
                   for side, levels in (("bid", msg["bids"]), ("offer", msg["asks"])) for p, q in levels]
        event = {"type": "snapshot", "product_id": msg["product_id"], "updates": updates}
        return _at_head("l2_data", iso_ns(recv_ns)), ',"events":' + dumps([event]) + "}"
    if kind == "l2update":
        updates = [{"side": "bid" if side == "buy" else "offer", "event_time": msg["time"], "price_level": p,
                    "new_quantity": q} for side, p, q in msg["changes"]]
        event = {"type": "update", "product_id": msg["product_id"], "updates": updates}
        return _at_head("l2_data", msg["time"]), ',"events":' + dumps([event]) + "}"
    if kind == "subscriptions":
        subs = {{"matches": "market_trades", "level2": "level2"}.get(c["name"], c["name"]): c["product_ids"]
                for c in msg["channels"]}
        return _at_head("subscriptions", iso_ns(recv_ns)), ',"events":' + dumps([{"subscriptions": subs}]) + "}"
    return None


def repeat_frames(frames: list[tuple[int, str, dict]], passes: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The Exchange frames and their Advanced Trade twins, `passes` times, with fresh trade ids."""
    span_t = frames[-1][0] - frames[0][0] + 1_000_000
    ids: dict[str, list[int]] = defaultdict(list)
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, _, m in frames:
        if m["type"] in ("match", "last_match"):
            ids[m["product_id"]].append(m["trade_id"])
            seqs[m["product_id"]].append(m["sequence"])
    id_span = {p: max(v) - min(v) + 1 for p, v in ids.items()}
    seq_span = {p: max(v) - min(v) + 1 for p, v in seqs.items()}
    static_at = [None if m["type"] in ("match", "last_match") else to_advanced(m, t) for t, _, m in frames]
    ex_out: list[tuple[int, str]] = []
    at_out: list[tuple[int, str]] = []
    seq_num = 0
    for k in range(passes):
        shift = k * span_t
        for (t, text, m), at in zip(frames, static_at):
            if m["type"] in ("match", "last_match") and k:
                p = m["product_id"]
                m = dict(m, trade_id=m["trade_id"] + k * id_span[p], sequence=m["sequence"] + k * seq_span[p])
                text = dumps(m)
            if at is None:
                at = to_advanced(m, t)
            ex_out.append((t + shift, text))
            at_out.append((t + shift, f"{at[0]}{seq_num}{at[1]}"))
            seq_num += 1
    return ex_out, at_out


def write_capture(path: Path, feed: str, url: str, products: list[str], frames: list[tuple[int, str]],
                  flush_every: int, tick_every: int) -> int:
    """A varon capture of `frames` with connect, periodic flush/tick and close events; returns its size."""
    header = CaptureHeader(venue="coinbase", feed=feed, symbols=products, channels=["book", "trades"], url=url,
                           watermark_delay_ns=NS, started_ns=frames[0][0] - 1_000_000)
    w = CaptureWriter(path, header)
    w.event(frames[0][0] - 500_000, "connect")
    for i, (t, text) in enumerate(frames, start=1):
        w.frame(t, text, True)  # one-line JSON, embedded verbatim as the live collector records it
        if i % flush_every == 0:
            w.event(t, "flush")
        if i % tick_every == 0:
            w.event(t, "tick")
    w.event(frames[-1][0], "close", "end of benchmark capture")
    w.close()
    return path.stat().st_size


# -- 1. varon runs ---------------------------------------------------------------------------
def normalise_only(header, lines: list) -> Any:  # noqa: ANN001
    norm = make_normaliser(header.venue, header.feed, header.symbols, frozenset(header.channels),
                           header.watermark_delay_ns)
    pipeline = FeedPipeline(norm, lambda emitted: None)
    replay = pipeline.replay_line
    for line in lines:
        replay(line)
    pipeline.flush(0)
    return norm


def replay_in_process(cap: Path, tmp: Path) -> Any:
    trades, book = tmp / "inproc_trades.arrows", tmp / "inproc_book.arrows"
    norm = replay_capture(cap, None, str(trades), str(book), None)
    trades.unlink()
    book.unlink()
    return norm


def read_only(cap: Path) -> int:
    _, lines = read_capture(cap)
    n = 0
    for _ in lines:
        n += 1
    return n


def run_cli(cmd: list[str], book: Path) -> tuple[float, str]:
    book.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, proc.stderr


def stats_detail(stats) -> str:  # noqa: ANN001
    gaps = sum(stats.trade_gaps.values())
    return (f"{stats.frames:,} frames, {stats.trades:,} trades, {stats.book_rows:,} book rows, "
            f"{stats.duplicates} duplicates, {gaps} trade-id gaps, {stats.sequence_gaps} sequence gaps, "
            f"{stats.malformed} malformed, {stats.unknown} unknown, {stats.bad_values} bad values")


def stats_ok(stats, frames: int, trades: int, book_rows: int) -> bool:  # noqa: ANN001
    return (stats.frames == frames and stats.trades == trades and stats.book_rows == book_rows
            and not stats.duplicates and not sum(stats.trade_gaps.values()) and not stats.sequence_gaps
            and not stats.malformed and not stats.unknown and not stats.bad_values)


# -- 1. cryptofeed, in its own interpreter ---------------------------------------------------------
CRYPTOFEED_SCRIPT = r"""
import asyncio, gc, importlib.metadata, json, logging, platform, sys, time, types
from cryptofeed.defines import COINBASE, L2_BOOK, TRADES
from cryptofeed.exchanges.coinbase import Coinbase
from cryptofeed.symbols import Symbols

path, repeat = sys.argv[1], int(sys.argv[2])
frames = []
with open(path) as f:
    for line in f:
        t, _, text = line.rstrip("\n").partition("\t")
        frames.append((int(t) / 1e9, text))
products = sorted({p for p in json.loads(sys.argv[3])})
# symbols as if fetched from /market/products, so nothing goes to the network
syms, info = Coinbase._parse_symbol_data({"products": [
    {"base_currency_id": p.split("-")[0], "quote_currency_id": p.split("-")[1], "product_id": p,
     "quote_increment": "0.00000001"} for p in products]})
Symbols.set(COINBASE, syms, info)

class Count(logging.Handler):
    n = 0
    def emit(self, record):
        Count.n += 1
logging.getLogger("cryptofeed").addHandler(Count(logging.WARNING))
logging.getLogger("cryptofeed").setLevel(logging.WARNING)
logging.getLogger("cryptofeed").propagate = False

counts = {"trades": 0, "books": 0}
async def on_trade(trade, receipt):
    counts["trades"] += 1
async def on_book(book, receipt):
    counts["books"] += 1

async def one_run():
    feed = Coinbase(symbols=products, channels=[TRADES, L2_BOOK], callbacks={TRADES: on_trade, L2_BOOK: on_book})
    conn = types.SimpleNamespace(uuid="bench", id="bench")
    handler = feed.message_handler
    t0 = time.perf_counter()
    for receipt, text in frames:
        await handler(text, conn, receipt)
    return time.perf_counter() - t0

times = []
for i in range(repeat + 1):
    counts.update(trades=0, books=0)
    gc.collect()
    elapsed = asyncio.run(one_run())
    if i:
        times.append(elapsed)
    else:
        first = dict(counts)
print(json.dumps({"version": importlib.metadata.version("cryptofeed"), "python": platform.python_version(),
                  "frames": len(frames), "times": times, "trades": first["trades"], "books": first["books"],
                  "warnings": Count.n}))
"""


def run_cryptofeed(cf_python: str | None, frames: list[tuple[int, str]], products: list[str], tmp: Path,
                   repeat: int) -> tuple[dict | None, str]:
    """cryptofeed's results, or None and why it could not be measured."""
    if not cf_python:
        return None, "no interpreter given (--cryptofeed-python or $CRYPTOFEED_PYTHON)"
    if not Path(cf_python).exists():
        return None, (f"{cf_python} does not exist; install with: python3.13 -m venv /tmp/cf-venv && "
                      f"/tmp/cf-venv/bin/pip install cryptofeed==3.0.1 (3.x needs Python >= 3.13)")
    probe = subprocess.run([cf_python, "-c", "import cryptofeed.exchanges.coinbase"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"{cf_python} cannot import cryptofeed: {probe.stderr.strip().splitlines()[-1:]}"
    path = tmp / "advanced_frames.tsv"
    with open(path, "w") as f:
        f.writelines(f"{t}\t{text}\n" for t, text in frames)
    proc = subprocess.run([cf_python, "-c", CRYPTOFEED_SCRIPT, str(path), str(repeat), json.dumps(products)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"cryptofeed run failed ({proc.returncode}): {proc.stderr.strip()[-800:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


# -- 1. the section -------------------------------------------------------------------------------
def bench_normalise(args: argparse.Namespace, tmp: Path) -> None:
    passes, repeat = args.passes, args.repeat
    console.rule(f"[bold]1. normalisation from a capture: {args.capture.name} x {passes} passes")
    console.print("messages = WebSocket frames. a: `varon collect replay CAPTURE --speed max --book-out B.arrows "
                  "> /dev/null`, process wall time; b: replay_capture() in this process (capture read, normalise, "
                  "trades+book .arrows written); c: normalise + Arrow batches only, capture lines in memory; "
                  "d: the same content as Advanced Trade frames, varon's CoinbaseAdvanced (as c) beside cryptofeed's "
                  "Coinbase.message_handler fed the same frames offline. Ratio = varon msg/s / cryptofeed msg/s.",
                  style="dim")
    t0 = time.perf_counter()
    frames, tickers = load_exchange_frames(args.capture)
    products = sorted({m["product_id"] for _, _, m in frames if "product_id" in m})
    kinds = Counter(m["type"] for _, _, m in frames)
    trades_per_pass = kinds["match"] + kinds["last_match"]
    book_per_pass = sum(len(m["bids"]) + len(m["asks"]) for _, _, m in frames if m["type"] == "snapshot") + \
        sum(len(m["changes"]) for _, _, m in frames if m["type"] == "l2update")
    ex_frames, at_frames = repeat_frames(frames, passes)
    n = len(ex_frames)
    ex_cap, at_cap = tmp / "exchange.jsonl.zst", tmp / "advanced.jsonl.zst"
    size_ex = write_capture(ex_cap, "exchange", EXCHANGE_URL, products, ex_frames, args.flush_every, args.tick_every)
    size_at = write_capture(at_cap, "advanced", ADVANCED_URL, products, at_frames, args.flush_every, args.tick_every)
    console.print(f"data: {len(frames):,} frames a pass ({', '.join(f'{v:,} {k}' for k, v in kinds.most_common())}), "
                  f"{tickers} tickers left out; {len(products)} products")
    console.print(f"      x {passes} passes = [bold]{n:,} messages[/], {trades_per_pass * passes:,} trades, "
                  f"{book_per_pass * passes:,} book rows")
    console.print(f"capture: Exchange {size_ex / 2**20:,.1f} MiB, Advanced Trade twin {size_at / 2**20:,.1f} MiB (zstd); "
                  f"a flush every {args.flush_every} frames, a tick every {args.tick_every} (built in "
                  f"{time.perf_counter() - t0:.1f} s)")
    expect_trades, expect_book = trades_per_pass * passes, book_per_pass * passes

    def figure(label: str, secs: float, times: list[float], count: int = n) -> None:
        console.print(f"{label:<42}{rate(count, secs, 'msg'):>15}   best {secs:.3f} s ({spread(times)})")

    # a. the CLI, end to end
    book = tmp / "cli_book.arrows"
    cmd = [str(VARON_BIN), "collect", "replay", str(ex_cap), "--speed", "max", "--book-out", str(book)]
    _, log_text = run_cli(cmd + ["--log-level", "info"], book)
    best_cli, times_cli, _ = best_of(lambda: run_cli(cmd, book)[0], repeat, warmup=0)
    start, _, _ = best_of(lambda: run_cli([str(VARON_BIN), "--version"], book)[0], repeat, warmup=0)
    book.unlink(missing_ok=True)
    figure("a. CLI collect replay --speed max", best_cli, times_cli)
    console.print(f"{'   start-up excluded':<42}{rate(n, best_cli - start, 'msg'):>15}   "
                  f"(`varon --version` takes {start:.3f} s)")
    summary = [ln for ln in log_text.splitlines() if "replay of" in ln]
    cli_ok = bool(summary) and f"{n} frames, {expect_trades} trades, {expect_book} book rows" in summary[-1] \
        and " 0 trade-id gaps, 0 duplicates removed, 0 malformed, 0 unknown, 0 bad values" in summary[-1]
    check("CLI replay counters", cli_ok, f"{n:,} frames, {expect_trades:,} trades, {expect_book:,} book rows, no gaps, "
          f"duplicates or bad frames" if cli_ok else (summary[-1] if summary else log_text[-500:]))

    # b. replay_capture in process
    best_rep, times_rep, norm = best_of(lambda: replay_in_process(ex_cap, tmp), repeat)
    figure("b. replay_capture in process", best_rep, times_rep)
    check("in-process replay", stats_ok(norm.stats, n, expect_trades, expect_book), stats_detail(norm.stats))

    # c. normalise only
    header, lines_it = read_capture(ex_cap)
    lines = list(lines_it)
    best_read, _, _ = best_of(lambda: read_only(ex_cap), repeat)
    best_norm, times_norm, norm = best_of(lambda: normalise_only(header, lines), repeat)
    del lines
    figure("c. normalise only, lines in memory", best_norm, times_norm)
    console.print(f"   b = capture read+decompress+decode {best_read:.3f} s + normalise and batches {best_norm:.3f} s "
                  f"+ rest {max(best_rep - best_read - best_norm, 0):.3f} s")
    console.print(f"   a = start-up {start:.3f} s + {best_cli - start:.3f} s")

    # d. same frames in the Advanced Trade protocol: varon vs cryptofeed
    header_at, lines_it = read_capture(at_cap)
    lines = list(lines_it)
    best_at, times_at, norm_at = best_of(lambda: normalise_only(header_at, lines), repeat)
    del lines
    figure("d. varon CoinbaseAdvanced, AT twin, as c", best_at, times_at)
    check("Advanced Trade twin", stats_ok(norm_at.stats, n, expect_trades, expect_book), stats_detail(norm_at.stats))
    cf, why = run_cryptofeed(args.cryptofeed_python, at_frames, products, tmp, repeat)
    if cf is None:
        console.print(f"cryptofeed: not measured ({why})")
    else:
        best_cf = min(cf["times"])
        figure(f"   cryptofeed {cf['version']} handler, AT twin", best_cf, cf["times"], cf["frames"])
        console.print(f"   (cryptofeed on Python {cf['python']}: {cf['trades']:,} trade and {cf['books']:,} book callbacks, "
                      f"{cf['warnings']} warnings)")
        check("cryptofeed saw the same trades", cf["frames"] == n and cf["trades"] == expect_trades and not cf["warnings"],
              f"{cf['frames']:,} frames, {cf['trades']:,} trades (expected {expect_trades:,})")
        for label, secs in (("same AT frames, both from memory (d)", best_at),
                            ("varon Exchange normalise only (c)", best_norm),
                            ("varon replay_capture in process (b)", best_rep),
                            ("varon CLI end to end (a)", best_cli)):
            console.print(f"ratio varon/cryptofeed, {label + ':':<40} [bold]{best_cf / secs:5.2f}x[/]")
    target = 300_000
    for label, secs in (("CLI end to end (a)", best_cli), ("in process (b)", best_rep), ("normalise only (c)", best_norm)):
        r = n / secs
        console.print(f"target >= 300k msg/s on one core, {label + ':':<20} {'[green]met[/]' if r >= target else '[red]missed[/]'}"
                      f" ({r / 1e3:,.0f} k msg/s = {r / target:.2f}x the target)")

    if args.profile:
        console.rule("[bold]profile: replay_capture in process (cProfile, top 15 by tottime)")
        prof = cProfile.Profile()
        prof.enable()
        replay_in_process(ex_cap, tmp)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
        console.print(out.getvalue().split("\n", 4)[-1].rstrip(), markup=False)


PIPE_PROBE = r"""
import os, struct, sys, time
n, interval = int(sys.argv[1]), float(sys.argv[2]) / 1e3
due = time.monotonic()
for _ in range(n):
    os.write(1, struct.pack("<q", time.time_ns()))
    due += interval
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


def pipe_probe(n: int, interval_ms: float) -> Any:  # noqa: ANN401
    """Wake-up latency floor of this machine: stamps written to a pipe by a child, read here (us)."""
    import struct

    proc = subprocess.Popen([sys.executable, "-c", PIPE_PROBE, str(n), str(interval_ms)], stdout=subprocess.PIPE)
    fd = proc.stdout.fileno()
    out = np.empty(n)
    for i in range(n):
        data = b""
        while len(data) < 8:
            chunk = os.read(fd, 8 - len(data))
            if not chunk:
                raise RuntimeError("pipe probe ended early")
            data += chunk
        out[i] = (time.time_ns() - struct.unpack("<q", data)[0]) / 1e3
    proc.wait()
    return out


# -- 2. latency --------------------------------------------------------------------------------------
def pct_line(label: str, us: Any) -> str:  # noqa: ANN401
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return (f"{label:<33} p50 {p50:7.1f}  p90 {p90:7.1f}  p99 {p99:7.1f}  max {us.max():7.1f}  "
            f"mean {us.mean():7.1f} us")


def bench_latency(args: argparse.Namespace, tmp: Path) -> None:
    n, n_warm, interval = args.trades, args.warmup, args.interval_ms
    console.rule(f"[bold]2. added latency: {n:,} trades, one every {interval:g} ms, over loopback WebSocket")
    console.print("A fake Advanced Trade server sends one trade a frame; `varon collect coinbase` writes Arrow IPC to a "
                  "pipe read here. frame received -> batch readable: collector's recv_ts to the batch being read "
                  "here (the issue's figure); sent -> batch readable: server send stamp to read; sent -> frame "
                  f"received: server to recv_ts. All time.time_ns(); first {n_warm} trades not counted.", style="dim")
    probe = pipe_probe(n, interval)
    console.print("floor of this machine, one process waking on a pipe (a child writes time.time_ns() to it at the "
                  "same rate):")
    console.print(pct_line("pipe write -> read", probe))
    send_path = tmp / "send_times.txt"
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_serve", str(n_warm), str(n),
                               str(interval), str(send_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    collector = None
    try:
        port_line = server.stdout.readline().split()
        if not port_line or port_line[0] != "PORT":
            raise RuntimeError(f"fake server did not start: {port_line}")
        url = f"ws://127.0.0.1:{port_line[1]}"
        log_path = tmp / "collector.log"
        with open(log_path, "w") as log_file:
            collector = subprocess.Popen([str(VARON_BIN), "collect", "coinbase", "--symbols", "BTC-USD", "--url", url,
                                          "--log-level", "info"], stdout=subprocess.PIPE, stderr=log_file)
        expected = n_warm + n
        deadline = (expected * interval / 1e3) + 30
        stop_timer = threading.Timer(deadline, lambda: collector.send_signal(signal.SIGINT))
        kill_timer = threading.Timer(deadline + 15, collector.kill)
        stop_timer.start()
        kill_timer.start()
        ids: list[Any] = []
        recv: list[Any] = []
        arrival: list[Any] = []
        batches = rows = 0
        stopped = False
        try:
            reader = ipc.open_stream(collector.stdout)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                now = time.time_ns()
                if batch.num_rows:
                    batches += 1
                    rows += batch.num_rows
                    ids.append(batch.column("trade_id").to_numpy(zero_copy_only=False))
                    recv.append(batch.column("recv_ts").cast(pa.int64()).to_numpy())
                    arrival.append(np.full(batch.num_rows, now, dtype=np.int64))
                if rows >= expected and not stopped:
                    stopped = True
                    time.sleep(0.3)  # let a late heartbeat or watermark through, then stop
                    collector.send_signal(signal.SIGINT)
        except pa.ArrowInvalid as exc:
            console.print(f"[red]reading the collector's stdout failed: {exc}[/]")
        finally:
            stop_timer.cancel()
        rc = collector.wait(timeout=20)
        kill_timer.cancel()
        sent_line = server.stdout.readline().strip()
        deflate = sent_line.split()[-1] if sent_line.startswith("DEFLATE") else "?"
        if sent_line.startswith("DEFLATE"):
            sent_line = server.stdout.readline().strip()
        log_text = log_path.read_text()
    finally:
        if collector is not None and collector.poll() is None:
            collector.kill()
        server.stdin.close()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
    check("collector exit code after SIGINT", rc == 130, f"exit {rc} (expected 130)")
    if sent_line != "SENT" or not ids:
        check("latency run", False, f"server said {sent_line!r}; {rows} rows read; collector log: {log_text[-800:]}")
        return
    send = {}
    for line in send_path.read_text().splitlines():
        i, t = line.split()
        send[i] = int(t)
    ids_all = np.concatenate(ids)
    recv_all = np.concatenate(recv)
    arr_all = np.concatenate(arrival)
    sent_all = np.array([send.get(str(i), -1) for i in ids_all], dtype=np.int64)
    counted = np.array([int(i) > n_warm for i in ids_all])
    got = len(set(ids_all.tolist()))
    check("every trade arrived once", got == expected and len(ids_all) == expected and (sent_all > 0).all(),
          f"{len(ids_all):,} rows, {got:,} distinct trade ids, {expected:,} sent ({n_warm} warm-up); "
          f"{batches:,} batches (mean {rows / max(batches, 1):.2f} rows); permessage-deflate: {deflate}")
    summary = [ln for ln in log_text.splitlines() if "frames," in ln and "trades" in ln]
    if summary:
        console.print(f"collector: {summary[-1].split(': ', 2)[-1]}", soft_wrap=True)
    if args.save_latencies:
        np.savez(args.save_latencies, trade_id=ids_all.astype(np.int64), sent=sent_all, recv=recv_all,
                 readable=arr_all)
        console.print(f"latencies saved to {args.save_latencies} (ns stamps: trade_id, sent, recv, readable)")
    added = (arr_all - recv_all)[counted] / 1e3
    e2e = (arr_all - sent_all)[counted] / 1e3
    wire = (recv_all - sent_all)[counted] / 1e3
    console.print(pct_line("frame received -> batch readable", added))
    console.print(pct_line("sent -> batch readable", e2e))
    console.print(pct_line("sent -> frame received", wire))
    p99 = float(np.percentile(added, 99))
    console.print(f"target p99 < 1 ms (frame received -> batch readable): "
                  f"{'[green]met[/]' if p99 < 1000 else '[red]missed[/]'} (p99 {p99:.1f} us over {int(counted.sum()):,} trades; "
                  f"sent -> readable p99 {float(np.percentile(e2e, 99)):.1f} us)")


# -- main --------------------------------------------------------------------------------------------
def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_main(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 passes, 500 latency trades")
    ap.add_argument("--only", default="1,2", help="comma-separated sections to run (default 1,2)")
    ap.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE, help=f"Coinbase Exchange capture (default {DEFAULT_CAPTURE})")
    ap.add_argument("--passes", type=int, help="repetitions of the capture (default 30, 3 with --quick)")
    ap.add_argument("--flush-every", type=int, default=100, help="frames between flush events in the capture (default 100)")
    ap.add_argument("--tick-every", type=int, default=1000, help="frames between tick events in the capture (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per throughput, best taken (default 3)")
    ap.add_argument("--cryptofeed-python", default=os.environ.get("CRYPTOFEED_PYTHON", DEFAULT_CRYPTOFEED_PYTHON),
                    help="interpreter with cryptofeed installed (default $CRYPTOFEED_PYTHON or "
                         f"{DEFAULT_CRYPTOFEED_PYTHON}); '' skips it")
    ap.add_argument("--profile", action="store_true", help="also cProfile the in-process replay (top 15 by tottime)")
    ap.add_argument("--trades", type=int, help="timed trades in the latency run (default 2000, 500 with --quick)")
    ap.add_argument("--warmup", type=int, default=100, help="trades sent before the timed ones (default 100)")
    ap.add_argument("--interval-ms", type=float, default=2.0, help="milliseconds between trades (default 2)")
    ap.add_argument("--save-latencies", metavar="NPZ", help="save the latency run's stamps to this .npz file")
    args = ap.parse_args()
    args.passes = args.passes or (3 if args.quick else 30)
    args.trades = args.trades or (500 if args.quick else 2000)
    if args.quick:
        args.repeat = min(args.repeat, 2)
    sections = {int(s) for s in args.only.split(",") if s.strip()}
    _imports()
    import msgspec
    import websockets

    console.print(f"[bold]varon collect benchmark[/]{' (quick)' if args.quick else ''}: python {platform.python_version()}, "
                  f"{os.cpu_count()} CPUs, {platform.machine()}; pyarrow {pa.__version__}, msgspec {msgspec.__version__}, "
                  f"websockets {websockets.__version__}; best of {args.repeat} after 1 warm-up")
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="varon-bench-collect-"))
    try:
        if 1 in sections:
            bench_normalise(args, tmp)
        if 2 in sections:
            bench_latency(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"total {time.perf_counter() - t_start:.0f} s")
    if FAILED:
        console.print(f"[red]checks failed: {', '.join(FAILED)}[/]")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

"""`varon collect`: live market data from Coinbase and Hyperliquid, replay, backfill."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.collect_backfill import backfill
from commands.common import ConfigOpt, LogFormatOpt, LogLevelOpt, OnAlertOpt, OutputOpt, run, setup
from varon_cli.errors import UsageError
from varon_cli.feeds.collector import (LiveRequest, collect_live, parse_speed, parse_symbols, replay_capture,
                                       replay_trades)

log = logging.getLogger("varon.collect")

app = typer.Typer(help="Market data: live feeds (coinbase, hyperliquid), replay of captures and files, REST backfill.",
                  no_args_is_help=True)

app.command("backfill")(backfill)

SymbolsOpt = Annotated[str, typer.Option("--symbols", help="Comma-separated symbols, e.g. BTC-USD,ETH-USD.")]
UrlOpt = Annotated[Optional[str], typer.Option("--url", help="WebSocket endpoint (default from config collect.*_url).", show_default=False)]
BookOpt = Annotated[Optional[str], typer.Option("--book-out", help="Also subscribe to the level-2 book and write it here (snapshot, then updates).", show_default=False)]
RawOpt = Annotated[Optional[str], typer.Option("--raw-out", help="Record every received frame with its receive time to this .jsonl.zst capture (replayable).", show_default=False)]
RetriesOpt = Annotated[Optional[int], typer.Option("--max-retries", help="Exit non-zero after this many consecutive failed connection attempts (config collect.max_retries; 0 = never).", show_default=False)]
WatchdogOpt = Annotated[Optional[str], typer.Option("--watchdog", help="Reconnect when nothing arrives for this long, e.g. 10s (config collect.watchdog).", show_default=False)]


def _overrides(watchdog: str | None, on_alert: str | None = None) -> dict:
    return {"collect": {"watchdog": watchdog}, "status": {"on_alert": on_alert}}  # [status hook] --on-alert


@app.command("coinbase")
def coinbase(
    symbols: SymbolsOpt,
    feed: Annotated[str, typer.Option("--feed", help="advanced (Advanced Trade WebSocket) or exchange (Exchange feed).")] = "advanced",
    url: UrlOpt = None,
    output: OutputOpt = "-",
    book_out: BookOpt = None,
    raw_out: RawOpt = None,
    max_retries: RetriesOpt = None,
    watchdog: WatchdogOpt = None,
    on_alert: OnAlertOpt = None,  # [status hook]
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Stream Coinbase trades (and optionally the book) as varon streams, until interrupted.

    Reconnects with backoff, checks sequence numbers and heartbeats, removes repeated trades.
    Example: varon collect coinbase --symbols BTC-USD,ETH-USD | varon bars --interval 1m
    """

    def body() -> None:
        cfg = setup(config, log_level, log_format, _overrides(watchdog, on_alert))  # [status hook]
        if feed not in ("advanced", "exchange"):
            raise UsageError(f"--feed {feed!r}: expected advanced or exchange")
        default = cfg.collect.coinbase_url if feed == "advanced" else cfg.collect.coinbase_exchange_url
        request = LiveRequest("coinbase", feed, parse_symbols(symbols), url or default, "", output, book_out, None,
                              raw_out, max_retries)
        collect_live(request, cfg.collect)

    run("collect", body)


@app.command("hyperliquid")
def hyperliquid(
    symbols: SymbolsOpt,
    url: UrlOpt = None,
    info_url: Annotated[Optional[str], typer.Option("--info-url", help="HTTP info endpoint for funding polls (default: derived from --url).", show_default=False)] = None,
    testnet: Annotated[bool, typer.Option("--testnet", help="Use the testnet endpoints.")] = False,
    output: OutputOpt = "-",
    book_out: BookOpt = None,
    funding_out: Annotated[Optional[str], typer.Option("--funding-out", help="Poll funding rate, mark/oracle price and open interest into this funding stream.", show_default=False)] = None,
    raw_out: RawOpt = None,
    max_retries: RetriesOpt = None,
    watchdog: WatchdogOpt = None,
    on_alert: OnAlertOpt = None,  # [status hook]
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Stream Hyperliquid perpetuals trades (book, funding optional) as varon streams, until interrupted.

    Symbols may be given as BTC or BTC-USD; output symbols are canonical (BTC-USD).
    Example: varon collect hyperliquid --symbols BTC,ETH --funding-out funding.arrows | varon bars
    """

    def body() -> None:
        cfg = setup(config, log_level, log_format, _overrides(watchdog, on_alert))  # [status hook]
        default = cfg.collect.hyperliquid_testnet_url if testnet else cfg.collect.hyperliquid_url
        request = LiveRequest("hyperliquid", "ws", parse_symbols(symbols), url or default, info_url or "", output,
                              book_out, funding_out, raw_out, max_retries)
        collect_live(request, cfg.collect)

    run("collect", body)


@app.command("replay")
def replay(
    source: Annotated[Path, typer.Argument(help="A capture (.jsonl.zst from --raw-out) or a trades file (.parquet, .arrow, dataset).", show_default=False)],
    speed: Annotated[str, typer.Option("--speed", help="1 = recorded speed, 10 = ten times faster, max = as fast as possible.")] = "max",
    output: OutputOpt = "-",
    book_out: BookOpt = None,
    funding_out: Annotated[Optional[str], typer.Option("--funding-out", help="Where a capture's funding stream goes.", show_default=False)] = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Replay a raw capture through the live normaliser (same output bytes), or a trades file with its timing.

    Example: varon collect replay capture.jsonl.zst --speed 10 | varon bars --interval 1m
    """

    def body() -> None:
        setup(config, log_level, log_format)
        pace = parse_speed(speed)
        if source.name.endswith((".jsonl.zst", ".jsonl.zstd")):
            replay_capture(source, pace, output, book_out, funding_out)
        else:
            if book_out or funding_out:
                raise UsageError("--book-out/--funding-out need a capture; a trades file replays trades only")
            rows = replay_trades(str(source), pace, output)
            log.info("replayed %d trades from %s", rows, source)

    run("collect", body)

"""`varon collect backfill`: historical candles (and Hyperliquid funding) over REST into datasets."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, LogFormatOpt, LogLevelOpt, run, setup
from varon_cli.backfill.run import BackfillRequest, run_backfill


def backfill(
    venue: Annotated[str, typer.Argument(help="coinbase or hyperliquid.", show_default=False)],
    symbols: Annotated[str, typer.Option("--symbols", help="Comma-separated BASE-QUOTE symbols, e.g. BTC-USD,ETH-USD (Hyperliquid also takes BTC).", show_default=False)],
    start: Annotated[str, typer.Option("--start", help="First bar: 2025-01-01, 2025-01-01T12:00 (UTC), UNIX seconds, or now-7d.", show_default=False)],
    output: Annotated[str, typer.Option("-o", "--output", help="Dataset directory (venue=/symbol=/date= Parquet) or a .parquet file. A rerun fetches only what it lacks.", show_default=False)],
    interval: Annotated[str, typer.Option("--interval", help="Bar interval. coinbase: 1m 5m 15m 30m 1h 2h 4h 6h 1d; hyperliquid: 1m 3m 5m 15m 30m 1h 2h 4h 8h 12h 1d.")] = "1m",
    end: Annotated[Optional[str], typer.Option("--end", help="End of the range, exclusive (same forms as --start); default now. Bars still forming are left for a later run.", show_default=False)] = None,
    funding_out: Annotated[Optional[str], typer.Option("--funding-out", help="Hyperliquid funding history output, or 'none' to skip it. Default: beside -o with '-funding' added (data/hl -> data/hl-funding, btc.parquet -> btc-funding.parquet).", show_default=False)] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="REST base URL. Default: https://api.coinbase.com or https://api.hyperliquid.xyz.", show_default=False)] = None,
    testnet: Annotated[bool, typer.Option("--testnet", help="Hyperliquid testnet (https://api.hyperliquid-testnet.xyz); kept apart from mainnet data.")] = False,
    max_retries: Annotated[int, typer.Option("--max-retries", help="Retries per request on HTTP 429, 5xx, timeouts and dropped connections (exponential backoff with jitter, Retry-After honoured).")] = 8,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Backfill OHLCV bars (bars stream, ts = bar open) from venue REST candles, resumably.

    The range is the bars lying wholly in [--start, --end). Coverage fetched is
    recorded in the files, so a rerun (or a cron job) fetches only what is
    missing and a killed run loses at most the day in hand. Hyperliquid serves
    only its most recent 5000 candles per interval; older bars are reported,
    not fetched. Progress: a bar at a terminal, log lines otherwise.
    Exit codes: 64 bad arguments, 69 venue unavailable after retries, 75 another
    backfill is writing the output, 76 the venue rejected a request.
    Example: varon collect backfill coinbase --symbols BTC-USD,ETH-USD --start 2025-01-01 --end 2025-02-01 -o data/cb-1m
    """

    def body() -> None:
        setup(config, log_level, log_format)
        run_backfill(BackfillRequest(
            venue=venue, symbols=symbols, start=start, end=end, interval=interval, output=output,
            funding_out=funding_out, url=url, testnet=testnet, max_retries=max_retries,
        ))

    run("collect backfill", body)

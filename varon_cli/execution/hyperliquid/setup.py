"""From config and flags to a ready `HyperliquidVenue`: URL, account, signing key, client."""

from __future__ import annotations

import logging

from varon_cli.config import VaronConfig
from varon_cli.errors import ConfigError
from varon_cli.execution.hyperliquid.client import HyperliquidClient
from varon_cli.execution.hyperliquid.credentials import load_signer
from varon_cli.execution.hyperliquid.venue import HyperliquidVenue
from varon_cli.intervals import parse_duration

log = logging.getLogger("varon.execute.hyperliquid")


def make_venue(cfg: VaronConfig, request) -> HyperliquidVenue:  # noqa: ANN001 - live.ExecuteRequest
    hl = cfg.hyperliquid
    url = request.url or (hl.testnet_url if request.testnet else hl.url)
    if not hl.account_address:
        raise ConfigError("hyperliquid.account_address is empty: set the trading account (0x...) in the config "
                          "or VARON_HYPERLIQUID__ACCOUNT_ADDRESS")
    signer = load_signer(hl.key_file)
    builder = {"b": hl.builder.lower(), "f": hl.builder_fee} if hl.builder else None
    client = HyperliquidClient(url, hl.account_address, signer, vault=hl.vault_address,
                               timeout_s=parse_duration(hl.request_timeout, "request_timeout") / 1e9,
                               max_retries=hl.max_retries, dry_run=request.dry_run, builder=builder)
    log.info("hyperliquid at %s for %s, signed by agent %s%s", url, client.user, signer.address,
             " (dry run: nothing is sent)" if request.dry_run else "")
    return HyperliquidVenue(hl, client, taker_fee=cfg.paper.taker_fee)

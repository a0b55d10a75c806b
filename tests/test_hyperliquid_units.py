"""The pure parts of the Hyperliquid venue: the price and lot grid, the signing key, nonces, config."""

from __future__ import annotations

import os
import threading

import pytest
from hyperliquid.utils.signing import float_to_wire

from varon_cli.config import load_config
from varon_cli.errors import ConfigError
from varon_cli.execution.hyperliquid.client import NonceClock
from varon_cli.execution.hyperliquid.credentials import ENV_KEY, load_signer
from varon_cli.execution.hyperliquid.rounding import below_minimum, round_price, round_size, valid_price

KEY = "0x0123456789012345678901234567890123456789012345678901234567890123"
ADDRESS = "0x14791697260E4c9A71f18484C9f997B308e59325"  # the SDK's own signing test vector


@pytest.mark.parametrize(("px", "sz_decimals", "ok"), [
    (1234.5, 4, True), (1234.56, 4, False),            # the docs' examples
    (0.001234, 0, True), (0.0012345, 0, False),
    (0.01234, 1, True), (0.012345, 1, False),
    (123456.0, 5, True), (12345.6, 5, False),          # integers always valid; 6 significant figures not
    (60000.0, 5, True), (3000.5, 4, True), (3000.55, 4, False),
    (0.0, 5, False), (float("nan"), 5, False), (-1.0, 5, False),
])
def test_the_venue_price_grid(px: float, sz_decimals: int, ok: bool) -> None:
    assert valid_price(px, sz_decimals) is ok


@pytest.mark.parametrize("sz_decimals", [0, 1, 2, 4, 5])
@pytest.mark.parametrize("px", [0.000123456, 0.0123456, 1.234567, 98.76543, 1234.5678, 60123.456, 123456.78,
                                99999.6])
def test_rounded_prices_are_always_on_the_grid_and_go_the_asked_way(px: float, sz_decimals: int) -> None:
    if px < 10.0 ** -(6 - sz_decimals):  # below the smallest step: no such price exists
        with pytest.raises(ValueError, match="smallest price step"):
            round_price(px, sz_decimals, "down")
        return
    down, up, near = (round_price(px, sz_decimals, m) for m in ("down", "up", "nearest"))
    for value in (down, up, near):
        assert valid_price(value, sz_decimals), value
        float_to_wire(value)  # the SDK would raise on a price it must round
    assert down <= px <= up
    assert abs(near - px) <= max(up - px, px - down) + 1e-12


def test_sizes_round_toward_less_exposure_by_default() -> None:
    assert round_size(0.0012345, 5) == 0.00123
    assert round_size(-0.0012345, 5) == 0.00123  # a size, not a signed delta
    assert round_size(1.23456, 2, "up") == 1.24
    assert round_size(7.9, 0) == 7.0


def test_the_ten_dollar_minimum() -> None:
    assert below_minimum(0.0001, 60000.0)  # $6
    assert not below_minimum(0.0002, 60000.0)  # $12


def test_nonces_strictly_increase_even_within_one_millisecond() -> None:
    clock = NonceClock()
    seen: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        values = [clock.next() for _ in range(500)]
        with lock:
            seen.extend(values)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 2000
    resumed = NonceClock(last=max(seen) + 10_000)  # a saved nonce ahead of the clock is never reused
    assert resumed.next() == max(seen) + 10_001


def test_the_key_comes_from_the_environment_first(tmp_path) -> None:  # noqa: ANN001
    account = load_signer("", environ={ENV_KEY: KEY})
    assert account.address == ADDRESS


def test_a_key_file_must_be_private(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "agent.key"
    path.write_text(KEY + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError) as err:
        load_signer(str(path), environ={})
    assert "readable by group or others" in err.value.message and "chmod 600" in err.value.message
    assert KEY[2:] not in err.value.message
    os.chmod(path, 0o600)
    assert load_signer(str(path), environ={}).address == ADDRESS


def test_key_errors_never_show_the_key(tmp_path) -> None:  # noqa: ANN001
    bad = "0x" + "zz" * 32
    with pytest.raises(ConfigError) as err:
        load_signer("", environ={ENV_KEY: bad})
    assert "zz" not in err.value.message and err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(ConfigError, match="not found"):
        load_signer(str(tmp_path / "missing.key"), environ={})
    with pytest.raises(ConfigError, match="no signing key"):
        load_signer("", environ={})


def test_hyperliquid_config_is_checked_at_start() -> None:
    cfg = load_config(environ={})
    assert cfg.hyperliquid.margin_mode == "isolated" and cfg.hyperliquid.on_mismatch == "halt"
    assert cfg.hyperliquid.builder == ""  # no builder code unless configured
    for key, value, words in (("on_mismatch", "ignore", "expected one of"),
                              ("account_address", "0x123", "40 hex digits"),
                              ("max_slippage_bps", "0", "must be in"),
                              ("margin_mode", "portfolio", "expected one of")):
        with pytest.raises(ConfigError, match=words):
            load_config(environ={f"VARON_HYPERLIQUID__{key.upper()}": value})

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


@pytest.mark.parametrize("is_mainnet", [False, True])
def test_the_fast_signer_signs_exactly_as_the_sdk(is_mainnet: bool) -> None:
    from eth_account import Account
    from hyperliquid.utils.signing import sign_l1_action

    from varon_cli.execution.hyperliquid.signer import L1Signer

    wallet = Account.from_key(KEY)
    signer = L1Signer(wallet, is_mainnet)
    actions = [
        {"type": "order", "orders": [{"a": 1, "b": True, "p": "100", "s": "100", "r": False,
                                      "t": {"limit": {"tif": "Gtc"}}}], "grouping": "na"},
        {"type": "order", "orders": [{"a": 0, "b": False, "p": "55000", "s": "0.001", "r": True,
                                      "t": {"trigger": {"isMarket": True, "triggerPx": "56000", "tpsl": "sl"}},
                                      "c": "0x00000000000000000000000000000007"}], "grouping": "na"},
        {"type": "cancel", "cancels": [{"a": 0, "o": 123}]},
        {"type": "cancelByCloid", "cancels": [{"asset": 0, "cloid": "0x00000000000000000000000000000007"}]},
        {"type": "updateLeverage", "asset": 3, "isCross": False, "leverage": 10},
    ]
    for i, action in enumerate(actions):
        for vault, expires in ((None, None), ("0x" + "cd" * 20, None), (None, 1_900_000_000_000)):
            nonce = 1_795_559_959_199 + i
            assert signer.sign(action, vault, nonce, expires) == sign_l1_action(wallet, action, vault, nonce, expires,
                                                                               is_mainnet)
    # the SDK's own test vector
    expected_r = ("0xd65369825a9df5d80099e513cce430311d7d26ddf477f5b3a33d2806b100d78e" if is_mainnet else
                  "0x82b2ba28e76b3d761093aaded1b1cdad4960b3af30212b343fb2e6cdfa4e3d54")
    assert signer.sign(actions[0], None, 0)["r"] == expected_r

"""L1 action signatures, byte for byte those of the SDK's `sign_l1_action`, in a tenth of the time.

Why not call `sign_l1_action` directly: it rebuilds and re-validates the whole
EIP-712 document (domain, types, message) through eth-account's generic
encoder on every order, about 0.5 ms of an executor's 2 ms budget from signal
to wire, and signs through several layers of key objects. The domain and the `Agent` type never change, so their hashes are
taken once; per action only the SDK's own `action_hash` (msgpack, nonce,
vault), one struct hash and one ECDSA signature by libsecp256k1 remain. A test checks the
signatures equal the SDK's for varied actions, nonces and vaults.
"""

from __future__ import annotations

from typing import Any

import coincurve
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_hex
from hyperliquid.utils.signing import action_hash

_DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
_AGENT_TYPE = b"Agent(string source,bytes32 connectionId)"
_CHAIN_ID = 1337  # Hyperliquid's L1 actions, mainnet and testnet alike; the phantom agent's source tells them apart


class L1Signer:
    """Signs Hyperliquid L1 actions (order, cancel, updateLeverage, ...) for one wallet and network."""

    def __init__(self, wallet: LocalAccount, is_mainnet: bool) -> None:
        self.address = wallet.address
        self._key = coincurve.PrivateKey(bytes(wallet.key))  # libsecp256k1; RFC 6979, as eth-keys signs
        self._domain = keccak(keccak(_DOMAIN_TYPE) + keccak(b"Exchange") + keccak(b"1")
                              + _CHAIN_ID.to_bytes(32, "big") + bytes(32))
        self._agent = keccak(_AGENT_TYPE)
        self._source = keccak(b"a" if is_mainnet else b"b")

    def sign(self, action: dict[str, Any], vault: str | None, nonce: int,
             expires_after: int | None = None) -> dict[str, Any]:
        connection_id = action_hash(action, vault, nonce, expires_after)
        digest = keccak(b"\x19\x01" + self._domain + keccak(self._agent + self._source + connection_id))
        signed = self._key.sign_recoverable(digest, hasher=None)  # r (32 bytes), s (32), recovery id (1)
        return {"r": to_hex(int.from_bytes(signed[:32], "big")), "s": to_hex(int.from_bytes(signed[32:64], "big")),
                "v": signed[64] + 27}

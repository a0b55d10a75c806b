"""The agent (API wallet) key that signs orders: from the environment or a private key file, never echoed.

Why so strict: whoever reads the key can trade the account. A key file that
group or others can read is refused outright rather than warned about, and no
error message, log line or audit record ever carries the key's text; errors
raised here are cut from their cause so a traceback cannot show it either.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from varon_cli.errors import ConfigError

ENV_KEY = "VARON_HL_SECRET_KEY"


def load_signer(key_file: str, environ: Mapping[str, str] | None = None) -> LocalAccount:
    """The signing account from $VARON_HL_SECRET_KEY, else from `key_file` (mode 600 or stricter)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV_KEY, "").strip()
    source = f"${ENV_KEY}"
    if not raw:
        if not key_file:
            raise ConfigError(f"no signing key: set ${ENV_KEY} or hyperliquid.key_file (a file of mode 600)")
        path = Path(key_file).expanduser()
        source = str(path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(f"hyperliquid.key_file {path}: not found") from None
        except OSError as exc:
            raise ConfigError(f"hyperliquid.key_file {path}: cannot read ({exc.strerror})") from None
        if not stat.S_ISREG(mode):
            raise ConfigError(f"hyperliquid.key_file {path}: not a regular file")
        if mode & 0o077:
            raise ConfigError(f"hyperliquid.key_file {path}: readable by group or others (mode "
                              f"{stat.S_IMODE(mode):03o}); refusing to use it: chmod 600 {path}")
        try:
            raw = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"hyperliquid.key_file {path}: cannot read a hex key from it") from None
    try:
        return Account.from_key(raw)
    except Exception:  # noqa: BLE001 - whatever it was, its text may hold the key
        raise ConfigError(f"{source}: not a valid private key (expected 32 bytes of hex)") from None

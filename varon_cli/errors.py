"""Errors a user can act on.

Every failure a user can cause (bad input, bad config, wrong stream kind) is a
`VaronError`: the CLI prints its message as one line on stderr and exits with
its code, never a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VaronError(Exception):
    """A failure caused by input or configuration, reported as one line."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.message = " ".join(message.split())


class InputError(VaronError):
    """Input data that cannot be used: malformed, wrong kind, invalid values."""

    exit_code = 65  # EX_DATAERR


class ConfigError(VaronError):
    """A configuration value or file that is invalid."""

    exit_code = 78  # EX_CONFIG


class UsageError(VaronError):
    """A command-line option that is invalid."""

    exit_code = 64  # EX_USAGE

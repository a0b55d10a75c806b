"""Strategy names to classes, and `--param k=v` parsing."""

from __future__ import annotations

from varon_cli.errors import UsageError
from varon_cli.strategies.base import Strategy
from varon_cli.strategies.builtin import BUILTIN


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {pair!r}: expected key=value")
        params[key.strip()] = value.strip()
    return params


def make_strategy(name: str, params: dict[str, str] | None = None) -> Strategy:
    """A fresh strategy by name (model-backed strategies come through `--model DIR`)."""
    try:
        cls = BUILTIN[name]
    except KeyError:
        raise UsageError(f"unknown strategy {name!r}; built in: {', '.join(sorted(BUILTIN))}") from None
    return cls(dict(params or {}))

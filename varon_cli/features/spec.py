"""Feature specs: which indicators, with which parameters, under which names.

A spec is read from TOML (`configs/features.toml` is the default) into frozen
`FeatureDef`s. Its hash, over the canonical JSON of every definition with all
parameters filled in, goes into the output's metadata so that training and live
inference can prove they use the same features.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from varon_cli.config import read_toml
from varon_cli.errors import ConfigError
from varon_cli.schemas import FEATURES

SPEC_VERSION = 1


@dataclass(frozen=True)
class KindInfo:
    """What a feature kind needs: its parameters with defaults, output suffixes, and warm-up length."""

    params: dict[str, float | int]
    outputs: tuple[str, ...]
    default_name: str
    lookback: Any  # callable(params) -> rows before the first value


KINDS: dict[str, KindInfo] = {
    "log_return": KindInfo({"horizon": 1}, ("",), "logret_{horizon}", lambda p: p["horizon"]),
    "ema_ratio": KindInfo({"period": 20}, ("",), "ema_ratio_{period}", lambda p: p["period"] - 1),
    "macd": KindInfo({"fast": 12, "slow": 26, "signal": 9}, ("_line", "_signal", "_hist"), "macd",
                     lambda p: p["slow"] + p["signal"] - 2),
    "rsi": KindInfo({"period": 14}, ("",), "rsi_{period}", lambda p: p["period"]),
    "bollinger_pctb": KindInfo({"period": 20, "nbdev": 2.0}, ("",), "bb_pctb_{period}", lambda p: p["period"] - 1),
    "natr": KindInfo({"period": 14}, ("",), "natr_{period}", lambda p: p["period"]),
    "realized_vol": KindInfo({"period": 20}, ("",), "rvol_{period}", lambda p: p["period"]),
    "volume_zscore": KindInfo({"period": 20}, ("",), "volume_z_{period}", lambda p: p["period"] - 1),
    "taker_buy_ratio": KindInfo({}, ("",), "taker_buy_ratio", lambda p: 0),
    "vwap_deviation": KindInfo({}, ("",), "vwap_dev", lambda p: 0),
    "time_encoding": KindInfo({}, ("_day_sin", "_day_cos", "_week_sin", "_week_cos"), "time", lambda p: 0),
}


@dataclass(frozen=True)
class FeatureDef:
    name: str
    kind: str
    params: dict[str, float | int] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [self.name + suffix for suffix in KINDS[self.kind].outputs]

    @property
    def lookback(self) -> int:
        return int(KINDS[self.kind].lookback(self.params))

    def canonical(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "params": dict(sorted(self.params.items()))}


@dataclass(frozen=True)
class FeatureSpec:
    features: tuple[FeatureDef, ...]
    source: str = "built-in default"

    @property
    def columns(self) -> list[str]:
        return [c for f in self.features for c in f.columns]

    @property
    def lookback(self) -> int:
        return max((f.lookback for f in self.features), default=0)

    def canonical_json(self) -> str:
        return json.dumps({"version": SPEC_VERSION, "features": [f.canonical() for f in self.features]},
                          sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]


def _parse_def(entry: Any, index: int, source: str) -> FeatureDef:
    where = f"{source}: feature[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind = {kind!r}: expected one of {', '.join(KINDS)}")
    info = KINDS[kind]
    params: dict[str, float | int] = {}
    for key, default in info.params.items():
        value = entry.get(key, default)
        if isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}: {key} = {value!r}: expected a positive integer")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"{where}: {key} = {value!r}: expected a positive number")
        params[key] = type(default)(value)
    unknown = set(entry) - set(info.params) - {"kind", "name"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))} for kind {kind}")
    if kind == "macd" and params["fast"] >= params["slow"]:
        raise ConfigError(f"{where}: fast = {params['fast']} must be below slow = {params['slow']}")
    if kind in ("bollinger_pctb", "volume_zscore", "realized_vol") and params["period"] < 2:
        raise ConfigError(f"{where}: period must be at least 2")
    name = entry.get("name", info.default_name.format(**params))
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}: name = {name!r}: use letters, digits and underscores")
    return FeatureDef(name=name, kind=kind, params=params)


def parse_spec(data: dict[str, Any], source: str) -> FeatureSpec:
    version = data.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise ConfigError(f"{source}: version = {version!r}: this varon reads feature spec version {SPEC_VERSION}")
    entries = data.get("feature")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: no [[feature]] tables")
    defs = tuple(_parse_def(e, i, source) for i, e in enumerate(entries))
    seen: set[str] = set(FEATURES.column_names)
    for index, d in enumerate(defs):
        for col in d.columns:
            if col in seen:
                what = "a bars column" if col in FEATURES.column_names else "defined twice"
                raise ConfigError(f"{source}: feature[{index}]: column {col!r} is {what}; give the feature another name")
            seen.add(col)
    return FeatureSpec(defs, source)


def load_spec(path: str | Path | None = None) -> FeatureSpec:
    """The spec at `path`, or the built-in default when no path is given."""
    if path:
        return parse_spec(read_toml(Path(path), "feature spec"), str(path))
    text = resources.files("varon_cli.features").joinpath("default.toml").read_text()
    import tomllib

    return parse_spec(tomllib.loads(text), "built-in default")


def spec_from_json(text: str) -> FeatureSpec:
    """Rebuild a spec from the canonical JSON stored in a stream's metadata."""
    try:
        data = json.loads(text)
        entries = [{"kind": d["kind"], "name": d["name"], **d["params"]} for d in data["features"]]
        version = data["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"stream metadata: varon.feature_spec is not a feature spec ({exc})") from None
    return parse_spec({"version": version, "feature": entries}, "stream metadata")

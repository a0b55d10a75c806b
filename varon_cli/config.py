"""Typed, frozen configuration with TOML layering.

Layers, lowest first: built-in defaults < the `--config` TOML file (or
`$VARON_CONFIG`) < `VARON_SECTION__KEY` environment variables < command-line
flags. A bad value fails at start-up naming its key path, never mid-run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from varon_cli.errors import ConfigError, VaronError
from varon_cli.intervals import parse_duration, parse_interval

ENV_PREFIX = "VARON_"
ENV_CONFIG_FILE = "VARON_CONFIG"
SECRET_KEY_PATTERN = re.compile(r"(secret|password|passwd|token|private|api_key)", re.I)
REDACTED = "***"


def _choice(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r}: expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "text"

    def __post_init__(self) -> None:
        _choice(self.level.lower(), ("debug", "info", "warning", "error"), "log.level")
        _choice(self.format, ("text", "json"), "log.format")


@dataclass(frozen=True)
class BarsConfig:
    interval: str = "1m"
    # How far behind the stream's event time a trade may arrive and still count.
    lateness: str = "0s"
    # What to do with a trade later than that: drop (count, warn) or fail.
    # auto = fail for file input (a research file should be sorted), drop for pipes.
    late: str = "auto"
    # First bar after start and last bar at end of input: flag them or skip them.
    partial: str = "flag"

    def __post_init__(self) -> None:
        _validated(lambda: parse_interval(self.interval), "bars.interval", self.interval)
        lateness = _validated(lambda: parse_duration(self.lateness, "lateness"), "bars.lateness", self.lateness)
        if lateness < 0:
            raise ConfigError(f"bars.lateness = {self.lateness!r}: must not be negative")
        _choice(self.late, ("auto", "drop", "fail"), "bars.late")
        _choice(self.partial, ("flag", "skip"), "bars.partial")


@dataclass(frozen=True)
class FeaturesConfig:
    # Path of the feature spec; empty means the built-in default (configs/features.toml).
    spec: str = ""
    # Rows before every feature is defined: flag them (warmup=true, NaN values) or drop them.
    warmup: str = "flag"

    def __post_init__(self) -> None:
        _choice(self.warmup, ("flag", "drop"), "features.warmup")


@dataclass(frozen=True)
class CollectConfig:
    # Endpoints; --url overrides for one run.
    coinbase_url: str = "wss://advanced-trade-ws.coinbase.com"
    coinbase_exchange_url: str = "wss://ws-feed.exchange.coinbase.com"
    hyperliquid_url: str = "wss://api.hyperliquid.xyz/ws"
    hyperliquid_testnet_url: str = "wss://api.hyperliquid-testnet.xyz/ws"
    # Reconnect when nothing at all (not even a heartbeat) arrives for this long.
    watchdog: str = "10s"
    # Reconnect backoff: exponential from backoff_initial up to backoff_max, with jitter.
    backoff_initial: str = "500ms"
    backoff_max: str = "30s"
    # Give up after this many consecutive failed connection attempts; 0 = never.
    max_retries: int = 0
    # Rows held for a slow reader of the output before reads from the venue pause.
    buffer_rows: int = 1_000_000
    # Watermarks (sent when the market is idle) trail the last frame received by this much.
    watermark_delay: str = "1s"
    # Hyperliquid funding/mark/open-interest poll period.
    funding_interval: str = "60s"

    def __post_init__(self) -> None:
        for key in ("watchdog", "backoff_initial", "backoff_max", "watermark_delay", "funding_interval"):
            value = getattr(self, key)
            if _validated(lambda: parse_duration(value, key), f"collect.{key}", value) <= 0:
                raise ConfigError(f"collect.{key} = {value!r}: must be positive")
        if self.max_retries < 0:
            raise ConfigError(f"collect.max_retries = {self.max_retries}: must be >= 0 (0 = retry forever)")
        if self.buffer_rows < 1000:
            raise ConfigError(f"collect.buffer_rows = {self.buffer_rows}: must be at least 1000")


MAX_LEVERAGE = 50.0  # no configuration may allow more, whatever the venue


def _fraction(value: float, key: str, low: float = 0.0, high: float = 1.0, low_open: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} = {value!r}: expected a number")
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok or value != value:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{key} = {value!r}: must be in {bracket}{low:g}, {high:g}]")


@dataclass(frozen=True)
class RiskConfig:
    """Limits the executor enforces whatever a signal asks (DESIGN principle 6)."""

    # Margin a strategy may commit, as a fraction of account equity (target 1.0 on every symbol it signals uses
    # all of it: the exposure is split equally over those symbols).
    strategy_exposure: float = 0.2
    # Margin all strategies together may commit, as a fraction of account equity.
    account_exposure: float = 1.0
    # Leverage caps: overall, and per asset ("BTC-USD" = 10). Never above the venue's maximum or 50x.
    max_leverage: float = 3.0
    asset_leverage: dict = field(default_factory=dict)
    # Per-strategy limits under the account's: [risk.strategies.ema-cross] exposure = 0.1, max_leverage = 2
    strategies: dict = field(default_factory=dict)
    # Every position gets a stop: the signal's price, else this fraction away from the entry.
    default_stop_loss: float = 0.02
    # Take profit when the signal gives none: a fraction away from the entry; 0 = none.
    default_take_profit: float = 0.0
    # Loss over the UTC day (fraction of the day's starting equity) that trips the daily breaker.
    daily_loss_limit: float = 0.05
    # Close every position when the daily breaker trips (otherwise only new entries stop).
    flatten_on_breaker: bool = False
    # Drawdown from the equity peak that trips the drawdown breaker (stays until `varon execute reset`).
    max_drawdown: float = 0.25
    # Target changes smaller than this fraction of the position send no order (no churn on equity drift).
    rebalance_band: float = 0.05
    # Orders per minute across the account.
    max_orders_per_minute: int = 120
    # Orders below this notional (quote currency) are refused; Hyperliquid's minimum is $10.
    min_order_notional: float = 10.0
    # Signals older than this (against the executor's clock) are refused.
    max_signal_age: str = "2m"
    # Signals stamped further in the future than this are refused.
    max_clock_skew: str = "5s"

    def __post_init__(self) -> None:
        _fraction(self.strategy_exposure, "risk.strategy_exposure")
        _fraction(self.account_exposure, "risk.account_exposure")
        if not 1.0 <= self.max_leverage <= MAX_LEVERAGE:
            raise ConfigError(f"risk.max_leverage = {self.max_leverage!r}: must be in [1, {MAX_LEVERAGE:g}]")
        for symbol, lev in self.asset_leverage.items():
            if isinstance(lev, bool) or not isinstance(lev, (int, float)) or not 1.0 <= lev <= MAX_LEVERAGE:
                raise ConfigError(f"risk.asset_leverage.{symbol} = {lev!r}: must be in [1, {MAX_LEVERAGE:g}]")
        for name, limits in self.strategies.items():
            if not isinstance(limits, dict) or set(limits) - {"exposure", "max_leverage"}:
                raise ConfigError(f"risk.strategies.{name}: expected a table with exposure and/or max_leverage")
            if "exposure" in limits:
                _fraction(limits["exposure"], f"risk.strategies.{name}.exposure")
            lev = limits.get("max_leverage", 1.0)
            if isinstance(lev, bool) or not isinstance(lev, (int, float)) or not 1.0 <= lev <= MAX_LEVERAGE:
                raise ConfigError(f"risk.strategies.{name}.max_leverage = {lev!r}: must be in [1, {MAX_LEVERAGE:g}]")
        _fraction(self.default_stop_loss, "risk.default_stop_loss", high=0.5)
        _fraction(self.default_take_profit, "risk.default_take_profit", high=10.0, low_open=False)
        _fraction(self.daily_loss_limit, "risk.daily_loss_limit")
        _fraction(self.max_drawdown, "risk.max_drawdown")
        _fraction(self.rebalance_band, "risk.rebalance_band", high=0.5, low_open=False)
        if self.max_orders_per_minute < 1:
            raise ConfigError(f"risk.max_orders_per_minute = {self.max_orders_per_minute}: must be at least 1")
        if not self.min_order_notional >= 0:
            raise ConfigError(f"risk.min_order_notional = {self.min_order_notional!r}: must be >= 0")
        for key in ("max_signal_age", "max_clock_skew"):
            value = getattr(self, key)
            _validated(lambda: parse_duration(value, key), f"risk.{key}", value)


@dataclass(frozen=True)
class PaperConfig:
    """The simulated venue: costs as on Hyperliquid's base tier (../shared/reference/protocols.md 4f-4h)."""

    initial_equity: float = 10_000.0
    # Symbols the paper venue lists; a signal for any other is refused.
    symbols: list = field(default_factory=lambda: ["BTC-USD", "ETH-USD", "SOL-USD", "BTC-USDT", "ETH-USDT"])
    taker_fee: float = 0.00045
    maker_fee: float = 0.00015
    # Market orders fill this far beyond the first price after the decision (basis points).
    slippage_bps: float = 1.0
    # Hourly funding rate when no funding stream is given (Hyperliquid's interest-only rate).
    funding_rate: float = 0.0000125
    # The venue's leverage limit per asset; assets not listed get default_max_leverage.
    default_max_leverage: float = 20.0
    max_leverage: dict = field(default_factory=lambda: {"BTC-USD": 40.0, "ETH-USD": 25.0, "SOL-USD": 20.0})

    def __post_init__(self) -> None:
        if not self.initial_equity > 0:
            raise ConfigError(f"paper.initial_equity = {self.initial_equity!r}: must be positive")
        for key in ("taker_fee", "maker_fee"):
            _fraction(getattr(self, key), f"paper.{key}", low=-0.001, high=0.01, low_open=False)
        if not 0 <= self.slippage_bps <= 1000:
            raise ConfigError(f"paper.slippage_bps = {self.slippage_bps!r}: must be in [0, 1000]")
        if not -0.04 <= self.funding_rate <= 0.04:
            raise ConfigError(f"paper.funding_rate = {self.funding_rate!r}: Hyperliquid caps funding at 4% an hour")
        limits = {"paper.default_max_leverage": self.default_max_leverage,
                  **{f"paper.max_leverage.{k}": v for k, v in self.max_leverage.items()}}
        for key, lev in limits.items():
            if isinstance(lev, bool) or not isinstance(lev, (int, float)) or not 1.0 <= lev <= MAX_LEVERAGE:
                raise ConfigError(f"{key} = {lev!r}: must be in [1, {MAX_LEVERAGE:g}]")


@dataclass(frozen=True)
class HyperliquidConfig:
    """The live venue (`varon execute --venue hyperliquid`); protocol facts in ../shared/reference/protocols.md 4-6."""

    url: str = "https://api.hyperliquid.xyz"
    testnet_url: str = "https://api.hyperliquid-testnet.xyz"
    # The trading account (the master address); an agent (API wallet) key signs for it.
    account_address: str = ""
    # Trade a vault's or sub-account's balance instead (the agent must be allowed to).
    vault_address: str = ""
    # File holding the agent's private key (hex); must not be readable by group or others.
    # $VARON_HL_SECRET_KEY takes precedence. The key itself never belongs in this file.
    key_file: str = ""
    # Symbols traded here (coin BTC is BTC-USD); leverage limits come from the venue's meta.
    symbols: list = field(default_factory=lambda: ["BTC-USD", "ETH-USD"])
    # Market-like orders are IOC limits at most this far from the mid (basis points).
    max_slippage_bps: float = 50.0
    # Entries: ioc (market-like), gtc (a resting limit) or alo (post-only, refused if it would cross).
    # Exits, stops and the kill switch always use IOC.
    entry_order: str = "ioc"
    # gtc/alo entries rest this far inside the mid (basis points); unfilled after limit_timeout they are cancelled.
    limit_offset_bps: float = 0.0
    limit_timeout: str = "1m"
    # Margin mode set per asset before an entry: isolated or cross.
    margin_mode: str = "isolated"
    # What start-up does when the venue disagrees with the saved state: halt (exit, change nothing), adopt (take
    # the venue's positions as the executor's and protect them) or flatten (close them). Under adopt and flatten,
    # open orders the executor did not place are cancelled. A dry run always adopts, into its own state.
    on_mismatch: str = "halt"
    # Strategy that owns positions adopted from the venue.
    adopt_strategy: str = "adopted"
    request_timeout: str = "5s"
    # Retries of a request that timed out or was throttled (each first asks the venue by cloid).
    max_retries: int = 3
    # How often positions and margin are read from the venue to check the executor's view.
    sync_interval: str = "30s"
    # Builder code attached to orders: empty means none (the default: no builder-fee approvals needed).
    builder: str = ""
    builder_fee: int = 0  # tenths of a basis point

    def __post_init__(self) -> None:
        _choice(self.margin_mode, ("isolated", "cross"), "hyperliquid.margin_mode")
        _choice(self.on_mismatch, ("halt", "adopt", "flatten"), "hyperliquid.on_mismatch")
        _choice(self.entry_order, ("ioc", "gtc", "alo"), "hyperliquid.entry_order")
        if not 0 <= self.limit_offset_bps <= 1000:
            raise ConfigError(f"hyperliquid.limit_offset_bps = {self.limit_offset_bps!r}: must be in [0, 1000]")
        if not 0 < self.max_slippage_bps <= 1000:
            raise ConfigError(f"hyperliquid.max_slippage_bps = {self.max_slippage_bps!r}: must be in (0, 1000]")
        for key in ("account_address", "vault_address", "builder"):
            value = getattr(self, key)
            if value and not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
                raise ConfigError(f"hyperliquid.{key} = {value!r}: expected 0x and 40 hex digits")
        if self.max_retries < 0:
            raise ConfigError(f"hyperliquid.max_retries = {self.max_retries}: must be >= 0")
        if not 0 <= self.builder_fee <= 100:
            raise ConfigError(f"hyperliquid.builder_fee = {self.builder_fee}: must be in [0, 100] tenths of a bp")
        for key in ("request_timeout", "sync_interval", "limit_timeout"):
            value = getattr(self, key)
            _validated(lambda: parse_duration(value, key), f"hyperliquid.{key}", value)


@dataclass(frozen=True)
class ExecuteConfig:
    # Where executors keep state, the audit log and the kill file.
    state_dir: str = ".varon/state"


@dataclass(frozen=True)
class DbConfig:
    """The store behind `varon db` (varon_cli/db/)."""

    # postgresql://user@host/db (its password from ~/.pgpass or PGPASSWORD rather than here), or
    # duckdb:///path/file.duckdb; empty means the embedded DuckDB file duckdb:///.varon/varon.duckdb.
    dsn: str = ""
    # Rows per load transaction at most; rows from a live pipe are committed at least every flush_interval.
    batch_rows: int = 1_000_000
    flush_interval: str = "1s"
    # A database that is down or goes away: tries in all, waiting retry_initial, doubling up to retry_max.
    attempts: int = 5
    retry_initial: str = "500ms"
    retry_max: str = "10s"
    connect_timeout: str = "5s"

    def __post_init__(self) -> None:
        if self.dsn:
            from varon_cli.db.dsn import parse_dsn  # the DSN grammar lives with the store

            parse_dsn(self.dsn)
        if self.batch_rows < 1:
            raise ConfigError(f"db.batch_rows = {self.batch_rows}: must be at least 1")
        if self.attempts < 1:
            raise ConfigError(f"db.attempts = {self.attempts}: must be at least 1")
        for key in ("flush_interval", "retry_initial", "retry_max", "connect_timeout"):
            value = getattr(self, key)
            if _validated(lambda: parse_duration(value, key), f"db.{key}", value) <= 0:
                raise ConfigError(f"db.{key} = {value!r}: must be positive")


@dataclass(frozen=True)
class StatusConfig:
    """`varon status` and the metrics every long-running command publishes (README: `varon status` and operations)."""

    # Where each running collect/bars/features/signal/execute process keeps its metrics file (<pid>.json).
    dir: str = ".varon/run"
    # Publish those files at all (once a second, from a background thread).
    publish: bool = True
    # Serve the same numbers in the Prometheus text format on this port; 0 = off.
    prometheus_port: int = 0
    prometheus_host: str = "127.0.0.1"
    # A process whose heartbeat is older than this is unhealthy.
    stale_after: str = "30s"
    # Shell command run (not waited for) when a breaker trips, the kill switch fires or a feed is lost;
    # $VARON_ALERT_KIND and $VARON_ALERT_MESSAGE say what happened. --on-alert sets it for one run.
    on_alert: str = ""

    def __post_init__(self) -> None:
        if not self.dir:
            raise ConfigError("status.dir = '': give a directory")
        if not 0 <= self.prometheus_port <= 65535:
            raise ConfigError(f"status.prometheus_port = {self.prometheus_port}: must be in [0, 65535] (0 = off)")
        if _validated(lambda: parse_duration(self.stale_after, "stale_after"), "status.stale_after", self.stale_after) <= 0:
            raise ConfigError(f"status.stale_after = {self.stale_after!r}: must be positive")


@dataclass(frozen=True)
class VaronConfig:
    log: LogConfig = field(default_factory=LogConfig)
    bars: BarsConfig = field(default_factory=BarsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    execute: ExecuteConfig = field(default_factory=ExecuteConfig)
    hyperliquid: HyperliquidConfig = field(default_factory=HyperliquidConfig)
    db: DbConfig = field(default_factory=DbConfig)
    status: StatusConfig = field(default_factory=StatusConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with every secret replaced, for printing."""
        return _redact(self.to_dict())


def _validated(parse, key: str, value: object):  # noqa: ANN001
    try:
        return parse()
    except ConfigError:
        raise
    except VaronError as exc:
        raise ConfigError(f"{key} = {value!r}: {exc.message}") from None


def _redact(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _redact(v, k) for k, v in node.items()}
    if isinstance(node, str) and node:
        if SECRET_KEY_PATTERN.search(key):
            return REDACTED
        # user:password@host in a DSN, and password=... in a key/value DSN
        node = re.sub(r"(://[^:/@]*:)[^@]+@", rf"\g<1>{REDACTED}@", node)
        node = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", rf"\g<1>{REDACTED}", node, flags=re.I)
    return node


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path, what: str = "config") -> dict[str, Any]:
    """Parse a TOML file, turning any failure into a one-line error naming the file."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} file: {exc.strerror}") from None


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """`VARON_BARS__INTERVAL=5m` -> {'bars': {'interval': '5m'}}; values are TOML scalars or strings."""
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if isinstance(value, int) and not isinstance(value, bool) and not re.fullmatch(r"[+-]?\d[\d_]*", raw.strip()):
            value = raw  # 0xab.. is an address, not TOML's hex integer
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another VARON_ variable that sets {'.'.join(path[:-1])} to a value")
        if isinstance(node.get(path[-1]), dict):
            raise ConfigError(f"{name}: conflicts with VARON_ variables that set keys below {'.'.join(path)}")
        node[path[-1]] = value
    return layer


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a table, got {data!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ConfigError(f"{path}: unknown setting (known: {', '.join(known)})")
        default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING else known[key].default
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, path)
        else:
            if isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # lateness = 0, VARON_BARS__LATENESS=0
            if isinstance(default, float) and type(value) is int:
                value = float(value)  # max_leverage = 3
            if type(value) is not type(default):
                raise ConfigError(f"{path} = {value!r}: expected a {type(default).__name__}")
            kwargs[key] = value
    return cls(**kwargs)


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> VaronConfig:
    """Build the effective config from defaults, file, environment and flag overrides."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    file = path or environ.get(ENV_CONFIG_FILE)
    if file:
        data = _merge(data, read_toml(Path(file)))
    data = _merge(data, env_layer(environ))
    if overrides:
        data = _merge(data, {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()})
    return _build(VaronConfig, data, "")

"""Which store a DSN names, and the DSN as it may be shown (password redacted).

`postgresql://` or `postgres://` URLs, and libpq's `key=value` form, name a
PostgreSQL server; `duckdb:///PATH` names an embedded DuckDB file. As with
SQLAlchemy's sqlite URLs, three slashes start a relative path and four an
absolute one: `duckdb:///.varon/varon.duckdb` is relative to the working
directory, `duckdb:////srv/varon.duckdb` absolute; `duckdb:///:memory:` is a
throwaway in-memory database. An empty DSN is DEFAULT_DSN, the embedded file
beside the executor state (`.varon/`), so nothing needs starting.

Why the care with `redacted`: a DSN may carry a password, and error messages
from drivers sometimes quote the connection string. Every message that leaves
this package goes through `redact`, which masks `user:password@`,
`password=...` (quoted or not, also as a URL query parameter), and the
password's literal text wherever it appears.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from varon_cli.config import REDACTED, _redact
from varon_cli.errors import ConfigError

DEFAULT_DSN = "duckdb:///.varon/varon.duckdb"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
DUCKDB_SCHEME = "duckdb://"
_KEYVALUE_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)", re.I)
_MIN_SCRUB = 3  # shorter literal passwords are masked by pattern only (scrubbing "ab" would mangle text)


@dataclass(frozen=True)
class Dsn:
    """A parsed DSN. `text` is the secret-bearing original: pass it to the driver, never print it."""

    backend: str  # "postgresql" or "duckdb"
    text: str = field(repr=False)
    path: str | None = None  # DuckDB: the database file, or ":memory:"
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def redacted(self) -> str:
        return redact(self.text, self.secrets)

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    def __str__(self) -> str:
        return self.redacted


def parse_dsn(text: str | None) -> Dsn:
    """Parse `text` (empty or None: DEFAULT_DSN). Errors name the DSN redacted."""
    text = (text or "").strip() or DEFAULT_DSN
    lowered = text.lower()
    if lowered.startswith(DUCKDB_SCHEME):
        return _duckdb(text)
    if lowered.startswith(POSTGRES_SCHEMES):
        return Dsn("postgresql", text, secrets=_url_secrets(text))
    if "=" in text and "://" not in text:
        found = _KEYVALUE_PASSWORD.search(text)
        secret = found.group(1).strip("'") if found else ""
        return Dsn("postgresql", text, secrets=(secret,) if secret else ())
    raise ConfigError(f"db.dsn = {redact(text)!r}: expected postgresql://..., postgres://..., "
                      "key=value libpq parameters, or duckdb:///path")


def _duckdb(text: str) -> Dsn:
    rest = text[len(DUCKDB_SCHEME):]
    if not rest.startswith("/"):
        raise ConfigError(f"db.dsn = {text!r}: a DuckDB DSN is duckdb:///relative/path or duckdb:////absolute/path")
    path = rest[1:]
    if not path:
        raise ConfigError(f"db.dsn = {text!r}: no DuckDB file named (e.g. {DEFAULT_DSN})")
    if path != ":memory:" and path.startswith("~"):
        path = str(Path(path).expanduser())
    return Dsn("duckdb", text, path=path)


def _url_secrets(text: str) -> tuple[str, ...]:
    try:
        raw = urlsplit(text).netloc.rpartition("@")[0].partition(":")[2]
    except ValueError:
        raw = ""
    found = _KEYVALUE_PASSWORD.search(urlsplit(text).query if "?" in text else "")
    values = {raw, unquote(raw)}
    if found:
        values |= {found.group(1), unquote(found.group(1))}
    return tuple(v for v in values if v)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with any password masked: DSN patterns, and each of `secrets` wherever it appears."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SCRUB:
            text = text.replace(secret, REDACTED)
    text = _redact(text)
    return _KEYVALUE_PASSWORD.sub(f"password={REDACTED}", text)

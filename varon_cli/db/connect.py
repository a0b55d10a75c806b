"""PostgreSQL connections that survive a database restart: retries with backoff, then one clear line.

Why here and not in each caller: a load runs for minutes, and a database that
restarts (or a network that blips) under it should cost a pause, not the load.
Work given to `Session.run` is retried on a fresh connection when the failure
is the connection's (refused, reset, admin shutdown, too many clients, a
serialization failure), never when it is the data's or the SQL's (those fail
at once). Retried work must be idempotent: a load batch is one transaction
with ON CONFLICT DO NOTHING, so a batch whose commit reached the database
before the connection died adds nothing the second time.

No message from here contains the DSN's password: errors name the DSN
redacted, and the driver's own text is scrubbed the same way.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from varon_cli.db.dsn import Dsn, redact
from varon_cli.db.errors import DbError, DbUnavailable

if TYPE_CHECKING:
    import psycopg

    from varon_cli.config import DbConfig

log = logging.getLogger("varon.db")
T = TypeVar("T")

# SQLSTATE classes worth another try: connection exception, insufficient resources
# (too many connections), operator intervention (admin shutdown, cannot connect now),
# transaction rollback (serialization failure, deadlock).
_TRANSIENT_CLASSES = ("08", "53", "57", "40")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all before giving up
    initial: float = 0.5  # seconds before the first retry; doubles each time ...
    maximum: float = 10.0  # ... up to this
    connect_timeout: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based), with +-20% jitter."""
        base = min(self.maximum, self.initial * (2 ** (attempt - 1)))
        return base * random.uniform(0.8, 1.2)


def transient(exc: BaseException) -> bool:
    """Whether `exc` is the connection's failure (worth a retry on a new one), not the work's."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state[:2] in _TRANSIENT_CLASSES
    return isinstance(exc, psycopg.InterfaceError)  # the connection was closed under us


def message(exc: BaseException, dsn: Dsn) -> str:
    """The first line of a driver error, with any password removed."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__, dsn.secrets)


class Session:
    """One PostgreSQL connection, reopened as needed by `run`."""

    def __init__(self, dsn: Dsn, policy: RetryPolicy | None = None, autocommit: bool = False) -> None:
        if not dsn.is_postgres:
            raise ValueError("Session is for PostgreSQL DSNs")
        self.dsn = dsn
        self.policy = policy or RetryPolicy()
        self.autocommit = autocommit
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        """The open connection, opened (once, no retry) if need be; `run` is the retrying way in."""
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn.text, connect_timeout=max(1, round(self.policy.connect_timeout)),
                                         autocommit=self.autocommit, application_name="varon")
        return self._conn

    def run(self, work: Callable[[psycopg.Connection], T], what: str) -> T:
        """`work(connection)`, retried on a new connection while the failure is transient."""
        import psycopg

        started = time.monotonic()
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return work(self.connection())
            except (psycopg.Error, OSError) as exc:
                self.close()
                if not transient(exc):
                    raise DbError(f"{what}: {self.dsn.redacted}: {message(exc, self.dsn)}") from None
                if attempt == self.policy.attempts:
                    raise DbUnavailable(
                        f"{what}: {self.dsn.redacted} unavailable after {attempt} attempts over "
                        f"{time.monotonic() - started:.1f} s: {message(exc, self.dsn)}") from None
                pause = self.policy.delay(attempt)
                log.warning("%s: %s: %s; retrying in %.1f s (attempt %d of %d)", what, self.dsn.redacted,
                            message(exc, self.dsn), pause, attempt + 1, self.policy.attempts)
                time.sleep(pause)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is gone either way
                pass
            self._conn = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def policy_from(db: DbConfig) -> RetryPolicy:
    """The retry policy the config's [db] section describes."""
    from varon_cli.intervals import parse_duration

    def seconds(text: str, what: str) -> float:
        return parse_duration(text, what) / 1e9

    return RetryPolicy(attempts=db.attempts, initial=seconds(db.retry_initial, "retry_initial"),
                       maximum=seconds(db.retry_max, "retry_max"),
                       connect_timeout=seconds(db.connect_timeout, "connect_timeout"))

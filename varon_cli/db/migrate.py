"""Migrations: the plain SQL files in sql/ (PostgreSQL) and sql/duckdb/ (DuckDB), applied in order.

A file is `NNNN_name.sql`. Each is applied in its own transaction and
recorded in `varon_migrations(version, name, checksum, applied_at)`, so a
failure leaves the database at the previous version, and running `migrate`
again applies only what is missing. Every statement in the files is written
to be safe to run again too (IF NOT EXISTS, CREATE OR REPLACE), so a
half-recorded state can always be repaired by re-running.

A file changed after it was applied is refused, naming the file: the database
no longer matches what the file says, and the fix is a new migration, never
an edit. A database that records a migration this checkout lacks is refused
as well (it was migrated by a newer varon).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from varon_cli.db.connect import RetryPolicy, Session, message, transient
from varon_cli.db.dsn import Dsn
from varon_cli.db.errors import DbError, MigrationError

if TYPE_CHECKING:
    import duckdb
    import psycopg

log = logging.getLogger("varon.db.migrate")

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x7661726F6E  # "varon": one migrator at a time per PostgreSQL database

_BOOTSTRAP = """CREATE TABLE IF NOT EXISTS varon_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    checksum: str  # SHA-256 of the file's bytes


@dataclass(frozen=True)
class MigrateResult:
    applied: list[Migration]  # applied by this run, in order
    version: int  # the database's version afterwards (0: none)


def migrations_dir(dsn: Dsn, sql_dir: Path | None = None) -> Path:
    base = sql_dir or SQL_DIR
    return base / "duckdb" if dsn.backend == "duckdb" else base


def discover(directory: Path) -> list[Migration]:
    """The migrations in `directory`, in version order."""
    if not directory.is_dir():
        raise MigrationError(f"{directory}: no migrations directory")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE.match(path.name)
        if not match:
            continue
        data = path.read_bytes()
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{_shown(path)}: version {version:04d} also used by {_shown(found[version].path)}")
        found[version] = Migration(version, match.group(2), path, data.decode(), hashlib.sha256(data).hexdigest())
    return [found[v] for v in sorted(found)]


def plan(files: list[Migration], recorded: dict[int, tuple[str, str]], to: int | None) -> list[Migration]:
    """The migrations to apply, after checking the recorded ones against the files."""
    by_version = {m.version: m for m in files}
    for version, (name, checksum) in sorted(recorded.items()):
        m = by_version.get(version)
        if m is None:
            raise MigrationError(f"the database records migration {version:04d}_{name}, which is not in "
                                 f"{_shown(files[0].path.parent) if files else 'sql/'}: it was migrated by a newer varon")
        if m.checksum != checksum:
            raise MigrationError(f"{_shown(m.path)} was changed after it was applied (checksum {checksum[:12]} "
                                 f"recorded, {m.checksum[:12]} now); restore it and put the change in a new migration")
    last = max(recorded, default=0)
    pending = [m for m in files if m.version not in recorded and (to is None or m.version <= to)]
    for m in pending:
        if m.version < last:
            raise MigrationError(f"{_shown(m.path)} is not applied but the later migration {last:04d} is: "
                                 "add new migrations after the last one")
    return pending


def migrate(dsn: Dsn, *, to: int | None = None, sql_dir: Path | None = None,
            policy: RetryPolicy | None = None) -> MigrateResult:
    """Apply the pending migrations (up to version `to`) to the database `dsn` names."""
    files = discover(migrations_dir(dsn, sql_dir))
    if to is not None and to not in {m.version for m in files}:
        raise MigrationError(f"no migration {to:04d} in {_shown(migrations_dir(dsn, sql_dir))}")
    if dsn.is_postgres:
        with Session(dsn, policy, autocommit=True) as session:
            return session.run(lambda conn: _migrate_postgres(conn, dsn, files, to), "migrate")
    with duckdb_connect(dsn) as con:
        return _migrate_duckdb(con, files, to)


def _migrate_postgres(conn: psycopg.Connection, dsn: Dsn, files: list[Migration], to: int | None) -> MigrateResult:
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(_BOOTSTRAP)
        recorded = {v: (n, c) for v, n, c in conn.execute("SELECT version, name, checksum FROM varon_migrations")}
        pending = plan(files, recorded, to)
        for m in pending:
            try:
                with conn.transaction():
                    conn.execute(m.sql.encode())  # bytes: sent as written, several statements at once
                    conn.execute("INSERT INTO varon_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                                 (m.version, m.name, m.checksum))
            except Exception as exc:
                if transient(exc):
                    raise  # the session retries: this migration was rolled back
                raise MigrationError(f"{_shown(m.path)} failed and was rolled back: {message(exc, dsn)}") from None
            log.info("applied %s", _shown(m.path))
        return MigrateResult(pending, max([*recorded, *(m.version for m in pending)], default=0))
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _migrate_duckdb(con: duckdb.DuckDBPyConnection, files: list[Migration], to: int | None) -> MigrateResult:
    con.execute(_BOOTSTRAP)
    recorded = {v: (n, c) for v, n, c in con.execute("SELECT version, name, checksum FROM varon_migrations").fetchall()}
    pending = plan(files, recorded, to)
    for m in pending:
        con.begin()
        try:
            con.execute(m.sql)
            con.execute("INSERT INTO varon_migrations (version, name, checksum) VALUES (?, ?, ?)",
                        [m.version, m.name, m.checksum])
            con.commit()
        except Exception as exc:
            con.rollback()
            raise MigrationError(f"{_shown(m.path)} failed and was rolled back: {str(exc).splitlines()[0]}") from None
        log.info("applied %s", _shown(m.path))
    return MigrateResult(pending, max([*recorded, *(m.version for m in pending)], default=0))


class duckdb_connect:  # noqa: N801 - used like a function: `with duckdb_connect(dsn) as con`
    """An open DuckDB connection to the file `dsn` names (its directory made if need be)."""

    def __init__(self, dsn: Dsn, read_only: bool = False) -> None:
        self.dsn, self.read_only = dsn, read_only
        self.con: Any = None

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        path = self.dsn.path or ":memory:"
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(path, read_only=self.read_only)
        except duckdb.Error as exc:
            raise DbError(f"{self.dsn.redacted}: cannot open: {str(exc).splitlines()[0]}") from None
        self.con.execute("SET TimeZone = 'UTC'")
        return self.con

    def __exit__(self, *exc: object) -> None:
        if self.con is not None:
            self.con.close()


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        try:
            return str(path.resolve().relative_to(SQL_DIR.parent))
        except ValueError:
            return str(path)

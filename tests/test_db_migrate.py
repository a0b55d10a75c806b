"""`varon db migrate`: the SQL in sql/ against a real PostgreSQL (and DuckDB), never a mock.

Each test module creates its own uniquely named databases and drops them at
the end. The server is $VARON_TEST_PG (default postgresql://postgres@127.0.0.1:5432/postgres).
The server here has no TimescaleDB, so these tests cover the native
partitioning path of sql/0001; the hypertable path is written but untested.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from varon_cli.db.dsn import Dsn, parse_dsn
from varon_cli.db.errors import MigrationError
from varon_cli.db.migrate import SQL_DIR, discover, migrate
from varon_cli.db.tables import AUDIT_TABLE, TABLES

REPO = Path(__file__).resolve().parents[1]
ADMIN = os.environ.get("VARON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
FILES = discover(SQL_DIR)


# -- fixtures: a database per use ---------------------------------------------------------
class Databases:
    """Creates uniquely named databases on the test server and drops them all at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new(self) -> Dsn:
        name = f"varon_test_migrate_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return parse_dsn(ADMIN.rsplit("/", 1)[0] + "/" + name)

    def drop_all(self) -> None:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def databases() -> Iterator[Databases]:
    dbs = Databases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="module")
def migrated(databases: Databases) -> Dsn:
    dsn = databases.new()
    migrate(dsn)
    return dsn


def query(dsn: Dsn, sql: str, params: tuple | None = None) -> list[tuple]:
    with psycopg.connect(dsn.text, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def schema_of(dsn: Dsn) -> dict[str, list]:
    """Everything the migrations define, in a comparable form."""
    return {
        "columns": query(dsn, """SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
                                        coalesce(collation_name, ''), coalesce(column_default, '')
                                 FROM information_schema.columns WHERE table_schema = 'public'
                                 ORDER BY 1, 3"""),
        "constraints": query(dsn, """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                                     FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"""),
        "triggers": query(dsn, """SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger
                                  WHERE NOT tgisinternal ORDER BY 1, 2"""),
        "functions": query(dsn, """SELECT proname, md5(prosrc) FROM pg_proc
                                   WHERE pronamespace = 'public'::regnamespace ORDER BY 1"""),
        "partitioned": query(dsn, "SELECT partrelid::regclass::text FROM pg_partitioned_table ORDER BY 1"),
        "partitions": query(dsn, """SELECT inhparent::regclass::text, inhrelid::regclass::text FROM pg_inherits
                                    ORDER BY 1, 2"""),
    }


# -- applying ------------------------------------------------------------------------------
def test_sql_files_are_numbered() -> None:
    versions = [m.version for m in FILES]
    assert versions[:4] == [1, 2, 3, 4] and versions == sorted(set(versions))
    duck = [m.version for m in discover(SQL_DIR / "duckdb")]
    assert duck[:4] == [1, 2, 3, 4] and set(duck) <= set(versions)  # DuckDB's migrations mirror PostgreSQL's


def test_migrate_twice_applies_nothing(databases: Databases) -> None:
    dsn = databases.new()
    first = migrate(dsn)
    assert [m.version for m in first.applied] == [m.version for m in FILES]
    assert first.version == FILES[-1].version
    before = schema_of(dsn)
    second = migrate(dsn)
    assert second.applied == [] and second.version == FILES[-1].version
    assert schema_of(dsn) == before
    recorded = query(dsn, "SELECT version, name, checksum FROM varon_migrations ORDER BY version")
    assert recorded == [(m.version, m.name, hashlib.sha256(m.path.read_bytes()).hexdigest()) for m in FILES]


def test_every_intermediate_version_reaches_the_same_schema(databases: Databases, migrated: Dsn) -> None:
    full = schema_of(migrated)
    for i, version in enumerate(m.version for m in FILES[:-1]):
        dsn = databases.new()
        part = migrate(dsn, to=version)
        assert part.version == version and len(part.applied) == i + 1
        assert [r[0] for r in query(dsn, "SELECT version FROM varon_migrations ORDER BY 1")] == \
            [m.version for m in FILES[:i + 1]]
        rest = migrate(dsn)
        assert [m.version for m in rest.applied] == [m.version for m in FILES if m.version > version]
        assert schema_of(dsn) == full, f"from version {version}"


def test_every_statement_is_safe_to_run_again(migrated: Dsn) -> None:
    before = schema_of(migrated)
    with psycopg.connect(migrated.text) as conn:
        for m in FILES:
            with conn.transaction():
                conn.execute(m.sql.encode())
    assert schema_of(migrated) == before


def test_edited_migration_is_refused_naming_the_file(databases: Databases, tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql)
    dsn = databases.new()
    migrate(dsn, sql_dir=sql)
    edited = sql / FILES[1].path.name
    edited.write_text(edited.read_text() + "\n-- an afterthought\n")
    with pytest.raises(MigrationError) as info:
        migrate(dsn, sql_dir=sql)
    message = info.value.message
    assert FILES[1].path.name in message and "changed after it was applied" in message
    assert "\n" not in message
    # A file the database records but the checkout lacks is refused too.
    edited.write_text(FILES[1].path.read_text())
    (sql / FILES[-1].path.name).unlink()
    with pytest.raises(MigrationError, match="newer varon"):
        migrate(dsn, sql_dir=sql)


def test_failed_migration_is_rolled_back(databases: Databases, tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql)
    bad = sql / f"{FILES[-1].version + 1:04d}_broken.sql"
    bad.write_text("CREATE TABLE varon_half_done (x int);\nSELECT no_such_function();\n")
    dsn = databases.new()
    with pytest.raises(MigrationError) as info:
        migrate(dsn, sql_dir=sql)
    assert bad.name in info.value.message and "rolled back" in info.value.message
    assert query(dsn, "SELECT max(version) FROM varon_migrations") == [(FILES[-1].version,)]
    assert query(dsn, "SELECT to_regclass('varon_half_done')") == [(None,)]


# -- what the schema holds ------------------------------------------------------------------
def test_table_specs_match_the_sql(migrated: Dsn) -> None:
    """tables.py's columns, keys and NOT NULL columns are the ones sql/ creates."""
    for spec in TABLES.values():
        columns = query(migrated, """SELECT attname, attnotnull FROM pg_attribute
                                     WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
                                     ORDER BY attnum""", (spec.name,))
        assert sorted(c for c, _ in columns) == sorted(spec.columns), spec.name
        assert {c for c, notnull in columns if notnull} == set(spec.required), spec.name
        keys = query(migrated, """SELECT array(SELECT attname FROM unnest(conkey) WITH ORDINALITY AS k(num, pos)
                                               JOIN pg_attribute ON attrelid = conrelid AND attnum = k.num
                                               ORDER BY pos)
                                  FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'u'""", (spec.name,))
        assert keys == [(list(spec.key),)], spec.name


def test_time_series_are_range_partitioned_without_timescaledb(migrated: Dsn) -> None:
    assert query(migrated, "SELECT varon_use_timescaledb()") == [(False,)]  # this server: native path only
    partitioned = {r[0] for r in query(migrated, "SELECT partrelid::regclass::text FROM pg_partitioned_table")}
    assert partitioned == set(TABLES)
    defaults = query(migrated, """SELECT inhparent::regclass::text FROM pg_inherits
                                  JOIN pg_class ON oid = inhrelid WHERE relname LIKE '%\\_default'""")
    assert {r[0] for r in defaults} == set(TABLES)
    for table in ("positions", "order_intents", "strategies", "models", AUDIT_TABLE):
        assert query(migrated, "SELECT to_regclass(%s) IS NOT NULL", (table,)) == [(True,)]


def test_monthly_partitions_are_made_on_demand_and_take_rows_from_default(migrated: Dsn) -> None:
    with psycopg.connect(migrated.text, autocommit=True) as conn:
        conn.execute("""INSERT INTO funding (ts, venue, symbol, funding_rate)
                        VALUES ('2019-03-05 10:00+00', 'hl', 'BTC-USD', 0.0001)""")
        assert conn.execute("SELECT tableoid::regclass::text FROM funding").fetchall() == [("funding_default",)]
        made = conn.execute("""SELECT varon_ensure_partitions('funding', ARRAY['2019-03-31 23:59:59+00',
                               '2019-04-01 00:00+00', '2019-03-01 00:00+00']::timestamptz[])""").fetchone()
        assert made == (2,)
        assert conn.execute("SELECT tableoid::regclass::text FROM funding").fetchall() == [("funding_p201903",)]
        bounds = conn.execute("""SELECT pg_get_expr(relpartbound, oid) FROM pg_class
                                 WHERE relname = 'funding_p201904'""").fetchone()[0]
        assert "2019-04-01 00:00:00+00" in bounds and "2019-05-01 00:00:00+00" in bounds
        assert conn.execute("SELECT varon_ensure_partitions('funding', ARRAY['2019-03-09']::timestamptz[])").fetchone() == (0,)
        conn.execute("DELETE FROM funding")


def test_audit_log_is_append_only(migrated: Dsn) -> None:
    with psycopg.connect(migrated.text, autocommit=True) as conn:
        conn.execute("""INSERT INTO audit_log (executor, seq, ts, kind, record, line, prev, hash)
                        VALUES ('trigger-test', 1, now(), 'start', '{}', '{}', 'p', 'h')""")
        for statement in ("UPDATE audit_log SET kind = 'stop'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM audit_log WHERE executor = 'trigger-test'").fetchone() == (1,)


# -- DuckDB ----------------------------------------------------------------------------------
def test_duckdb_migrates_the_same_tables(tmp_path: Path, migrated: Dsn) -> None:
    import duckdb

    dsn = parse_dsn(f"duckdb:///{tmp_path}/store/varon.duckdb")
    assert [m.version for m in migrate(dsn).applied] == [m.version for m in discover(SQL_DIR / "duckdb")]
    assert migrate(dsn).applied == []
    con = duckdb.connect(str(tmp_path / "store" / "varon.duckdb"))
    duck = con.execute("""SELECT table_name, column_name FROM information_schema.columns
                          WHERE table_name <> 'varon_migrations' ORDER BY table_name, ordinal_position""").fetchall()
    pg = query(migrated, """SELECT table_name::text, column_name::text FROM information_schema.columns
                            WHERE table_schema = 'public' AND table_name = ANY(%s)
                            ORDER BY table_name, ordinal_position""", (sorted({t for t, _ in duck}),))
    assert duck == pg
    mirrored = {*TABLES, "positions", "order_intents", "strategies", "models", AUDIT_TABLE}
    assert mirrored <= {t for t, _ in duck}


# -- the command -----------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_migrate(databases: Databases, tmp_path: Path) -> None:
    dsn = databases.new()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env["PYTHONPATH"] = str(REPO)
    env["VARON_DB__DSN"] = dsn.text
    cmd = [sys.executable, "-m", "commands.main", "db", "migrate"]
    first = subprocess.run([*cmd, "--to", "2"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert first.returncode == 0, first.stderr.decode()
    assert b"at migration 0002 (2 applied now)" in first.stderr and first.stdout == b""
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert again.returncode == 0 and f"at migration {FILES[-1].version:04d} ({len(FILES) - 2} applied now)".encode() in again.stderr
    bad = subprocess.run([*cmd, "--dsn", "mysql://u:hunter2@h/db"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    lines = bad.stderr.decode().strip().splitlines()
    assert bad.returncode == 78 and len(lines) == 1 and lines[0].startswith("varon db: error:")
    assert "hunter2" not in bad.stderr.decode()

"""Assertions shared by several test modules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def assert_same_table(a: pa.Table, b: pa.Table, check_metadata: bool = True) -> None:
    """Equality that treats NaN == NaN (Arrow's `equals` does not) and ignores chunking."""
    assert a.schema.equals(b.schema, check_metadata=check_metadata), f"\n{a.schema}\n!=\n{b.schema}"
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a[name].combine_chunks(), b[name].combine_chunks()
        if pa.types.is_floating(x.type):
            assert pc.is_null(x).equals(pc.is_null(y)), name
            np.testing.assert_array_equal(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), err_msg=name)
        else:
            assert x.equals(y), name


def plain_rows(batch) -> list[dict]:  # noqa: ANN001 - a RecordBatch or Table, or None
    """Rows as dicts with times as integer ns (Python datetimes stop at microseconds)."""
    import pyarrow as pa

    if batch is None:
        return []
    schema = pa.schema([f.with_type(pa.int64()) if pa.types.is_timestamp(f.type) else f for f in batch.schema])
    return batch.cast(schema).to_pylist()


def migrated_database(prefix: str):  # noqa: ANN201 - a context manager yielding a PostgreSQL URL
    """A new database on the test server ($VARON_TEST_PG), migrated, dropped on exit."""
    import contextlib
    import os
    import uuid

    import psycopg

    from varon_cli.db.dsn import parse_dsn
    from varon_cli.db.migrate import migrate

    admin = os.environ.get("VARON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

    @contextlib.contextmanager
    def database():  # noqa: ANN202
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin.rsplit("/", 1)[0] + "/" + name
            migrate(parse_dsn(url))
            yield url
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return database()

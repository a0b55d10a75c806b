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

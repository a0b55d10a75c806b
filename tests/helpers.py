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

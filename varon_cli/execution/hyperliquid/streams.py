"""Venue rows (plain dicts) as tables of the orders and fills stream kinds."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from varon_cli.schemas import StreamKind


def rows_table(kind: StreamKind, rows: list[dict[str, Any]]) -> pa.Table:
    schema = kind.schema_with()
    columns = {f.name: [row.get(f.name) for row in rows] for f in schema}
    table = pa.table({name: pa.array(values, pa.int64() if name == "ts" else schema.field(name).type)
                      for name, values in columns.items()})
    return table.cast(schema)

"""Print a stream file as a table, whatever stdout is: `python -m varon_cli.show FILE`.

The demo uses it to show chosen columns of wide outputs (features have 30+).
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from varon_cli.errors import VaronError
from varon_cli.schemas import KINDS
from varon_cli.streamio import open_input
from varon_cli.terminal import render_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m varon_cli.show", description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--columns", help="comma-separated columns to show (default: all)")
    parser.add_argument("--tail", type=int, default=0, help="show only the last N rows")
    args = parser.parse_args(argv)
    try:
        with open_input(args.path, expect=tuple(KINDS.values())) as src:
            table = src.read_all()
            kind = src.kind.name
        if args.columns:
            missing = [c for c in args.columns.split(",") if c not in table.column_names]
            if missing:
                raise VaronError(f"{args.path}: no column(s) {', '.join(missing)}")
            table = table.select(args.columns.split(","))
    except VaronError as exc:
        print(f"show: error: {exc.message}", file=sys.stderr)
        return 1
    if args.tail:
        table = table.slice(max(table.num_rows - args.tail, 0))
    render_table(table, f"{args.path} ({kind}, {table.num_rows} rows shown)", Console(width=200))
    return 0


if __name__ == "__main__":
    sys.exit(main())

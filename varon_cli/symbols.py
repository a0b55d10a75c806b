"""Stable integer codes for (venue, symbol) keys across the batches of a stream."""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from varon_cli.errors import InputError

EMPTY_CODES = np.empty(0, dtype=np.int32)


@numba.njit(cache=True)
def _first_seen_codes(keys, table, next_code):
    """Map small integer keys to codes numbered in order of first appearance."""
    out = np.empty(keys.shape[0], dtype=np.int32)
    for i in range(keys.shape[0]):
        k = keys[i]
        if table[k] < 0:
            table[k] = next_code
            next_code += 1
        out[i] = table[k]
    return out, next_code


class SymbolTable:
    """Codes for (venue, symbol) pairs, numbered in order of first appearance in the stream.

    First-appearance numbering makes the order of per-symbol output rows
    independent of how the input was cut into batches.
    """

    def __init__(self) -> None:
        self.codes: dict[tuple[str, str], int] = {}
        self.venues: list[str] = []
        self.symbols: list[str] = []

    def add(self, venue: str, symbol: str) -> int:
        code = self.codes.get((venue, symbol))
        if code is None:
            code = self.codes[(venue, symbol)] = len(self.venues)
            self.venues.append(venue)
            self.symbols.append(symbol)
        return code

    def encode(self, venue: pa.Array, symbol: pa.Array, label: str, offset: int) -> tuple[np.ndarray, int]:
        """Return (codes, -1), or (EMPTY_CODES, code) when the whole batch has one key (the common case, kept cheap)."""
        for name, arr in (("venue", venue), ("symbol", symbol)):
            if arr.null_count:
                row = offset + int(pc.index(pc.is_null(arr), True).as_py())
                raise InputError(f"{label}: row {row}: field {name} is null")
        v0, s0 = venue[0], symbol[0]
        if len(symbol) == 1 or (pc.all(pc.equal(symbol, s0)).as_py() and pc.all(pc.equal(venue, v0)).as_py()):
            return EMPTY_CODES, self.add(v0.as_py(), s0.as_py())
        v_enc, s_enc = venue.dictionary_encode(), symbol.dictionary_encode()
        v_dict, s_dict = v_enc.dictionary.to_pylist(), s_enc.dictionary.to_pylist()
        width = len(s_dict)
        keys = v_enc.indices.to_numpy().astype(np.int64) * width + s_enc.indices.to_numpy()
        local = np.full(len(v_dict) * width, -1, dtype=np.int32)
        first, used = _first_seen_codes(keys, local, 0)
        order = np.empty(used, dtype=np.int64)
        order[local[local >= 0]] = np.flatnonzero(local >= 0)
        mapping = np.array([self.add(v_dict[k // width], s_dict[k % width]) for k in order], dtype=np.int32)
        return mapping[first], -1

    def venue_column(self, codes: np.ndarray) -> pa.Array:
        return pa.array(self.venues, pa.string()).take(codes)

    def symbol_column(self, codes: np.ndarray) -> pa.Array:
        return pa.array(self.symbols, pa.string()).take(codes)

    def __len__(self) -> int:
        return len(self.venues)

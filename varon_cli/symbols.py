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


@numba.njit(cache=True)
def _all_equal_first(offsets, data):
    """True when every string of an Arrow string array (offsets, data) equals the first."""
    n = offsets.shape[0] - 1
    start0 = offsets[0]
    length0 = offsets[1] - start0
    for i in range(1, n):
        start = offsets[i]
        if offsets[i + 1] - start != length0:
            return False
        for j in range(length0):
            if data[start + j] != data[start0 + j]:
                return False
    return True


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy numpy views of a string array's offsets and bytes (no nulls assumed)."""
    _, offsets, data = arr.buffers()
    offs = np.frombuffer(offsets, dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1]
    return offs, (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(1, dtype=np.uint8))


def is_constant(arr: pa.Array) -> bool:
    """Whether a string array holds one value only, by a byte scan (no per-call allocation)."""
    if len(arr) <= 1:
        return True
    if pa.types.is_string(arr.type):
        return bool(_all_equal_first(*string_buffers(arr)))
    return bool(pc.all(pc.equal(arr, arr[0])).as_py())


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
        if is_constant(symbol) and is_constant(venue):
            return EMPTY_CODES, self.add(venue[0].as_py(), symbol[0].as_py())
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

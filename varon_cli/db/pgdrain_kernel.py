"""The numba loop behind pgdrain: PQgetCopyData messages copied back to back into one buffer.

Kept apart from pgdrain.py so that importing pgdrain does not import numba.
The libpq functions come in as arguments (ctypes function objects), not as
globals, so the compiled loop does not embed this process's addresses and can
be cached on disk like the project's other kernels.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def drain(get_copy_data, free_mem, memmove, conn, out, state):  # noqa: ANN001, ANN201 - numba types them
    """Copy COPY messages into `out` until libpq needs more input, the COPY ends, or `out` is full.

    Returns (bytes written, status): 0 = read more input first, -1 = COPY done,
    -2 = error (PQgetResult has it), 1 = `out` full. A message that did not fit
    waits in `state` (address, length) and goes first on the next call."""
    base = np.int64(out.ctypes.data)
    capacity = out.size
    slot = np.zeros(1, np.int64)
    pos = 0
    if state[1] > 0:
        if state[1] > capacity:
            return 0, -2
        memmove(base, state[0], state[1])
        free_mem(state[0])
        pos = state[1]
        state[0] = 0
        state[1] = 0
    while True:
        n = get_copy_data(conn, slot.ctypes.data, 1)
        if n <= 0:
            return pos, n
        if pos + n > capacity:
            state[0] = slot[0]
            state[1] = n
            return pos, 1
        memmove(base + pos, slot[0], n)
        free_mem(slot[0])
        pos += n

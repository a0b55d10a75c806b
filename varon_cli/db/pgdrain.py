"""COPY ... TO STDOUT read at native speed, when the platform allows it.

Why: the server sends a binary COPY as one protocol message per row, and
psycopg hands each to Python as its own object, about 1.2 microseconds a row
on the development machine: more than the server spends producing the row,
which puts an export far from its target of 1,000,000 rows/s. Here a small
numba loop calls libpq's PQgetCopyData directly and copies the messages
back to back into a numpy buffer, so Python sees one piece per 16 MiB.

How it stays safe: the loop uses the libpq that psycopg itself loaded (found in
/proc/self/maps, so it is the same library and the same PGconn layout), holds
the connection's lock while it owns the protocol, waits for the socket in
Python (so SIGINT and SIGTERM still interrupt it), and turns server errors
into psycopg's own exceptions. If anything is missing (not Linux, no numba,
a libpq that cannot be found unambiguously) `copy_out` falls back to
psycopg's `Cursor.copy`, which gives the same bytes more slowly; tests run
both. A connection left in the middle of a COPY (the reader stopped early)
is closed, never reused.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import select
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("varon.db")

CHUNK_BYTES = 16 << 20
_DRAIN_MORE, _DRAIN_DONE, _DRAIN_ERROR, _DRAIN_FULL = 0, -1, -2, 1
enabled = True  # tests switch the native path off to check the fallback gives the same bytes


def copy_out(conn: psycopg.Connection, sql: bytes) -> Iterator[bytes | memoryview]:
    """The payload of `sql` (a COPY ... TO STDOUT statement, parameters already bound) in pieces."""
    native = _native() if enabled else None
    if native is None:
        with conn.cursor().copy(sql) as copy:
            yield from copy
        return
    yield from _native_copy_out(conn, sql, native)


def _native_copy_out(conn: psycopg.Connection, sql: bytes, native: tuple[Any, ...]) -> Iterator[bytes]:
    from psycopg import errors, pq

    pg = conn.pgconn
    drain, functions = native
    out = np.empty(CHUNK_BYTES, dtype=np.uint8)
    state = np.zeros(2, dtype=np.int64)  # a message that did not fit the buffer: its address and length
    finished = False
    conn.lock.acquire()
    try:
        pg.send_query(sql)
        while pg.flush():
            select.select([], [pg.socket], [])
        result = _next_result(pg)
        if result is None or result.status != pq.ExecStatus.COPY_OUT:
            _drop_results(pg)
            finished = True
            if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
                raise errors.error_from_result(result, encoding=conn.info.encoding)
            raise errors.ProgrammingError("copy_out needs a COPY ... TO STDOUT statement")
        while True:
            size, status = drain(*functions, pg.pgconn_ptr, out, state)
            if size:
                yield out[:size].tobytes()
            if status == _DRAIN_MORE:
                select.select([pg.socket], [], [])
                pg.consume_input()
            elif status in (_DRAIN_DONE, _DRAIN_ERROR):
                break
        result = _next_result(pg)
        _drop_results(pg)
        finished = True
        if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
            raise errors.error_from_result(result, encoding=conn.info.encoding)
    finally:
        if state[1]:
            functions[1](int(state[0]))  # PQfreemem the message never copied
        conn.lock.release()
        if not finished:
            conn.close()  # stopped mid-COPY: the protocol state is unknown, so the connection goes


def _next_result(pg: Any) -> Any:
    """PQgetResult without blocking in C (so a signal can interrupt the wait)."""
    while True:
        pg.consume_input()
        if not pg.is_busy():
            return pg.get_result()
        select.select([pg.socket], [], [])


def _drop_results(pg: Any) -> None:
    while _next_result(pg) is not None:
        pass


@functools.cache
def _native() -> tuple[Any, ...] | None:
    """(the numba drain loop, (PQgetCopyData, PQfreemem, memmove)) or None when unavailable."""
    path = _loaded_libpq()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        get = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)(
            ctypes.cast(lib.PQgetCopyData, ctypes.c_void_p).value)
        free = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(ctypes.cast(lib.PQfreemem, ctypes.c_void_p).value)
        move = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
            ctypes.cast(ctypes.memmove, ctypes.c_void_p).value)
        from varon_cli.db.pgdrain_kernel import drain
    except (OSError, AttributeError, ImportError) as exc:
        log.debug("native COPY reader unavailable (%s); using psycopg's", exc)
        return None
    return drain, (get, free, move)


def _loaded_libpq() -> str | None:
    """The libpq psycopg has loaded into this process, if there is exactly one (Linux)."""
    import psycopg  # noqa: F401 - make sure psycopg's libpq is loaded
    from psycopg import pq

    maps = Path("/proc/self/maps")
    if not maps.exists() or pq.__impl__ == "python":
        return None  # the pure-Python psycopg finds libpq itself; leave it its own way
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "/libpq" in line}
    paths = {p for p in paths if Path(p).name.startswith(("libpq.so", "libpq-"))}
    return paths.pop() if len(paths) == 1 else None

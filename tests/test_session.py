"""Pieces of the live session that can be tested without a network."""

from __future__ import annotations

import random
import threading
import time

from varon_cli.feeds.session import OutputBuffer, backoff_delay


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(a, 0.5, 30.0, rng) for a in range(12)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not a fixed ladder
    assert max(delays) <= 30.0


def test_a_full_buffer_blocks_the_producer_counts_it_and_loses_nothing() -> None:
    full_events = []
    buffer = OutputBuffer(max_rows=10, on_full=lambda: full_events.append(time.monotonic()))
    produced = list(range(20))

    def produce() -> None:
        for item in produced:
            buffer.put(item, rows=4)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.2)
    assert producer.is_alive()  # blocked: 12 rows would exceed 10
    assert full_events and buffer.peak_rows <= 10
    consumed = []
    while len(consumed) < len(produced):
        item = buffer.get(1.0)
        if item is not None:
            consumed.append(item)
            time.sleep(0.001)  # a slow reader
    producer.join(2)
    assert consumed == produced


def test_an_item_larger_than_the_buffer_still_passes() -> None:
    buffer = OutputBuffer(max_rows=10, on_full=lambda: None)
    buffer.put("big", rows=50)  # an empty buffer always accepts: no deadlock on a huge batch
    assert buffer.get(0) == "big"
    assert buffer.get(0) is None

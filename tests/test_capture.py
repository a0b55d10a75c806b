"""Raw captures and the pipeline: a capture replays to the live output, byte for byte."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from varon_cli.errors import InputError, UsageError
from varon_cli.feeds.capture import CaptureHeader, CaptureWriter, frame_of, read_capture
from varon_cli.feeds.coinbase import CoinbaseAdvanced
from varon_cli.feeds.pipeline import Emitted, FeedPipeline
from varon_cli.runtime import Watermark
from varon_cli.schemas import TRADES

SECOND = 1_000_000_000


def header(t: int = 1_000) -> CaptureHeader:
    return CaptureHeader(venue="coinbase", feed="advanced", symbols=["BTC-USD"], channels=["book", "trades"],
                         url="ws://x", watermark_delay_ns=SECOND, started_ns=t)


def at_trades(seq: int, *ids: int, t: str = "2026-04-07T14:30:00.5Z") -> str:
    trades = [{"trade_id": str(i), "product_id": "BTC-USD", "price": "100", "size": "1", "side": "BUY", "time": t}
              for i in ids]
    return json.dumps({"channel": "market_trades", "timestamp": t, "sequence_num": seq,
                       "events": [{"type": "update", "trades": trades}]})


def test_capture_round_trips_frames_and_events(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.zst"
    writer = CaptureWriter(path, header())
    odd = 'line\nbreak "quoted" \u00e9\u2603'
    writer.event(2_000, "connect")
    writer.frame(3_000, odd)
    writer.frame(4_000, b"\x00\x01binary")
    writer.rest(5_000, "metaAndAssetCtxs", b'[{"universe":[]},[]]')
    writer.event(6_000, "close", "drop")
    writer.close()
    head, lines = read_capture(path)
    assert head == header()
    lines = list(lines)
    assert [(line.t, line.c) for line in lines] == [(2_000, "connect"), (3_000, None), (4_000, None), (5_000, "rest"),
                                                    (6_000, "close")]
    assert frame_of(lines[1]) == odd and frame_of(lines[2]) == b"\x00\x01binary"
    assert lines[3].what == "metaAndAssetCtxs" and lines[4].reason == "drop"
    with pytest.raises(UsageError, match="exists"):
        CaptureWriter(path, header())


def test_a_torn_capture_replays_up_to_the_last_synced_block(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    path = tmp_path / "torn.jsonl.zst"
    writer = CaptureWriter(path, header())
    for i in range(100):
        writer.frame(2 * SECOND + i, at_trades(i, i))
    writer.sync()
    synced = path.stat().st_size
    for i in range(100, 120):
        writer.frame(3 * SECOND + i, at_trades(i, i))
    writer._writer.flush()  # noqa: SLF001 - bytes beyond the last block, as after kill -9
    data = path.read_bytes()
    path.write_bytes(data[: synced + (len(data) - synced) // 2])  # cut mid-block
    _, lines = read_capture(path)
    frames = [line for line in lines if line.c is None]
    assert len(frames) >= 100
    assert [json.loads(frame_of(f))["sequence_num"] for f in frames[:100]] == list(range(100))


def test_not_a_capture_is_a_clear_error(tmp_path: Path) -> None:
    import zstandard

    path = tmp_path / "x.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"hello": 1}\n'))
    with pytest.raises(InputError, match="not a varon capture"):
        read_capture(path)
    with pytest.raises(UsageError, match="no such capture"):
        read_capture(tmp_path / "missing.jsonl.zst")


def _ipc_bytes(emitted: list[Emitted]) -> bytes:
    sink = io.BytesIO()
    schema = TRADES.schema_with()
    with ipc.new_stream(sink, schema) as writer:
        for e in emitted:
            if e.trades is not None:
                writer.write_batch(e.trades)
            if e.watermark is not None:
                writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema),
                                   custom_metadata={b"varon.watermark": str(e.watermark.ts_ns).encode()})
    return sink.getvalue()


def test_replaying_a_capture_reproduces_the_live_emissions_exactly(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl.zst"
    live: list[Emitted] = []
    norm = CoinbaseAdvanced(["BTC-USD"], frozenset({"trades"}))
    pipeline = FeedPipeline(norm, live.append, CaptureWriter(path, header()), max_pending_rows=5)
    t = 10 * SECOND
    pipeline.connect(t)
    for seq in range(30):
        t += SECOND // 10
        pipeline.frame(t, at_trades(seq, seq * 2, seq * 2 + 1))
        if seq % 4 == 3:
            pipeline.flush(t)
        if seq % 7 == 6:
            pipeline.tick(t)
    pipeline.frame(t + 1, '{"channel": "market_trades", "events": [')  # malformed, counted
    for quiet in range(1, 6):  # idle market: ticks give watermarks
        pipeline.tick(t + quiet * SECOND)
    pipeline.close(t + 6 * SECOND, "stopped")
    pipeline.capture.close()
    assert any(e.watermark for e in live) and sum(e.trades.num_rows for e in live if e.trades is not None) == 60

    replayed: list[Emitted] = []
    head, lines = read_capture(path)
    again = CoinbaseAdvanced(head.symbols, frozenset(head.channels), head.watermark_delay_ns)
    replay = FeedPipeline(again, replayed.append, max_pending_rows=5)
    for line in lines:
        replay.replay_line(line)
    assert _ipc_bytes(replayed) == _ipc_bytes(live)
    assert again.stats == norm.stats


def test_watermarks_follow_event_time_by_local_elapsed_time_and_pause_while_trades_flow() -> None:
    norm = CoinbaseAdvanced(["BTC-USD"], frozenset({"trades"}), watermark_delay_ns=SECOND)
    event = 1775572200 * SECOND + SECOND // 2  # the trade's own time, 2026-04-07T14:30:00.5Z
    norm.on_frame('{"channel":"heartbeats","sequence_num":0,"events":[{"heartbeat_counter":1}]}', 5 * SECOND)
    assert norm.on_tick(5 * SECOND) is None  # no event seen yet: no watermark
    norm.on_frame(at_trades(1, 1), 10 * SECOND)  # received at local 10 s
    norm.take_batches()
    assert norm.on_tick(10 * SECOND) is None  # trades were emitted since the last tick
    assert norm.on_tick(11 * SECOND) == Watermark(event - SECOND)  # no frame since the trade: its time less the delay
    assert norm.on_tick(12 * SECOND) is None  # and no further without a frame
    norm.on_frame('{"channel":"heartbeats","sequence_num":2,"events":[{"heartbeat_counter":2}]}', 13 * SECOND)
    assert norm.on_tick(13 * SECOND) == Watermark(event + 2 * SECOND)  # 3 s of quiet, less the delay
    assert norm.on_tick(20 * SECOND) is None  # no frame since: the watermark does not run ahead

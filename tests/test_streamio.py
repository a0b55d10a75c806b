"""varon_cli.streamio and varon_cli.sinks: formats, kind checks, conforming, atomic commit, watermarks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from varon_cli.errors import InputError, UsageError
from varon_cli.runtime import Interrupted, Watermark
from varon_cli.schemas import BARS, FEATURES, INTERVAL_KEY, KIND_KEY, TRADES, TS, VERSION_KEY
from varon_cli.streamio import open_input, open_output
from helpers import assert_same_table

REPO = Path(__file__).resolve().parents[1]
SAMPLE_BARS = REPO / "data" / "sample" / "btc-eth-5m.parquet"
SAMPLE_TRADES = REPO / "data" / "sample" / "btcusdt-trades.parquet"

FILE_FORMATS = ["bars.arrows", "bars.arrow", "bars.feather", "bars.parquet", "bars_dataset"]


# -- helpers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def bars_table() -> pa.Table:
    return pq.read_table(SAMPLE_BARS)


@pytest.fixture(scope="module")
def trades_table() -> pa.Table:
    return pq.read_table(SAMPLE_TRADES)


def bars_schema() -> pa.Schema:
    return BARS.schema_with({INTERVAL_KEY: b"5m"})


def write_all(path: Path, table: pa.Table, chunk: int = 5000) -> None:
    with open_output(str(path), table.schema) as sink:
        for batch in table.to_batches(max_chunksize=chunk):
            sink.write(batch)


def read_all(path: Path, expect=(BARS,), kind: str | None = None) -> pa.Table:
    with open_input(str(path), expect=expect, kind=kind) as src:
        return src.read_all()


def leftovers(directory: Path) -> list[str]:
    """Hidden temporary names a sink may have left behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# -- A1: round trips and metadata ------------------------------------------------
@pytest.mark.parametrize("name", FILE_FORMATS)
def test_round_trip_each_format(tmp_path: Path, bars_table: pa.Table, name: str) -> None:
    path = tmp_path / name
    write_all(path, bars_table)
    with open_input(str(path), expect=(BARS,)) as src:
        assert src.kind is BARS
        assert src.metadata[KIND_KEY] == b"bars"
        assert src.metadata[VERSION_KEY] == b"1"
        assert src.metadata[INTERVAL_KEY] == b"5m"
        back = src.read_all()
        assert src.rows_read == bars_table.num_rows
    # Every declared bars column comes back identical, in the original (time) order.
    assert_same_table(back.select(BARS.column_names), bars_table, check_metadata=False)
    assert leftovers(tmp_path) == []


def test_dataset_round_trip_adds_no_columns(tmp_path: Path, bars_table: pa.Table) -> None:
    """BUG demonstration: the hive partition key `date` that DatasetSink invents comes back as a column."""
    path = tmp_path / "bars_dataset"
    write_all(path, bars_table)
    back = read_all(path)
    assert back.column_names == bars_table.column_names


@pytest.mark.parametrize("name", ["bars.arrows", "bars.arrow", "bars.feather", "bars.parquet"])
def test_writer_stamps_kind_and_version(tmp_path: Path, bars_table: pa.Table, name: str) -> None:
    path = tmp_path / name
    write_all(path, bars_table.slice(0, 100))
    if name.endswith(".parquet"):
        schema = pq.read_schema(path)
    elif name.endswith(".arrows"):
        schema = ipc.open_stream(pa.OSFile(str(path))).schema
    else:
        schema = ipc.open_file(str(path)).schema
    meta = schema.metadata
    assert meta[b"varon.kind"] == b"bars"
    assert meta[b"varon.version"] == b"1"
    assert meta[b"varon.interval"] == b"5m"
    # Plain types as the contract lists them.
    assert schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("symbol").type == pa.string()


def test_dataset_is_hive_partitioned_and_stamped(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "ds"
    write_all(path, bars_table)
    files = sorted(path.rglob("*.parquet"))
    assert files
    rel = {f.relative_to(path).parts[:2] for f in files}
    assert ("venue=binance", "symbol=BTC-USDT") in rel and ("venue=binance", "symbol=ETH-USDT") in rel
    assert pq.read_schema(files[0]).metadata[b"varon.kind"] == b"bars"


def test_open_output_requires_kind_metadata(tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        open_output(str(tmp_path / "x.parquet"), BARS.schema)


def test_unknown_extension_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.csv"):
        open_output(str(tmp_path / "x.csv"), bars_schema())
    (tmp_path / "y.csv").write_text("a,b\n")
    with pytest.raises(UsageError, match=r"\.csv"):
        with open_input(str(tmp_path / "y.csv"), expect=(BARS,)):
            pass


def test_dataset_output_refuses_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        open_output(str(out), bars_schema())
    assert (out / "keep.txt").exists()


def test_foreign_feather_with_metadata_is_read(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "foreign.feather"
    feather.write_feather(bars_table.slice(0, 1000), str(path), compression="lz4")
    assert_same_table(read_all(path), bars_table.slice(0, 1000), check_metadata=False)


# -- A2: kind checks ---------------------------------------------------------------
def test_wrong_kind_names_expected_and_actual(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        with open_input(str(SAMPLE_BARS), expect=(TRADES,)):
            pass
    message = str(info.value)
    assert "\n" not in message
    assert "expected trades" in message and "got bars" in message
    assert str(SAMPLE_BARS) in message
    assert info.value.exit_code == 65


def test_wrong_kind_lists_all_expected(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "f.parquet"
    pq.write_table(bars_table.slice(0, 10).replace_schema_metadata(FEATURES.metadata()), path)
    with pytest.raises(InputError, match="expected trades or bars, got features"):
        with open_input(str(path), expect=(TRADES, BARS)):
            pass


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".arrows"])
def test_plain_file_needs_kind(tmp_path: Path, bars_table: pa.Table, suffix: str) -> None:
    plain = bars_table.slice(0, 50).replace_schema_metadata(None)
    path = tmp_path / f"plain{suffix}"
    if suffix == ".parquet":
        pq.write_table(plain, path)
    elif suffix == ".arrow":
        with ipc.new_file(str(path), plain.schema) as w:
            w.write_table(plain)
    else:
        with ipc.new_stream(str(path), plain.schema) as w:
            w.write_table(plain)
    with pytest.raises(InputError, match="no varon.kind") as info:
        with open_input(str(path), expect=(BARS,)):
            pass
    assert str(path) in str(info.value) and "--kind" in str(info.value)
    with open_input(str(path), expect=(BARS,), kind="bars") as src:
        assert src.kind is BARS
        back = src.read_all()
    assert_same_table(back, plain, check_metadata=False)


def test_kind_override_conflicting_with_metadata(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--kind trades given but the stream says it holds bars"):
        with open_input(str(SAMPLE_BARS), expect=(TRADES, BARS), kind="trades"):
            pass


def test_unknown_kind_option_is_usage_error() -> None:
    with pytest.raises(UsageError, match="nonsense"):
        open_input(str(SAMPLE_BARS), expect=(BARS,), kind="nonsense")


def test_newer_stream_version_refused(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "v2.parquet"
    meta = dict(bars_table.schema.metadata)
    meta[b"varon.version"] = b"2"
    pq.write_table(bars_table.slice(0, 10).replace_schema_metadata(meta), path)
    with pytest.raises(InputError, match="version 2 is newer"):
        with open_input(str(path), expect=(BARS,)):
            pass


def test_missing_required_column_named(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "noclose.parquet"
    pq.write_table(bars_table.slice(0, 10).drop_columns(["close"]), path)
    with pytest.raises(InputError, match="lacks column.*close"):
        with open_input(str(path), expect=(BARS,)):
            pass


def test_missing_input_file_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(InputError, match="nope.parquet: no such file"):
        with open_input(str(missing), expect=(BARS,)):
            pass


# -- A3: conforming looser inputs -------------------------------------------------
def _loose_trades(trades: pa.Table) -> pa.Table:
    """Trades as another tool writes them: dictionary strings, ms timestamps without zone, no metadata."""
    t = trades.slice(0, 300)
    return pa.table(
        {
            "ts": t["ts"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).cast(pa.timestamp("ms")),
            "venue": pc.dictionary_encode(t["venue"]),
            "symbol": pc.dictionary_encode(t["symbol"]),
            "price": t["price"],
            "size": t["size"],
            "side": pc.dictionary_encode(t["side"]),
        }
    )


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_dictionary_strings_and_ms_timestamps_are_conformed(tmp_path: Path, trades_table: pa.Table, suffix: str) -> None:
    loose = _loose_trades(trades_table)
    assert pa.types.is_dictionary(loose.schema.field("symbol").type)
    path = tmp_path / f"loose{suffix}"
    if suffix == ".parquet":
        pq.write_table(loose, path)
        assert pa.types.is_dictionary(pq.read_schema(path).field("side").type)
    else:
        with ipc.new_file(str(path), loose.schema) as w:
            w.write_table(loose)
    back = read_all(path, expect=(TRADES,), kind="trades")
    assert back.schema.equals(TRADES.schema, check_metadata=False)
    for name in ("venue", "symbol", "side", "trade_id"):
        assert back.schema.field(name).type == pa.string()
    assert back.schema.field("ts").type == TS
    assert back.schema.field("recv_ts").type == TS
    # Values survive: ms instants are the same instants in ns; recv_ts defaults to ts.
    expected_ts = trades_table["ts"].slice(0, 300).cast(pa.int64()).to_numpy() // 1_000_000 * 1_000_000
    np.testing.assert_array_equal(back["ts"].cast(pa.int64()).to_numpy(), expected_ts)
    assert back["recv_ts"].equals(back["ts"])
    assert back["symbol"].to_pylist() == trades_table["symbol"].slice(0, 300).to_pylist()
    assert back["side"].to_pylist() == trades_table["side"].slice(0, 300).to_pylist()
    assert back["venue"].to_pylist() == ["binance"] * 300


def test_extra_dictionary_column_of_bars_is_plain(tmp_path: Path, bars_table: pa.Table) -> None:
    t = bars_table.slice(0, 20)
    t = t.append_column("tag", pc.dictionary_encode(pa.chunked_array([["a", "b"] * 10])))
    t = t.replace_schema_metadata(bars_table.schema.metadata)
    path = tmp_path / "tagged.arrow"
    with ipc.new_file(str(path), t.schema) as w:
        w.write_table(t)
    back = read_all(path)
    assert back.schema.field("tag").type == pa.string()
    assert back["tag"].to_pylist() == ["a", "b"] * 10


def test_boolean_side_is_refused(tmp_path: Path, trades_table: pa.Table) -> None:
    t = trades_table.slice(0, 10)
    t = t.set_column(t.schema.get_field_index("side"), "side", pc.equal(t["side"], "buy"))
    path = tmp_path / "boolside.parquet"
    pq.write_table(t, path)
    with pytest.raises(InputError, match="side is boolean"):
        read_all(path, expect=(TRADES,))


# -- A4: damaged inputs ---------------------------------------------------------------
def test_truncated_parquet_names_the_file(tmp_path: Path) -> None:
    data = SAMPLE_TRADES.read_bytes()
    path = tmp_path / "cut.parquet"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        read_all(path, expect=(TRADES,))
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_garbage_arrow_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.arrow"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(InputError) as info:
        read_all(path)
    assert str(path) in str(info.value)


def test_garbage_arrows_stream_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.arrows"
    path.write_bytes(b"this is not an arrow stream at all" * 10)
    with pytest.raises(InputError) as info:
        read_all(path)
    assert str(path) in str(info.value)


def test_truncated_arrows_stream_fails_while_reading(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "full.arrows"
    write_all(path, bars_table, chunk=1000)
    data = path.read_bytes()
    cut = tmp_path / "cut.arrows"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as info:
        read_all(cut)
    assert str(cut) in str(info.value)


# -- A5: atomic commit ----------------------------------------------------------------
class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("name", FILE_FORMATS)
def test_failure_leaves_no_file(tmp_path: Path, bars_table: pa.Table, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(Boom):
        with open_output(str(path), bars_table.schema) as sink:
            for batch in bars_table.to_batches(max_chunksize=1000)[:3]:
                sink.write(batch)
            raise Boom("stage failed")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", FILE_FORMATS)
def test_interrupt_commits_what_was_accepted(tmp_path: Path, bars_table: pa.Table, name: str) -> None:
    path = tmp_path / name
    accepted = bars_table.slice(0, 3000)
    with pytest.raises(Interrupted):
        with open_output(str(path), bars_table.schema) as sink:
            for batch in accepted.to_batches(max_chunksize=1000):
                sink.write(batch)
            raise Interrupted(15)
    assert path.exists()
    assert leftovers(tmp_path) == []
    back = read_all(path)
    assert_same_table(back.select(BARS.column_names), accepted, check_metadata=False)


def test_keyboard_interrupt_also_commits(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "k.parquet"
    with pytest.raises(KeyboardInterrupt):
        with open_output(str(path), bars_table.schema) as sink:
            sink.write(bars_table.to_batches(max_chunksize=10)[0])
            raise KeyboardInterrupt
    assert pq.read_table(path).num_rows == 10


def test_nothing_under_final_name_until_commit(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "late.parquet"
    with open_output(str(path), bars_table.schema) as sink:
        sink.write(bars_table.to_batches(max_chunksize=100)[0])
        assert not path.exists()
        assert len(leftovers(tmp_path)) == 1
    assert path.exists() and leftovers(tmp_path) == []


def test_output_parent_directories_created(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "a" / "b" / "bars.parquet"
    write_all(path, bars_table.slice(0, 10))
    assert pq.read_table(path).num_rows == 10


@pytest.mark.parametrize("name", ["empty.parquet", "empty.arrows", "empty.arrow"])
def test_empty_output_file_is_valid(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with open_output(str(path), bars_schema()):
        pass
    back = read_all(path)
    assert back.num_rows == 0


def test_empty_dataset_output_commits(tmp_path: Path) -> None:
    """BUG demonstration: committing a dataset sink that got no rows raises FileNotFoundError
    (ds.write_dataset writes nothing for an empty table, then os.replace finds no temp directory)."""
    path = tmp_path / "empty_ds"
    with open_output(str(path), bars_schema()):
        pass
    assert leftovers(tmp_path) == []


# -- A6: watermarks ---------------------------------------------------------------------
def test_watermarks_round_trip_through_arrows(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "wm.arrows"
    b1, b2, b3 = bars_table.slice(0, 30).to_batches(max_chunksize=10)
    with open_output(str(path), bars_table.schema) as sink:
        sink.write(b1)
        sink.watermark(Watermark(1_000))
        sink.write(b2)
        sink.watermark(Watermark(2_000))
        sink.watermark(Watermark(3_000))
        sink.write(b3)
    with open_input(str(path), expect=(BARS,)) as src:
        items = list(src)
    kinds = ["wm" if isinstance(i, Watermark) else "batch" for i in items]
    assert kinds == ["batch", "wm", "batch", "wm", "wm", "batch"]
    assert [i.ts_ns for i in items if isinstance(i, Watermark)] == [1_000, 2_000, 3_000]
    batches = [i for i in items if isinstance(i, pa.RecordBatch)]
    assert [b.num_rows for b in batches] == [10, 10, 10]
    assert src.rows_read == 30


def test_watermarks_not_stored_in_ipc_file(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "wm.arrow"
    with open_output(str(path), bars_table.schema) as sink:
        sink.write(bars_table.to_batches(max_chunksize=10)[0])
        sink.watermark(Watermark(5))
    with open_input(str(path), expect=(BARS,)) as src:
        items = list(src)
    assert len(items) == 1 and isinstance(items[0], pa.RecordBatch)


def test_read_all_drops_watermarks(tmp_path: Path, bars_table: pa.Table) -> None:
    path = tmp_path / "wm2.arrows"
    with open_output(str(path), bars_table.schema) as sink:
        sink.watermark(Watermark(1))
        sink.write(bars_table.to_batches(max_chunksize=7)[0])
        sink.watermark(Watermark(2))
    assert read_all(path).num_rows == 7

"""Market data for learning: a features table as per-symbol time series, split by time, normalised.

`prepare` turns a `features` stream (schemas.FEATURES) into a `MarketData`: one
time-ordered series per (venue, symbol), leading warm-up rows dropped, a
float32 feature matrix and the open prices the environment fills at (a
decision at the close of bar t fills at the open of bar t+1).

Everything that separates what a model may learn from what it is judged on is
here, so that it is done one way (DESIGN principle 5):

- `split_by_time` and `walk_forward` cut at times common to all symbols; rows
  are never shuffled, so no test bar precedes a training bar of any symbol.
- `Normaliser.fit` sees the training split only; its statistics are saved with
  the model (`to_dict`) and applied unchanged to validation, test and live data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from varon_cli.errors import InputError, UsageError
from varon_cli.intervals import parse_interval
from varon_cli.schemas import FEATURE_HASH_KEY, FEATURES, INTERVAL_KEY, KIND_KEY, TS

# A series needs a decision bar plus the two opens after it (entry and exit of the holding period).
MIN_SERIES_ROWS = 3
_BAR_COLUMNS = frozenset(FEATURES.column_names)


def iso(ns: int) -> str:
    """A time in ns since the epoch as ISO 8601 UTC, for messages and fingerprints."""
    seconds, rest = divmod(int(ns), 1_000_000_000)
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{rest:09d}Z".replace(".000000000Z", "Z")


@dataclass(frozen=True, eq=False)
class MarketData:
    """Several symbols' bars as one matrix, series after series, each in time order.

    Rows `offsets[i]:offsets[i+1]` are the series of `keys[i]` = (venue, symbol).
    `window` is the [start, end) time range a split selected (None: unbounded).
    """

    features: np.ndarray  # float32 [rows, n_features]
    columns: tuple[str, ...]
    ts: np.ndarray  # int64 ns, bar open time
    open: np.ndarray  # float64
    close: np.ndarray  # float64
    offsets: np.ndarray  # int64 [n_series + 1]
    keys: tuple[tuple[str, str], ...]
    interval_ns: int
    feature_hash: str = ""
    window: tuple[int | None, int | None] = (None, None)

    @property
    def n_rows(self) -> int:
        return int(self.ts.shape[0])

    @property
    def n_series(self) -> int:
        return len(self.keys)

    @property
    def n_features(self) -> int:
        return len(self.columns)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def series_index(self) -> np.ndarray:
        """The series each row belongs to."""
        return np.repeat(np.arange(self.n_series), self.lengths)

    @property
    def next_open(self) -> np.ndarray:
        """The price a decision at the close of each bar fills at: the next bar's open (NaN at a series' end)."""
        out = np.full(self.n_rows, np.nan)
        out[:-1] = self.open[1:]
        out[self.offsets[1:] - 1] = np.nan
        return out

    def series(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def time_range(self) -> tuple[int, int]:
        """First and last bar open time over all series."""
        return int(self.ts.min()), int(self.ts.max())

    def select_time(self, start: int | None, end: int | None, min_rows: int = MIN_SERIES_ROWS) -> MarketData:
        """Rows with start <= ts < end; a series left with fewer than `min_rows` rows is left out.

        A symbol listed after the cutoff has no training rows; leaving its short
        piece out is what lets several symbols with different histories share
        one cutoff. The caller checks the result is not empty.
        """
        mask = np.ones(self.n_rows, dtype=bool)
        if start is not None:
            mask &= self.ts >= start
        if end is not None:
            mask &= self.ts < end
        seen = np.concatenate([[0], np.cumsum(mask)])
        counts = seen[self.offsets[1:]] - seen[self.offsets[:-1]]
        keep_series = counts >= min_rows
        mask &= keep_series[self.series_index]
        offsets = np.concatenate([[0], np.cumsum(counts[keep_series])]).astype(np.int64)
        return replace(
            self, features=self.features[mask], ts=self.ts[mask], open=self.open[mask], close=self.close[mask],
            offsets=offsets, keys=tuple(k for k, ok in zip(self.keys, keep_series) if ok), window=(start, end),
        )


# -- preparing a features table ----------------------------------------------------------------------

def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary-encoded strings as plain strings (readers accept both)."""
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _default_feature_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if pa.types.is_float64(f.type) and f.name not in _BAR_COLUMNS]


def _check_feature_columns(table: pa.Table, feature_columns: list[str] | None) -> list[str]:
    if feature_columns is None:
        columns = _default_feature_columns(table)
        if not columns:
            raise InputError("features table has no feature columns (float64 columns beyond the bars columns)")
        return columns
    columns = list(feature_columns)
    if not columns:
        raise InputError("no feature columns given")
    if len(set(columns)) != len(columns):
        raise InputError(f"feature columns repeat a name: {', '.join(columns)}")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(f"features table lacks feature column(s) {', '.join(missing)}")
    for c in columns:
        t = table.schema.field(c).type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            raise InputError(f"feature column {c!r} has type {t}; a feature must be numeric")
    return columns


def _interval_ns(table: pa.Table, ts: np.ndarray, offsets: np.ndarray) -> int:
    """The bar interval from varon.interval metadata, else the most common step between bars."""
    raw = (table.schema.metadata or {}).get(INTERVAL_KEY)
    if raw is not None:
        try:
            return parse_interval(raw.decode())
        except UsageError as exc:
            raise InputError(f"features metadata varon.interval: {exc.message}") from None
    steps = np.diff(ts)
    steps[offsets[1:-1] - 1] = 0  # no step across series
    steps = steps[steps > 0]
    if steps.size == 0:
        raise InputError("cannot tell the bar interval: no varon.interval metadata and no two bars in a series")
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def prepare(features: pa.Table, feature_columns: list[str] | None = None,
            min_rows: int = MIN_SERIES_ROWS) -> MarketData:
    """A features table as MarketData: grouped by (venue, symbol), sorted by time, warm-up dropped.

    Leading rows flagged `warmup` are dropped from each series; after them every
    feature value must be finite, and so must the open and close prices, else an
    InputError names the column, the symbol and the first bad bar's time. A
    series with fewer than `min_rows` rows left is refused, as are two bars of
    one series with the same time.
    """
    kind = (features.schema.metadata or {}).get(KIND_KEY)
    if kind is not None and kind != b"features":
        raise InputError(f"expected a features stream, got {kind.decode(errors='replace')}")
    required = ("ts", "venue", "symbol", "open", "close")
    missing = [c for c in required if c not in features.column_names]
    if missing:
        raise InputError(f"features table lacks column(s) {', '.join(missing)}")
    columns = _check_feature_columns(features, feature_columns)
    min_rows = max(int(min_rows), MIN_SERIES_ROWS)

    table = features.select(
        list(dict.fromkeys([*required, *columns, *(["warmup"] if "warmup" in features.column_names else [])]))
    )
    table = table.set_column(0, "ts", table["ts"].cast(TS))
    for name in ("venue", "symbol"):
        col = _plain(table[name])
        if col.null_count:
            raise InputError(f"features table has null {name} values")
        table = table.set_column(table.column_names.index(name), name, col)
    if table["ts"].null_count:
        raise InputError("features table has null ts values")
    table = table.sort_by([("venue", "ascending"), ("symbol", "ascending"), ("ts", "ascending")])

    n = table.num_rows
    venue, symbol = table["venue"].combine_chunks(), table["symbol"].combine_chunks()
    if n:
        change = pc.or_(pc.not_equal(venue[1:], venue[:-1]), pc.not_equal(symbol[1:], symbol[:-1]))
        starts = np.concatenate([[0], np.flatnonzero(change.to_numpy(zero_copy_only=False)) + 1]).astype(np.int64)
    else:
        starts = np.zeros(0, np.int64)
    keys = tuple((venue[int(i)].as_py(), symbol[int(i)].as_py()) for i in starts)
    raw_offsets = np.concatenate([starts, [n]]).astype(np.int64)
    if not keys:
        raise InputError("features table is empty")

    ts = table["ts"].cast(pa.int64()).to_numpy()
    if "warmup" in table.column_names:
        warm = table["warmup"].fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    else:
        warm = np.zeros(n, dtype=bool)
    # drop only the leading warm-up rows of each series: a row counts as warm-up while all rows before it are
    series_of_row = np.repeat(np.arange(len(keys)), np.diff(raw_offsets))
    seen_ready = np.cumsum(~warm)
    before = np.concatenate([[0], seen_ready])[raw_offsets[:-1]]
    keep = (seen_ready - before[series_of_row]) > 0

    lengths = np.add.reduceat(keep.astype(np.int64), raw_offsets[:-1])
    for (v, s), length, total in zip(keys, lengths, np.diff(raw_offsets)):
        if length < min_rows:
            raise InputError(f"series {v}/{s} has {length} bars after warm-up ({total} in all); "
                             f"need at least {min_rows}")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ts = ts[keep]
    row_key = series_of_row[keep]

    dup = np.flatnonzero((np.diff(ts) <= 0) & (row_key[1:] == row_key[:-1]))
    if dup.size:
        v, s = keys[row_key[dup[0]]]
        raise InputError(f"series {v}/{s} has two bars at {iso(ts[dup[0] + 1])}")

    def finite(name: str) -> np.ndarray:
        values = table[name].cast(pa.float64()).fill_null(np.nan).to_numpy()[keep]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            v, s = keys[row_key[bad[0]]]
            raise InputError(f"column {name!r} is {values[bad[0]]} at {v}/{s} {iso(ts[bad[0]])} after warm-up; "
                             "values must be finite once warm")
        return values

    prices = {}
    for name in ("open", "close"):
        prices[name] = finite(name)
        bad = np.flatnonzero(prices[name] <= 0)
        if bad.size:
            v, s = keys[row_key[bad[0]]]
            raise InputError(f"column {name!r} is {prices[name][bad[0]]} at {v}/{s} {iso(ts[bad[0]])}; "
                             "prices must be positive")
    matrix = np.empty((int(keep.sum()), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        values = finite(name)
        matrix[:, j] = values
        big = np.flatnonzero(~np.isfinite(matrix[:, j]))
        if big.size:
            v, s = keys[row_key[big[0]]]
            raise InputError(f"column {name!r} is {values[big[0]]} at {v}/{s} {iso(ts[big[0]])}: beyond float32")

    return MarketData(
        features=matrix, columns=tuple(columns), ts=ts, open=prices["open"], close=prices["close"],
        offsets=offsets, keys=keys, interval_ns=_interval_ns(features, ts, offsets),
        feature_hash=((features.schema.metadata or {}).get(FEATURE_HASH_KEY) or b"").decode(),
    )


def fingerprint(features: pa.Table) -> dict:
    """What a model was trained on, to record with it: symbols, time range, rows, and a content hash.

    The hash is sha256 over the Arrow IPC stream of the table's columns with the
    schema metadata dropped and the chunks combined, so it depends on the names,
    types and values only (not on how the table was batched); the feature spec
    hash and interval are reported beside it.
    """
    meta = features.schema.metadata or {}
    plain = features.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, plain.schema) as writer:
        for batch in plain.to_batches():
            writer.write_batch(batch)
    out: dict = {
        "rows": features.num_rows,
        "columns": features.column_names,
        "sha256": hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest(),
        "interval": (meta.get(INTERVAL_KEY) or b"").decode(),
        "feature_hash": (meta.get(FEATURE_HASH_KEY) or b"").decode(),
        "symbols": [],
        "start": None,
        "end": None,
    }
    if {"venue", "symbol"} <= set(features.column_names) and features.num_rows:
        keys = pa.table({"v": _plain(features["venue"]), "s": _plain(features["symbol"])})
        pairs = keys.group_by(["v", "s"]).aggregate([])
        out["symbols"] = sorted(f"{v}/{s}" for v, s in zip(pairs["v"].to_pylist(), pairs["s"].to_pylist()))
    if "ts" in features.column_names and features.num_rows:
        ts = features["ts"].cast(TS).cast(pa.int64())
        out["start"], out["end"] = iso(pc.min(ts).as_py()), iso(pc.max(ts).as_py())
    return out


# -- splits ------------------------------------------------------------------------------------------

def _checked_split(data: MarketData, name: str, start: int | None, end: int | None, min_rows: int) -> MarketData:
    part = data.select_time(start, end, min_rows)
    if part.n_series == 0:
        where = f"[{iso(start) if start is not None else 'start'}, {iso(end) if end is not None else 'end'})"
        raise InputError(f"the {name} split {where} has no series with at least {min_rows} bars; "
                         "use more data, other fractions or fewer folds")
    return part


def _times(data: MarketData) -> np.ndarray:
    """Every bar time of any symbol, once: the axis common cutoffs are chosen on."""
    return np.unique(data.ts)


def split_by_time(data: MarketData, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  min_rows: int = MIN_SERIES_ROWS) -> tuple[MarketData, MarketData, MarketData]:
    """(train, valid, test) by time: two cutoffs common to all symbols, train < c1 <= valid < c2 <= test.

    The cutoffs sit at the given fractions of the distinct bar times of all
    symbols together. A split's piece of a series shorter than `min_rows`
    (e.g. a recurrent model's sequence length) is left out; a split with no
    piece left is an InputError.
    """
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise UsageError(f"split fractions {fractions}: need three positive fractions summing to 1")
    min_rows = max(int(min_rows), MIN_SERIES_ROWS)
    times = _times(data)
    i1 = int(round(fractions[0] * times.size))
    i2 = int(round((fractions[0] + fractions[1]) * times.size))
    if not 0 < i1 < i2 < times.size:
        raise InputError(f"{times.size} distinct bar times are too few to split {fractions}")
    c1, c2 = int(times[i1]), int(times[i2])
    return (_checked_split(data, "train", None, c1, min_rows), _checked_split(data, "valid", c1, c2, min_rows),
            _checked_split(data, "test", c2, None, min_rows))


def walk_forward(data: MarketData, n: int, train_fraction: float = 0.5, expanding: bool = True,
                 min_rows: int = MIN_SERIES_ROWS) -> list[tuple[MarketData, MarketData, MarketData]]:
    """n rolling folds of (train, valid, test), each later in time than the last.

    The first `train_fraction` of the distinct bar times is the first fold's
    training window; the rest is cut into n equal blocks, and fold k validates
    on the first half of block k and tests on its second half. Tests of
    different folds never overlap, so together they are one out-of-sample record.
    Training ends where block k starts: with `expanding` it starts at the first
    bar (all history so far), else it is a rolling window as long as the first
    fold's (the market's recent regime only).
    """
    if n < 1:
        raise UsageError(f"walk-forward folds = {n}: need at least 1")
    if not 0 < train_fraction < 1:
        raise UsageError(f"walk-forward train fraction {train_fraction}: must be in (0, 1)")
    min_rows = max(int(min_rows), MIN_SERIES_ROWS)
    times = _times(data)
    first = int(round(train_fraction * times.size))
    edges = np.round(np.linspace(first, times.size, n + 1)).astype(np.int64)
    folds = []
    for k in range(n):
        lo, hi = int(edges[k]), int(edges[k + 1])
        mid = (lo + hi) // 2
        if not (0 < lo < mid < hi):
            raise InputError(f"{times.size} distinct bar times are too few for {n} walk-forward folds")
        start = None if expanding else int(times[max(lo - first, 0)])
        end = int(times[hi]) if hi < times.size else None
        folds.append((_checked_split(data, f"fold {k} train", start, int(times[lo]), min_rows),
                      _checked_split(data, f"fold {k} valid", int(times[lo]), int(times[mid]), min_rows),
                      _checked_split(data, f"fold {k} test", int(times[mid]), end, min_rows)))
    return folds


# -- normalisation -----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Normaliser:
    """Per-feature z-scores with statistics from the training split, saved with the model.

    `std` is floored at `std_floor` so that a feature constant in training does
    not divide by zero; scores are clipped to +-`clip` (None: no clip) so that a
    feature far outside its training range later cannot swamp the network.
    """

    columns: tuple[str, ...]
    mean: np.ndarray  # float64 [n_features]
    std: np.ndarray  # float64 [n_features], >= std_floor
    clip: float | None = 10.0
    std_floor: float = 1e-6

    @classmethod
    def fit(cls, train: MarketData, clip: float | None = 10.0, std_floor: float = 1e-6) -> Normaliser:
        """Statistics over every row of every series of `train` (and nothing else)."""
        if train.n_rows == 0:
            raise InputError("cannot fit a normaliser on an empty training split")
        x = train.features.astype(np.float64)
        return cls(columns=train.columns, mean=x.mean(axis=0), std=np.maximum(x.std(axis=0), std_floor),
                   clip=clip, std_floor=std_floor)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Scores of a raw [rows, n_features] matrix in this normaliser's column order, as float32."""
        out = (np.asarray(features, dtype=np.float64) - self.mean) / self.std
        if self.clip is not None:
            np.clip(out, -self.clip, self.clip, out=out)
        return out.astype(np.float32)

    def apply(self, data: MarketData) -> MarketData:
        """`data` with its features scored; its columns are matched by name and put in the fitted order."""
        missing = [c for c in self.columns if c not in data.columns]
        if missing:
            raise InputError(f"data lacks feature column(s) the normaliser was fitted on: {', '.join(missing)}")
        order = [data.columns.index(c) for c in self.columns]
        return replace(data, features=self.transform(data.features[:, order]), columns=self.columns)

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "clip": self.clip, "std_floor": self.std_floor}

    @classmethod
    def from_dict(cls, d: dict) -> Normaliser:
        try:
            columns = tuple(str(c) for c in d["columns"])
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
            clip = None if d.get("clip") is None else float(d["clip"])
            std_floor = float(d.get("std_floor", 1e-6))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"normaliser statistics are malformed: {exc}") from None
        if not (mean.shape == std.shape == (len(columns),)) or not np.all(np.isfinite(mean)) or not np.all(std > 0):
            raise InputError("normaliser statistics are malformed: need one finite mean and positive std per column")
        return cls(columns=columns, mean=mean, std=std, clip=clip, std_floor=std_floor)


__all__ = ["MIN_SERIES_ROWS", "MarketData", "Normaliser", "fingerprint", "iso", "prepare", "split_by_time",
           "walk_forward"]

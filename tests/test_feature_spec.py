"""Feature specs: parsing, defaults, the hash, the JSON round trip, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from varon_cli.errors import ConfigError
from varon_cli.features.spec import KINDS, FeatureSpec, load_spec, parse_spec, spec_from_json
from varon_cli.schemas import FEATURES

DEFAULT_TOML = Path(__file__).resolve().parent.parent / "varon_cli" / "features" / "default.toml"


def write(tmp_path: Path, text: str, name: str = "features.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def spec_of(*features: dict) -> FeatureSpec:
    return parse_spec({"feature": list(features)}, "test.toml")


# -- the default spec and parsing ---------------------------------------------

def test_default_spec() -> None:
    spec = load_spec()
    assert spec.source == "built-in default"
    assert spec.columns == [
        "logret_1", "logret_5", "logret_15", "logret_60", "ema_ratio_12", "ema_ratio_48",
        "macd_line", "macd_signal", "macd_hist", "rsi_14", "bb_pctb_20", "natr_14", "rvol_20", "volume_z_20",
        "taker_buy_ratio", "vwap_dev", "time_day_sin", "time_day_cos", "time_week_sin", "time_week_cos"]
    assert spec.lookback == 60
    assert len(spec.hash) == 16 and int(spec.hash, 16) >= 0


def test_default_file_loaded_by_path_has_the_same_hash() -> None:
    by_path = load_spec(DEFAULT_TOML)
    assert by_path.source == str(DEFAULT_TOML)
    assert by_path.hash == load_spec().hash
    assert by_path.features == load_spec().features


def test_defaults_fill_missing_parameters() -> None:
    spec = spec_of({"kind": "macd"}, {"kind": "bollinger_pctb"}, {"kind": "log_return"})
    assert [f.params for f in spec.features] == [{"fast": 12, "slow": 26, "signal": 9},
                                                 {"period": 20, "nbdev": 2.0}, {"horizon": 1}]
    assert spec.columns == ["macd_line", "macd_signal", "macd_hist", "bb_pctb_20", "logret_1"]
    assert spec.hash == spec_of({"kind": "macd", "fast": 12, "slow": 26, "signal": 9},
                                {"kind": "bollinger_pctb", "period": 20, "nbdev": 2.0},
                                {"kind": "log_return", "horizon": 1}).hash


def test_explicit_name() -> None:
    spec = spec_of({"kind": "rsi", "period": 7, "name": "fast_rsi"}, {"kind": "macd", "name": "m"})
    assert spec.columns == ["fast_rsi", "m_line", "m_signal", "m_hist"]


def test_integer_nbdev_is_read_as_float() -> None:
    spec = spec_of({"kind": "bollinger_pctb", "nbdev": 2})
    assert spec.features[0].params["nbdev"] == 2.0 and isinstance(spec.features[0].params["nbdev"], float)
    assert spec.hash == spec_of({"kind": "bollinger_pctb", "nbdev": 2.0}).hash


# -- hash ---------------------------------------------------------------------

def _variants() -> list[FeatureSpec]:
    """The default spec, then the default spec with one thing changed at a time."""
    base = load_spec()
    entries = [{"kind": f.kind, **f.params} for f in base.features]
    out = [parse_spec({"feature": entries}, "variant")]
    for i, entry in enumerate(entries):
        for key, value in entry.items():
            if key == "kind":
                continue
            changed = [dict(e) for e in entries]
            changed[i][key] = value + (0.5 if isinstance(value, float) else 1)
            if changed[i]["kind"] == "macd" and changed[i]["fast"] >= changed[i]["slow"]:
                continue
            out.append(parse_spec({"feature": changed}, "variant"))
        renamed = [dict(e) for e in entries]
        renamed[i]["name"] = f"renamed_{i}"
        out.append(parse_spec({"feature": renamed}, "variant"))
    out.append(parse_spec({"feature": entries[::-1]}, "variant"))  # order of columns matters
    out.append(parse_spec({"feature": entries[:-1]}, "variant"))
    return out


def test_hash_changes_with_every_parameter() -> None:
    variants = _variants()
    assert len(variants) > 30
    assert variants[0].hash == load_spec().hash
    hashes = [v.hash for v in variants]
    assert len(set(hashes)) == len(hashes)


def test_hash_is_stable_across_reparsing_and_formatting(tmp_path: Path) -> None:
    a = write(tmp_path, 'version = 1\n[[feature]]\nkind = "rsi"\nperiod = 14\n[[feature]]\nkind = "macd"\n'
                        'fast = 12\nslow = 26\nsignal = 9\n', "a.toml")
    b = write(tmp_path, '# comment\n\n[[feature]]\nperiod = 14  # same\nkind = "rsi"\n\n[[feature]]\n'
                        'signal = 9\nkind = "macd"\nslow = 26\n', "b.toml")
    assert load_spec(a).hash == load_spec(a).hash == load_spec(b).hash
    assert load_spec(a).canonical_json() == load_spec(b).canonical_json()
    assert load_spec(a).hash != load_spec(write(tmp_path, '[[feature]]\nkind = "rsi"\nperiod = 15\n')).hash


def test_hash_is_pinned() -> None:
    """The hash is a function of the canonical JSON alone; a change here invalidates every trained model."""
    spec = spec_of({"kind": "rsi", "period": 14})
    assert spec.canonical_json() == '{"features":[{"kind":"rsi","name":"rsi_14","params":{"period":14}}],"version":1}'
    import hashlib

    assert spec.hash == hashlib.sha256(spec.canonical_json().encode()).hexdigest()[:16]


def test_canonical_json_is_canonical() -> None:
    text = load_spec().canonical_json()
    data = json.loads(text)
    assert json.dumps(data, sort_keys=True, separators=(",", ":")) == text
    assert data["version"] == 1


def test_spec_from_json_round_trips() -> None:
    for spec in _variants()[:12] + [load_spec()]:
        again = spec_from_json(spec.canonical_json())
        assert again.features == spec.features
        assert again.columns == spec.columns
        assert again.lookback == spec.lookback
        assert again.hash == spec.hash
        assert again.canonical_json() == spec.canonical_json()
    bb = spec_from_json(spec_of({"kind": "bollinger_pctb", "nbdev": 2.5}).canonical_json())
    assert bb.features[0].params == {"period": 20, "nbdev": 2.5}
    assert isinstance(bb.features[0].params["period"], int)


def test_lookbacks_per_kind() -> None:
    spec = spec_of({"kind": "log_return", "horizon": 7}, {"kind": "ema_ratio", "period": 9},
                   {"kind": "macd", "fast": 3, "slow": 10, "signal": 4}, {"kind": "rsi", "period": 6},
                   {"kind": "bollinger_pctb", "period": 8}, {"kind": "natr", "period": 5},
                   {"kind": "realized_vol", "period": 11}, {"kind": "volume_zscore", "period": 13},
                   {"kind": "taker_buy_ratio"}, {"kind": "vwap_deviation"}, {"kind": "time_encoding"})
    assert [f.lookback for f in spec.features] == [7, 8, 12, 6, 7, 5, 11, 12, 0, 0, 0]
    assert spec.lookback == 12


# -- errors -------------------------------------------------------------------

def _raises(tmp_path: Path, text: str, *fragments: str) -> str:
    """load_spec on a file with `text` raises a ConfigError naming the file and every fragment."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message, message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


RSI = '[[feature]]\nkind = "rsi"\n'


def test_unknown_kind(tmp_path: Path) -> None:
    msg = _raises(tmp_path, RSI + '[[feature]]\nkind = "stochastic"\n', "feature[1]", "stochastic")
    assert "rsi" in msg and "macd" in msg  # lists what is known


def test_missing_kind(tmp_path: Path) -> None:
    _raises(tmp_path, '[[feature]]\nperiod = 3\n', "feature[0]", "kind")


@pytest.mark.parametrize("setting", ['period = "14"', "period = 14.5", "period = true", "period = 0",
                                     "period = -3", "period = [14]"])
def test_bad_integer_parameter(tmp_path: Path, setting: str) -> None:
    _raises(tmp_path, RSI + RSI.replace('"rsi"', '"ema_ratio"') + setting + "\n", "feature[1]", "period",
            "positive integer")


@pytest.mark.parametrize("setting", ['nbdev = "2"', "nbdev = 0", "nbdev = -1.0", "nbdev = false", "nbdev = nan"])
def test_bad_float_parameter(tmp_path: Path, setting: str) -> None:
    _raises(tmp_path, '[[feature]]\nkind = "bollinger_pctb"\n' + setting + "\n", "feature[0]", "nbdev",
            "positive number")


@pytest.mark.parametrize("fast,slow", [(26, 26), (30, 26)])
def test_macd_fast_must_be_below_slow(tmp_path: Path, fast: int, slow: int) -> None:
    _raises(tmp_path, RSI * 2 + f'[[feature]]\nkind = "macd"\nfast = {fast}\nslow = {slow}\n', "feature[2]",
            "fast", "slow")


@pytest.mark.parametrize("kind", ["bollinger_pctb", "volume_zscore", "realized_vol"])
def test_rolling_std_needs_two_rows(tmp_path: Path, kind: str) -> None:
    _raises(tmp_path, f'[[feature]]\nkind = "{kind}"\nperiod = 1\n', "feature[0]", "period")


@pytest.mark.parametrize("features,column", [
    (RSI + RSI, "rsi_14"),
    ('[[feature]]\nkind = "rsi"\nname = "x"\n[[feature]]\nkind = "ema_ratio"\nname = "x"\n', "x"),
    ('[[feature]]\nkind = "macd"\nname = "m"\n[[feature]]\nkind = "rsi"\nname = "m_hist"\n', "m_hist"),
    ('[[feature]]\nkind = "time_encoding"\n[[feature]]\nkind = "rsi"\nname = "time_day_sin"\n', "time_day_sin"),
])
def test_duplicate_columns(tmp_path: Path, features: str, column: str) -> None:
    _raises(tmp_path, features, "twice", repr(column))


@pytest.mark.parametrize("name", ["close", "warmup"])
def test_feature_names_cannot_shadow_stream_columns(name: str) -> None:
    """A feature column named like a bars column (or `warmup`) would give the features stream two columns of
    that name: the spec must refuse it."""
    assert name in FEATURES.column_names
    with pytest.raises(ConfigError, match=name):
        spec_of({"kind": "rsi", "name": name})


@pytest.mark.parametrize("name", ['"1st"', '"has space"', '"a-b"', "5"])
def test_bad_name(tmp_path: Path, name: str) -> None:
    _raises(tmp_path, f'[[feature]]\nkind = "rsi"\nname = {name}\n', "feature[0]", "name")


def test_unknown_setting(tmp_path: Path) -> None:
    _raises(tmp_path, RSI + '[[feature]]\nkind = "rsi"\nperiods = 3\n', "feature[1]", "periods")


def test_setting_of_another_kind(tmp_path: Path) -> None:
    _raises(tmp_path, '[[feature]]\nkind = "rsi"\nhorizon = 3\n', "feature[0]", "horizon", "rsi")


def test_invalid_toml(tmp_path: Path) -> None:
    _raises(tmp_path, '[[feature]]\nkind = "rsi\n', "invalid TOML")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        load_spec(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value)


@pytest.mark.parametrize("text", ["version = 1\n", "feature = []\n", '[feature]\nkind = "rsi"\n',
                                  'feature = "rsi"\n', ""])
def test_missing_features(tmp_path: Path, text: str) -> None:
    _raises(tmp_path, text, "[[feature]]")


def test_feature_that_is_not_a_table(tmp_path: Path) -> None:
    _raises(tmp_path, "feature = [1]\n", "feature[0]", "table")


def test_wrong_version(tmp_path: Path) -> None:
    _raises(tmp_path, "version = 2\n" + RSI, "version")


def test_error_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec({"feature": [{"kind": "nope"}]}, "somewhere.toml")
    assert info.value.exit_code == 78
    assert info.value.message.startswith("somewhere.toml: feature[0]")


def test_every_kind_parses_with_its_defaults() -> None:
    spec = spec_of(*({"kind": k} for k in KINDS))
    assert [f.kind for f in spec.features] == list(KINDS)
    assert len(spec.columns) == sum(len(info.outputs) for info in KINDS.values())

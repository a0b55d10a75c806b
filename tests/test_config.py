"""varon_cli.config: layering (defaults < file < environment < flags), validation, redaction."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from varon_cli.config import REDACTED, VaronConfig, env_layer, load_config
from varon_cli.errors import ConfigError, VaronError


def write(tmp_path: Path, text: str, name: str = "varon.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- layering ----------------------------------------------------------------------
def test_defaults_with_empty_environment() -> None:
    cfg = load_config(environ={})
    assert cfg == VaronConfig()
    assert cfg.bars.interval == "1m" and cfg.bars.lateness == "0s" and cfg.bars.late == "auto"
    assert cfg.bars.partial == "flag" and cfg.features.warmup == "flag" and cfg.features.spec == ""
    assert cfg.log.level == "info" and cfg.log.format == "text" and cfg.db.dsn == ""


def test_file_beats_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[bars]\ninterval = "5m"\n[features]\nwarmup = "drop"\n')
    cfg = load_config(path, environ={})
    assert cfg.bars.interval == "5m"
    assert cfg.features.warmup == "drop"
    assert cfg.bars.late == "auto"  # keys the file does not name keep their defaults


def test_environment_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[bars]\ninterval = "5m"\nlate = "fail"\n')
    cfg = load_config(path, environ={"VARON_BARS__INTERVAL": "1h"})
    assert cfg.bars.interval == "1h"
    assert cfg.bars.late == "fail"


def test_flags_beat_environment_and_none_flags_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, '[bars]\ninterval = "5m"\nlateness = "2s"\n')
    cfg = load_config(
        path,
        overrides={"bars": {"interval": "1s", "lateness": None, "late": None}},
        environ={"VARON_BARS__INTERVAL": "1h", "VARON_BARS__LATE": "drop"},
    )
    assert cfg.bars.interval == "1s"  # flag
    assert cfg.bars.late == "drop"  # environment, the flag was not given
    assert cfg.bars.lateness == "2s"  # file


def test_varon_config_variable_names_the_file(tmp_path: Path) -> None:
    env_file = write(tmp_path, '[bars]\ninterval = "15m"\n', "env.toml")
    flag_file = write(tmp_path, '[bars]\ninterval = "30m"\n', "flag.toml")
    assert load_config(environ={"VARON_CONFIG": str(env_file)}).bars.interval == "15m"
    # An explicit --config path wins over $VARON_CONFIG.
    assert load_config(flag_file, environ={"VARON_CONFIG": str(env_file)}).bars.interval == "30m"


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VARON_BARS__INTERVAL", "5m")
    assert load_config().bars.interval == "5m"
    monkeypatch.delenv("VARON_BARS__INTERVAL")
    assert load_config(environ={}).bars.interval == "1m"


def test_env_layer_shape() -> None:
    layer = env_layer(
        {
            "VARON_BARS__INTERVAL": "5m",
            "VARON_LOG__LEVEL": "debug",
            "VARON_CONFIG": "/x.toml",  # not a setting
            "HOME": "/root",
            "VARON_DB__DSN": "postgresql://h/db",
        }
    )
    assert layer == {"bars": {"interval": "5m"}, "log": {"level": "debug"}, "db": {"dsn": "postgresql://h/db"}}


def test_env_values_are_toml_scalars() -> None:
    assert env_layer({"VARON_A__B": "3"}) == {"a": {"b": 3}}
    assert env_layer({"VARON_A__B": "true"}) == {"a": {"b": True}}
    assert env_layer({"VARON_A__B": '"quoted"'}) == {"a": {"b": "quoted"}}
    assert env_layer({"VARON_A__B": "5m"}) == {"a": {"b": "5m"}}


def test_config_is_frozen() -> None:
    cfg = load_config(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bars.interval = "5m"  # type: ignore[misc]


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "section,key,value,path",
    [
        ("bars", "late", "x", "bars.late"),
        ("bars", "interval", "7x", "bars.interval"),
        ("bars", "interval", "7m", "bars.interval"),  # does not divide a day
        ("bars", "lateness", "-1s", "bars.lateness"),
        ("bars", "partial", "maybe", "bars.partial"),
        ("features", "warmup", "zero", "features.warmup"),
        ("log", "level", "loud", "log.level"),
        ("log", "format", "xml", "log.format"),
    ],
)
def test_bad_value_names_its_key(tmp_path: Path, section: str, key: str, value: str, path: str) -> None:
    file = write(tmp_path, f'[{section}]\n{key} = "{value}"\n')
    attempts = {
        "flag": lambda: load_config(overrides={section: {key: value}}, environ={}),
        "env": lambda: load_config(environ={f"VARON_{section.upper()}__{key.upper()}": value}),
        "file": lambda: load_config(file, environ={}),
    }
    for source, attempt in attempts.items():
        with pytest.raises(ConfigError) as info:
            attempt()
        assert path in info.value.message, (source, info.value.message)
        assert repr(value) in info.value.message, (source, info.value.message)
        assert info.value.exit_code == 78


def test_bars_late_x_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"bars\.late = 'x': expected one of auto, drop, fail"):
        load_config(overrides={"bars": {"late": "x"}}, environ={})


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^bars\.nope: unknown setting"):
        load_config(write(tmp_path, "[bars]\nnope = 1\n"), environ={})
    with pytest.raises(ConfigError, match=r"^strategy: unknown setting"):
        load_config(write(tmp_path, "[strategy]\nx = 1\n", "s.toml"), environ={})
    with pytest.raises(ConfigError, match=r"bars\.intervl"):
        load_config(environ={"VARON_BARS__INTERVL": "5m"})


def test_wrong_type_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bars\.interval = '5': unknown interval"):
        load_config(write(tmp_path, "[bars]\ninterval = 5\n"), environ={})
    assert load_config(environ={"VARON_BARS__LATENESS": "0"}).bars.lateness == "0"
    with pytest.raises(ConfigError, match=r"log\.format = True: expected a str"):
        load_config(write(tmp_path, "[log]\nformat = true\n", "b.toml"), environ={})
    with pytest.raises(ConfigError, match=r"^bars: expected a table"):
        load_config(write(tmp_path, 'bars = "5m"\n', "t.toml"), environ={})


def test_missing_and_invalid_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="absent.toml: config file not found"):
        load_config(missing, environ={})
    broken = write(tmp_path, "[bars\ninterval = '5m'\n", "broken.toml")
    with pytest.raises(ConfigError) as info:
        load_config(broken, environ={})
    assert str(broken) in info.value.message and "invalid TOML" in info.value.message
    assert "\n" not in info.value.message


def test_conflicting_environment_names_are_a_config_error() -> None:
    """BUG demonstration: a value and a sub-table for the same key in the environment
    (VARON_BARS__INTERVAL and VARON_BARS__INTERVAL__X) crash env_layer with a TypeError
    instead of a ConfigError naming the key."""
    with pytest.raises(VaronError):
        load_config(environ={"VARON_BARS__INTERVAL": "5m", "VARON_BARS__INTERVAL__X": "1"})


def test_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"bars": {"interval": "nonsense"}}, environ={})
    assert "\n" not in str(info.value)


# -- redaction ---------------------------------------------------------------------------
def test_dsn_password_redacted() -> None:
    cfg = load_config(environ={"VARON_DB__DSN": "postgresql://u:hunter2@h/db"})
    assert cfg.db.dsn == "postgresql://u:hunter2@h/db"  # the real value is kept for use
    shown = cfg.redacted()
    assert shown["db"]["dsn"] == f"postgresql://u:{REDACTED}@h/db"
    assert "hunter2" not in repr(shown)


def test_keyvalue_dsn_password_redacted() -> None:
    shown = load_config(environ={"VARON_DB__DSN": '"host=h user=u password=hunter2 dbname=db"'}).redacted()
    assert "hunter2" not in repr(shown)
    assert "host=h" in shown["db"]["dsn"]


def test_dsn_without_password_unchanged() -> None:
    shown = load_config(environ={"VARON_DB__DSN": "postgresql://u@h/db"}).redacted()
    assert shown["db"]["dsn"] == "postgresql://u@h/db"


def test_dsn_password_with_empty_user_redacted() -> None:
    """BUG demonstration: a URI with an empty user name keeps its password in `redacted()`."""
    shown = load_config(environ={"VARON_DB__DSN": "postgresql://:hunter2@h/db"}).redacted()
    assert "hunter2" not in repr(shown)


def test_quoted_keyvalue_password_redacted() -> None:
    """BUG demonstration: a quoted key/value password with a space (valid libpq syntax)
    is only partly redacted: `password='hunter 2'` is shown as `password=*** 2'`."""
    shown = load_config(environ={"VARON_DB__DSN": "\"host=h password='hunter 2' dbname=db\""}).redacted()
    assert "2'" not in shown["db"]["dsn"]
    assert "hunter" not in shown["db"]["dsn"]

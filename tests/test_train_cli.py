"""`varon train` as a real process on the bundled real candles, and its model directories in `varon signal|backtest`.

Data: data/sample/btc-eth-5m.parquet -> `varon bars --interval 1h` -> `varon features` (two symbols, 1488 hourly
bars each; its taker_buy_ratio and vwap_dev columns are NaN everywhere, which the trainer drops with a warning).
Training budgets are a few hundred steps: these tests are about the command, its files and its errors; whether
the agents learn is tests/test_train_learning.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from varon_cli.rl.agents.hparams import ALGOS
from varon_cli.schemas import FEATURE_HASH_KEY, FEATURES, SIGNALS
from varon_cli.streamio import open_input

REPO = Path(__file__).resolve().parents[1]
VARON = [sys.executable, "-m", "commands.main"]
pytestmark = pytest.mark.slow

FAST = ["--seeds", "1", "--hparam", "steps=300", "--hparam", "eval_every=150", "--hparam", "learning_starts=100"]
EMPTY_COLUMNS = ("taker_buy_ratio", "vwap_dev")
METRICS = {"total_return", "sharpe", "max_drawdown", "directional_accuracy", "trade_count", "fees"}


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def varon(*args: str | Path, stdin: bytes | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*VARON, *map(str, args)], cwd=REPO, env=env(), input=stdin, capture_output=True,
                          timeout=timeout)


def start(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen([*VARON, *map(str, args)], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish(process: subprocess.Popen, timeout: float = 180) -> subprocess.CompletedProcess:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def varon_together(*commands: list[str | Path]) -> list[subprocess.CompletedProcess]:
    """Independent commands at the same time (two cores; each process starts torch, which dominates)."""
    processes = [start(*command) for command in commands]
    return [finish(p) for p in processes]


def text(done: subprocess.CompletedProcess) -> str:
    return done.stderr.decode(errors="replace")


def one_line_error(done: subprocess.CompletedProcess, command: str) -> str:
    """The failure is reported as a single `varon COMMAND: error: ...` line, never a traceback; returns it."""
    err = text(done)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"varon {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def write_features(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)  # the Arrow schema, with its varon metadata, travels in the Parquet file
    return path


def read_features(path: Path) -> pa.Table:
    return pq.read_table(path)


def with_hash(table: pa.Table, feature_hash: str) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[FEATURE_HASH_KEY] = feature_hash.encode()
    return table.replace_schema_metadata(meta)


def weights(model: Path) -> dict[str, torch.Tensor]:
    """Every tensor in agent.pt, flattened to dotted keys (networks, target, optimiser state)."""
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value) -> None:  # noqa: ANN001
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{prefix}.{i}", item)

    walk("", torch.load(model / "agent.pt", map_location="cpu", weights_only=False))
    return flat


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert any(k.startswith(".online.") for k in wa)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def features_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real data: the bundled 5m candles -> 1h bars -> features."""
    root = tmp_path_factory.mktemp("train-features")
    bars = varon("bars", "--interval", "1h", "-i", "data/sample/btc-eth-5m.parquet")
    assert bars.returncode == 0, text(bars)
    feats = varon("features", "-o", root / "features.parquet", stdin=bars.stdout)
    assert feats.returncode == 0, text(feats)
    return root / "features.parquet"


@pytest.fixture(scope="module")
def trained_model(features_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dqn model directory (with its checkpoints) for the tests that only use or damage one."""
    out = tmp_path_factory.mktemp("trained") / "dqn-model"
    done = varon("train", "--algo", "dqn", "-i", features_file, "--out", out, *FAST)
    assert done.returncode == 0, text(done)
    return out


# -- every algorithm: train, then signal and backtest with the model ---------------------------------

@pytest.mark.parametrize("algo", ALGOS)
def test_every_algo_trains_and_its_model_runs_in_signal_and_backtest(algo: str, features_file: Path,
                                                                   tmp_path: Path) -> None:
    model = tmp_path / f"{algo}-model"
    done = varon("train", "--algo", algo, "-i", features_file, "--out", model, *FAST, "--json")
    assert done.returncode == 0, text(done)
    err = text(done)
    assert "taker_buy_ratio, vwap_dev are NaN everywhere" in err  # dropped with a warning, not a failure

    summary = json.loads(done.stdout)
    assert summary["algo"] == algo
    (fold,) = summary["folds"]
    assert fold["fold"] == 0
    chosen = f"{algo} (seed 0, chosen)"
    assert set(fold["test"]) == {chosen, "buy-and-hold", "ema-cross"}
    for row in fold["test"].values():
        assert set(row) == METRICS
        assert all(isinstance(v, (int, float)) for v in row.values()), row
    assert isinstance(fold["deflated_sharpe"], float) and 0.0 <= fold["deflated_sharpe"] <= 1.0
    assert fold["trials"] == 1
    assert set(fold["validation"]) == {"0"} and fold["validation"]["0"]["steps"] <= 300
    train_w, valid_w, test_w = (fold["windows"][k] for k in ("train", "valid", "test"))
    assert train_w[1] < valid_w[0] <= valid_w[1] < test_w[0] <= test_w[1]

    meta = json.loads((model / "model.json").read_text())
    features = read_features(features_file)
    assert meta["algo"] == algo
    assert meta["feature_hash"] == features.schema.metadata[FEATURE_HASH_KEY].decode()
    computed = [f.name for f in features.schema if f.name not in FEATURES.column_names]
    assert set(EMPTY_COLUMNS) <= set(computed)
    assert meta["feature_columns"] == [c for c in computed if c not in EMPTY_COLUMNS]

    signals_path = tmp_path / "signals.arrows"
    sig, bt = varon_together(["signal", "--model", model, "-i", features_file, "-o", signals_path],
                             ["backtest", "--model", model, "-i", features_file])
    assert sig.returncode == 0, text(sig)
    with open_input(str(signals_path), expect=(SIGNALS,)) as src:
        signals = src.read_all()
    assert signals.num_rows == features.num_rows
    targets = np.asarray(signals["target"].to_numpy(zero_copy_only=False))
    assert set(np.unique(targets)) <= {-1.0, 0.0, 1.0}
    assert np.any(targets != 0.0)  # the model takes positions
    assert set(signals["strategy"].to_pylist()) == {meta["name"]}
    assert all(m and m.endswith(meta["weights_sha256"][:12]) for m in signals["model_id"].to_pylist())

    assert bt.returncode == 0, text(bt)
    report = text(bt)
    assert meta["name"] in report and "buy-and-hold" in report and "Total return" in report and "Sharpe" in report


# -- reproducibility ----------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["rainbow", "drqn"])
def test_the_same_seed_gives_identical_weights(algo: str, features_file: Path, tmp_path: Path) -> None:
    """Rainbow (noisy nets, prioritised replay, n-step, C51) and DRQN (LSTM windows): the most RNG-hungry agents."""
    runs = [tmp_path / "a", tmp_path / "b"]
    for done in varon_together(*(["train", "--algo", algo, "-i", features_file, "--out", out, *FAST] for out in runs)):
        assert done.returncode == 0, text(done)
    assert_same_weights(*runs)


RESUME = ["--algo", "dqn", "--seeds", "1", "--hparam", "steps=6000", "--hparam", "eval_every=200",
          "--hparam", "patience=1000", "--hparam", "learning_starts=100"]


def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(features_file: Path, tmp_path: Path) -> None:
    out, straight = tmp_path / "resumed", tmp_path / "straight"
    checkpoint = out / "checkpoints" / "fold0-seed0.pt"
    reference = start("train", "-i", features_file, "--out", straight, *RESUME)  # uninterrupted, meanwhile
    try:
        with open(tmp_path / "first.log", "wb") as log:
            first = subprocess.Popen([*VARON, "train", "-i", str(features_file), "--out", str(out), *RESUME],
                                     cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=log)
            try:
                deadline = time.monotonic() + 120
                while not checkpoint.exists():
                    assert first.poll() is None, (tmp_path / "first.log").read_text()
                    assert time.monotonic() < deadline, "no checkpoint within 120 s"
                    time.sleep(0.01)
                os.kill(first.pid, signal.SIGKILL)
            finally:
                if first.poll() is None:
                    first.kill()
                first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        assert not (out / "model.json").exists()  # it really was cut short
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["step"]
        assert 0 < saved < 6000 and saved % 200 == 0

        again = varon("train", "-i", features_file, "--out", out, *RESUME)
    finally:
        reference_done = finish(reference)
    assert again.returncode == 0, text(again)
    assert re.search(rf"fold 0 seed 0: resuming at step {saved} from", text(again)), text(again)
    assert reference_done.returncode == 0, text(reference_done)
    assert "resuming" not in text(reference_done)
    assert_same_weights(out, straight)


# -- bad input ---------------------------------------------------------------------------------------

def test_nan_after_warmup_in_a_used_column_fails_before_training_naming_it(features_file: Path,
                                                                           tmp_path: Path) -> None:
    table = read_features(features_file)
    values = table["logret_5"].to_numpy(zero_copy_only=False).copy()
    warm = np.asarray(table["warmup"].to_numpy(zero_copy_only=False), dtype=bool)
    row = int(np.flatnonzero(~warm)[400])
    values[row] = np.nan
    bad = write_features(table.set_column(table.column_names.index("logret_5"), "logret_5",
                                          pa.array(values, pa.float64())), tmp_path / "bad.parquet")
    out = tmp_path / "model"
    done = varon("train", "--algo", "dqn", "-i", bad, "--out", out, *FAST)
    assert done.returncode == 65, text(done)
    line = one_line_error(done, "train")
    assert "'logret_5'" in line and "after warm-up" in line, line
    assert not (out / "checkpoints").exists() and not (out / "model.json").exists()  # refused before training


def test_a_dataset_too_short_to_split_is_a_clear_error(features_file: Path, tmp_path: Path) -> None:
    table = read_features(features_file)
    symbol = np.asarray(table["symbol"].to_pylist())
    warm = np.asarray(table["warmup"].to_numpy(zero_copy_only=False), dtype=bool)
    keep = warm.copy()
    for name in np.unique(symbol):
        rows = np.flatnonzero((symbol == name) & ~warm)
        keep[rows[:10]] = True  # warm-up plus 10 usable bars per symbol: too few for a 70/15/15 split
    short = write_features(table.filter(pa.array(keep)), tmp_path / "short.parquet")
    out = tmp_path / "model"
    done = varon("train", "--algo", "dqn", "-i", short, "--out", out, *FAST)
    assert done.returncode == 65, text(done)
    line = one_line_error(done, "train")
    assert "split" in line and ("use more data" in line or "too few" in line), line
    assert not (out / "model.json").exists()


def test_an_unknown_algo_is_a_usage_error(features_file: Path, tmp_path: Path) -> None:
    done = varon("train", "--algo", "ppo", "-i", features_file, "--out", tmp_path / "m", *FAST)
    assert done.returncode == 64, text(done)
    line = one_line_error(done, "train")
    assert "'ppo'" in line and "dqn" in line and "drqn" in line, line


def test_an_unknown_hparam_key_is_a_usage_error_naming_it(features_file: Path, tmp_path: Path) -> None:
    done = varon("train", "--algo", "ddqn", "-i", features_file, "--out", tmp_path / "m", *FAST,
                 "--hparam", "learning_rate=0.001")
    assert done.returncode == 64, text(done)
    line = one_line_error(done, "train")
    assert "'learning_rate'" in line, line
    assert not (tmp_path / "m").exists()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_meta(edit):  # noqa: ANN001, ANN202
    def apply(model: Path) -> None:
        meta = json.loads((model / "model.json").read_text())
        edit(meta)
        (model / "model.json").write_text(json.dumps(meta))
    return apply


def _drop_feature_columns(meta: dict) -> None:
    del meta["feature_columns"]


def _two_actions(meta: dict) -> None:
    meta["actions"] = [0.0, 1.0]


def _fewer_columns(meta: dict) -> None:
    meta["feature_columns"] = meta["feature_columns"][:-1]


def _short_normaliser(meta: dict) -> None:
    meta["normaliser"]["mean"] = meta["normaliser"]["mean"][:-1]


@pytest.mark.parametrize(("damage", "named"), [
    pytest.param(lambda m: _truncate(m / "agent.pt"), "agent.pt", id="agent.pt-truncated"),
    pytest.param(lambda m: _truncate(m / "model.json"), "model.json", id="model.json-truncated"),
    pytest.param(_edit_meta(_short_normaliser), "normaliser", id="model.json-normaliser-malformed"),
    pytest.param(_edit_meta(_drop_feature_columns), "feature_columns", id="model.json-feature_columns-missing"),
    pytest.param(_edit_meta(_two_actions), "actions", id="model.json-actions-disagree"),
    pytest.param(_edit_meta(_fewer_columns), "feature", id="model.json-feature_columns-disagree"),
])
def test_a_corrupted_model_directory_is_refused_in_one_line(damage, named: str, trained_model: Path,  # noqa: ANN001
                                                            features_file: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    damage(model)
    done = varon("signal", "--model", model, "-i", features_file, "-o", tmp_path / "s.arrows")
    assert done.returncode != 0
    line = one_line_error(done, "signal")
    assert named in line, line


def test_features_of_another_spec_are_refused_naming_both_hashes(trained_model: Path, features_file: Path,
                                                                 tmp_path: Path) -> None:
    table = read_features(features_file)
    ours = table.schema.metadata[FEATURE_HASH_KEY].decode()
    other = write_features(with_hash(table, "0123456789abcdef"), tmp_path / "other.parquet")
    done = varon("signal", "--model", trained_model, "-i", other, "-o", tmp_path / "s.arrows")
    assert done.returncode == 65, text(done)
    line = one_line_error(done, "signal")
    assert "0123456789abcdef" in line and ours in line, line
    assert not (tmp_path / "s.arrows").exists() or (tmp_path / "s.arrows").stat().st_size == 0


@pytest.mark.parametrize("change", ["spec", "data"])
def test_resuming_with_a_checkpoint_of_other_data_or_spec_is_refused(change: str, trained_model: Path,
                                                                     features_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    shutil.copytree(trained_model, out)
    table = read_features(features_file)
    if change == "spec":
        table = with_hash(table, "0123456789abcdef")
    else:
        table = table.slice(0, table.num_rows - 48)  # the same spec, other (fewer) rows
    other = write_features(table, tmp_path / "other.parquet")
    before = weights(out)
    done = varon("train", "--algo", "dqn", "-i", other, "--out", out, *FAST)
    assert done.returncode == 64, text(done)
    line = one_line_error(done, "train")
    assert "checkpoint of another dataset" in line and "checkpoints" in line, line
    after = weights(out)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model directory was left alone


def test_a_rerun_of_a_finished_run_resumes_at_its_end_and_changes_nothing(trained_model: Path,
                                                                          features_file: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "model"
    shutil.copytree(trained_model, out)
    done = varon("train", "--algo", "dqn", "-i", features_file, "--out", out, *FAST)
    assert done.returncode == 0, text(done)
    assert "fold 0 seed 0: resuming at step 300" in text(done)
    assert_same_weights(out, trained_model)


# -- walk-forward ---------------------------------------------------------------------------------------

def test_walk_forward_two_gives_two_folds(features_file: Path, tmp_path: Path) -> None:
    done = varon("train", "--algo", "ddqn", "-i", features_file, "--out", tmp_path / "wf", *FAST,
                 "--walk-forward", "2", "--json")
    assert done.returncode == 0, text(done)
    folds = json.loads(done.stdout)["folds"]
    assert [f["fold"] for f in folds] == [0, 1]
    for fold in folds:
        assert set(fold["test"]) == {"ddqn (seed 0, chosen)", "buy-and-hold", "ema-cross"}
        assert "deflated_sharpe" in fold
        w = fold["windows"]
        assert w["train"][1] < w["valid"][0] <= w["valid"][1] < w["test"][0] <= w["test"][1]
    assert folds[0]["windows"]["test"][1] < folds[1]["windows"]["test"][0]  # tests never overlap
    assert folds[1]["windows"]["train"][1] > folds[0]["windows"]["train"][1]  # training expands
    assert (tmp_path / "wf" / "checkpoints" / "fold1-seed0.pt").exists()
    meta = json.loads((tmp_path / "wf" / "model.json").read_text())
    assert meta["windows"] == folds[1]["windows"]  # the model is the last fold's

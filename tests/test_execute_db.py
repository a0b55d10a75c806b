"""`varon execute` with `db.dsn` naming PostgreSQL: its record in the database, and a restart rebuilt from it.

Real PostgreSQL on 127.0.0.1 (a database created for this module and dropped
after). The executor commits each intent before sending its order, and its
state, positions, orders, fills, equity and audit rows after; a restart on a
machine whose state directory is gone rebuilds from the database, sends
nothing twice and continues the audit chain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from helpers import migrated_database
from varon_cli.execution.audit import iter_records, verify

REPO = Path(__file__).resolve().parents[1]
VARON = [sys.executable, "-m", "commands.main"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("varon_test_execute") as url:
        yield url


@pytest.fixture(scope="module")
def signals_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled 5m candles -> 1h bars -> features -> ema-cross signals (real data)."""
    root = tmp_path_factory.mktemp("signals")
    env = _env(root / "state")
    shell = (f"{' '.join(VARON)} bars --interval 1h -i data/sample/btc-eth-5m.parquet | {' '.join(VARON)} features"
             f" | {' '.join(VARON)} signal --strategy ema-cross -o {root / 'signals.arrows'}")
    done = subprocess.run(shell, shell=True, cwd=REPO, env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    return root / "signals.arrows"


def _env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["VARON_EXECUTE__STATE_DIR"] = str(state)
    env.update(extra)
    return env


def _execute(signals: Path, out: Path, state: Path, dsn: str, name: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VARON, "execute", "--clock", "event", "--name", name, "-i", str(signals), "-o", str(out)],
                          cwd=REPO, env=_env(state, VARON_DB__DSN=dsn, **extra), capture_output=True, timeout=300)


def _query(dsn: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


def test_the_executor_keeps_its_record_in_postgresql(signals_file: Path, dsn: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = _execute(signals_file, tmp_path / "fills.arrows", state, dsn, "pg1")
    assert done.returncode == 0, done.stderr.decode()
    log = state / "audit" / "pg1.jsonl"
    records = list(iter_records(log))
    intents = [r["cloid"] for r in records if r["kind"] == "order_intent"]
    assert len(intents) >= 4
    stored = {row[0] for row in _query(dsn, "SELECT cloid FROM order_intents WHERE executor = %s", "pg1")}
    assert stored == set(intents)
    # the audit rows are the JSONL lines, verbatim, chain intact
    lines = log.read_text().splitlines()
    rows = _query(dsn, "SELECT seq, line FROM audit_log WHERE executor = %s ORDER BY seq", "pg1")
    assert [line for _, line in rows] == lines
    fills = _query(dsn, "SELECT count(*) FROM fills WHERE executor = %s", "pg1")[0][0]
    assert fills == sum(1 for r in records if r["kind"] == "fill")
    assert _query(dsn, "SELECT count(*) FROM equity WHERE executor = %s", "pg1")[0][0] > 0
    saved = json.loads((state / "state" / "pg1.json").read_text())
    text, seq = _query(dsn, "SELECT state, audit_seq FROM executor_state WHERE executor = %s", "pg1")[0]
    assert json.loads(text)["executor"] == json.loads(json.dumps(saved["executor"]))
    assert seq == records[-1]["seq"]  # saved once more after the final "stop" record
    positions = _query(dsn, "SELECT strategy, symbol, size FROM positions WHERE executor = %s", "pg1")
    held = {(p["strategy"], p["symbol"]) for p in _positions(saved)}
    assert {(s, sym) for s, sym, _ in positions} == held


def _positions(saved: dict) -> list[dict]:
    from varon_cli.config import load_config
    from varon_cli.execution.engine import Executor

    cfg = load_config(environ={})
    ex = Executor(cfg.risk, cfg.paper, saved["interval_ns"])
    ex.load_state_dict(saved["executor"])
    return ex.positions()


def test_a_restart_without_its_state_directory_is_rebuilt_from_the_database(signals_file: Path, dsn: str,
                                                                           tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = _execute(signals_file, tmp_path / "f1.arrows", state, dsn, "pg2")
    assert first.returncode == 0, first.stderr.decode()
    before = (state / "audit" / "pg2.jsonl").read_text().splitlines()
    shutil.rmtree(state)  # the machine is gone
    again = _execute(signals_file, tmp_path / "f2.arrows", tmp_path / "state2", dsn, "pg2")
    assert again.returncode == 0, again.stderr.decode()
    assert "rebuilt from the database" in again.stderr.decode()
    log = tmp_path / "state2" / "audit" / "pg2.jsonl"
    after = log.read_text().splitlines()
    assert after[:len(before)] == before and verify(log)[0]  # the chain carries on from the database's lines
    records = list(iter_records(log))
    cloids = [r["cloid"] for r in records if r["kind"] == "order_intent"]
    assert len(cloids) == len(set(cloids))  # every signal was already decided: nothing ordered twice
    assert not any(r["kind"] == "fill" for r in records[len(before):])


def test_a_database_that_is_down_stops_the_executor_with_a_clear_error(signals_file: Path, tmp_path: Path) -> None:
    secret = "s3cret-pw"
    done = _execute(signals_file, tmp_path / "f.arrows", tmp_path / "state",
                    f"postgresql://varon:{secret}@127.0.0.1:1/varon", "pg3",
                    VARON_DB__ATTEMPTS="2", VARON_DB__RETRY_INITIAL="100ms")
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "unavailable after 2 attempts" in err.strip().splitlines()[-1]
    assert secret not in err


def test_hyperliquid_fills_are_recorded_with_the_venues_ids_and_fees(dsn: str, tmp_path: Path) -> None:
    from fakes.hyperliquid_venue import FakeHyperliquidVenue
    from hl_support import AGENT, USER, run_execute, write_signals

    with FakeHyperliquidVenue(user=USER, agents={AGENT: USER}) as fake:
        done = run_execute(fake.url, tmp_path, tmp_path / "state", write_signals(tmp_path / "s.arrows", [
            {"bar": 1, "target": 1.0}, {"bar": 2, "target": 0.5}]), "--name", "hl-db", VARON_DB__DSN=dsn)
        assert done.returncode == 0, done.stderr.decode()
        venue = {(str(f["oid"]), float(f["fee"])) for f in fake.fills(USER)}
        held = fake.position("BTC")
    stored = _query(dsn, "SELECT venue_order_id, fee FROM fills WHERE executor = %s", "hl-db")
    assert {(oid, fee) for oid, fee in stored} == venue and len(stored) == 2
    assert _query(dsn, "SELECT size FROM positions WHERE executor = %s", "hl-db") == [(pytest.approx(held),)]
    assert len(_query(dsn, "SELECT cloid FROM order_intents WHERE executor = %s", "hl-db")) == 2

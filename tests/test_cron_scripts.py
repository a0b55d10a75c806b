"""The cron scripts in scripts/cron run for real: a nightly backfill into PostgreSQL and a daily report from it.

The backfill fetches from the fake Coinbase REST server (the real candles API's
shape) into a dataset and loads it into a database created for this module;
the report exports bars from that database through features and a backtest.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from helpers import migrated_database
from fakes.coinbase_rest import FakeCoinbaseRest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("varon_test_cron") as url:
        yield url


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env["VARON_EXECUTE__STATE_DIR"] = str(tmp_path / "state")
    env["VARON_STATUS__DIR"] = str(tmp_path / "run")
    env.update(extra)
    return env


def test_the_nightly_backfill_then_the_daily_report(dsn: str, tmp_path: Path) -> None:
    with FakeCoinbaseRest() as fake:
        backfill = subprocess.run(["bash", "scripts/cron/nightly-backfill.sh"], cwd=REPO, capture_output=True,
                                  timeout=300, env=_env(tmp_path, VARON_DB__DSN=dsn, BACKFILL_URL=fake.url,
                                                        BACKFILL_SYMBOLS="BTC-USD", BACKFILL_INTERVAL="1h",
                                                        BACKFILL_DAYS="20", BACKFILL_DATA=str(tmp_path / "data")))
    assert backfill.returncode == 0, backfill.stderr.decode()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT count(*), min(ts), max(ts) FROM market_data WHERE symbol = 'BTC-USD' "
                            "AND interval = '1h'").fetchone()
    import pyarrow.dataset as ds

    fetched = ds.dataset(tmp_path / "data" / "coinbase-1h", format="parquet", partitioning="hive").count_rows()
    assert rows[0] == fetched and fetched > 20 * 24 * 0.9  # what was fetched is what was loaded: ~20 days of 1h bars
    def rerun(url: str, days: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "scripts/cron/nightly-backfill.sh"], cwd=REPO, capture_output=True,
                              timeout=300, env=_env(tmp_path, VARON_DB__DSN=dsn, BACKFILL_URL=url,
                                                    BACKFILL_SYMBOLS="BTC-USD", BACKFILL_INTERVAL="1h",
                                                    BACKFILL_DAYS=days, BACKFILL_DATA=str(tmp_path / "data"),
                                                    BACKFILL_MAX_RETRIES="1"))

    again = rerun("http://127.0.0.1:1", "20")  # the range is already fetched: no request, and the load adds nothing
    assert again.returncode == 0, again.stderr.decode()
    assert f"{rows[0]} rows read, 0 added" in again.stderr.decode()
    further = rerun("http://127.0.0.1:1", "25")  # five more days from an unreachable venue fail the job ...
    assert further.returncode != 0
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM market_data").fetchone()[0] == rows[0]  # ... and lose nothing
    reports = tmp_path / "reports"
    report = subprocess.run(["bash", "scripts/cron/daily-report.sh"], cwd=REPO, capture_output=True, timeout=300,
                            env=_env(tmp_path, VARON_DB__DSN=dsn, REPORT_SYMBOL="BTC-USD", REPORT_DAYS="20",
                                     REPORT_DIR=str(reports)))
    assert report.returncode == 0, report.stderr.decode()
    [html] = list(reports.glob("BTC-USD-*.html"))
    summary = json.loads(html.with_suffix(".json").read_text())
    assert "<svg" in html.read_text() and summary

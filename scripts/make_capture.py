"""Record data/sample/coinbase-capture.jsonl.zst: a raw capture for the demo and tests.

No exchange is reachable from here, so the capture is recorded from varon's
fake Coinbase Advanced Trade server (tests/fakes) replaying the bundled real
Binance BTC-USDT prints as BTC-USD trades, with its synthetic book and
heartbeats. It exercises exactly the code a real capture does; its prices are
Binance's, its venue label is the fake's. Run: .venv/bin/python scripts/make_capture.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fakes.coinbase_ws import CoinbaseWsFake  # noqa: E402
from fakes.tape import tape_from_parquet  # noqa: E402


def main() -> None:
    target = REPO / "data" / "sample" / "coinbase-capture.jsonl.zst"
    target.unlink(missing_ok=True)
    tape = tape_from_parquet(REPO / "data" / "sample" / "btcusdt-trades.parquet", "BTC-USD")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARON_")}
    env["PYTHONPATH"] = str(REPO)
    with CoinbaseWsFake("advanced", tape, rate=1000, heartbeat_interval=0.25, book_depth=5, client_id=False) as fake:
        proc = subprocess.Popen([sys.executable, "-m", "commands.main", "collect", "coinbase", "--symbols", "BTC-USD",
                                 "--url", fake.url, "--raw-out", str(target), "--book-out", os.devnull,
                                 "-o", os.devnull], cwd=REPO, env=env)
        fake.wait_done(timeout=60)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    print(f"wrote {target} ({target.stat().st_size:,} bytes, {len(fake.sent_trade_ids('BTC-USD'))} trades)")


if __name__ == "__main__":
    main()

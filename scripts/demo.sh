#!/usr/bin/env bash
# The main job on the embedded default: bundled real market data through
# `varon bars` and `varon features`, shown as tables. No server, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${VARON_DEMO_OUT:-out/demo}
mkdir -p "$out"

python_show() { .venv/bin/python -m varon_cli.show "$@"; }

echo "== 1. Real Binance BTC-USDT trades (46 s, 2,001 prints) replayed at 50x like a live feed | 5 s bars | features" >&2
varon collect replay data/sample/btcusdt-trades.parquet --speed 50 \
  | varon bars --interval 5s \
  | varon features --spec configs/features-fast.toml -o "$out/live-5s.parquet"
python_show "$out/live-5s.parquet" --columns ts,symbol,open,close,volume,buy_volume,trades,partial,warmup,logret_1,ema_ratio_3,rsi_3,taker_buy_ratio

if [ -f data/sample/coinbase-capture.jsonl.zst ]; then
  echo "== 2. A raw Coinbase capture re-normalised exactly as live | 1 s bars" >&2
  varon collect replay data/sample/coinbase-capture.jsonl.zst --speed max | varon bars --interval 1s -o "$out/capture-1s.parquet"
  python_show "$out/capture-1s.parquet" --columns ts,venue,symbol,open,high,low,close,volume,buy_volume,trades --tail 6
fi

echo "== 3. Two months of real 5m candles (BTC-USDT, ETH-USDT) -> 1h bars -> features (pipe)" >&2
varon bars --interval 1h -i data/sample/btc-eth-5m.parquet | varon features --warmup drop -o "$out/features-1h.parquet"
python_show "$out/features-1h.parquet" --columns ts,symbol,close,logret_1,ema_ratio_12,macd_hist,rsi_14,bb_pctb_20,natr_14,rvol_20,volume_z_20 --tail 12
echo "wrote $out/live-5s.parquet and $out/features-1h.parquet" >&2

#!/usr/bin/env bash
# The main job on the embedded default: bundled real market data through
# `varon bars` and `varon features`, shown as tables. No server, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${VARON_DEMO_OUT:-out/demo}
mkdir -p "$out"

echo "== 1. Real Binance BTC-USDT trades (46 s, 2,001 prints) -> 5 s bars" >&2
varon bars --interval 5s -i data/sample/btcusdt-trades.parquet -o "$out/trades-5s.parquet"
python_show() { .venv/bin/python -m varon_cli.show "$@"; }
python_show "$out/trades-5s.parquet" --columns ts,symbol,open,high,low,close,volume,buy_volume,vwap,trades,partial

echo "== 2. Two months of real 5m candles (BTC-USDT, ETH-USDT) -> 1h bars -> features (pipe)" >&2
varon bars --interval 1h -i data/sample/btc-eth-5m.parquet | varon features --warmup drop -o "$out/features-1h.parquet"
python_show "$out/features-1h.parquet" --columns ts,symbol,close,logret_1,ema_ratio_12,macd_hist,rsi_14,bb_pctb_20,natr_14,rvol_20,volume_z_20 --tail 12
echo "wrote $out/trades-5s.parquet and $out/features-1h.parquet" >&2

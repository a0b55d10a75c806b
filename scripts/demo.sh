#!/usr/bin/env bash
# The main job on the embedded default: bundled real market data replayed
# through collect | bars | features | signal | execute on the paper venue,
# ending with the backtest report. No server, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${VARON_DEMO_OUT:-out/demo}
mkdir -p "$out"

python_show() { .venv/bin/python -m varon_cli.show "$@"; }

export VARON_EXECUTE__STATE_DIR="$out/state"
rm -rf "$out/state"   # a fresh paper account each run (a kept state would refuse bars it already decided)

echo "== 1. The whole live pipeline on real Binance BTC-USDT trades (46 s, 2,001 prints) replayed at 20x:" >&2
echo "      collect replay | bars 1s | features | signal ema-cross | execute --venue paper" >&2
varon collect replay data/sample/btcusdt-trades.parquet --speed 20 \
  | varon bars --interval 1s \
  | varon features --spec configs/features-fast.toml \
  | varon signal --strategy ema-cross --param fast=2 --param slow=5 \
  | varon execute --venue paper --clock event --name live-demo -o "$out/live-fills.arrows" --equity-out "$out/live-equity.arrows"
python_show "$out/live-fills.arrows" --columns ts,symbol,side,size,price,fee,status,reason,strategy

if [ -f data/sample/coinbase-capture.jsonl.zst ]; then
  echo "== 2. A raw Coinbase capture re-normalised exactly as live | 1 s bars" >&2
  varon collect replay data/sample/coinbase-capture.jsonl.zst --speed max | varon bars --interval 1s -o "$out/capture-1s.parquet"
  python_show "$out/capture-1s.parquet" --columns ts,venue,symbol,open,high,low,close,volume,buy_volume,trades --tail 4
fi

echo "== 3. Two months of real 5m candles (BTC-USDT, ETH-USDT) -> 1h bars -> features" >&2
varon bars --interval 1h -i data/sample/btc-eth-5m.parquet | varon features -o "$out/features-1h.parquet"
python_show "$out/features-1h.parquet" --columns ts,symbol,close,logret_1,ema_ratio_12,macd_hist,rsi_14,bb_pctb_20,natr_14,rvol_20 --tail 6

echo "== 4. The same strategy through signal | execute --venue paper on those two months" >&2
varon signal --strategy ema-cross -i "$out/features-1h.parquet" \
  | varon execute --venue paper --clock event --name research-demo -o "$out/fills-1h.arrows"
python_show "$out/fills-1h.arrows" --columns ts,symbol,side,size,price,fee,reason --tail 6

echo "== 5. varon backtest: the same signal + executor + paper venue, reported beside buy-and-hold" >&2
varon backtest --strategy ema-cross -i "$out/features-1h.parquet" --report "$out/report.html"
echo "wrote $out/live-fills.arrows, $out/fills-1h.arrows and $out/report.html" >&2

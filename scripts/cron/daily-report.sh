#!/usr/bin/env bash
# Daily report: the last REPORT_DAYS days of bars from the database, through features and a backtest
# of the strategy (or model) that trades live, into a dated HTML report beside a JSON summary.
#
#   varon db export bars | varon features | varon backtest --report out/reports/YYYY-MM-DD.html
#
# The backtest's assumptions (fills at the next bar's open plus slippage, fees, funding) are stated in
# the report itself. pipefail: a failing stage fails the script, and cron mails its stderr.
#
# Environment:
#   VARON_HOME       the varon checkout (default: two levels above this script)
#   VARON_DB__DSN    PostgreSQL DSN (required; the password in ~/.pgpass or PGPASSWORD, not here)
#   REPORT_SYMBOL    default BTC-USD
#   REPORT_DAYS      days of bars (default 30; features need a warm-up before the first signal)
#   REPORT_STRATEGY  a built-in strategy (default ema-cross), or
#   REPORT_MODEL     a model directory from `varon train` (used instead of the strategy when set)
#   REPORT_DIR       where reports go (default $VARON_HOME/out/reports)
set -euo pipefail

VARON_HOME=${VARON_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$VARON_HOME"
varon() { "$VARON_HOME/.venv/bin/varon" "$@"; }

: "${VARON_DB__DSN:?set VARON_DB__DSN to the PostgreSQL DSN}"
symbol=${REPORT_SYMBOL:-BTC-USD}
start=$(date -u -d "${REPORT_DAYS:-30} days ago" +%F)
day=$(date -u +%F)
outdir=${REPORT_DIR:-$VARON_HOME/out/reports}
mkdir -p "$outdir"

if [[ -n "${REPORT_MODEL:-}" ]]; then
    decide=(--model "$REPORT_MODEL")
else
    decide=(--strategy "${REPORT_STRATEGY:-ema-cross}")
fi

varon db export bars --dsn "$VARON_DB__DSN" --symbol "$symbol" --start "$start" \
    | varon features \
    | varon backtest "${decide[@]}" --report "$outdir/$symbol-$day.html" --json > "$outdir/$symbol-$day.json"
echo "$(date -u +%FT%TZ) daily-report: $outdir/$symbol-$day.html" >&2

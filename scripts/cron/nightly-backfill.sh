#!/usr/bin/env bash
# Nightly backfill into PostgreSQL: the last few days of candles from the venue's REST API into a
# Parquet dataset, then loaded into the database.
#
# Both steps are safe to repeat: `collect backfill` records what each day file holds and fetches only
# what is missing (a run killed halfway leaves no partial file), and `db load` skips rows already
# loaded. Reaching back BACKFILL_DAYS days each night heals a night that was missed.
#
# Environment:
#   VARON_HOME        the varon checkout (default: two levels above this script)
#   VARON_DB__DSN     PostgreSQL DSN, e.g. postgresql://varon@db.internal/varon (required). Keep the
#                     password out of it (and so out of `ps`): ~/.pgpass or PGPASSWORD.
#   BACKFILL_VENUE    coinbase (default) or hyperliquid
#   BACKFILL_SYMBOLS  default BTC-USD,ETH-USD
#   BACKFILL_INTERVAL default 1m
#   BACKFILL_URL      the venue's REST base URL (default: the venue's own)
#   BACKFILL_MAX_RETRIES  retries per request before the job fails (default: collect backfill's)
#   BACKFILL_DAYS     how far back each run reaches (default 3)
#   BACKFILL_DATA     dataset root (default $VARON_HOME/data/backfill); one dataset per venue and interval
set -euo pipefail

VARON_HOME=${VARON_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$VARON_HOME"
varon() { "$VARON_HOME/.venv/bin/varon" "$@"; }

: "${VARON_DB__DSN:?set VARON_DB__DSN to the PostgreSQL DSN}"
venue=${BACKFILL_VENUE:-coinbase}
symbols=${BACKFILL_SYMBOLS:-BTC-USD,ETH-USD}
interval=${BACKFILL_INTERVAL:-1m}
days=${BACKFILL_DAYS:-3}
dataset=${BACKFILL_DATA:-$VARON_HOME/data/backfill}/$venue-$interval

# one run at a time: a slow night must not overlap the next
mkdir -p "$(dirname "$dataset")"
exec 9>"$dataset.lock"
if ! flock -n 9; then
    echo "$(date -u +%FT%TZ) nightly-backfill: previous run still going; skipping" >&2
    exit 0
fi

url=()
if [[ -n "${BACKFILL_URL:-}" ]]; then url=(--url "$BACKFILL_URL"); fi   # another REST base (a proxy, a test fake)
if [[ -n "${BACKFILL_MAX_RETRIES:-}" ]]; then url+=(--max-retries "$BACKFILL_MAX_RETRIES"); fi
varon collect backfill "$venue" --symbols "$symbols" --interval "$interval" --start "now-${days}d" \
    "${url[@]}" -o "$dataset" --log-format json
varon db load --dsn "$VARON_DB__DSN" -i "$dataset" --log-format json

#!/usr/bin/env bash
# The alert command: `varon collect|execute --on-alert scripts/cron/alert.sh`, and what healthcheck.sh runs.
#
# varon sets VARON_ALERT_KIND (breaker, kill_switch, feed_lost, feed_restored; the health check uses
# "health") and VARON_ALERT_MESSAGE (one line; the health check's may hold several). This script writes
# them to syslog (or stderr when there is no logger) and, when ALERT_WEBHOOK is set, posts
# {"text": "..."} to it (Slack, Mattermost and most chat webhooks take that shape).
# varon never waits for it; keep it quick anyway (curl gives up after 10 s).
set -euo pipefail

kind=${VARON_ALERT_KIND:-unknown}
message=${VARON_ALERT_MESSAGE:-}
text="varon ${kind} on $(hostname): ${message}"

logger -t varon-alert -- "$text" 2>/dev/null || printf '%s\n' "$text" >&2

if [[ -n "${ALERT_WEBHOOK:-}" ]]; then
    payload=$(python3 -c 'import json, sys; print(json.dumps({"text": sys.argv[1]}))' "$text")
    curl -fsS -m 10 -H 'Content-Type: application/json' -d "$payload" "$ALERT_WEBHOOK" >/dev/null
fi

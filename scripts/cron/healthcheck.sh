#!/usr/bin/env bash
# Health check for cron: is the live system running and healthy? Silent and exit 0 when it is;
# otherwise it runs the alert command with what is wrong and exits 1.
#
# `varon status --once` is unhealthy when a process's heartbeat is older than status.stale_after, a
# process died without cleaning up, a feed is lost, the kill switch or a breaker is engaged, or a
# command named in --expect is not running. It reads the metrics files in status.dir and the kill
# file in execute.state_dir: relative paths, so this runs from VARON_HOME like the pipeline does
# (or give both as absolute paths in the config file).
#
# Environment:
#   VARON_HOME     the varon checkout (default: two levels above this script)
#   HEALTH_EXPECT  commands that must be running (default collect,execute; e.g. collect,bars,features,signal,execute)
#   ALERT_COMMAND  run on trouble with VARON_ALERT_KIND=health and VARON_ALERT_MESSAGE (default scripts/cron/alert.sh)
#   VARON_CONFIG   the config file, as for every varon command
set -euo pipefail

VARON_HOME=${VARON_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$VARON_HOME"
expect=${HEALTH_EXPECT:-collect,execute}
alert=${ALERT_COMMAND:-$VARON_HOME/scripts/cron/alert.sh}

# stderr (one "varon status: PROBLEM" line per problem) is kept for the message; the table is dropped
if problems=$("$VARON_HOME/.venv/bin/varon" status --once --expect "$expect" 2>&1 >/dev/null); then
    exit 0
fi
printf '%s %s\n' "$(date -u +%FT%TZ)" "$problems" >&2
VARON_ALERT_KIND=health VARON_ALERT_MESSAGE=${problems:-varon status failed} /bin/sh -c "$alert" || true
exit 1

"""`varon status`: what every long-running command publishes about itself, and the view that reads it.

metrics.py   the publisher inside each process (a JSON file per process, once a second) and its hooks
alerts.py    --on-alert: a shell command run, never waited for, on breaker trips, kills and lost feeds
view.py      the system as `varon status` sees it: processes, executors, kill switch, health
dashboard.py the rich rendering (live dashboard and --once)
prometheus.py the same numbers in the Prometheus text format, over HTTP

This package imports nothing heavy at import time: `varon_cli.runtime`, the live
collector and the executor import `metrics` on their hot paths.
"""

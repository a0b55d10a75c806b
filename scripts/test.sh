#!/usr/bin/env bash
# The test command: set up the virtual environment if needed, then run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k bars -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"

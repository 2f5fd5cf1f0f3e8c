#!/usr/bin/env bash
# The test suite: set up, then run the fast tier (tiny models built in-process) and the slow tier (real SmolLM2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# two workers (one per core), each test file on one worker so that its module fixtures are built once; the
# slowest tests are listed at the end, to keep the suite inside CI's budget
exec .venv/bin/python -m pytest -n 2 --dist loadfile --durations=15 "$@"

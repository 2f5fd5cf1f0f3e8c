#!/usr/bin/env bash
# The test suite: set up, then run the fast tier (tiny models built in-process) and the slow tier (real SmolLM2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The main job: set up, then run one full sleep cycle on the embedded SmolLM2-135M-Instruct and the demo
# knowledge, and print closed-book accuracy before and after. Extra arguments go to `reverie demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/reverie demo "${@:-demo-workspace}"

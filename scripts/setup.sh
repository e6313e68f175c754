#!/usr/bin/env bash
# Set up .venv: PyTorch first (so nothing pulls a CUDA build by accident), then the project.
#   bash scripts/setup.sh          # run dependencies
#   bash scripts/setup.sh --dev    # + test dependencies
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, the CPU build); TORCH_SPEC=skip
# keeps whatever torch the venv already has (e.g. a CUDA build you installed first).
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
spec="${TORCH_SPEC:-torch==2.13.0}"
if [ "$spec" != "skip" ]; then
  .venv/bin/python -m pip install -q "$spec"
fi
.venv/bin/python -m pip install -q -e ".$extra"
echo "ready: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

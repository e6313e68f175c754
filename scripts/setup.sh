#!/usr/bin/env bash
# Set up .venv with the locked versions (requirements/*.lock, refreshed by scripts/lock.sh):
#   bash scripts/setup.sh          # run dependencies (requirements/runtime.lock)
#   bash scripts/setup.sh --dev    # + test dependencies (requirements/dev.lock)
# The locks pin PyTorch's CPU build (torch==2.13.0+cpu). On a GPU machine install your CUDA build of
# torch into .venv first and set TORCH_SPEC=skip: the lock is then installed without its torch line.
# The installer is uv (pinned below; benchmarks/ci_speed.py measures it against pip). W2S_INSTALLER=pip
# uses plain pip with the same lock instead. W2S_VENV names another venv folder (CI uses .ci/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
lock=requirements/runtime.lock
[ "${1:-}" = "--dev" ] && lock=requirements/dev.lock
venv="${W2S_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if [ "${TORCH_SPEC:-}" = "skip" ]; then  # keep the torch already in .venv
  filtered="$(mktemp)"
  trap 'rm -f "$filtered"' EXIT
  grep -v '^torch==' "$lock" > "$filtered"
  lock="$filtered"
fi
# torch's CPU wheel: on these machines it lies in /opt/wheels, elsewhere it comes from PyTorch's CPU index
if [ -d /opt/wheels ]; then
  wheels=(--find-links /opt/wheels) pip_wheels=(--find-links /opt/wheels)
else
  wheels=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
  pip_wheels=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
if [ "${W2S_INSTALLER:-uv}" = "pip" ]; then
  "$venv/bin/python" -m pip install -q "${pip_wheels[@]}" -r "$lock"
  "$venv"/bin/python -m pip install -q --no-deps -e .
else
  "$venv"/bin/python -m pip install -q "uv==$UV_VERSION"
  # --compile-bytecode: bytecode for everything installed, as pip writes it. Where PYTHONDONTWRITEBYTECODE
  # is set (as on these machines) a process would otherwise compile what it imports from source, every
  # time: torch/transformers/peft in every agent, aiohttp/grpc/protobuf/opencensus in every Ray node's
  # dashboard and agents, matplotlib/mlflow/pandas in every run and sweep. A test-size run took 35.5 CPU s
  # with bytecode for torch & co only and 24 with all of it. uv compiles in parallel: this install
  # takes about as long as the same install with bytecode for torch & co only did.
  "$venv"/bin/uv pip install -q --compile-bytecode --python "$venv"/bin/python "${wheels[@]}" -r "$lock"
  "$venv"/bin/uv pip install -q --python "$venv"/bin/python --no-deps -e .
fi
echo "ready: $venv ($("$venv"/bin/python -c 'import torch; print("torch", torch.__version__)'))"

#!/usr/bin/env bash
# Refresh the install locks in requirements/ from pyproject.toml (run after changing a dependency):
#   bash scripts/lock.sh            # re-resolve within pyproject's ranges, keeping current pins where they fit
#   bash scripts/lock.sh --upgrade  # take the newest versions the ranges allow
# The locks are for this platform: Linux x86_64, CPython 3.11, PyTorch's CPU build (torch==2.13.0+cpu,
# the wheel that lies in /opt/wheels on these machines or comes from PyTorch's CPU index elsewhere).
# uv comes from .venv (scripts/setup.sh installs it) or from PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=".venv/bin/uv"
[ -x "$uv" ] || uv="$(command -v uv)" || { echo "lock.sh: no uv (pip install uv)" >&2; exit 2; }
if [ -d /opt/wheels ]; then
  links=(--find-links /opt/wheels)
else
  links=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 "${links[@]}"
        -c requirements/torch-cpu.txt --no-header --no-emit-index-url --no-emit-find-links "$@")
"$uv" pip compile pyproject.toml "${common[@]}" -o requirements/runtime.lock
"$uv" pip compile pyproject.toml --extra dev "${common[@]}" -o requirements/dev.lock
echo "locked: requirements/runtime.lock ($(grep -c '==' requirements/runtime.lock) pins)," \
     "requirements/dev.lock ($(grep -c '==' requirements/dev.lock) pins)"

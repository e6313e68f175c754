#!/usr/bin/env bash
# The test command (README): offline, the whole suite (unit tests + local Ray integration tests).
# Works from any folder; uses the active venv, else the repo's .venv, else `python` on PATH.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k storage`).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
# tiny test bases are built once per machine into this cache (a few seconds each)
export W2S_CACHE_DIR="${W2S_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-$repo}/.cache}/w2s_ray}"
python=python
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$repo/.venv/bin/python" ]; then
  python="$repo/.venv/bin/python"
  export PATH="$repo/.venv/bin:$PATH"  # the venv's `ray` and `moto_server` for the tests that start them
fi
exec "$python" -m pytest "$@"

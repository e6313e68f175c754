#!/usr/bin/env bash
# The test command (README): offline, no Ray auth, unit tests + the local Ray integration tests.
set -euo pipefail
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
# tiny test bases are built once per machine into this cache (a few seconds each)
export W2S_CACHE_DIR="${W2S_CACHE_DIR:-$HOME/.cache/w2s_ray}"
exec python -m pytest -q "$@"

#!/usr/bin/env bash
# Set up ./.venv, then run the whole pipeline on the embedded default corpus (see README). Extra arguments go to
# `scratchllm demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCHLLM_EXTRAS="${SCRATCHLLM_EXTRAS:-fast}" bash scripts/setup_env.sh
exec .venv/bin/scratchllm demo "$@"

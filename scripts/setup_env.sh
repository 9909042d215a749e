#!/usr/bin/env bash
# Create ./.venv (if needed) and install scratchllm with its dev tools into it.
# torch is installed first, on its own, so that pip never resolves "torch" to a multi-GB CUDA build by accident.
# Override the torch requirement with SCRATCHLLM_TORCH (e.g. SCRATCHLLM_TORCH="torch --index-url ...cu124" on a GPU box).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing ${SCRATCHLLM_TORCH:-torch==2.13.0} (CPU) ..."
    # shellcheck disable=SC2086
    "${PIP[@]}" install ${SCRATCHLLM_TORCH:-torch==2.13.0}
fi
echo "[setup] installing scratchllm and its dependencies ..."
"${PIP[@]}" install -e ".[${SCRATCHLLM_EXTRAS:-dev}]" 2>&1 | grep -vE "^WARNING: Location|^\s*$" || true
.venv/bin/python -c "import scratchllm, torch; print(f'[setup] scratchllm {scratchllm.__version__}, torch {torch.__version__}')"

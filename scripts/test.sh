#!/usr/bin/env bash
# Set up ./.venv and run the linter and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
echo "[test] ruff check"
.venv/bin/ruff check src tests benchmarks
echo "[test] pytest"
exec .venv/bin/python -m pytest -q "$@"

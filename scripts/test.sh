#!/usr/bin/env bash
# Set up ./.venv and run the linter and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# The chat page's end-to-end test drives Debian's headless Chromium; install it where this is a Debian machine we
# may administer (CI), else that one test skips. SCRATCHLLM_NO_BROWSER=1 skips the install.
if [ -z "${SCRATCHLLM_NO_BROWSER:-}" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing Debian's chromium and chromium-driver (for the chat page's browser test)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver; } >/tmp/scratchllm-chromium-install.log 2>&1; then
      echo "[test] could not install chromium (see /tmp/scratchllm-chromium-install.log); its test will skip"
    fi
  else
    echo "[test] no chromium, and no root apt-get to install it: the chat page's browser test will skip"
  fi
fi
echo "[test] ruff check"
.venv/bin/ruff check src tests benchmarks
echo "[test] pytest"
exec .venv/bin/python -m pytest -q "$@"

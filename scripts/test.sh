#!/usr/bin/env bash
# Set up a virtual environment (once) and run the whole test suite: fast tests, then the slow,
# distributed and browser ones. Used as is by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# A venv of its own, with every optional extra (timm needs torchvision), so that the lean .venv of
# the README's install command stays as it is.
VENV="${IMGCLUST_TEST_VENV:-.venv-test}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# timm needs a torchvision that matches torch: these pairs install from the package index here
# (x86_64: a CUDA build that runs on the CPU; aarch64: a CPU build).
if [ "$(uname -m)" = "aarch64" ]; then TORCH="torch==2.9.1 torchvision==0.24.1"; else TORCH="torch==2.14.1 torchvision==0.29.1"; fi
"$VENV/bin/python" -m pip install -q $TORCH -e ".[test,dask,timm,classic]"
# The browser tests drive Debian's headless Chromium; install it once when it is missing (needs root or sudo).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium/chromedriver not found and cannot be installed here: the browser tests will be skipped." >&2
  fi
fi
"$VENV/bin/python" -m ruff check src tests bench
"$VENV/bin/python" -m mypy
"$VENV/bin/python" -m pytest -q -m "not slow and not distributed and not browser" "$@"
"$VENV/bin/python" -m pytest -q -m "slow or distributed or browser" "$@"

#!/usr/bin/env bash
# Set up a virtual environment (once) and run the whole test suite: fast tests, then the slow,
# distributed and browser ones. Used as is by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${IMGCLUST_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch 2.13.0 is the CPU build; any torch 2.2-2.14 works.
"$VENV/bin/python" -m pip install -q "torch==2.13.0" -e ".[test,dask]"
"$VENV/bin/python" -m ruff check src tests bench
"$VENV/bin/python" -m pytest -q -m "not slow and not distributed and not browser" "$@"
"$VENV/bin/python" -m pytest -q -m "slow or distributed or browser" "$@"

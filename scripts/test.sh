#!/usr/bin/env bash
# Set up the development environment (torch first, from the index you choose) and run the test suite.
#
#   bash scripts/test.sh [pytest arguments]
#
# TORCH_INDEX_URL: the package index torch alone is installed from (passed to pip as --index-url). Unset, pip's
#   own index is used, which on a stock machine serves the multi-GB CUDA build; for the CPU build:
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade pip
pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
pip install --quiet -r requirements-train.txt
pip install --quiet --no-deps -r requirements-anatomy.txt  # data-only wheels: real head anatomy for phantoms and checks
ruff check .  # lint (pyproject.toml [tool.ruff])
ruff format --check .  # formatting (ruff format . fixes it)
python -m pytest test -q "$@"

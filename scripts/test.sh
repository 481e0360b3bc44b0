#!/usr/bin/env bash
# Set up the development environment (CPU torch first, so pip never pulls a CUDA build) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade pip
pip install --quiet torch==2.13.0
pip install --quiet -r requirements-train.txt
pip install --quiet --no-deps -r requirements-anatomy.txt  # data-only wheels: real head anatomy for phantoms and checks
ruff check .  # lint (pyproject.toml [tool.ruff])
ruff format --check .  # formatting (ruff format . fixes it)
python -m pytest test -q "$@"

#!/usr/bin/env bash
# Set up (if needed) and run the checks: lint, format, types, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check dedup tests scripts benchmarks
.venv/bin/ruff format --check dedup tests scripts benchmarks
.venv/bin/mypy dedup
.venv/bin/python -m pytest "$@"

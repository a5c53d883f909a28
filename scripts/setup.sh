#!/usr/bin/env bash
# Set up a development environment from scratch: Debian packages, a virtualenv in .venv, dedup installed
# in editable mode with its server and development extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # tuxpaint images: training data and the held-out images the tests use. chromium: browser tests. postgresql: the
  # tests start a throwaway server of their own (tests/pg.py); nothing is started here.
  need=()
  for pkg in tuxpaint-stamps-default tuxpaint-data chromium chromium-driver postgresql; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[serve,train,postgres,ray,dev]"

#!/usr/bin/env bash
# The lean install: `pip install .` with no extras into a fresh virtualenv, then the runtime jobs on the
# shipped samples (ingest, report, query, compare, evaluate). TensorFlow and Keras must be absent and not
# needed; `dedup train` must say in one line which extra to install. Prints the install's size.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
# A wheel build, not an editable install: the models must travel as package data.
"$work/venv/bin/python" -m pip install -q .
bin="$work/venv/bin"
if "$bin/python" -c "import tensorflow" 2>/dev/null || "$bin/python" -c "import keras" 2>/dev/null; then
  echo "lean install pulled in TensorFlow or Keras" >&2
  exit 1
fi
site=$("$bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "lean install: $(du -sm "$site" | cut -f1) MB of packages"
cd "$work"  # away from the checkout, so the installed package is the one that runs
samples="$OLDPWD/catalog_samples"
store=(--store "$work/store")
status=0  # exit 3: the shipped broken/ files were recorded as failures, as they should be
"$bin/dedup" "${store[@]}" ingest "$samples/catalog" --metadata "$samples/catalog/products.csv" || status=$?
[ "$status" = 0 ] || [ "$status" = 3 ] || { echo "ingest exited $status" >&2; exit 1; }
status=0
"$bin/dedup" "${store[@]}" report --format csv -o "$work/report.csv" || status=$?
[ "$status" = 10 ] || { echo "report exited $status, not 10 (duplicates found)" >&2; exit 1; }
"$bin/python" -c "import csv, sys; rows = list(csv.DictReader(open(sys.argv[1]))); assert rows, 'empty report'" \
  "$work/report.csv"
"$bin/dedup" "${store[@]}" query "$samples/queries/farm__phone.jpg" --format json >"$work/query.json"
"$bin/python" -c "import json, sys; assert json.load(open(sys.argv[1]))['results']" "$work/query.json"
# Not `find | sort | head`: under pipefail, head closing the pipe early fails the script with SIGPIPE (141).
mapfile -t jpgs < <(find "$samples/catalog/products" -name '*.jpg' | sort)
"$bin/dedup" compare "${jpgs[0]}" "${jpgs[1]}" >/dev/null
"$bin/dedup" "${store[@]}" evaluate "$samples/catalog/truth.csv" --format json >"$work/eval.json"
status=0
"$bin/dedup" "${store[@]}" train "$samples/catalog/products" --out "$work/model" 2>"$work/train.err" || status=$?
if [ "$status" != 2 ] || [ "$(wc -l <"$work/train.err")" != 1 ] || ! grep -q "dedup\[train\]" "$work/train.err"; then
  echo "dedup train without the [train] extra: exit $status, $(cat "$work/train.err")" >&2
  exit 1
fi
# The wheel carries the Alembic scripts: an old catalog (revision 0001) is migrated to the head by the installed package.
"$bin/python" - "$work/old.sqlite" <<'PY'
import sys
from alembic import command
from alembic.config import Config
from dedup.catalog import Catalog
from dedup.catalog.engine import SCHEMA_HEAD, migrations_dir

assert "site-packages" in str(migrations_dir()), migrations_dir()
config = Config()
config.set_main_option("script_location", str(migrations_dir()))
config.set_main_option("sqlalchemy.url", f"sqlite:///{sys.argv[1]}")
command.upgrade(config, "0001")
Catalog(f"sqlite:///{sys.argv[1]}").close()  # opening migrates
import sqlite3
(head,) = sqlite3.connect(sys.argv[1]).execute("select version_num from alembic_version").fetchone()
assert head == SCHEMA_HEAD, head
print(f"lean install: migrated a revision-0001 catalog to {head} from {migrations_dir()}")
PY
echo "lean install: ingest, report, query, compare and evaluate ran without TensorFlow"

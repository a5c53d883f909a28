#!/usr/bin/env bash
# Set up (if needed), then ingest the shipped samples, write a duplicate report and run a query.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
STORE=${DEDUP_STORE:-./dedup-store}
export DEDUP_STORE="$STORE"
dedup=.venv/bin/dedup
# Exit 3 means some files failed (catalog_samples/broken/ holds such files on purpose): go on.
$dedup ingest catalog_samples/catalog --metadata catalog_samples/catalog/products.csv || [ $? -eq 3 ]
# Exit 10 means duplicates were found, which is what the samples are for.
$dedup report --format json -o "$STORE/report.json" || [ $? -eq 10 ]
# One line per product (its closest image), as the web page shows them.
$dedup query catalog_samples/queries -k 3 --per-product

"""Which copy does the report keep? Keeper accuracy of keep policies on the three accuracy-set families.

    python benchmarks/keeper.py                       # dev and test splits, the default and the old policy
    python benchmarks/keeper.py --split test --policy central,detail --policy resolution,size,oldest

Each split's catalog (``benchmarks/make_accuracy_set.py``: an original product shot, twelve kinds of
edited copies and colour variants, per source) is ingested into a throw-away store with the shipped
model, and the report's clusters are built under each policy. A cluster holding an original is kept
right when its keeper is the original or has its bytes or pixels (``dedup.service.evaluation
.keeper_accuracy``, which ``dedup evaluate`` prints too). The kinds of the wrong keepers are listed.

The default policy's rules and constants were chosen on the dev splits; the test splits (other sources)
and the ``wallpapers`` family (photographs, never trained on or calibrated on) are the held-out figures.
Prints a Markdown table and writes JSON (``--json``, default ``bench-data/keeper.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run from a fresh clone: no install needed

from transfer import ensure_sets  # noqa: E402

from dedup.config import DEFAULT_KEEP  # noqa: E402
from dedup.service import build_report, ingest_folder, open_store  # noqa: E402
from dedup.service.evaluation import keeper_accuracy, read_truth  # noqa: E402

#: The keeper policy of dedup 0.x before the keeper rules were measured.
OLD_POLICY = "resolution,size,oldest"


def run_split(split_dir: Path, policies: list[str]) -> dict[str, Any]:
    """Keeper accuracy of each policy on one split's catalog."""
    truth = read_truth(split_dir / "truth.csv")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, open_store(tmp) as store:
        ingest_folder(store, split_dir / "catalog")
        for policy in policies:
            started = time.perf_counter()
            report = build_report(store, keep=policy, save=False)
            scores = keeper_accuracy(report, truth)
            assert scores is not None
            out[policy] = {**scores.as_dict(), "seconds": round(time.perf_counter() - started, 2)}
    return out


def main() -> None:
    """Parse the arguments, run every family and split, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", action="append", choices=("tuxpaint", "wesnoth", "wallpapers", "photos"))
    ap.add_argument("--split", action="append", choices=("dev", "test"))
    ap.add_argument("--policy", action="append", help=f"keep policy (default: {DEFAULT_KEEP} and {OLD_POLICY})")
    ap.add_argument("--json", type=Path, default=ROOT / "bench-data" / "keeper.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    families = args.family or ["tuxpaint", "wesnoth", "wallpapers"]
    splits = args.split or ["dev", "test"]
    policies = args.policy or [OLD_POLICY, DEFAULT_KEEP]
    sets = ensure_sets(families)
    results: dict[str, Any] = {}
    for fam in families:
        for split in splits:
            print(f"{fam}/{split} ...", file=sys.stderr, flush=True)
            results[f"{fam}/{split}"] = run_split(sets[fam] / split, policies)
    print("| family / split | " + " | ".join(f"`{p}`" for p in policies) + " |")
    print("| --- |" + " --- |" * len(policies))
    for name, by_policy in results.items():
        cells = []
        for p in policies:
            r = by_policy[p]
            wrong = ", ".join(f"{k} {n}" for k, n in list(r["wrong_keepers"].items())[:3])
            cells.append(f"{r['accuracy']:.3f} ({r['original_kept']}/{r['clusters_with_original']}; {wrong or '-'})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for split in splits:
        for p in policies:
            rows = [r[p] for name, r in results.items() if name.endswith(f"/{split}")]
            kept = sum(r["original_kept"] for r in rows)
            total = sum(r["clusters_with_original"] for r in rows)
            print(f"all {split} `{p}`: {kept}/{total} = {kept / max(total, 1):.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"policies": policies, "results": results}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()

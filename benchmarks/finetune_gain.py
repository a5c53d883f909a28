"""What fine-tuning the default model on a user's own catalog buys, measured on that catalog.

A user's catalog is stood in for by the accuracy benchmark's dev split (held-out images the default model
never saw): its product shots (``catalog/originals``, unlabelled) are the fine-tuning data, exactly what
``dedup train FOLDER --from default`` gets, and its full catalog (originals, edited copies, colour variants)
with its truth and phone queries is the yardstick. Both models are scored in the same run:

* pair precision / recall / F1 at the default model's card threshold (the threshold a user already runs with),
* the best F1 over all thresholds (threshold-free), and the recall at precision ≥ 0.99,
* phone-photo Recall@1 / @5.

    python benchmarks/finetune_gain.py                    # 10-minute fine-tune; ~14 minutes in all on 2 cores
    python benchmarks/finetune_gain.py --minutes 30
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dedup.config import default_model_dir  # noqa: E402
from dedup.embedding.card import read_card  # noqa: E402
from dedup.service import evaluate, ingest_folder, open_store  # noqa: E402
from dedup.training.trainer import train_model  # noqa: E402


def score(model: Path, split: Path, work: Path, threshold: float) -> dict[str, Any]:
    """Ingest the split's catalog with ``model`` and evaluate it at ``threshold``."""
    store_dir = work / f"store-{model.name}"
    shutil.rmtree(store_dir, ignore_errors=True)
    with open_store(store_dir, model=str(model)) as store:
        ingest_folder(store, split / "catalog")
        ev = evaluate(store, split / "truth.csv", queries_csv=split / "queries.csv", threshold=threshold).as_dict()
    return {
        "pairs_at_default_threshold": ev["pairs"],
        "best_f1": ev["best_f1"],
        "at_precision": ev["at_precision"],
        "queries": ev["queries"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, default=ROOT / "bench-data" / "accuracy-set" / "dev")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench-data" / "finetune_gain.json")
    args = parser.parse_args()
    if not (args.split / "truth.csv").is_file():
        raise SystemExit(f"{args.split}/truth.csv not found: run `python benchmarks/accuracy.py` once to make the set")
    default = default_model_dir()
    threshold = float(read_card(default)["threshold"])
    with tempfile.TemporaryDirectory(prefix="dedup-finetune-") as tmp:
        work = Path(tmp)
        tuned = work / "tuned"
        t0 = time.monotonic()
        card = train_model(
            args.split / "catalog" / "originals",
            tuned,
            from_model=default,
            minutes=args.minutes,
            steps=100_000,
            learning_rate=5e-4,  # a gentle start from trained weights
            views=16,
            mirror_pass="exact" in str(read_card(default)["architecture"].get("mirror_invariant", "")),
            command=f"python benchmarks/finetune_gain.py --minutes {args.minutes}",
        )
        train_s = time.monotonic() - t0
        result = {
            "split": str(args.split),
            "minutes": args.minutes,
            "train_seconds": round(train_s, 1),
            "steps": card["training"]["steps"],
            "threshold": threshold,
            "default": score(default, args.split, work, threshold),
            "fine_tuned": score(tuned, args.split, work, threshold),
        }
    for name in ("default", "fine_tuned"):
        r = result[name]
        p = r["pairs_at_default_threshold"]
        q = r["queries"] or {}
        ap = r["at_precision"] or {}
        print(
            f"{name:10s} at {threshold:.4f}: P {p['precision']:.3f} R {p['recall']:.3f} F1 {p['f1']:.3f} | "
            f"best F1 {r['best_f1']['f1']:.3f} | R at P≥0.99 {ap.get('recall', 0.0) or 0.0:.3f} | "
            f"phone R@1 {q.get('recall_at_1', 0.0):.3f} R@5 {q.get('recall_at_5', 0.0):.3f}"
        )
    print(f"fine-tuning: {result['steps']} steps in {result['train_seconds']:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

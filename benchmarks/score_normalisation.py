"""Does background score normalisation make one threshold carry over between image families?

    python benchmarks/score_normalisation.py                      # the shipped model
    python benchmarks/score_normalisation.py --model bench-data/models/old

The best ISC 2021 copy-detection entries and SSCD subtract from a pair's similarity how similar its images
are to a fixed set of unrelated images: ``s'(a, b) = s(a, b) - beta * (bg_k(a) + bg_k(b)) / 2``, where
``bg_k(x)`` is the cosine similarity of ``x`` to its k-th nearest background vector. An image from a dense
region of the embedding space (a family whose pictures all look alike) then needs a higher raw similarity to
match, which is what a single threshold cannot express.

This measures it with the shipped threshold's rule: the threshold at precision 0.99 on the union of the
calibration families' dev pairs (every family but ``--holdout``, default ``wallpapers``), then precision and
recall on every family's test pairs. The background set is ``--background`` images drawn (seed 0) from the
default training sources (:func:`dedup.training.sources.training_sources`): images the model has seen, none
from any benchmark family. Raw similarity (beta 0) is the baseline in the same run.

Prints a Markdown table and writes JSON (``--json``, default ``bench-data/score_normalisation.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run from a fresh clone: no install needed

import make_accuracy_set  # noqa: E402

from dedup.matching import metrics  # noqa: E402
from dedup.service import open_store  # noqa: E402
from dedup.service.evaluation import read_truth  # noqa: E402
from dedup.training.sources import training_sources  # noqa: E402

TARGET_PRECISION = 0.99


def embed(store: Any, paths: list[Path]) -> np.ndarray:
    """Unit vectors of ``paths`` as ingest makes them."""
    return np.concatenate([store.embed_paths(paths[i : i + 256]) for i in range(0, len(paths), 256)]).astype(np.float32)


def background_scores(vectors: np.ndarray, background: np.ndarray, k: int) -> np.ndarray:
    """Cosine similarity of each row of ``vectors`` to its k-th nearest background vector."""
    sims = vectors @ background.T
    return -np.partition(-sims, k - 1, axis=1)[:, k - 1]


def pair_set(store: Any, split_dir: Path, background: np.ndarray, ks: list[int]) -> dict[str, Any]:
    """Raw similarities, labels and per-k background terms of every pair of a split's catalog."""
    truth = read_truth(split_dir / "truth.csv")
    vectors = embed(store, list(truth.paths))
    i, j, labels = metrics.group_pairs(truth.groups)
    sim = (vectors @ vectors.T)[i, j]
    bg = {k: background_scores(vectors, background, k) for k in ks}
    return {"sim": sim, "labels": labels, "bg": {k: (b[i] + b[j]) / 2.0 for k, b in bg.items()}}


def as_distance(sim: np.ndarray) -> np.ndarray:
    """Scores as distances (smaller is closer), so the library's one threshold rule applies unchanged."""
    return 1.0 - sim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    ap.add_argument("--families", default=",".join(make_accuracy_set.FAMILIES))
    ap.add_argument("--holdout", default="wallpapers", help="families left out of calibration, comma-separated")
    ap.add_argument("--background", type=int, default=1000, help="background images from the training sources")
    ap.add_argument("--ks", default="1,5,20", help="k-th nearest background neighbours to try")
    ap.add_argument("--betas", default="0.5,1.0", help="weights of the background term to try")
    ap.add_argument("--json", type=Path, default=ROOT / "bench-data" / "score_normalisation.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    holdout = {f.strip() for f in args.holdout.split(",") if f.strip()}
    ks = [int(k) for k in args.ks.split(",")]
    betas = [float(b) for b in args.betas.split(",")]
    files = sorted(p for paths in training_sources().values() for p in paths)
    rng = np.random.default_rng(0)
    picked = [files[i] for i in rng.choice(len(files), size=min(args.background, len(files)), replace=False)]

    with tempfile.TemporaryDirectory(prefix="dedup-norm-") as tmp:
        store = open_store(Path(tmp) / "probe", model=str(args.model) if args.model else None)
        model_id = store.encoder.model_id
        background = embed(store, picked)
        pairs = {
            (fam, split): pair_set(store, make_accuracy_set.default_out(fam) / split, background, ks)
            for fam in families
            for split in ("dev", "test")
        }
        store.close()

    calib = [f for f in families if f not in holdout]
    rows: list[dict[str, Any]] = []
    for beta, k in [(0.0, ks[0])] + [(b, k) for b in betas for k in ks]:

        def score(p: dict[str, Any], beta: float = beta, k: int = k) -> np.ndarray:
            return as_distance(p["sim"] - beta * p["bg"][k])

        union_d = np.concatenate([score(pairs[f, "dev"]) for f in calib])
        union_l = np.concatenate([pairs[f, "dev"]["labels"] for f in calib])
        found = metrics.threshold_at_precision(union_d, union_l, TARGET_PRECISION)
        if found is None:
            continue
        threshold = found[0]
        cells = {}
        for fam in families:
            s = metrics.pair_scores(score(pairs[fam, "test"]), pairs[fam, "test"]["labels"], threshold)
            cells[fam] = {"precision": s.precision, "recall": s.recall, "f1": s.f1}
        rows.append({"beta": beta, "k": k if beta else None, "threshold": threshold, "test": cells})

    print(f"model {model_id}; background {len(picked)} training-source images; calibrated on {'+'.join(calib)} dev")
    print("| beta | k | " + " | ".join(f"{f} P / R / F1" for f in families) + " |")
    print("|---|---|" + "---|" * len(families))
    for r in rows:
        cells = " | ".join(
            f"{r['test'][f]['precision']:.3f} / {r['test'][f]['recall']:.3f} / {r['test'][f]['f1']:.3f}"
            for f in families
        )
        print(f"| {r['beta']:g} | {r['k'] or '-'} | {cells} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model_id": model_id, "background": len(picked), "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

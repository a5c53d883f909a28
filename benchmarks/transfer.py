"""Does a threshold carry over? Pair accuracy and phone queries of models on three disjoint image families.

    python benchmarks/transfer.py                                   # the shipped model
    python benchmarks/transfer.py --model dedup/models/default --model bench-data/models/old
    python benchmarks/transfer.py --write-union-truth bench-data/union-dev.csv   # for `dedup calibrate`

Families (``benchmarks/make_accuracy_set.py --family F``, generated on first use): ``tuxpaint`` (held-out
Tux Paint stamps: same package as part of the training data, other files), ``wesnoth`` (game portraits)
and ``wallpapers`` (photographs), the last two from packages no dedup model is trained on. Each has a dev
and a test split with no source in common.

For each model, every family's dev and test catalogs are embedded the way ingest embeds them
(``Store.embed_paths``: the safe loader, the model's preprocessing, its runtime); the test catalogs are
ingested into a throw-away store, so phone queries run through ``dedup.service.query_paths`` as a user's
``dedup query`` does. Figures:

- **transfer matrix**: the threshold with precision ≥ 0.99 on one family's dev pairs (and on the union of
  every dev split, on the union of the calibration families' dev splits — every family but ``--holdout``,
  default ``wallpapers``: the rule of the shipped threshold — and the model card's own threshold), then
  precision and recall on every family's test pairs at that threshold. The diagonal is the flattering
  number; the off-diagonal cells are what a user with another catalog gets;
- recall per duplicate kind on each test split at the card threshold;
- phone-photo Recall@1 and @5 (ranking distinct products), and **distractor rejection**: the other
  families' phone photos queried against this family's catalog (their product is not there), the share
  whose nearest catalog image is farther than the card threshold (so a "no match" is answered).

Prints Markdown tables and writes JSON (``--json``, default ``bench-data/transfer.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run from a fresh clone: no install needed

import make_accuracy_set  # noqa: E402

from dedup.matching import metrics  # noqa: E402
from dedup.service import ingest_folder, open_store  # noqa: E402
from dedup.service.evaluation import read_queries, read_truth  # noqa: E402
from dedup.service.search import query_paths  # noqa: E402

TARGET_PRECISION = 0.99
QUERY_DEPTH = 50


def ensure_sets(families: list[str]) -> dict[str, Path]:
    """Each family's accuracy-set folder, generated (seed 0) where it is missing."""
    out: dict[str, Path] = {}
    for fam in families:
        folder = make_accuracy_set.default_out(fam)
        if not (folder / "test" / "truth.csv").is_file():
            print(f"generating the {fam} accuracy set in {folder} ...", flush=True)
            make_accuracy_set.generate(folder, family=fam)
        out[fam] = folder
    return out


def split_pairs(store: Any, split_dir: Path) -> dict[str, Any]:
    """Distances, labels and kind masks of every pair of a split's catalog, embedded by ``store``."""
    truth = read_truth(split_dir / "truth.csv")
    vectors = np.concatenate(
        [store.embed_paths(truth.paths[i : i + 256]) for i in range(0, len(truth.paths), 256)]
    ).astype(np.float32)
    i, j, labels = metrics.group_pairs(truth.groups)
    gram = vectors @ vectors.T
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram[i, j]))
    return {"dist": dist, "labels": labels, "kinds": metrics.kind_masks(i, j, truth.kinds), "truth": truth}


def scores(pairs: dict[str, Any], threshold: float) -> dict[str, Any]:
    s = metrics.pair_scores(pairs["dist"], pairs["labels"], threshold)
    return {"precision": s.precision, "recall": s.recall, "f1": s.f1, "fp": s.fp, "fn": s.fn}


def query_figures(store: Any, queries: list[tuple[Path, str]], group_of: dict[str, str]) -> dict[str, Any]:
    """Recall@1/@5 of phone queries whose product is in the catalog, ranking distinct groups."""
    ranks: list[float] = []
    for (_, expected), result in zip(queries, query_paths(store, [q for q, _ in queries], QUERY_DEPTH), strict=True):
        labels: list[str] = []
        for hit in getattr(result, "hits", []):
            label = group_of.get(hit.image.path, hit.image.path)
            if label not in labels:
                labels.append(label)
        ranks.append(metrics.first_relevant_rank(labels, expected))
    return {"count": len(ranks), "r1": metrics.recall_at_k(ranks, 1), "r5": metrics.recall_at_k(ranks, 5)}


def nearest_distances(store: Any, paths: list[Path]) -> np.ndarray:
    """The distance of each query's nearest catalog image."""
    out = [r.hits[0].distance if getattr(r, "hits", None) else np.inf for r in query_paths(store, paths, 1)]
    return np.asarray(out, np.float64)


def run_model(model: Path | None, sets: dict[str, Path], holdout: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every figure of one model over the families (see the module docstring)."""
    started = time.perf_counter()
    result: dict[str, Any] = {"model": str(model or "shipped default"), "families": {}}
    with tempfile.TemporaryDirectory(prefix="dedup-transfer-") as tmp:
        probe = open_store(Path(tmp) / "probe", model=str(model) if model else None)
        card_threshold = float(probe.encoder.threshold)
        result["model_id"] = probe.encoder.model_id
        result["card_threshold"] = card_threshold
        pairs: dict[tuple[str, str], dict[str, Any]] = {}
        stores: dict[str, Any] = {}
        for fam, folder in sets.items():
            for split in ("dev", "test"):
                pairs[fam, split] = split_pairs(probe, folder / split)
            store = open_store(Path(tmp) / fam, model=str(model) if model else None)
            ingest_folder(store, folder / "test" / "catalog")
            stores[fam] = store
        probe.close()

        # Thresholds: calibrated on each family's dev split, on the union of them, and the card's.
        thresholds: dict[str, float | None] = {"card": card_threshold}
        for fam in sets:
            found = metrics.threshold_at_precision(
                pairs[fam, "dev"]["dist"], pairs[fam, "dev"]["labels"], TARGET_PRECISION
            )
            thresholds[f"dev:{fam}"] = None if found is None else found[0]
        for name, fams in (("dev:all", list(sets)), ("dev:calibration", [f for f in sets if f not in holdout])):
            if not fams:
                continue
            union_d = np.concatenate([pairs[f, "dev"]["dist"] for f in fams])
            union_l = np.concatenate([pairs[f, "dev"]["labels"] for f in fams])
            found = metrics.threshold_at_precision(union_d, union_l, TARGET_PRECISION)
            thresholds[name] = None if found is None else found[0]
        result["thresholds"] = thresholds
        result["matrix"] = {
            name: {fam: scores(pairs[fam, "test"], t) for fam in sets} if t is not None else None
            for name, t in thresholds.items()
        }
        for fam, folder in sets.items():
            test = pairs[fam, "test"]
            truth = test["truth"]
            group_of = {str(p): g for p, g in zip(truth.paths, truth.groups, strict=True)}
            _, queries = read_queries(folder / "test" / "queries.csv")
            fam_out: dict[str, Any] = {
                "catalog_images": len(truth.paths),
                "pairs": int(len(test["labels"])),
                "duplicate_pairs": int(test["labels"].sum()),
                "recall_by_kind": {
                    kind: metrics.pair_scores(test["dist"][m], test["labels"][m], card_threshold).recall
                    for kind, m in test["kinds"].items()
                },
                "queries": query_figures(stores[fam], queries, group_of),
            }
            others = [q for f, fo in sets.items() if f != fam for q, _ in read_queries(fo / "test" / "queries.csv")[1]]
            nearest = nearest_distances(stores[fam], others)
            fam_out["distractors"] = {"count": len(others), "rejected": float(np.mean(nearest > card_threshold))}
            result["families"][fam] = fam_out
        for store in stores.values():
            store.close()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_tables(results: list[dict[str, Any]], families: list[str]) -> None:
    for r in results:
        print(f"\n### {r['model']} ({r['model_id']}), card threshold {r['card_threshold']:.4f}\n")
        print("| threshold from | value | " + " | ".join(f"{f} P / R" for f in families) + " |")
        print("| --- | --- |" + " --- |" * len(families))
        for name, row in r["matrix"].items():
            t = r["thresholds"][name]
            cells = (
                [f"{_f(row[f]['precision'])} / {_f(row[f]['recall'])}" for f in families]
                if row
                else ["-"] * len(families)
            )
            print(f"| {name} | {_f(t)} | " + " | ".join(cells) + " |")
        print("\n| family | phone R@1 | phone R@5 | distractors rejected | catalog images | duplicate pairs |")
        print("| --- | --- | --- | --- | --- | --- |")
        for f in families:
            fo = r["families"][f]
            q = fo["queries"]
            print(
                f"| {f} | {_f(q['r1'])} | {_f(q['r5'])} | {_f(fo['distractors']['rejected'])} "
                f"({fo['distractors']['count']}) | {fo['catalog_images']} | {fo['duplicate_pairs']} |"
            )
        kinds = sorted({k for f in families for k in r["families"][f]["recall_by_kind"]})
        print("\n| kind | " + " | ".join(families) + " |")
        print("| --- |" + " --- |" * len(families))
        for k in kinds:
            print(f"| {k} | " + " | ".join(_f(r["families"][f]["recall_by_kind"].get(k)) for f in families) + " |")
        print(f"\n({r['seconds']} s)")


def write_union_truth(sets: dict[str, Path], out: Path) -> None:
    """One ``path,group,kind`` CSV of these families' dev splits (absolute paths), for ``dedup calibrate``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "group", "kind"])
        for fam, folder in sets.items():
            with open(folder / "dev" / "truth.csv", newline="") as src:
                for row in csv.DictReader(src):
                    w.writerow([str((folder / "dev" / row["path"]).resolve()), f"{fam}:{row['group']}", row["kind"]])
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", default=None, help="model folder (repeatable)")
    ap.add_argument("--families", default=",".join(make_accuracy_set.FAMILIES))
    ap.add_argument("--json", type=Path, default=ROOT / "bench-data" / "transfer.json")
    ap.add_argument(
        "--holdout",
        default="wallpapers",
        help="families left out of the 'dev:calibration' threshold (the shipped threshold's rule), comma-separated",
    )
    ap.add_argument(
        "--write-union-truth", type=Path, default=None, help="write the calibration families' dev truth CSV and stop"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    sets = ensure_sets(families)
    holdout = tuple(f.strip() for f in args.holdout.split(",") if f.strip())
    if args.write_union_truth is not None:
        write_union_truth({f: p for f, p in sets.items() if f not in holdout}, args.write_union_truth)
        return
    results = [run_model(m, sets, holdout) for m in (args.model or [None])]
    print_tables(results, families)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Accuracy: dedup against perceptual hashes on the labelled near-duplicate benchmark (test split).

    python benchmarks/accuracy.py                          # generates bench-data/accuracy-set first if needed
    python benchmarks/accuracy.py --data DIR --sources 8   # a smaller set (the test suite runs one)

Every method scores the same pairs of the test split's catalog (all pairs within a source's group are
duplicates, all others not; per kind: each kind's copies against every original) and ranks the catalog for
the same phone-photo queries:

- dedup: the store's model through ``dedup.service.evaluate``, at the model card's threshold and at the
  threshold with the best F1 on the dev split; B-cubed F1 of the report's clusters too;
- imagehash pHash, dHash, wHash and aHash (64-bit hashes, Hamming distance), at the usual default
  threshold (distance <= 10 bits: imagededup's ``max_distance_threshold`` default for the same hashes)
  and at the threshold with the best F1 on the dev split.

imagededup itself is not run: its package requires torch and torchvision (``pip download --no-deps
imagededup`` and its metadata), which this project does not install; its hash methods are the same four
hashes as imagehash's. Prints tables and writes JSON (``--json``, default ``bench-data/accuracy.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run from a fresh clone: no install needed

import make_accuracy_set  # noqa: E402

from dedup.matching import metrics  # noqa: E402
from dedup.service import evaluate, ingest_folder, open_store  # noqa: E402
from dedup.service.evaluation import read_queries, read_truth  # noqa: E402

#: The usual default Hamming threshold for 64-bit perceptual hashes (imagededup's max_distance_threshold).
DEFAULT_HAMMING = 10
QUERY_KS = (1, 5)


def _hash_functions() -> dict[str, Callable[[Any], Any]]:
    import imagehash

    return {
        "pHash": imagehash.phash,
        "dHash": imagehash.dhash,
        "wHash": imagehash.whash,
        "aHash": imagehash.average_hash,
    }


def hash_images(paths: list[Path]) -> tuple[dict[str, np.ndarray], float]:
    """Every hash of every image as uint64 (each file decoded once, at full size); returns (hashes, seconds)."""
    from PIL import Image

    funcs = _hash_functions()
    out = {name: np.zeros(len(paths), np.uint64) for name in funcs}
    start = time.perf_counter()
    for k, p in enumerate(paths):
        with Image.open(p) as im:
            im.load()
            for name, fn in funcs.items():
                out[name][k] = np.uint64(int(str(fn(im)), 16))
    return out, time.perf_counter() - start


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences of uint64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.float64)


def _scores(dist: np.ndarray, labels: np.ndarray, masks: dict[str, np.ndarray], thr: float) -> dict[str, Any]:
    return {
        "pairs": metrics.pair_scores(dist, labels, thr).as_dict(),
        "by_kind": {k: metrics.pair_scores(dist[m], labels[m], thr).as_dict() for k, m in masks.items()},
    }


def _hash_query_ranks(q: np.ndarray, cat: np.ndarray, cat_groups: list[str], expected: list[str], seed: int) -> dict:
    """Rank catalog groups for each query hash (ties in distance broken in a seeded random order)."""
    d = hamming(q[:, None], cat[None, :])
    tiebreak = np.random.default_rng(seed).random(len(cat))
    ranks = []
    for row, want in zip(d, expected, strict=True):
        order = np.lexsort((tiebreak, row))
        seen: list[str] = []
        for k in order:
            if cat_groups[k] not in seen:
                seen.append(cat_groups[k])
            if len(seen) >= 50:
                break
        ranks.append(metrics.first_relevant_rank(seen, want))
    return {
        "count": len(ranks),
        "recall_at_1": round(metrics.recall_at_k(ranks, 1), 4),
        "recall_at_5": round(metrics.recall_at_k(ranks, 5), 4),
        "mrr": round(metrics.mean_reciprocal_rank(ranks), 4),
    }


def _ensure_data(data: Path, seed: int, sources: int | None, regenerate: bool) -> dict[str, Any]:
    manifest_path = data / "manifest.json"
    if not regenerate and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("seed") == seed and manifest.get("per_split") == sources:
            return manifest
    print(f"generating the benchmark set in {data} ...", flush=True)
    return make_accuracy_set.generate(data, seed=seed, per_split=sources)


def run(
    data: Path,
    seed: int = 0,
    sources: int | None = None,
    regenerate: bool = False,
    model: str | None = None,
    with_hashes: bool = True,
) -> dict[str, Any]:
    """Generate (if needed) and score the benchmark; returns the JSON-ready result."""
    manifest = _ensure_data(data, seed, sources, regenerate)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "sets": {
            s: {k: v for k, v in m.items() if k != "sources"} | {"sources": len(m["sources"])}
            for s, m in manifest["splits"].items()
        },
        "methods": [],
    }
    evals: dict[str, dict[str, Any]] = {}
    for split in make_accuracy_set.SPLITS:
        store_dir = data / f"store-{split}"
        shutil.rmtree(store_dir, ignore_errors=True)
        with open_store(store_dir, model=model) as store:
            summary = ingest_folder(store, data / split / "catalog")
            if summary.failed:
                raise SystemExit(f"{summary.failed} benchmark images failed to ingest: {summary.failures[:3]}")
            result["sets"][split]["ingest_seconds"] = round(summary.seconds, 2)
            truth, queries = data / split / "truth.csv", data / split / "queries.csv"
            evals[split] = evaluate(store, truth, queries_csv=queries).as_dict()
            if split == "test":
                dev_thr = evals["dev"]["best_f1"]["threshold"]
                evals["test_dev_threshold"] = evaluate(store, truth, threshold=dev_thr).as_dict()
                result["model"] = {"id": store.encoder.model_id, "card_threshold": store.encoder.threshold}
    test = evals["test"]
    for name, ev, rule in (
        ("dedup", test, "model card"),
        ("dedup", evals["test_dev_threshold"], "dev best F1"),
    ):
        result["methods"].append(
            {
                "method": name,
                "rule": rule,
                "threshold": ev["threshold"],
                "pairs": ev["pairs"],
                "by_kind": ev["by_kind"],
                "queries": test["queries"],
                "clusters": ev["clusters"],
            }
        )
    dev = evals["dev"]
    result["dedup_dev"] = {k: dev[k] for k in ("threshold", "pairs", "best_f1", "at_precision", "queries")}
    result["dedup_test_oracle_best_f1"] = test["best_f1"]
    result["dedup_test_oracle_at_precision"] = test["at_precision"]
    if with_hashes:
        result["methods"].extend(_hash_methods(data, seed, result))
    return result


def _hash_methods(data: Path, seed: int, result: dict[str, Any]) -> list[dict[str, Any]]:
    per_split: dict[str, dict[str, Any]] = {}
    seconds = 0.0
    for split in make_accuracy_set.SPLITS:
        truth = read_truth(data / split / "truth.csv")
        _, queries = read_queries(data / split / "queries.csv")
        hashes, t1 = hash_images(truth.paths)
        qhashes, t2 = hash_images([p for p, _ in queries])
        seconds += t1 + t2
        a, b, labels = metrics.group_pairs(truth.groups)
        per_split[split] = {
            "truth": truth,
            "hashes": hashes,
            "qhashes": qhashes,
            "expected": [g for _, g in queries],
            "pairs": (a, b, labels),
            "masks": metrics.kind_masks(a, b, truth.kinds),
        }
    images = sum(len(s["truth"].paths) + len(s["expected"]) for s in per_split.values())
    result["hash_seconds"] = {"all_four": round(seconds, 2), "images": images}
    out = []
    for name in _hash_functions():
        dev, test = per_split["dev"], per_split["test"]
        dev_d = hamming(dev["hashes"][name][dev["pairs"][0]], dev["hashes"][name][dev["pairs"][1]])
        _, _, _, dev_thr = metrics.best_f1_threshold(dev_d, dev["pairs"][2])
        a, b, labels = test["pairs"]
        test_d = hamming(test["hashes"][name][a], test["hashes"][name][b])
        queries = _hash_query_ranks(
            test["qhashes"][name], test["hashes"][name], test["truth"].groups, test["expected"], seed
        )
        for rule, thr in (("default", float(DEFAULT_HAMMING)), ("dev best F1", dev_thr)):
            out.append(
                {
                    "method": name,
                    "rule": rule,
                    "threshold": thr,
                    **_scores(test_d, labels, test["masks"], thr),
                    "queries": queries,
                    "clusters": None,
                }
            )
    return out


def _f(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def print_tables(result: dict[str, Any]) -> None:
    """The overall table, then recall and F1 per duplicate kind, then false-positive rates on colour variants."""
    t = result["sets"]["test"]
    print(
        f"\ntest split: {t['sources']} sources, {t['catalog_images']} catalog images "
        f"({t['variants']} colour variants), {t['queries']} phone queries; model {result['model']['id']}"
    )
    print(
        f"{'method':<8} {'threshold':<20} {'P':>6} {'R':>6} {'F1':>6} {'FPR':>8} {'top-1':>6} {'R@5':>6} {'B3-F1':>6}"
    )
    for m in result["methods"]:
        p, q, c = m["pairs"], m["queries"], m["clusters"]
        fpr = p["false_positive_rate"]
        rule = f"{m['rule']} {m['threshold']:.4g}"
        print(
            f"{m['method']:<8} {rule:<20} {_f(p['precision'])} {_f(p['recall'])} "
            f"{_f(p['f1'])} {'' if fpr is None else f'{fpr:8.5f}'} {_f(q['recall_at_1'])} {_f(q['recall_at_5'])} "
            f"{_f(c['f1'] if c else None)}"
        )
    kinds = [k for k in result["methods"][0]["by_kind"] if k != "variant"]
    heads = [m["method"] + ("@dev" if m["rule"] == "dev best F1" else "") for m in result["methods"]]
    for stat in ("recall", "precision", "f1"):
        print(f"\n{stat} per duplicate kind (test split; @dev = the dev split's best-F1 threshold)")
        print(f"{'kind':<10}" + "".join(f"{h:>12}" for h in heads))
        for kind in kinds:
            print(f"{kind:<10}" + "".join(f"{_f(m['by_kind'][kind][stat]):>12}" for m in result["methods"]))
    if "variant" in result["methods"][0]["by_kind"]:
        print("\ncolour variants (another product) accepted as duplicates of an original: false-positive rate")
        print(f"{'':<10}" + "".join(f"{h:>12}" for h in heads))
        row = [m["by_kind"]["variant"]["false_positive_rate"] for m in result["methods"]]
        print(f"{'variant':<10}" + "".join(f"{'' if v is None else f'{v:.4f}':>12}" for v in row))
    d = result["dedup_dev"]
    dp, dq, dap = d["pairs"], d["queries"], d["at_precision"]
    print(
        f"\ndev split, dedup at the card threshold {d['threshold']:.4f}: P {_f(dp['precision'])} R {_f(dp['recall'])} "
        f"F1 {_f(dp['f1'])}; best F1 {d['best_f1']['f1']:.3f} at {d['best_f1']['threshold']:.4f}; "
        f"recall at precision >= {dap['target']}: {_f(dap['recall'])} at {_f(dap['threshold'])}; "
        f"phone top-1 {_f(dq['recall_at_1'])} R@5 {_f(dq['recall_at_5'])}"
    )
    o = result["dedup_test_oracle_best_f1"]
    print(f"\ndedup's best F1 on the test split itself (for reference only): {o['f1']:.3f} at {o['threshold']:.4f}")
    ap = result["dedup_test_oracle_at_precision"]
    if ap["threshold"] is not None:
        print(
            f"dedup at precision >= {ap['target']} on the test split: recall {ap['recall']:.3f} "
            f"at {ap['threshold']:.4f} (for reference only)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data" / "accuracy-set")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-data" / "accuracy.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", type=int, default=None, help="at most this many sources per split")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the image set even if it exists")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--no-hashes", action="store_true", help="score dedup only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    result = run(args.data, args.seed, args.sources, args.regenerate, args.model, not args.no_hashes)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print_tables(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\n{result['seconds']} s; JSON written to {args.json}")


if __name__ == "__main__":
    main()

"""Query views: which centred crops of a phone photo, mirrored or not, to embed (``DEDUP_QUERY_VIEWS``), chosen on dev.

    python benchmarks/query_views.py                 # the shipped model; builds the extra dev photos once
    python benchmarks/query_views.py --model DIR --per-product 8

The dev split of the accuracy set has only 100 phone photos (2 per product), too few to tell crop sets
apart, so this script makes ``--per-product`` more phone photos of every dev product (the benchmark's own
``augment.phone_photo`` on the held-out backgrounds, other seeds) under ``bench-data/query-views-dev``.
Each photo is embedded once per view (crop fraction, mirrored or not) through the model's query tower; every view set is
then scored as a query would be (a catalog image's distance is its best view's) by top-1 against the whole dev
catalog (originals, copies, colour variants). The test split is never read. Prints a table and writes JSON
(``--json``, default ``bench-data/query_views.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "scripts")]  # run from a fresh clone

import make_accuracy_set  # noqa: E402

VIEWS = ("1", "0.9", "0.85", "0.8", "0.75", "0.7", "1m", "0.9m", "0.85m", "0.8m")
VIEW_SETS = (
    "1",
    "0.85",
    "0.85m",
    "1,0.9",
    "1,0.85",
    "1,0.8",
    "1,0.75",
    "1,0.7",
    "1,1m",
    "0.9,0.9m",
    "0.85,0.85m",
    "0.8,0.8m",
    "1,0.85m",
    "1,0.85,0.7",
    "1,0.85,0.85m",
    "1,1m,0.85,0.85m",
)


def extra_photos(dev: Path, out: Path, per_product: int, seed: int) -> list[tuple[Path, str]]:
    """``per_product`` new phone photos of every dev original (made once), with their product group."""
    from PIL import Image

    from dedup.training import augment

    truth = list(csv.DictReader((dev / "truth.csv").open()))
    originals = [r for r in truth if r["kind"] == "original"]
    if not out.is_dir() or len(list(out.glob("*.jpg"))) != per_product * len(originals):
        out.mkdir(parents=True, exist_ok=True)
        make_accuracy_set._init_worker()  # the held-out backgrounds the benchmark's phone photos use
        for i, row in enumerate(originals):
            with Image.open(dev / row["path"]) as im:
                shot = im.convert("RGB")
            for n in range(per_product):
                rng = np.random.default_rng([seed, i, 300 + n])
                photo = augment.phone_photo(shot, rng, make_accuracy_set._BACKGROUNDS)
                photo.save(out / f"{row['group']}__x{n}.jpg", "JPEG", quality=90)
    return [(p, p.name.split("__x")[0]) for p in sorted(out.glob("*.jpg"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data" / "accuracy-set")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-data" / "query-views-dev")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--per-product", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "bench-data" / "query_views.json")
    args = parser.parse_args()

    from dedup.config import default_model_dir, parse_query_views
    from dedup.embedding.encoder import load_encoder, load_query_encoder
    from dedup.imaging import load_image, view_images

    if not (args.data / "dev" / "truth.csv").is_file():
        sys.exit(f"no accuracy set under {args.data}: run python benchmarks/make_accuracy_set.py first")
    dev = args.data / "dev"
    model = args.model or default_model_dir()
    catalog_encoder = load_encoder(model)
    query_encoder = load_query_encoder(catalog_encoder, model)
    truth = list(csv.DictReader((dev / "truth.csv").open()))
    groups = np.array([r["group"] for r in truth])
    catalog = np.stack(
        [
            catalog_encoder.embed(
                catalog_encoder.model_input(load_image(dev / r["path"], target=catalog_encoder.input_size).image)[None]
            )[0]
            for r in truth
        ]
    )
    queries = [(dev / r["path"], r["group"]) for r in csv.DictReader((dev / "queries.csv").open())]
    queries += extra_photos(dev, args.out, args.per_product, args.seed)
    all_views = parse_query_views(",".join(VIEWS))
    wanted = np.array([g for _, g in queries])
    views = np.stack(
        [
            query_encoder.embed(
                np.stack(
                    [
                        query_encoder.model_input(c)
                        for c in view_images(load_image(p, target=query_encoder.input_size).image, all_views)
                    ]
                )
            )
            for p, _ in queries
        ]
    )
    similarity = np.einsum("qvd,cd->qvc", views, catalog)  # (queries, views, catalog)
    rows = []
    for view_set in VIEW_SETS:
        best = similarity[:, [VIEWS.index(v) for v in view_set.split(",")]].max(axis=1)
        rows.append({"views": view_set, "top1": float(np.mean(groups[np.argmax(best, axis=1)] == wanted))})
    print(f"dev split: {len(queries)} phone photos of {len(set(wanted))} products, {len(truth)} catalog images")
    print(f"model {catalog_encoder.model_id}, query tower {query_encoder.input_size} px")
    for row in rows:
        print(f"  {row['views']:16s} top-1 {row['top1']:.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": catalog_encoder.model_id, "queries": len(queries), "rows": rows}
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

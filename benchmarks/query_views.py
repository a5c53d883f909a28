"""Query views: which crops of a phone photo, mirrored or not, to embed (``DEDUP_QUERY_VIEWS``), chosen on dev.

    python benchmarks/query_views.py                 # the shipped model; builds the extra dev photos once
    python benchmarks/query_views.py --model DIR --per-product 8 --family wesnoth

The dev splits of the accuracy sets (every family of ``make_accuracy_set.FAMILIES`` by default) have
2 phone photos per product, too few to tell crop sets apart, so this script makes ``--per-product``
more phone photos of every dev product (the benchmark's own ``augment.phone_photo`` on the held-out
backgrounds, other seeds) under ``bench-data/query-views-dev-<family>``. Centred and off-centre crops
(a grid of 60 % crops, four 45 % ones) are scored alone and in sets.
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

#: Off-centre crops: a 3×3 grid of 60 % crops and the four quadrant-centred 45 % crops.
GRID60 = tuple(f"0.6@{x}:{y}" for y in (0.3, 0.5, 0.7) for x in (0.3, 0.5, 0.7) if (x, y) != (0.5, 0.5))
QUAD45 = tuple(f"0.45@{x}:{y}" for y in (0.3, 0.7) for x in (0.3, 0.7))
VIEWS = ("1", "0.9", "0.85", "0.8", "0.75", "0.7", "0.6", "0.45", "1m", "0.9m", "0.85m", "0.8m", *GRID60, *QUAD45)
VIEW_SETS = (
    "1",
    "0.85",
    "0.85m",
    "1,0.85",
    "1,0.7",
    "1,1m",
    "0.85,0.85m",
    "1,0.85m",
    "1,0.85,0.7",
    "1,0.85,0.6",
    "1,0.85,0.85m",
    "1,1m,0.85,0.85m",
    "1,0.85,0.7,0.6,0.45",
    ",".join(("1", "0.85", "0.6", *QUAD45)),
    ",".join(("1", "0.85", "0.6", *GRID60)),
    ",".join(("1", "0.85", "0.7", "0.6", *GRID60, *QUAD45)),
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
    parser.add_argument(
        "--family",
        action="append",
        default=None,
        help="accuracy-set family whose dev split is used (repeatable; default: all of make_accuracy_set.FAMILIES)",
    )
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--per-product", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "bench-data" / "query_views.json")
    args = parser.parse_args()

    from dedup.config import default_model_dir, parse_query_views
    from dedup.embedding.encoder import load_encoder, load_query_encoder
    from dedup.imaging import load_image, view_images

    model = args.model or default_model_dir()
    catalog_encoder = load_encoder(model)
    query_encoder = load_query_encoder(catalog_encoder, model)
    all_views = parse_query_views(",".join(VIEWS))
    families = args.family or list(make_accuracy_set.FAMILIES)
    top1: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for family in families:
        data = make_accuracy_set.default_out(family)
        if not (data / "dev" / "truth.csv").is_file():
            sys.exit(f"no accuracy set under {data}: run python benchmarks/make_accuracy_set.py --family {family}")
        dev = data / "dev"
        truth = list(csv.DictReader((dev / "truth.csv").open()))
        groups = np.array([r["group"] for r in truth])
        size = catalog_encoder.input_size
        catalog = np.concatenate(
            [
                catalog_encoder.embed(
                    np.stack(
                        [catalog_encoder.model_input(load_image(dev / r["path"], target=size).image) for r in chunk]
                    )
                )
                for chunk in (truth[i : i + 128] for i in range(0, len(truth), 128))
            ]
        )
        queries = [(dev / r["path"], r["group"]) for r in csv.DictReader((dev / "queries.csv").open())]
        out = ROOT / "bench-data" / f"query-views-dev-{family}"
        queries += extra_photos(dev, out, args.per_product, args.seed)
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
        counts[family] = len(queries)
        top1[family] = {}
        for view_set in VIEW_SETS:
            best = similarity[:, [VIEWS.index(v) for v in view_set.split(",")]].max(axis=1)
            top1[family][view_set] = float(np.mean(groups[np.argmax(best, axis=1)] == wanted))
        print(f"{family} dev: {len(queries)} phone photos of {len(set(wanted))} products, {len(truth)} catalog images")
    print(f"model {catalog_encoder.model_id}, query tower {query_encoder.input_size} px")
    print("| views | n | " + " | ".join(families) + " | mean |")
    print("| --- | --- |" + " --- |" * (len(families) + 1))
    rows = []
    for view_set in VIEW_SETS:
        per = [top1[f][view_set] for f in families]
        rows.append({"views": view_set, "top1": dict(zip(families, per, strict=True)), "mean": float(np.mean(per))})
        cells = " | ".join(f"{v:.3f}" for v in per)
        print(f"| {view_set} | {len(view_set.split(','))} | {cells} | {np.mean(per):.3f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": catalog_encoder.model_id, "queries": counts, "rows": rows}
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

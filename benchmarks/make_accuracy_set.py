"""Generate the labelled near-duplicate benchmark: dev and test splits from disjoint held-out source images.

    python benchmarks/make_accuracy_set.py [OUT] [--family tuxpaint|wesnoth|wallpapers] [--seed 0] [--sources N]

Three source families, each from other image sources, so a threshold calibrated on one can be checked
on the others (``benchmarks/transfer.py``); OUT defaults to ``bench-data/accuracy-set`` for tuxpaint and
``bench-data/accuracy-set-<family>`` for the others:

``tuxpaint``
    the held-out Tux Paint stamps (``tuxpaint_images('holdout')``, never the training split; mirror and
    outline stamps are left out because they are unlabelled near-duplicates of other stamps), clip art;
``wesnoth``
    the character portraits of Debian's ``wesnoth-1.16-data`` (painted game art with transparency), a
    package no model of dedup is trained on;
``wallpapers``
    the photographs of Debian's ``lomiri-wallpapers``, ``lomiri-wallpapers-16.04``, ``-20.04`` and
    ``sway-backgrounds`` (one file of the sway set, whose other files are the same picture at other
    sizes), each cut into four quadrants that are separate products; never trained on.
``photos``
    scikit-image's colour sample photographs, cut into quadrants like the wallpapers: photographs that
    may be used for tuning (they are training data of the model), so no held-out figure comes from them.

Stamps and portraits are rendered as product shots on a white canvas; a wallpaper quadrant is the
whole photo (a full-bleed product photo, 800 px on the longer side). The sources are shuffled with the
seed and cut into a dev and a test split that share no source. Per source, in ``OUT/<split>/``:

- ``catalog/originals/<id>.jpg``: the product shot (the group's reference, kind ``original``);
- ``catalog/copies/<id>__<kind>.jpg``: one near-duplicate per kind of
  ``dedup.training.augment.DUPLICATE_KINDS`` (the same transforms the model was trained with);
- ``catalog/variants/<id>__variant.jpg``: the same design in another colour where the stamp has colour
  (``augment.colour_variant``): another product, so a group of its own, the hard negative;
- ``queries/<id>__phone<n>.jpg``: phone photos of the product (``augment.phone_photo`` on the held-out
  Tux Paint template photos as backgrounds), not part of the catalog;
- ``truth.csv`` (``path,group,kind``) and ``queries.csv`` (``path,group``), paths relative to the split folder.

``OUT/manifest.json`` records the seed, the sources of each split and the counts. The output depends only
on the seed and the sources (not on the number of worker processes).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # run from a fresh clone: no install needed

from make_catalog_samples import load_stamp, product_shot, stamp_pool  # noqa: E402

from dedup.training import augment  # noqa: E402
from dedup.training.sources import tuxpaint_images  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")
WESNOTH_PORTRAITS = Path("/usr/share/games/wesnoth/1.16/data/core/images/portraits")
WALLPAPERS = Path("/usr/share/backgrounds")
FAMILIES = ("tuxpaint", "wesnoth", "wallpapers")
#: Families made only to tune on (training data of the model): never part of a benchmark's default run.
TUNING_FAMILIES = ("photos",)
#: Debian package that holds each family's sources (``apt-get install`` it before generating).
FAMILY_PACKAGES = {
    "tuxpaint": "tuxpaint-stamps-default tuxpaint-data",
    "wesnoth": "wesnoth-1.16-data",
    "wallpapers": "lomiri-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 sway-backgrounds",
    "photos": "(none: scikit-image's sample photos, pip install 'dedup[train]')",
}
#: scikit-image's colour sample photographs (the ``photos`` family: training data, never a held-out figure).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                  "motorcycle_left.png", "retina.jpg", "rocket.jpg", "color.png")  # fmt: skip
PHONE_PER_SOURCE = 2
SPLITS = ("dev", "test")

_BACKGROUNDS: list[Image.Image] = []


def source_id(path: Path) -> str:
    """A file-name-safe id unique across stamp folders, e.g. ``animals-cat`` (``…#q2`` for a wallpaper quadrant)."""
    path, _, quadrant = str(path).partition("#")
    path = Path(path)
    if quadrant:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{path.stem}-q{quadrant}")
    root = next((r for r in (STAMPS, WESNOTH_PORTRAITS) if r in path.parents), None)
    rel = path.relative_to(root) if root is not None else Path(path.name)
    name = "-".join([*rel.parts[:1], path.stem]) if len(rel.parts) > 1 else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def family_sources(family: str) -> list[Path]:
    """The source images of a family (a wallpaper quadrant is ``path#0`` … ``path#3``); empty if not installed."""
    if family == "tuxpaint":
        return sorted(stamp_pool())
    if family == "wesnoth":
        return _distinct(p for p in WESNOTH_PORTRAITS.rglob("*.png") if "transparent" not in p.parts)
    if family == "wallpapers":
        # lomiri-default-background.png is a symlink to warty-final-ubuntu.png: one picture, one source.
        photos = _distinct(p for p in WALLPAPERS.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        sway = sorted((WALLPAPERS / "sway").glob("*.png"), key=lambda p: p.stat().st_size)
        photos += sway[-1:]
        return [Path(f"{p}#{q}") for p in photos for q in range(4)]
    if family == "photos":
        try:
            import skimage
        except ImportError:
            return []
        folder = Path(skimage.__file__).parent / "data"
        return [Path(f"{folder / name}#{q}") for name in SKIMAGE_PHOTOS if (folder / name).is_file() for q in range(4)]
    raise SystemExit(f"unknown family {family!r}; choose one of {', '.join(FAMILIES + TUNING_FAMILIES)}")


def _distinct(paths: Any) -> list[Path]:
    """Sorted paths, a file reached through several names (symlinks) kept once."""
    seen: dict[Path, Path] = {}
    for p in sorted(paths):
        seen.setdefault(p.resolve(), p)
    return sorted(seen.values())


def load_source(spec: str) -> Image.Image:
    """The RGBA source image: a stamp or portrait, or one quadrant of a wallpaper (``path#q``)."""
    path, _, quadrant = spec.partition("#")
    if not quadrant:
        return load_stamp(Path(path))
    with Image.open(path) as im:
        im.draft("RGB", (1600, 1600))
        photo = im.convert("RGB")
    w, h = photo.size
    q = int(quadrant)
    box = ((q % 2) * w // 2, (q // 2) * h // 2, (q % 2 + 1) * w // 2, (q // 2 + 1) * h // 2)
    part = photo.crop(box)
    part.thumbnail((800, 800), Image.Resampling.LANCZOS)
    return part.convert("RGBA")


def choose_sources(
    seed: int, dev_share: float, per_split: int | None, family: str = "tuxpaint"
) -> dict[str, list[Path]]:
    """The family's held-out sources, shuffled with ``seed`` and cut into disjoint dev and test lists."""
    pool = family_sources(family)
    if not pool:
        raise SystemExit(f"no {family} images: apt-get install {FAMILY_PACKAGES[family]}")
    order = np.random.default_rng(seed).permutation(len(pool))
    shuffled = [pool[int(k)] for k in order]
    n_dev = round(len(shuffled) * dev_share)
    split = {"dev": shuffled[:n_dev], "test": shuffled[n_dev:]}
    if per_split is not None:
        split = {k: v[:per_split] for k, v in split.items()}
    return split


def _init_worker() -> None:
    for p in tuxpaint_images("holdout"):
        if p.parent.name == "templates":
            with Image.open(p) as im:
                bg = im.convert("RGB")
            bg.thumbnail((800, 800))
            _BACKGROUNDS.append(bg)


def make_source(job: tuple[str, int, int, str, str]) -> list[tuple[str, str, str, str]]:
    """Write every image of one source; returns ``(role, relative path, group, kind)`` rows."""
    split_dir, seed, index, stamp_path, sid = job
    out = Path(split_dir)
    source = load_source(stamp_path)
    shot = source.convert("RGB") if "#" in stamp_path else product_shot(source, grey=False)
    rows: list[tuple[str, str, str, str]] = []

    def save(img: Image.Image, rel: str) -> str:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".png"):
            img.save(path, "PNG")
        else:
            img.save(path, "JPEG", quality=90)
        return rel

    rows.append(("catalog", save(shot, f"catalog/originals/{sid}.jpg"), sid, "original"))
    for k, (kind, transform) in enumerate(augment.DUPLICATE_KINDS.items()):
        rng = np.random.default_rng([seed, index, k])
        ext = "png" if kind == "format" else "jpg"  # keep the format change's pixels as they came out
        rows.append(("catalog", save(transform(shot, rng), f"catalog/copies/{sid}__{kind}.{ext}"), sid, kind))
    variant = None
    for attempt in range(4):  # a hue shift that barely moves the colours is refused: try another
        variant = augment.colour_variant(shot, np.random.default_rng([seed, index, 100 + attempt]))
        if variant is not None:
            break
    if variant is not None:
        rel = save(variant, f"catalog/variants/{sid}__variant.jpg")
        rows.append(("catalog", rel, f"{sid}__variant", "variant"))
    for n in range(PHONE_PER_SOURCE):
        photo = augment.phone_photo(shot, np.random.default_rng([seed, index, 200 + n]), _BACKGROUNDS)
        rows.append(("query", save(photo, f"queries/{sid}__phone{n}.jpg"), sid, "phone"))
    return rows


def generate(
    out: Path,
    seed: int = 0,
    per_split: int | None = None,
    dev_share: float = 0.4,
    workers: int = 2,
    family: str = "tuxpaint",
) -> dict:
    """Write both splits of ``family`` under ``out`` (replacing earlier ones) and return the manifest."""
    started = time.perf_counter()
    sources = choose_sources(seed, dev_share, per_split, family)
    manifest: dict[str, Any] = {
        "family": family,
        "packages": FAMILY_PACKAGES[family],
        "seed": seed,
        "per_split": per_split,
        "dev_share": dev_share,
        "splits": {},
    }
    for split in SPLITS:
        split_dir = out / split
        shutil.rmtree(split_dir, ignore_errors=True)
        split_dir.mkdir(parents=True)
        jobs = [
            (str(split_dir), seed, k + (0 if split == "dev" else 10_000), str(p), source_id(p))
            for k, p in enumerate(sources[split])
        ]
        with Pool(workers, initializer=_init_worker) as pool:
            rows = [r for part in pool.map(make_source, jobs) for r in part]
        with open(split_dir / "truth.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "group", "kind"])
            w.writerows((rel, group, kind) for role, rel, group, kind in rows if role == "catalog")
        with open(split_dir / "queries.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "group"])
            w.writerows((rel, group) for role, rel, group, _ in rows if role == "query")
        manifest["splits"][split] = {
            "sources": [_rel(p) for p in sources[split]],
            "catalog_images": sum(1 for r in rows if r[0] == "catalog"),
            "variants": sum(1 for r in rows if r[3] == "variant"),
            "queries": sum(1 for r in rows if r[0] == "query"),
        }
    assert not set(manifest["splits"]["dev"]["sources"]) & set(manifest["splits"]["test"]["sources"])
    manifest["kinds"] = list(augment.DUPLICATE_KINDS)
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _rel(p: Path) -> str:
    for root in (STAMPS, WESNOTH_PORTRAITS, WALLPAPERS):
        if root in p.parents:
            return p.relative_to(root).as_posix()
    return p.as_posix()


def default_out(family: str) -> Path:
    """Where a family's set goes unless told: ``bench-data/accuracy-set`` (tuxpaint) or ``…-<family>``."""
    return ROOT / "bench-data" / ("accuracy-set" if family == "tuxpaint" else f"accuracy-set-{family}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", default=None)
    parser.add_argument("--family", choices=FAMILIES + TUNING_FAMILIES, default="tuxpaint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", type=int, default=None, help="at most this many sources per split (default all)")
    parser.add_argument("--dev-share", type=float, default=0.4, help="share of the sources in the dev split")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out = args.out or default_out(args.family)
    m = generate(out, args.seed, args.sources, args.dev_share, args.workers, args.family)
    for split, s in m["splits"].items():
        print(
            f"{split}: {len(s['sources'])} sources, {s['catalog_images']} catalog images "
            f"({s['variants']} colour variants), {s['queries']} phone queries"
        )
    print(f"written to {out} in {m['seconds']} s")


if __name__ == "__main__":
    main()

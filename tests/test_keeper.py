"""The keeper choice: the original is kept, on a small accuracy set made the way the benchmark makes one.

Each product shot of the samples gets one copy per duplicate kind of ``dedup.training.augment`` (the
edits of ``benchmarks/make_accuracy_set.py``), saved as JPEG at quality 90 like the original (a format
change as PNG); the
report's keeper must be the original (or a byte- or pixel-identical copy) in nearly every cluster,
where the old policy (most pixels, then largest file) kept a padded or rotated copy.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.config import DEFAULT_KEEP
from dedup.imaging import jpeg_quality, keeper_signals
from dedup.matching.keeper import KeepPolicy, central_scores
from dedup.service import build_report, ingest_folder, open_store
from dedup.service.evaluation import keeper_accuracy, read_truth
from dedup.service.signals import SIGNALS_VERSION
from dedup.training import augment

from .conftest import SAMPLE_CATALOG

#: Products of the samples used (one per category folder, so they differ).
SHOTS = sorted((SAMPLE_CATALOG / "products").glob("*/*.jpg"))[::10][:16]


@pytest.fixture(scope="module")
def keeper_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``catalog/`` with originals and every kind of copy, and ``truth.csv`` (path,group,kind)."""
    root = tmp_path_factory.mktemp("keeper-set")
    rows = []
    rng = np.random.default_rng(7)
    for shot_path in SHOTS:
        shot = Image.open(shot_path).convert("RGB")
        sid = shot_path.stem
        rel = f"catalog/originals/{sid}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shot.save(root / rel, "JPEG", quality=90)
        rows.append((rel, sid, "original"))
        for kind, transform in augment.DUPLICATE_KINDS.items():
            # As the benchmark does: a format change is stored as PNG, every other copy as a JPEG.
            rel = f"catalog/copies/{sid}__{kind}.{'png' if kind == 'format' else 'jpg'}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            copy = transform(shot, rng).convert("RGB")
            copy.save(root / rel, "PNG") if kind == "format" else copy.save(root / rel, "JPEG", quality=90)
            rows.append((rel, sid, kind))
    with open(root / "truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "group", "kind"])
        w.writerows(rows)
    return root


def test_the_original_is_kept(keeper_set: Path, tmp_path: Path) -> None:
    truth = read_truth(keeper_set / "truth.csv")
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, keeper_set / "catalog")
        new = keeper_accuracy(build_report(store, save=False), truth)
        old = keeper_accuracy(build_report(store, keep="resolution,size,oldest", save=False), truth)
        # Signals are cached by content: every clustered image has its row now.
        report = build_report(store, save=False)
        shas = {m.sha256 for c in report.clusters for m in c.members}
        assert set(store.catalog.keeper_signals(shas, SIGNALS_VERSION)) == shas
    assert new is not None and old is not None
    assert new.clusters_with_original >= len(SHOTS) // 2, new
    assert new.accuracy is not None and new.accuracy >= 0.85, (new, old)
    assert old.accuracy is not None and old.accuracy <= 0.5, old  # the old policy kept padded and rotated copies
    for c in report.clusters:
        assert c.keep_rule in ("quality", "central", "detail", "resolution", "size", "oldest", "name", "id")
        assert c.reason


def test_central_is_the_medoid_in_pixels() -> None:
    """Two copies each one edit away from the original differ by both edits: the original is central."""
    base = np.asarray(Image.open(SHOTS[0]).convert("RGB"))
    img = Image.fromarray(base)
    rng = np.random.default_rng(0)
    copies = [
        augment.watermark(img, rng),
        augment.pad(img, rng),
        augment.colour_shift(img, rng),
        augment.blur(img, rng),
    ]
    thumbs = np.stack([keeper_signals(x)[0].reshape(-1) for x in [img, *copies]])
    assert int(np.argmin(central_scores(thumbs))) == 0


def test_detail_drops_with_blur_and_upscaling() -> None:
    img = Image.open(SHOTS[1]).convert("RGB")
    w, h = img.size
    sharp = keeper_signals(img)[1]
    upscaled = img.resize((w // 3, h // 3)).resize((w, h), Image.Resampling.BILINEAR)
    assert keeper_signals(upscaled)[1] < sharp
    assert keeper_signals(augment.blur(img, np.random.default_rng(1)))[1] < sharp


@pytest.mark.parametrize("quality", [20, 50, 75, 95])
def test_jpeg_quality_from_the_tables(quality: int) -> None:
    buf = io.BytesIO()
    Image.open(SHOTS[2]).convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    assert abs((jpeg_quality(Image.open(buf)) or 0) - quality) <= 3
    png = io.BytesIO()
    Image.open(SHOTS[2]).save(png, "PNG")
    png.seek(0)
    assert jpeg_quality(Image.open(png)) is None


def test_recompressed_copy_loses_and_reason_says_so(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    img = Image.open(SHOTS[3]).convert("RGB")
    img.save(d / "original.jpg", quality=92)
    img.save(d / "reencoded.jpg", quality=35)
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, d)
        report = build_report(store, save=False)
    (cluster,) = report.clusters
    assert Path(cluster.keep.path).name == "original.jpg"
    assert cluster.keep_rule == "quality" and "JPEG quality" in cluster.reason


def test_keeper_without_its_file_still_reports(tmp_path: Path) -> None:
    """A file deleted after ingest has no pixel signals: it ranks last, and the report still comes out."""
    d = tmp_path / "p"
    d.mkdir()
    img = Image.open(SHOTS[4]).convert("RGB")
    img.save(d / "a.jpg", quality=90)
    augment.watermark(img, np.random.default_rng(3)).save(d / "b.jpg", quality=90)
    augment.pad(img, np.random.default_rng(3)).save(d / "c.jpg", quality=90)
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, d)
        (d / "a.jpg").unlink()
        report = build_report(store, save=False)
    (cluster,) = report.clusters
    assert Path(cluster.keep.path).name != "a.jpg"


def test_policy_parsing() -> None:
    assert KeepPolicy.parse(DEFAULT_KEEP).rules[:2] == ("quality", "central")
    assert KeepPolicy.parse("folder:/data/master, size").rules == ("folder:/data/master/", "size")
    assert not KeepPolicy.parse("resolution,oldest").needs_pixels
    with pytest.raises(Exception, match="unknown keep rule"):
        KeepPolicy.parse("prettiest")

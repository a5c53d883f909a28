"""The duplicate report on a catalog with known groups: clusters, keepers, tiers, marks, formats, diffs."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dedup.cli import cli
from dedup.errors import EXIT_DUPLICATES_FOUND, EXIT_OK
from dedup.service import Store, build_report, ingest_folder, mark_pair, open_store, render_report
from dedup.types import Report

from .conftest import SAMPLE_CATALOG

PRODUCTS = sorted((SAMPLE_CATALOG / "products").glob("[a-z]*/*.jpg"))


def _shot(i: int) -> Image.Image:
    return Image.open(PRODUCTS[i]).convert("RGB")


@pytest.fixture
def groups(tmp_path: Path) -> Path:
    """A folder of known groups, each file named for what it is.

    g1: original (800 px) + byte-identical copy (tier exact) + JPEG q40 re-encode (near)
    g2: PNG + BMP of the same pixels (tier same_pixels)
    g3: original + re-encode, which a reviewer marks "not a duplicate"
    singles: three unrelated products
    """
    d = tmp_path / "photos"
    d.mkdir()
    big = _shot(0).resize((800, 800))
    big.save(d / "g1_original.jpg", quality=95)
    shutil.copyfile(d / "g1_original.jpg", d / "g1_exact_copy.jpg")
    big.resize((400, 400)).save(d / "g1_reencode_q40.jpg", quality=40)
    _shot(5).save(d / "g2_pixels.png")
    _shot(5).save(d / "g2_pixels.bmp")
    _shot(10).save(d / "g3_original.jpg", quality=95)
    _shot(10).save(d / "g3_reencode.jpg", quality=50)
    for i in (20, 30, 40):
        _shot(i).save(d / f"single_{i}.jpg", quality=90)
    return d


def _by_name(report: Report) -> list[dict[str, str]]:
    """Each cluster as {file name: tier}."""
    return [{Path(m.path).name: m.tier for m in c.members} for c in report.clusters]


def test_groups_keepers_tiers_and_marks(groups: Path, tmp_path: Path) -> None:
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, groups)
        first = build_report(store)
        clusters = _by_name(first)
        g1 = next(c for c in clusters if "g1_original.jpg" in c)
        # The two byte-identical copies tie on every rule but the name: the shorter one, the original, is kept.
        assert g1 == {"g1_original.jpg": "keeper", "g1_exact_copy.jpg": "exact", "g1_reencode_q40.jpg": "near"}
        g2 = next(c for c in clusters if "g2_pixels.png" in c)
        assert sorted(g2.values()) == ["keeper", "same_pixels"]
        assert any("g3_original.jpg" in c and "g3_reencode.jpg" in c for c in clusters)
        assert not any(any(name.startswith("single_") for name in c) for c in clusters)
        keep = next(c for c in first.clusters if Path(c.keep.path).name.startswith("g1"))
        # The q40 re-encode is the re-compressed copy; the two byte-identical copies then differ by name only.
        assert keep.keep.width == 800 and keep.keep_rule == "name", keep.reason

        mark_pair(store, str(groups / "g3_original.jpg"), str(groups / "g3_reencode.jpg"), "not_duplicate")
        # A confirmed pair that the model would never group: two different products.
        mark_pair(store, str(groups / "single_20.jpg"), str(groups / "single_30.jpg"), "duplicate")
        second = build_report(store)
        clusters = _by_name(second)
        assert not any("g3_original.jpg" in c and "g3_reencode.jpg" in c for c in clusters)
        confirmed = next(c for c in second.clusters if any("single_20" in m.path for m in c.members))
        assert {Path(m.path).name for m in confirmed.members} == {"single_20.jpg", "single_30.jpg"}
        assert all(m.confirmed for m in confirmed.members)
        assert second.summary.review_marks == {"duplicate": 1, "not_duplicate": 1}


def test_chain_does_not_join_far_ends(tmp_path: Path) -> None:
    """A ≈ B ≈ C with A far from C: blends of two products make the chain; A is the preferred keeper."""
    d = tmp_path / "chain"
    d.mkdir()
    a, c = _shot(1).resize((300, 300)), _shot(2).resize((300, 300))
    a.resize((600, 600)).save(d / "A.png")  # most pixels: the keeper
    Image.blend(a, c, 0.5).save(d / "B.png")
    c.save(d / "C.png")
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, d)
        v = store.embed_paths([d / "A.png", d / "B.png", d / "C.png"])
        dist = np.sqrt(np.clip(2 - 2 * v @ v.T, 0, None))
        d_ab, d_bc, d_ac = dist[0, 1], dist[1, 2], dist[0, 2]
        assert d_ac > max(d_ab, d_bc), f"the blend is not between its ends: {d_ab=:.3f} {d_bc=:.3f} {d_ac=:.3f}"
        threshold = float((max(d_ab, d_bc) + d_ac) / 2)  # A≈B and B≈C, but A and C apart
        report = build_report(store, threshold=threshold, keep="resolution")
    names = _by_name(report)
    assert names == [{"A.png": "keeper", "B.png": "near"}], names
    for cluster in report.clusters:
        assert all(m.distance <= threshold + 1e-6 for m in cluster.members)


def test_formats_and_two_run_diff(groups: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "s"
    runner = CliRunner()
    assert runner.invoke(cli, ["--store", str(store_dir), "ingest", str(groups)]).exit_code == EXIT_OK
    first = runner.invoke(cli, ["--store", str(store_dir), "report", "--format", "json"])
    assert first.exit_code == EXIT_DUPLICATES_FOUND, first.output
    r1 = json.loads(first.stdout)
    assert {"threshold", "model", "created_at", "clusters", "summary"} <= set(r1)
    assert all(c["change"] == "new" for c in r1["clusters"])
    for c in r1["clusters"]:
        assert c["members"][0] == c["keep"]
        for m in c["members"]:
            assert {"path", "product_id", "sha256", "width", "height", "distance"} <= set(m)

    # Night two: g1 grows by a resized copy, g2 loses its BMP (pruned), so g2 is resolved.
    Image.open(groups / "g1_original.jpg").resize((500, 500)).save(groups / "g1_resize.jpg", quality=90)
    (groups / "g2_pixels.bmp").unlink()
    runner.invoke(cli, ["--store", str(store_dir), "ingest", str(groups), "--prune"])
    out = tmp_path / "r2.json"
    second = runner.invoke(cli, ["--store", str(store_dir), "report", "-o", str(out)])
    assert second.exit_code == EXIT_DUPLICATES_FOUND
    r2 = json.loads(out.read_text())
    assert r2["previous_run_id"] == r1["run_id"]
    g1 = next(c for c in r2["clusters"] if any("g1_resize" in m["path"] for m in c["members"]))
    old_g1 = next(c for c in r1["clusters"] if any("g1_original" in m["path"] for m in c["members"]))
    assert g1["id"] == old_g1["id"] and g1["change"] == "grown"
    old_g2 = next(c for c in r1["clusters"] if any("g2_pixels" in m["path"] for m in c["members"]))
    assert old_g2["id"] in {r["id"] for r in r2["resolved"]}
    assert r2["summary"]["resolved"] >= 1

    # --since compares with an older run; a third run with no change is all "unchanged".
    third = json.loads(runner.invoke(cli, ["--store", str(store_dir), "report", "--since", str(r2["run_id"])]).stdout)
    assert all(c["change"] == "unchanged" for c in third["clusters"])

    csv_out = runner.invoke(cli, ["--store", str(store_dir), "report", "--format", "csv", "--no-save"]).stdout
    rows = list(csv.DictReader(io.StringIO(csv_out)))
    assert len(rows) == sum(len(c["members"]) for c in third["clusters"])
    assert sum(int(r["keep"]) for r in rows) == len(third["clusters"])
    assert {r["tier"] for r in rows} >= {"keeper", "exact"}

    html_path = tmp_path / "r.html"
    runner.invoke(cli, ["--store", str(store_dir), "report", "--format", "html", "-o", str(html_path), "--no-save"])
    page = html_path.read_text()
    assert page.startswith("<!doctype html>") and "data:image/jpeg;base64," in page
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    for c in third["clusters"]:
        assert c["id"] in page


def test_no_duplicates_exit_zero_and_keep_policy(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    for i in (3, 13, 23):
        _shot(i).save(d / f"{i}.jpg")
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, d)
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "report"])
    assert result.exit_code == EXIT_OK and json.loads(result.stdout)["clusters"] == []
    bad = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "report", "--keep", "prettiest"])
    assert bad.exit_code == 2 and "keep rule" in bad.stderr


def test_preferred_folder_wins(groups: Path, tmp_path: Path) -> None:
    master = groups / "master"
    master.mkdir()
    Image.open(groups / "g1_original.jpg").resize((300, 300)).save(master / "g1_small_master.jpg", quality=95)
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, groups)
        report = build_report(store, keep=f"folder:{master},resolution", save=False)
        text = render_report(report, "json")
    cluster = next(c for c in report.clusters if any("g1_small_master" in m.path for m in c.members))
    assert Path(cluster.keep.path).name == "g1_small_master.jpg"
    assert "preferred folder" in cluster.reason and cluster.keep_rule == "folder"
    assert json.loads(text)["clusters"]


def test_report_on_empty_store(store: Store) -> None:
    report = build_report(store, save=False)
    assert report.clusters == () and report.summary.images == 0

"""``evaluate`` on the ingested sample catalog and its truth.csv: structure, consistency, and floors.

The floors sit well below what the shipped model measures (docs/benchmarks.md), so they catch a broken
pipeline or a much worse model, not ordinary retraining noise.
"""

from __future__ import annotations

import csv
import xml.dom.minidom
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageColor

from dedup.cli import cli
from dedup.errors import EXIT_INPUT, InputError
from dedup.report.figure import PNG_SCALE as SCALE
from dedup.report.plots import BAR_OPACITY, PANEL_H, PANEL_W
from dedup.service import Store, evaluate, evaluation_text
from dedup.service.evaluation import read_queries, read_truth
from dedup.service.evaluation_result import EvaluationResult, ImageCounts
from dedup.types import IngestSummary
from tests.conftest import SAMPLE_QUERIES

# Floors. Measured with the shipped model (docs/benchmarks.md, "dedup evaluate on the samples"): pair F1 0.99,
# B-cubed F1 0.99, Recall@5 of the 8 (deliberately harsh) sample phone photos 0.125 (1 of 8): that floor only
# checks the query path runs end to end; phone-photo quality has its own floor in test_accuracy_small.py.
MIN_PAIR_F1 = 0.6
MIN_BCUBED_F1 = 0.75
MIN_QUERY_RECALL_AT_5 = 0.125


@pytest.fixture(scope="module")
def queries_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample phone photos as a path,group CSV: the stem before ``__phone`` names the group."""
    path = tmp_path_factory.mktemp("queries") / "queries.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "group"])
        for p in sorted(SAMPLE_QUERIES.glob("*__phone.jpg")):
            w.writerow([str(p), p.name.removesuffix("__phone.jpg")])
    return path


@pytest.fixture(scope="module")
def result(
    ingested: tuple[Store, IngestSummary], sample_copy: Path, queries_csv: Path, tmp_path_factory
) -> EvaluationResult:
    store, _ = ingested
    png = tmp_path_factory.mktemp("sweep") / "sweep.png"
    return evaluate(store, sample_copy / "truth.csv", queries_csv=queries_csv, sweep=png)


@pytest.fixture(scope="module")
def svg_result(ingested: tuple[Store, IngestSummary], sample_copy: Path, tmp_path_factory) -> EvaluationResult:
    store, _ = ingested
    svg = tmp_path_factory.mktemp("sweep_svg") / "sweep.svg"
    return evaluate(store, sample_copy / "truth.csv", sweep=svg)


def test_every_truth_image_is_scored_from_the_catalog(result: EvaluationResult, sample_copy: Path) -> None:
    listed = len(read_truth(sample_copy / "truth.csv").paths)
    assert result.form == "groups"
    assert result.images == ImageCounts(listed=listed, in_catalog=listed, embedded=0, unusable=0)
    pairs = result.pairs
    assert pairs.positives + pairs.negatives == listed * (listed - 1) // 2
    assert result.threshold_source == "model card"


def test_kinds_from_the_truth_are_scored_separately(result: EvaluationResult) -> None:
    kinds = result.by_kind
    assert {"crop_90", "pad", "hflip", "watermark", "exact_copy"} <= set(kinds)
    assert "original" not in kinds
    # Colour variants are groups of their own: their pairs are all negatives.
    variants = [s for k, s in kinds.items() if k.startswith("variant_")]
    assert variants and all(s.positives == 0 and s.recall is None for s in variants)
    # Exact copies are the same bytes: every one matches its original at any threshold.
    assert kinds["exact_copy"].recall == 1.0


def test_floors(result: EvaluationResult) -> None:
    assert result.pairs.f1 is not None and result.pairs.f1 >= MIN_PAIR_F1
    assert result.clusters is not None and result.clusters.f1 >= MIN_BCUBED_F1
    queries = result.queries
    assert queries is not None
    assert queries.count == len(list(SAMPLE_QUERIES.glob("*__phone.jpg"))) and not queries.failed
    assert queries.recall_at_5 >= MIN_QUERY_RECALL_AT_5
    assert queries.recall_at_1 <= queries.recall_at_5 and queries.mrr <= 1.0


def test_best_threshold_reproduces_its_scores(
    ingested: tuple[Store, IngestSummary], sample_copy: Path, result: EvaluationResult
) -> None:
    store, _ = ingested
    best = result.best_f1
    again = evaluate(store, sample_copy / "truth.csv", threshold=best.threshold)
    assert again.threshold_source == "given"
    assert again.pairs.f1 == pytest.approx(best.f1, abs=1e-4)
    assert again.pairs.f1 >= (result.pairs.f1 or 0.0) - 1e-9


def _rgb(colour: str) -> tuple[int, int, int]:
    r, g, b = ImageColor.getrgb(colour)[:3]
    return r, g, b


def _over_white(colour: str, opacity: float) -> tuple[int, int, int]:
    return tuple(round(c * opacity + 255 * (1 - opacity)) for c in _rgb(colour))  # type: ignore[return-value]


def _has_colour(colours: set[tuple[int, int, int]], want: tuple[int, int, int], tolerance: int = 2) -> bool:
    return any(max(abs(a - b) for a, b in zip(c, want, strict=True)) <= tolerance for c in colours)


def test_sweep_png_is_written(result: EvaluationResult) -> None:
    path = Path(result.sweep or "")
    assert path.suffix == ".png" and path.is_absolute()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (2 * PANEL_W * SCALE, PANEL_H * SCALE)
        assert img.info.get("Title") == "dedup evaluate: threshold sweep"
        rgb = img.convert("RGB")
    colours = {c for _, c in rgb.getcolors(maxcolors=1 << 20) or []}
    assert len(colours) > 20, "the plot is (nearly) blank"
    # Legend swatches and the threshold mark in their own colours; the bars of both classes blended over white.
    for colour in ("#1f77b4", "#d62728", "#2ca02c"):
        assert _rgb(colour) in colours, colour
    histogram = rgb.crop((PANEL_W * SCALE, 0, rgb.width, rgb.height))
    bar_colours = {c for _, c in histogram.getcolors(maxcolors=1 << 20) or []}
    for colour in ("#1f77b4", "#d62728"):
        assert _has_colour(bar_colours, _over_white(colour, BAR_OPACITY)), f"no {colour} bar"
    # The PR curve is drawn in the left panel, not only its axes.
    pr_panel = rgb.crop((0, 0, PANEL_W * SCALE, rgb.height))
    assert _rgb("#1f77b4") in {c for _, c in pr_panel.getcolors(maxcolors=1 << 20) or []}


def test_sweep_svg_is_still_written(svg_result: EvaluationResult) -> None:
    path = Path(svg_result.sweep or "")
    assert path.suffix == ".svg"
    doc = xml.dom.minidom.parse(str(path))  # well-formed XML
    assert doc.documentElement.tagName == "svg"
    text = path.read_text()
    assert "polyline" in text and "threshold" in text


@pytest.mark.parametrize("name", ["sweep.jpg", "sweep", "sweep.png.txt"])
def test_sweep_with_another_suffix_is_refused(
    ingested: tuple[Store, IngestSummary], sample_copy: Path, tmp_path: Path, name: str
) -> None:
    store, _ = ingested
    with pytest.raises(InputError, match=r"\.png or \.svg"):
        evaluate(store, sample_copy / "truth.csv", sweep=tmp_path / name)
    assert not (tmp_path / name).exists()


def test_cli_sweep_with_another_suffix_exits_as_an_input_error(sample_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep.jpeg"
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path / "store"), "evaluate", str(sample_copy / "truth.csv"), "--sweep", str(out)]
    )
    assert result.exit_code == EXIT_INPUT, result.output
    assert ".png or .svg" in result.stderr and not out.exists()


def test_text_summary(result: EvaluationResult) -> None:
    text = evaluation_text(result)
    assert "B-cubed" in text and "Recall@1" in text and "crop_90" in text
    assert f"sweep plot: {result.sweep}" in text


def test_labelled_pairs_with_files_outside_the_catalog(
    ingested: tuple[Store, IngestSummary], sample_copy: Path
) -> None:
    store, _ = ingested
    phone = SAMPLE_QUERIES / "chick__phone.jpg"  # not in the catalog: embedded on the fly
    rows = [
        ("duplicates/chick__exact_copy.jpg", "duplicates/chick__resize_50.jpg", "1"),
        ("duplicates/chick__exact_copy.jpg", str(phone), "1"),
        ("duplicates/chick__exact_copy.jpg", "variants/sedan__variant_orange.jpg", "0"),
        ("broken/empty.jpg", "duplicates/chick__resize_50.jpg", "0"),  # unusable: left out
    ]
    path = sample_copy / "pairs_truth.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path_a", "path_b", "label"])
        w.writerows(rows)
    out = evaluate(store, path)
    assert out.form == "pairs" and out.clusters is None
    assert out.images.embedded == 1 and out.images.unusable == 1
    assert out.unusable[0].path.endswith("empty.jpg")
    assert out.pairs.positives == 2 and out.pairs.negatives == 1


def test_queries_by_product_id(ingested: tuple[Store, IngestSummary], sample_copy: Path, tmp_path: Path) -> None:
    store, _ = ingested
    with open(sample_copy / "products.csv", newline="") as fh:
        products = {row["path"]: row["product_id"] for row in csv.DictReader(fh)}
    truth = read_truth(sample_copy / "truth.csv")
    sizes: dict[str, int] = {}
    for g in truth.groups:
        sizes[g] = sizes.get(g, 0) + 1
    # Originals without copies or variants: each is its own nearest neighbour, alone at distance 0.
    alone = [p for p, g in zip(truth.paths, truth.groups, strict=True) if sizes[g] == 1 and "variant" not in g][:3]
    path = tmp_path / "q.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "product_id"])
        for p in alone:
            w.writerow([str(p), products[p.relative_to(sample_copy.resolve()).as_posix()]])
    out = evaluate(store, sample_copy / "truth.csv", queries_csv=path)
    assert out.queries is not None and out.queries.by == "product_id"
    assert out.queries.recall_at_1 == 1.0 and out.queries.mrr == 1.0


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("path,product_id", "a.jpg,SKU-1", "expected path,group"),
        ("path,group", "a.jpg,", "group is empty"),
        ("path_a,path_b,label", "a.jpg,b.jpg,maybe", "label must be"),
        ("path,group", ",g", "path is empty"),
    ],
)
def test_malformed_truth_is_refused(tmp_path: Path, header: str, row: str, message: str) -> None:
    path = tmp_path / "truth.csv"
    path.write_text(f"{header}\n{row}\n")
    with pytest.raises(InputError, match=message):
        read_truth(path)


def test_a_path_in_two_groups_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    path.write_text("path,group\na.jpg,g1\nsub/../a.jpg,g2\n")
    with pytest.raises(InputError, match="two groups"):
        read_truth(path)


def test_truth_paths_are_relative_to_the_csv(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "truth.csv"
    path.write_text("path,group,kind\nx.jpg,g,original\n../y.jpg,g,crop\nx.jpg,g,original\n")
    truth = read_truth(path)
    assert truth.paths == [(tmp_path / "sub" / "x.jpg").resolve(), (tmp_path / "y.jpg").resolve()]
    assert truth.kinds == ["original", "crop"]
    qpath = tmp_path / "q.csv"
    qpath.write_text("path,group\nsub/x.jpg,g\n")
    assert read_queries(qpath) == ("group", [((tmp_path / "sub" / "x.jpg").resolve(), "g")])


def test_missing_truth_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_truth(tmp_path / "nope.csv")

"""`dedup calibrate` on labelled pairs and on the groups of the sample catalog's truth file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from dedup.cli import cli
from dedup.embedding.card import read_card
from dedup.errors import EXIT_INPUT

from .conftest import SAMPLE_CATALOG


def _pairs_csv(folder: Path) -> Path:
    """Duplicate pairs (an original and each copy) and as many non-duplicate pairs (originals of two groups)."""
    with open(SAMPLE_CATALOG / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    originals = {r["group"]: r["path"] for r in rows if r["kind"] == "original"}
    dup = [(originals[r["group"]], r["path"], 1) for r in rows if r["kind"] != "original" and r["group"] in originals]
    groups = sorted(originals)
    non = [(originals[a], originals[b], 0) for a, b in zip(groups, groups[1:] + groups[:1], strict=True)]
    path = folder / "pairs.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path_a", "path_b", "label"])
        for a, b, y in dup[:40] + non[:40]:
            w.writerow([SAMPLE_CATALOG / a, SAMPLE_CATALOG / b, y])
    return path


def test_calibrate_writes_a_model_copy_with_the_new_threshold(tmp_path: Path) -> None:
    pairs = _pairs_csv(tmp_path)
    out = tmp_path / "model"
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "calibrate", str(pairs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = read_card(out)
    assert card["calibration_history"][-1]["precision"] >= 0.99
    assert 0 < card["threshold"] < 2
    # The copy loads and its verdicts use the new threshold.
    a = SAMPLE_CATALOG / "products" / "animals"
    img = sorted(a.glob("*.jpg"))[0]
    cmp = CliRunner().invoke(cli, ["--model", str(out), "compare", str(img), str(img), "--format", "json"])
    assert json.loads(cmp.stdout)["threshold"] == card["threshold"]


def test_calibrate_needs_both_labels(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.csv"
    img = sorted((SAMPLE_CATALOG / "products" / "animals").glob("*.jpg"))[:2]
    bad.write_text(f"path_a,path_b,label\n{img[0]},{img[1]},1\n")
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path / "s"), "calibrate", str(bad), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == EXIT_INPUT and "both" in result.stderr


def test_calibrate_on_a_groups_truth(tmp_path: Path) -> None:
    out = tmp_path / "model"
    truth = SAMPLE_CATALOG / "truth.csv"
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "calibrate", str(truth), "--out", str(out)])
    assert result.exit_code == 0, result.output
    last = read_card(out)["calibration_history"][-1]
    with open(truth, newline="") as fh:
        n = len(list(csv.DictReader(fh)))
    assert last["pairs"] == n * (n - 1) // 2  # every pair of listed images, within a group or across
    assert last["precision"] >= 0.99 and last["recall"] > 0.3

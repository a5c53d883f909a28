"""A small run of the accuracy benchmark (benchmarks/accuracy.py) to catch accuracy regressions.

Eight held-out sources per split instead of all of them. The floors sit well below what the shipped
model measures on this small set (docs/benchmarks.md), so they catch a broken model or pipeline, not
ordinary retraining noise.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from dedup.training.sources import tuxpaint_images

ROOT = Path(__file__).resolve().parents[1]
SOURCES = 8

# Floors well below what the shipped model measures (docs/benchmarks.md §1: on the full test split pair
# recall 0.94, precision 0.98, phone Recall@5 0.90, B-cubed F1 0.94).
MIN_PAIR_RECALL = 0.7
MIN_PAIR_PRECISION = 0.5
MIN_PHONE_RECALL_AT_5 = 0.6
MIN_BCUBED_F1 = 0.7

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tuxpaint_images("holdout"), reason="needs the tuxpaint-stamps-default package"),
]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    accuracy = _load("accuracy")
    return accuracy.run(tmp_path_factory.mktemp("accuracy"), sources=SOURCES)


def _method(result: dict, name: str, rule: str) -> dict:
    return next(m for m in result["methods"] if m["method"] == name and m["rule"] == rule)


def test_splits_are_disjoint_and_complete(result: dict) -> None:
    dev, test = result["sets"]["dev"], result["sets"]["test"]
    assert dev["sources"] == test["sources"] == SOURCES
    # Each source: an original and one copy per duplicate kind (and maybe a colour variant).
    assert test["catalog_images"] >= SOURCES * 13
    assert test["queries"] == 2 * SOURCES


def test_dedup_floors_at_the_model_card_threshold(result: dict) -> None:
    dedup = _method(result, "dedup", "model card")
    assert dedup["pairs"]["recall"] >= MIN_PAIR_RECALL
    assert dedup["pairs"]["precision"] >= MIN_PAIR_PRECISION
    assert dedup["queries"]["recall_at_5"] >= MIN_PHONE_RECALL_AT_5
    assert dedup["clusters"]["f1"] >= MIN_BCUBED_F1
    # Every duplicate kind is scored.
    assert {"crop", "pad", "mirror", "watermark", "combo"} <= set(dedup["by_kind"])


def test_every_hash_is_scored_at_both_thresholds(result: dict) -> None:
    for name in ("pHash", "dHash", "wHash", "aHash"):
        default = _method(result, name, "default")
        assert default["threshold"] == 10
        assert _method(result, name, "dev best F1")["pairs"]["positives"] == default["pairs"]["positives"]

"""Evaluation metrics against hand-worked toy data and brute-force references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dedup.matching import metrics

# Six scored pairs, smallest distance first (label 1 = duplicate):
TOY_D = np.array(
    [
        0.05,  # duplicate: an exact re-encode
        0.10,  # duplicate: a crop
        0.20,  # NOT a duplicate: a colour variant, closer than the next duplicate
        0.30,  # duplicate: a padded copy
        0.80,  # not a duplicate: an unrelated product
        1.20,  # not a duplicate: an unrelated product
    ]
)
TOY_Y = np.array([1, 1, 0, 1, 0, 0])


def _brute_scores(d: np.ndarray, y: np.ndarray, t: float) -> tuple[int, int, int, int]:
    tp = sum(1 for di, yi in zip(d, y, strict=True) if di <= t and yi == 1)
    fp = sum(1 for di, yi in zip(d, y, strict=True) if di <= t and yi == 0)
    fn = sum(1 for di, yi in zip(d, y, strict=True) if di > t and yi == 1)
    tn = sum(1 for di, yi in zip(d, y, strict=True) if di > t and yi == 0)
    return tp, fp, fn, tn


def _brute_best_f1(d: np.ndarray, y: np.ndarray) -> float:
    """Best F1 over every threshold equal to a data point (the same decisions as any cut between points)."""
    best = 0.0
    for t in sorted(set(d.tolist())):
        tp, fp, fn, _ = _brute_scores(d, y, t)
        if tp:
            best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def test_pair_scores_at_a_threshold_on_the_toy_pairs() -> None:
    s = metrics.pair_scores(TOY_D, TOY_Y, 0.25)  # accepts the first three pairs
    assert (s.tp, s.fp, s.fn, s.tn) == (2, 1, 1, 2)
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3)
    assert s.false_positive_rate == pytest.approx(1 / 3)
    assert metrics.pair_scores(TOY_D, TOY_Y, 0.30).tp == 3  # a pair exactly at the threshold is accepted


def test_rates_are_none_not_zero_when_undefined() -> None:
    s = metrics.pair_scores(TOY_D, TOY_Y, 0.01)  # accepts nothing
    assert s.precision is None and s.recall == 0.0
    only_negatives = metrics.pair_scores([0.1, 0.5], [0, 0], 0.3)
    assert only_negatives.recall is None and only_negatives.precision == 0.0
    assert only_negatives.as_dict()["recall"] is None


def test_best_f1_on_the_toy_pairs() -> None:
    f1, p, r, t = metrics.best_f1_threshold(TOY_D, TOY_Y)
    # Accepting the first four pairs (3 duplicates, 1 variant) gives F1 6/7; two pairs give only 0.8.
    assert f1 == pytest.approx(6 / 7)
    assert (p, r) == (pytest.approx(0.75), pytest.approx(1.0))
    assert t == pytest.approx((0.30 + 0.80) / 2)  # halfway to the next distance


def test_threshold_at_precision_on_the_toy_pairs() -> None:
    # Precision 1 holds up to the second pair only; the cut lies between 0.10 and 0.20.
    t, p, r = metrics.threshold_at_precision(TOY_D, TOY_Y, 1.0) or (None, None, None)
    assert t == pytest.approx(0.15) and p == 1.0 and r == pytest.approx(2 / 3)
    t, p, r = metrics.threshold_at_precision(TOY_D, TOY_Y, 0.75) or (None, None, None)
    assert t == pytest.approx(0.55) and r == 1.0
    # The nearest pair is a non-duplicate: no threshold is precise.
    assert metrics.threshold_at_precision([0.1, 0.2], [0, 1], 0.99) is None


def test_ties_are_accepted_together() -> None:
    # Two pairs at the same distance, one duplicate and one not: no threshold can split them.
    thresholds, precision, recall, _ = metrics.precision_recall_curve([0.2, 0.2, 0.9], [1, 0, 0])
    assert len(thresholds) == 2
    assert precision[0] == 0.5 and recall[0] == 1.0


@pytest.mark.parametrize("seed", range(20))
def test_sweeps_match_brute_force_on_random_pairs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    d = np.round(rng.uniform(0, 2, n), 1)  # rounded: many ties
    y = (rng.random(n) < 0.4).astype(int)
    f1, p, r, t = metrics.best_f1_threshold(d, y)
    assert f1 == pytest.approx(_brute_best_f1(d, y))
    if y.any():
        tp, fp, fn, _ = _brute_scores(d, y, t)  # the returned threshold reproduces the returned scores
        assert (p, r) == (pytest.approx(tp / (tp + fp)), pytest.approx(tp / (tp + fn)))
    for target in (0.5, 0.9, 1.0):
        got = metrics.threshold_at_precision(d, y, target)
        ok = [
            s
            for s in sorted(set(d.tolist()))
            if (c := _brute_scores(d, y, s))[0] + c[1] and c[0] / (c[0] + c[1]) >= target
        ]
        if not ok:
            assert got is None
            continue
        assert got is not None
        tp, fp, fn, _ = _brute_scores(d, y, got[0])
        assert got[0] >= max(ok) and tp / (tp + fp) >= target  # the largest qualifying cut
        assert _brute_scores(d, y, got[0]) == _brute_scores(d, y, max(ok))


def test_group_pairs_and_kind_masks() -> None:
    # Items: 0 original of A, 1 crop of A, 2 pad of A, 3 original of B, 4 colour variant of B (a group of its own).
    groups = ["A", "A", "A", "B", "vB"]
    kinds = ["original", "crop", "pad", "", "variant"]
    i, j, label = metrics.group_pairs(groups)
    assert len(i) == 10
    pos = {(int(a), int(b)) for a, b, lab in zip(i, j, label, strict=True) if lab}
    assert pos == {(0, 1), (0, 2), (1, 2)}
    masks = metrics.kind_masks(i, j, kinds)
    pairs_of = {k: {(int(a), int(b)) for a, b, m in zip(i, j, m_, strict=True) if m} for k, m_ in masks.items()}
    # A kind is scored against every reference (originals 0 and 3), never against another copy.
    assert pairs_of == {"crop": {(0, 1), (1, 3)}, "pad": {(0, 2), (2, 3)}, "variant": {(0, 4), (3, 4)}}


def _brute_bcubed(pred: list[str], truth: list[str]) -> tuple[float, float]:
    n = len(pred)
    p = sum(
        sum(1 for k in range(n) if pred[k] == pred[i] and truth[k] == truth[i]) / pred.count(pred[i]) for i in range(n)
    )
    r = sum(
        sum(1 for k in range(n) if pred[k] == pred[i] and truth[k] == truth[i]) / truth.count(truth[i])
        for i in range(n)
    )
    return p / n, r / n


def test_bcubed_on_a_worked_example() -> None:
    # Truth: {a1, a2, a3} {b1, b2}. Clusters: {a1, a2} {a3, b1} {b2}.
    truth = ["a", "a", "a", "b", "b"]
    pred = ["x", "x", "y", "y", "z"]
    p, r, f1 = metrics.bcubed(pred, truth)
    # Precision per item: a1 1, a2 1, a3 1/2, b1 1/2, b2 1  → 4/5.
    assert p == pytest.approx(4 / 5)
    # Recall per item: a1 2/3, a2 2/3, a3 1/3, b1 1/2, b2 1/2 → 8/3 / 5.
    assert r == pytest.approx(8 / 15)
    assert f1 == pytest.approx(2 * p * r / (p + r))
    assert metrics.bcubed(truth, truth)[2] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(10))
def test_bcubed_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    pred = [f"c{int(x)}" for x in rng.integers(0, 6, n)]
    truth = [f"g{int(x)}" for x in rng.integers(0, 4, n)]
    p, r, _ = metrics.bcubed(pred, truth)
    bp, br = _brute_bcubed(pred, truth)
    assert (p, r) == (pytest.approx(bp), pytest.approx(br))


def test_retrieval_metrics() -> None:
    ranks = [
        metrics.first_relevant_rank(["a", "b", "c"], "a"),  # found first
        metrics.first_relevant_rank(["b", "c", "a"], "a"),  # found third
        metrics.first_relevant_rank(["b", "c"], "a"),  # not found
        metrics.first_relevant_rank(["a"], "a"),  # found first
    ]
    assert ranks[:2] == [1.0, 3.0] and math.isinf(ranks[2])
    assert metrics.recall_at_k(ranks, 1) == 0.5
    assert metrics.recall_at_k(ranks, 5) == 0.75
    assert metrics.mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 0 + 1) / 4)
    assert metrics.recall_at_k([], 1) == 0.0 and metrics.mean_reciprocal_rank([]) == 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="labels"):
        metrics.pair_scores([0.1], [2], 0.5)
    with pytest.raises(ValueError, match="distances"):
        metrics.pair_scores([0.1, 0.2], [1], 0.5)
    with pytest.raises(ValueError, match="target"):
        metrics.threshold_at_precision([0.1], [1], 0.0)
    with pytest.raises(ValueError):
        metrics.bcubed(["a"], ["a", "b"])


def test_all_group_pairs_are_listed_once() -> None:
    i, j, _ = metrics.group_pairs(list("abcab"))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == list(itertools.combinations(range(5), 2))

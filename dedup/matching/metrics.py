"""Evaluation metrics in plain numpy: pair decisions at a distance threshold, clusters, and retrieval.

Conventions used throughout:

- a *pair* is scored by a distance (smaller = more alike) and labelled 1 (duplicate) or 0 (not); a pair
  is predicted a duplicate when ``distance <= threshold``, the rule of :mod:`dedup.matching.clusters`;
- a threshold returned by a sweep lies halfway between two neighbouring distinct distances (or on the
  largest distance when every pair is accepted), so it does not sit on a data point and rounding cannot
  flip a decision;
- a retrieval *rank* is 1-based; a query whose answer was not retrieved has rank ``inf``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Kinds that mark the reference member of a truth group (the picture the others were made from).
REFERENCE_KINDS = frozenset({"", "original"})


@dataclass(frozen=True)
class PairScores:
    """Confusion counts of pair decisions at one threshold, and the rates derived from them.

    A rate whose denominator is zero is ``None`` (e.g. precision when no pair was accepted), never 0.
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.fp + self.tn

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        # 2TP / (2TP + FP + FN) equals the harmonic mean of precision and recall, and is defined more often.
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def false_positive_rate(self) -> float | None:
        return _ratio(self.fp, self.fp + self.tn)

    def as_dict(self, digits: int = 4) -> dict[str, float | int | None]:
        """A JSON-ready view: counts, then rates rounded to ``digits``."""

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, digits)

        return {
            "threshold": round(self.threshold, 6),
            "positives": self.positives,
            "negatives": self.negatives,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": r(self.precision),
            "recall": r(self.recall),
            "f1": r(self.f1),
            "false_positive_rate": r(self.false_positive_rate),
        }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _check_pairs(distances: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if d.shape != y.shape:
        raise ValueError(f"got {d.size} distances for {y.size} labels")
    if not np.isfinite(d).all():
        raise ValueError("distances contain NaN or infinity")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (not a duplicate) or 1 (duplicate)")
    return d, y.astype(bool)


def pair_scores(distances: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> PairScores:
    """Confusion counts of ``distance <= threshold`` against ``labels`` (1 = duplicate)."""
    d, y = _check_pairs(distances, labels)
    accepted = d <= threshold
    return PairScores(
        threshold=float(threshold),
        tp=int(np.sum(accepted & y)),
        fp=int(np.sum(accepted & ~y)),
        fn=int(np.sum(~accepted & y)),
        tn=int(np.sum(~accepted & ~y)),
    )


def precision_recall_curve(
    distances: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct decision of a threshold sweep, smallest threshold first.

    Returns ``(thresholds, precision, recall, tp)``, one entry per distinct distance: entry ``c``
    accepts the pairs up to and including the ``c``-th smallest distinct distance, with a threshold
    halfway to the next one. Precision is over accepted pairs (never empty here); recall is 0 when there
    are no positives. ``tp`` lets callers rebuild the counts.
    """
    d, y = _check_pairs(distances, labels)
    if d.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty, np.zeros(0, dtype=np.int64)
    order = np.argsort(d, kind="stable")
    d_sorted, y_sorted = d[order], y[order]
    tp = np.cumsum(y_sorted)
    # Only cut where the distance changes: tied pairs are accepted or refused together.
    last_of_value = np.flatnonzero(np.append(np.diff(d_sorted) > 0, True))
    tp_cut = tp[last_of_value]
    accepted = last_of_value + 1
    values = d_sorted[last_of_value]
    thresholds = np.append((values[:-1] + values[1:]) / 2.0, values[-1])
    n_pos = int(y.sum())
    precision = tp_cut / accepted
    recall = tp_cut / n_pos if n_pos else np.zeros(len(tp_cut))
    return thresholds, precision, recall, tp_cut.astype(np.int64)


def best_f1_threshold(distances: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float, float, float]:
    """The threshold with the best F1: ``(f1, precision, recall, threshold)``.

    Like sentence-transformers' ``find_best_f1_and_threshold``, but for distances (accept when
    ``distance <= threshold``). Ties in F1 go to the smallest threshold. With no positive pair every
    threshold has F1 0: then the result is ``(0, 0, 0, t)`` with ``t`` just below the smallest distance.
    """
    thresholds, precision, recall, tp = precision_recall_curve(distances, labels)
    if thresholds.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    if tp[-1] == 0:
        d = np.asarray(distances, dtype=np.float64)
        return 0.0, 0.0, 0.0, float(np.nextafter(d.min(), -np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = int(np.argmax(f1))  # argmax returns the first maximum: the smallest threshold
    return float(f1[best]), float(precision[best]), float(recall[best]), float(thresholds[best])


def threshold_at_precision(
    distances: npt.ArrayLike, labels: npt.ArrayLike, target: float = 0.99
) -> tuple[float, float, float] | None:
    """The largest threshold whose precision is at least ``target``: ``(threshold, precision, recall)``.

    Largest, so recall is as high as the target allows. None when no threshold reaches the target
    (e.g. the closest pair is not a duplicate).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target}")
    thresholds, precision, recall, _ = precision_recall_curve(distances, labels)
    ok = np.flatnonzero(precision >= target)
    if ok.size == 0:
        return None
    c = int(ok[-1])
    return float(thresholds[c]), float(precision[c]), float(recall[c])


def group_pairs(groups: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, ``i < j``, of items labelled by group: label 1 when they share a group.

    Returns ``(i, j, label)`` as int64, int64, int8 arrays of length ``n (n - 1) / 2``.
    """
    codes = _codes(groups)
    i, j = np.triu_indices(len(codes), k=1)
    return i.astype(np.int64), j.astype(np.int64), (codes[i] == codes[j]).astype(np.int8)


def kind_masks(
    i: npt.ArrayLike, j: npt.ArrayLike, kinds: Sequence[str], reference_kinds: frozenset[str] = REFERENCE_KINDS
) -> dict[str, np.ndarray]:
    """For each non-reference kind, a boolean mask of the pairs that join an item of that kind to a reference.

    A reference is an item whose kind is in ``reference_kinds`` (blank or ``original``): the picture the
    edited copies were made from. So the pairs of kind ``crop`` are every crop against every original:
    against its own original they are duplicates, against the others not. Pairs of two edited copies
    count in the overall scores but in no kind.
    """
    ia, ja = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    names = np.asarray([k or "" for k in kinds], dtype=object)
    ref = np.isin(names, list(reference_kinds))
    out: dict[str, np.ndarray] = {}
    for kind in sorted(set(names.tolist()) - set(reference_kinds)):
        is_kind = names == kind
        out[kind] = (is_kind[ia] & ref[ja]) | (ref[ia] & is_kind[ja])
    return out


def bcubed(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> tuple[float, float, float]:
    """B-cubed ``(precision, recall, f1)`` of a clustering against true groups, item by item.

    ``predicted[k]`` and ``truth[k]`` are the cluster and the group of item ``k`` (give every unclustered
    item a label of its own). An item's precision is the share of its cluster that is in its group, its
    recall the share of its group that is in its cluster; both are averaged over items (Bagga & Baldwin).
    """
    if len(predicted) != len(truth):
        raise ValueError(f"got {len(predicted)} cluster labels for {len(truth)} group labels")
    n = len(truth)
    if n == 0:
        return 0.0, 0.0, 0.0
    c, g = _codes(predicted), _codes(truth)
    # Items sharing cluster c and group g see n_cg of each other: precision sums n_cg² / n_c over (c, g).
    joint = np.unique(np.stack([c, g], axis=1), axis=0, return_counts=True)
    (cells, n_cg) = joint
    n_c, n_g = np.bincount(c), np.bincount(g)
    n_cg = n_cg.astype(np.float64)
    precision = float(np.sum(n_cg**2 / n_c[cells[:, 0]]) / n)
    recall = float(np.sum(n_cg**2 / n_g[cells[:, 1]]) / n)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def first_relevant_rank(ranked: Sequence[Hashable], relevant: Hashable) -> float:
    """The 1-based position of ``relevant`` in ``ranked``, or ``inf`` when it is not there."""
    for pos, label in enumerate(ranked, start=1):
        if label == relevant:
            return float(pos)
    return float("inf")


def recall_at_k(ranks: npt.ArrayLike, k: int) -> float:
    """Share of queries whose answer is at rank ``k`` or better (0.0 for no queries)."""
    r = np.asarray(ranks, dtype=np.float64)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return float(np.mean(r <= k)) if r.size else 0.0


def mean_reciprocal_rank(ranks: npt.ArrayLike) -> float:
    """Mean of ``1 / rank`` over queries; a query with rank ``inf`` (not found) adds 0."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        return 0.0
    if np.any(r < 1):
        raise ValueError("ranks are 1-based")
    return float(np.mean(1.0 / r))


def _codes(labels: Sequence[Hashable]) -> np.ndarray:
    """Dense int codes of hashable labels, in order of first appearance."""
    index: dict[Hashable, int] = {}
    return np.fromiter((index.setdefault(x, len(index)) for x in labels), dtype=np.int64, count=len(labels))

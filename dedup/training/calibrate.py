"""Threshold calibration and pair metrics on validation embeddings (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dedup.matching import metrics
from dedup.training.data import ALL_KINDS, Pool


def threshold_at_precision(pos: np.ndarray, neg: np.ndarray, target: float = 0.99) -> float:
    """The largest distance ``t`` whose pairs ``d ≤ t`` have precision ≥ ``target``; 0.0 if none does.

    ``pos`` are distances of duplicate pairs (label 1), ``neg`` of other pairs. The one rule of
    :func:`dedup.matching.metrics.threshold_at_precision` (ties go in together), with 0.0 — accept
    nothing — as the training card's answer when no threshold reaches the target.
    """
    d = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos), np.int8), np.zeros(len(neg), np.int8)])
    found = metrics.threshold_at_precision(d, y, target) if len(d) else None
    return 0.0 if found is None else found[0]


def pair_distances(emb: np.ndarray, pool: Pool, index: np.ndarray, seed: int) -> dict[str, Any]:
    """Positive and negative pair distances of validation identities, by kind.

    ``emb`` is ``(n_index, V, dim)`` for the identities ``index`` of ``pool``. Positives: the clean
    view against each transformed view (named by its transform) and, with three views or more, two
    transformed views against each other (``view_pair``). Negatives: views of different designs
    (``other``) and an original against its colour variant (``colour_variant``).
    """
    rng = np.random.default_rng(seed)
    n, v, _ = emb.shape
    kinds = pool.kinds[index]
    groups = pool.groups[index]
    pos: dict[str, list[float]] = {}
    for i in range(n):
        for j in range(1, v):
            name = ALL_KINDS[int(kinds[i, j])]
            pos.setdefault(name, []).append(float(np.linalg.norm(emb[i, 0] - emb[i, j])))
        if v >= 3:  # two transformed views to compare; with two views there is only the clean one and one copy
            a, b = rng.choice(np.arange(1, v), 2, replace=False)
            pos.setdefault("view_pair", []).append(float(np.linalg.norm(emb[i, a] - emb[i, b])))
    # Many more different-design pairs than positives: the false-positive cap needs a fine quantile.
    n_neg = max(20_000, sum(len(x) for x in pos.values()))
    other: list[float] = []
    if len(np.unique(groups)) < 2:
        n_neg = 0  # one design only (a tiny validation split): no different-design pairs to draw
    while len(other) < n_neg:
        i, j = rng.integers(0, n, 2)
        if groups[i] != groups[j]:
            a, b = rng.integers(0, v, 2)
            other.append(float(np.linalg.norm(emb[i, a] - emb[j, b])))
    variant: list[float] = []
    for i in range(n):
        for j in range(i + 1, n):
            if groups[i] == groups[j]:
                variant.append(float(np.linalg.norm(emb[i, 0] - emb[j, 0])))
                for _ in range(4):
                    a, b = rng.integers(0, v, 2)
                    variant.append(float(np.linalg.norm(emb[i, a] - emb[j, b])))
    return {
        "positive": {k: np.array(x) for k, x in pos.items()},
        "other": np.array(other),
        "colour_variant": np.array(variant),
    }


#: Pair kinds that are query-side (a phone photo of the product), not catalog duplicates: they are scored
#: by retrieval rank, so they do not set the duplicate threshold.
QUERY_KINDS = ("phone",)
#: At most this share of pairs of different designs may fall within the threshold. Catalogs hold far more
#: different pairs than duplicate pairs, so precision on a balanced validation set alone is too lenient.
MAX_OTHER_FPR = 0.001


def calibrate(
    emb: np.ndarray,
    pool: Pool,
    index: np.ndarray,
    target: float = 0.99,
    seed: int = 0,
    max_other_fpr: float = MAX_OTHER_FPR,
) -> dict[str, Any]:
    """Threshold at ``target`` precision (and at most ``max_other_fpr`` false positives among different
    designs), and the metrics at it, overall and per transform kind."""
    pairs = pair_distances(emb, pool, index, seed)
    pos_all = np.concatenate([x for k, x in pairs["positive"].items() if k not in QUERY_KINDS])
    neg_all = np.concatenate([pairs["other"], pairs["colour_variant"]])
    t_precision = threshold_at_precision(pos_all, neg_all, target)
    other = np.sort(pairs["other"])
    allowed = int(np.floor(max_other_fpr * len(other)))
    t_fpr = float(other[allowed] - 1e-6) if allowed < len(other) else float("inf")
    t = max(0.0, min(t_precision, t_fpr))
    tp = int((pos_all <= t).sum())
    fp = int((neg_all <= t).sum())
    metrics: dict[str, Any] = {
        "target_precision": target,
        "max_other_fpr": max_other_fpr,
        "threshold_rule": "min(largest distance with precision >= target over duplicate kinds, "
        "distance at max_other_fpr among different designs); phone photos excluded",
        "threshold": round(t, 4),
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / max(len(pos_all), 1), 4),
        "positives": int(len(pos_all)),
        "negatives": int(len(neg_all)),
        "recall_by_kind": {k: round(float((x <= t).mean()), 4) for k, x in sorted(pairs["positive"].items())},
        "false_positive_rate": {
            "other": round(float((pairs["other"] <= t).mean()), 5),
            "colour_variant": round(float((pairs["colour_variant"] <= t).mean()), 5)
            if len(pairs["colour_variant"])
            else None,
        },
        "median_distance": {
            "positive": round(float(np.median(pos_all)), 4),
            "other": round(float(np.median(pairs["other"])), 4),
            "colour_variant": round(float(np.median(pairs["colour_variant"])), 4)
            if len(pairs["colour_variant"])
            else None,
        },
    }
    metrics["phone_top1"] = _phone_top1(emb, pool, index)
    return metrics


def _phone_top1(emb: np.ndarray, pool: Pool, index: np.ndarray) -> float | None:
    """Share of phone-photo views whose nearest clean catalog view is their own identity."""
    phone = ALL_KINDS.index("phone")
    kinds = pool.kinds[index]
    catalog = emb[:, 0]  # (n, dim)
    hits, total = 0, 0
    for i, j in zip(*np.nonzero(kinds == phone), strict=True):
        d = np.linalg.norm(catalog - emb[i, j], axis=1)
        hits += int(np.argmin(d) == i)
        total += 1
    return round(hits / total, 4) if total else None

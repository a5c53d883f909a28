"""Typed results of the evaluate and calibrate jobs.

:func:`dedup.service.evaluate` returns an :class:`EvaluationResult` made of the sections below, and
:func:`dedup.service.calibrate_threshold` a :class:`CalibrationResult`. Callers read attributes, not
string keys, and each ``as_dict()`` gives the JSON that ``dedup evaluate --format json`` and
``dedup calibrate`` print: the same keys and nesting as before these types existed, so scripts that
read that JSON need no change. Rates are rounded to four digits and thresholds to six in the JSON only;
the attributes keep full precision.

Pair scores at a threshold are :class:`dedup.matching.metrics.PairScores`, which the matching layer
already types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dedup.matching.metrics import PairScores


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


@dataclass(frozen=True)
class ImageCounts:
    """Where the truth's images came from: listed in the CSV, found in the catalog under the current
    model, embedded for this evaluation, or unusable (unreadable or not images)."""

    listed: int
    in_catalog: int
    embedded: int
    unusable: int

    def as_dict(self) -> dict[str, int]:
        return {
            "listed": self.listed,
            "in_catalog": self.in_catalog,
            "embedded": self.embedded,
            "unusable": self.unusable,
        }


@dataclass(frozen=True)
class UnusableFile:
    """A truth image that could not be scored, and why."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold this truth would choose and the scores there (``None`` throughout when none reaches
    the target)."""

    threshold: float | None
    precision: float | None
    recall: float | None
    f1: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        out = {"threshold": _r(self.threshold, 6), "precision": _r(self.precision), "recall": _r(self.recall)}
        return {"f1": _r(self.f1), **out}


@dataclass(frozen=True)
class KeeperScores:
    """How often the keep policy keeps the original, over the report's clusters that hold one."""

    clusters_with_original: int
    original_kept: int
    policy: tuple[str, ...]
    #: Truth kind of each wrong keeper (``unlabelled`` when the truth names none) → count, most first.
    wrong_keepers: Mapping[str, int]

    @property
    def accuracy(self) -> float | None:
        """Share of clusters holding an original whose keeper is one (None when no cluster holds one)."""
        return self.original_kept / self.clusters_with_original if self.clusters_with_original else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "clusters_with_original": self.clusters_with_original,
            "original_kept": self.original_kept,
            "accuracy": _r(self.accuracy),
            "policy": list(self.policy),
            "wrong_keepers": dict(self.wrong_keepers),
        }


@dataclass(frozen=True)
class ClusterScores:
    """B-cubed scores of the report's clusters against the truth groups, over the images in the catalog."""

    images: int
    clusters: int
    precision: float
    recall: float
    f1: float
    keeper: KeeperScores | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "clusters": self.clusters,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "keeper": self.keeper.as_dict() if self.keeper else None,
        }


@dataclass(frozen=True)
class QueryMiss:
    """A query whose expected product was not the first: its rank (None: not found) and what came first."""

    query: str
    expected: str
    rank: int | None
    top: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query, "expected": self.expected, "rank": self.rank, "top": self.top}


@dataclass(frozen=True)
class QueryScores:
    """Retrieval scores of a queries CSV, ranking hits by distinct product (``by``: group or product_id)."""

    by: str
    count: int
    recall_at_1: float
    recall_at_5: float
    mrr: float
    failed: tuple[UnusableFile, ...] = ()
    misses: tuple[QueryMiss, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "count": self.count,
            "failed": [f.as_dict() for f in self.failed],
            "recall_at_1": round(self.recall_at_1, 4),
            "recall_at_5": round(self.recall_at_5, 4),
            "mrr": round(self.mrr, 4),
            "misses": [m.as_dict() for m in self.misses],
        }


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`dedup.service.evaluate` measured.

    ``pairs`` and ``by_kind`` are scored at ``threshold`` (the model card's unless one was given, see
    ``threshold_source``); ``best_f1`` and ``at_precision`` are the thresholds this truth would choose,
    which flatter: report ``pairs`` for data the model and its threshold never saw. ``clusters`` exists
    for group truths, ``queries`` with a queries CSV, ``sweep`` (the plot's absolute path) when asked.
    """

    truth: str
    form: str
    model: str
    threshold: float
    threshold_source: str
    images: ImageCounts
    pairs: PairScores
    by_kind: Mapping[str, PairScores]
    best_f1: ThresholdChoice
    at_precision: ThresholdChoice
    target_precision: float
    unusable: tuple[UnusableFile, ...] = ()
    clusters: ClusterScores | None = None
    queries: QueryScores | None = None
    sweep: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        at_precision = self.at_precision.as_dict()
        del at_precision["f1"]
        return {
            "truth": self.truth,
            "form": self.form,
            "model": self.model,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "images": self.images.as_dict(),
            "unusable": [u.as_dict() for u in self.unusable],
            "pairs": self.pairs.as_dict(),
            "by_kind": {k: s.as_dict() for k, s in self.by_kind.items()},
            "best_f1": self.best_f1.as_dict(),
            "at_precision": {"target": self.target_precision, **at_precision},
            "clusters": self.clusters.as_dict() if self.clusters else None,
            "queries": self.queries.as_dict() if self.queries else None,
            "sweep": self.sweep,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`dedup.service.calibrate_threshold` chose and wrote.

    ``threshold`` (rounded to four digits, as the card stores it) reaches ``precision`` ≥
    ``target_precision`` on ``pairs`` labelled pairs with ``recall``; the written model folder's card
    carries it (``previous_threshold`` was there before). ``skipped_files`` names the unreadable
    images, with their reasons.
    """

    pairs: int
    target_precision: float
    threshold: float
    precision: float
    recall: float
    previous_threshold: float | None
    skipped_files: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the figures, as the card's ``calibration_history`` records them."""
        return {
            "pairs": self.pairs,
            "skipped_files": list(self.skipped_files),
            "target_precision": self.target_precision,
            "threshold": self.threshold,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "previous_threshold": self.previous_threshold,
        }

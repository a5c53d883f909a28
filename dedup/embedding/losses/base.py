"""What every batch loss shares: the pair-label matrix and pairwise distances (imports Keras)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from keras import ops


class BatchLoss(ABC):
    """A loss over a batch of embeddings with identity labels; 1 = duplicate pulls together."""

    name: str = "loss"

    @abstractmethod
    def __call__(self, ids: Any, embeddings: Any) -> Any:
        """Scalar loss of ``embeddings`` (n, dim) whose rows with equal ``ids`` (n,) are duplicates."""

    def config(self) -> dict[str, Any]:
        """Hyper-parameters, for the model card."""
        return {"name": self.name}


class MarginLoss(BatchLoss):
    """A loss with a distance margin, optionally grown from ``margin_start`` to ``margin`` during training.

    A small margin first lets the tower sort the easy pairs; growing it later pushes the remaining
    near negatives apart (the "growing margin" schedule). The margin lives in a non-trainable variable
    so a compiled train step sees each new value.
    """

    default_margin = 1.0

    def __init__(self, margin: float | None = None, margin_start: float | None = None, ramp: float = 0.5) -> None:
        import keras

        margin = self.default_margin if margin is None else float(margin)
        for value in (margin, margin_start):
            # Unit vectors are at most 2 apart: a margin outside (0, 2] does nothing or cannot be met.
            if value is not None and not 0.0 < value <= 2.0:
                raise ValueError(f"margin must be in (0, 2] for unit-norm embeddings (got {value})")
        if not 0.0 < ramp <= 1.0:
            raise ValueError(f"ramp must be in (0, 1] (got {ramp})")
        self.margin = margin
        self.margin_start = None if margin_start is None else float(margin_start)
        self.ramp = ramp
        first = self.margin if self.margin_start is None else self.margin_start
        self.current = keras.Variable(first, dtype="float32", trainable=False, name=f"{self.name}_margin")

    def set_progress(self, progress: float) -> None:
        """Move the margin along its schedule; ``progress`` is the share of training done, 0–1."""
        if self.margin_start is not None:
            t = min(1.0, max(0.0, progress) / self.ramp)
            self.current.assign(self.margin_start + (self.margin - self.margin_start) * t)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "margin": self.margin}
        if self.margin_start is not None:
            out["margin_schedule"] = {"start": self.margin_start, "ramp_share_of_training": self.ramp}
        return out


def pair_labels(ids: Any) -> tuple[Any, Any]:
    """``(positive, negative)`` float masks (n, n): same id off the diagonal → 1 (duplicate), other id → 1."""
    ids = ops.reshape(ids, (-1,))
    same = ops.cast(ops.equal(ids[:, None], ids[None, :]), "float32")  # (n, n)
    eye = ops.eye(ops.shape(ids)[0], dtype="float32")
    return same - eye, 1.0 - same


def pairwise_distances(emb: Any) -> Any:
    """Euclidean distances (n, n) between rows; safe gradient at 0."""
    sq = ops.sum(ops.square(emb), axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * ops.matmul(emb, ops.transpose(emb))
    return ops.sqrt(ops.maximum(d2, 1e-12))

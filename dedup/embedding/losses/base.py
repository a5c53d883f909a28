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

"""Metric-learning losses, one per file. Label convention everywhere: 1 = duplicate (pulled together).

Batch losses take ``(ids, embeddings)``: two rows with the same id are duplicates (pair label 1),
rows with different ids are not (label 0). Embeddings are L2-normalised ``(n, dim)`` rows.
"""

from __future__ import annotations

from typing import Any

from dedup.embedding.losses.base import BatchLoss

LOSS_NAMES = ("infonce", "contrastive", "triplet")


def get_loss(name: str, **kwargs: Any) -> BatchLoss:
    """The loss called ``name`` (one of :data:`LOSS_NAMES`), built with ``kwargs``."""
    if name == "infonce":
        from dedup.embedding.losses.infonce import InfoNCELoss

        return InfoNCELoss(**kwargs)
    if name == "contrastive":
        from dedup.embedding.losses.contrastive import ContrastiveLoss

        return ContrastiveLoss(**kwargs)
    if name == "triplet":
        from dedup.embedding.losses.triplet import TripletLoss

        return TripletLoss(**kwargs)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")


__all__ = ["LOSS_NAMES", "BatchLoss", "get_loss"]

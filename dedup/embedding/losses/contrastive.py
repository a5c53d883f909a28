"""Classic margin contrastive loss (Hadsell et al. 2006) on Euclidean distances.

For a pair with label ``y`` (1 = duplicate) at distance ``d``:
``y · d² + (1 − y) · max(0, margin − d)²``. Duplicates are pulled to 0, other pairs pushed to at
least ``margin`` apart.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from dedup.embedding.losses.base import MarginLoss, pair_labels, pairwise_distances


class ContrastiveLoss(MarginLoss):
    """Margin contrastive loss; in a batch every pair counts, positives and negatives weighted equally."""

    name = "contrastive"
    default_margin = 1.0

    def pair_loss(self, distance: Any, label: Any) -> Any:
        """Mean loss of explicit pairs: ``distance`` (n,), ``label`` (n,) with 1 = duplicate."""
        y = ops.cast(label, "float32")
        d = ops.cast(distance, "float32")
        return ops.mean(y * ops.square(d) + (1.0 - y) * ops.square(ops.relu(self.current - d)))

    def __call__(self, ids: Any, embeddings: Any) -> Any:
        pos, neg = pair_labels(ids)  # (n, n) each
        d = pairwise_distances(embeddings)  # (n, n)
        pos_term = ops.sum(pos * ops.square(d)) / ops.maximum(ops.sum(pos), 1.0)
        neg_term = ops.sum(neg * ops.square(ops.relu(self.current - d))) / ops.maximum(ops.sum(neg), 1.0)
        return pos_term + neg_term

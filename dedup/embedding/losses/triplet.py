"""Triplet loss with in-batch semi-hard negative mining (Schroff et al. 2015, FaceNet).

For each anchor–positive pair (same id, label 1) the negative is the closest one that is still
farther than the positive (semi-hard); if there is none, the farthest negative is used (a gentle
gradient rather than the collapse hardest-negative mining can cause). Loss:
``max(0, d(a,p) − d(a,n) + margin)``, averaged over anchor–positive pairs.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from dedup.embedding.losses.base import MarginLoss, pair_labels, pairwise_distances


class TripletLoss(MarginLoss):
    """Semi-hard triplet loss over every anchor–positive pair of the batch."""

    name = "triplet"
    default_margin = 0.3

    def __call__(self, ids: Any, embeddings: Any) -> Any:
        pos, neg = pair_labels(ids)  # (n, n)
        d = pairwise_distances(embeddings)  # (n, n)
        d_ap = d[:, :, None]  # (n, n, 1): anchor i, positive j
        d_an = d[:, None, :]  # (n, 1, n): anchor i, negative k
        negk = neg[:, None, :]
        # Semi-hard: farther than the positive; take the closest such negative.
        semi = negk * ops.cast(ops.greater(d_an, d_ap), "float32")  # (n, n, n)
        big = 4.0
        semi_d = ops.min(d_an + big * (1.0 - semi), axis=2)  # (n, n)
        # No semi-hard negative: fall back to the farthest negative (the easiest, a gentle gradient).
        hard_d = ops.max(d_an * negk, axis=2)  # (n, n)
        has_semi = ops.cast(ops.greater(ops.sum(semi, axis=2), 0.0), "float32")
        d_neg = has_semi * semi_d + (1.0 - has_semi) * hard_d
        per_pair = ops.relu(d - d_neg + self.current) * pos
        return ops.sum(per_pair) / ops.maximum(ops.sum(pos), 1.0)

"""In-batch multi-positive InfoNCE / NT-Xent (Chen et al. 2020; Khosla et al. 2020, SupCon).

Every row is an anchor; rows with the same id (label 1) are its positives, all other rows its
negatives. With cosine similarities ``s`` and temperature ``τ``, the loss of anchor ``i`` is the mean
over its positives ``p`` of ``−log(exp(s_ip/τ) / Σ_{k≠i} exp(s_ik/τ))``.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from dedup.embedding.losses.base import BatchLoss, pair_labels


class InfoNCELoss(BatchLoss):
    """Multi-positive NT-Xent over the batch; anchors without a positive are ignored."""

    name = "infonce"

    def __init__(self, temperature: float = 0.1) -> None:
        if not 0.005 <= temperature <= 10.0:
            raise ValueError(f"temperature must be in [0.005, 10] (got {temperature}); 0.05–0.2 works well")
        self.temperature = float(temperature)

    def __call__(self, ids: Any, embeddings: Any) -> Any:
        pos, _ = pair_labels(ids)  # (n, n), 1 = duplicate, diagonal 0
        n = ops.shape(embeddings)[0]
        logits = ops.matmul(embeddings, ops.transpose(embeddings)) / self.temperature  # (n, n)
        logits = logits - 1e9 * ops.eye(n, dtype="float32")  # an anchor is not its own candidate
        log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)  # (n, n)
        n_pos = ops.sum(pos, axis=1)  # (n,)
        per_anchor = -ops.sum(pos * log_prob, axis=1) / ops.maximum(n_pos, 1.0)
        has_pos = ops.cast(ops.greater(n_pos, 0.0), "float32")
        return ops.sum(per_anchor * has_pos) / ops.maximum(ops.sum(has_pos), 1.0)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "temperature": self.temperature}

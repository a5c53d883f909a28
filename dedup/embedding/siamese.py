"""The siamese training wrapper: one shared tower, a batch loss, and the train/test steps.

Only the tower is shipped (``tower.keras``); this wrapper exists for training and is saved apart
from it (as weights) for checkpoints.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from dedup.embedding.losses.base import BatchLoss


class SiameseModel(keras.Model):
    """Trains ``tower`` with ``loss`` on batches ``(images (n, S, S, 3) uint8, ids (n,))``.

    Metrics: ``loss`` and ``pair_acc``, the share of rows whose nearest other row in the batch is a
    duplicate of it (same id) — in-batch top-1 retrieval accuracy.
    """

    def __init__(self, tower: keras.Model, loss_fn: BatchLoss, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tower = tower
        self.loss_fn = loss_fn
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.acc_tracker = keras.metrics.Mean(name="pair_acc")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.tower(inputs, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.acc_tracker]

    def train_step(self, data: Any) -> dict[str, Any]:
        x, ids = data
        with tf.GradientTape() as tape:
            emb = self.tower(x, training=True)  # (n, dim)
            loss = self.loss_fn(ids, emb)
        grads = tape.gradient(loss, self.tower.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.tower.trainable_variables, strict=True))
        return self._update(loss, ids, emb)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, ids = data
        emb = self.tower(x, training=False)
        return self._update(self.loss_fn(ids, emb), ids, emb)

    def _update(self, loss: Any, ids: Any, emb: Any) -> dict[str, Any]:
        self.loss_tracker.update_state(loss)
        self.acc_tracker.update_state(nearest_neighbour_accuracy(ids, emb))
        return {"loss": self.loss_tracker.result(), "pair_acc": self.acc_tracker.result()}


def nearest_neighbour_accuracy(ids: Any, emb: Any) -> Any:
    """Share of rows whose most similar other row has the same id."""
    ids = ops.reshape(ids, (-1,))
    sim = ops.matmul(emb, ops.transpose(emb)) - 3.0 * ops.eye(ops.shape(emb)[0])  # (n, n), self excluded
    nn = ops.argmax(sim, axis=1)
    return ops.mean(ops.cast(ops.equal(ops.take(ids, nn), ids), "float32"))

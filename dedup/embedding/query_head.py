"""The query-tower training wrapper: a trainable tower scored against a fixed bank of catalog embeddings.

A query tower maps query photos (phone shots of a product, or any copy of it) into the space of a
frozen catalog tower. Training is softmax cross-entropy of each query view over the whole bank of
catalog-tower embeddings (one row per product), so every other product, its colour variants included,
is a negative of every step. Catalog vectors never change, so the duplicate pass is untouched.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops


class BankModel(keras.Model):
    """Trains ``tower`` on batches ``(images (n, S, S, 3) uint8, rows (n,))``: ``rows`` index ``bank``.

    Metrics: ``loss`` (cross-entropy over the bank at ``temperature``) and ``top1``, the share of
    views whose most similar bank row is their own product.
    """

    def __init__(self, tower: keras.Model, bank: np.ndarray, temperature: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tower = tower
        self.bank = tf.constant(np.asarray(bank, np.float32))  # (m, dim) unit rows, fixed
        self.temperature = float(temperature)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.top1_tracker = keras.metrics.Mean(name="top1")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.tower(inputs, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.top1_tracker]

    def _scores(self, rows: Any, emb: Any) -> tuple[Any, Any]:
        logits = ops.matmul(emb, ops.transpose(self.bank)) / self.temperature
        rows = ops.cast(ops.reshape(rows, (-1,)), "int32")
        loss = ops.mean(keras.losses.sparse_categorical_crossentropy(rows, logits, from_logits=True))
        top1 = ops.mean(ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=1), "int32"), rows), "float32"))
        return loss, top1

    def train_step(self, data: Any) -> dict[str, Any]:
        x, rows = data
        with tf.GradientTape() as tape:
            loss, top1 = self._scores(rows, self.tower(x, training=True))
        grads = tape.gradient(loss, self.tower.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.tower.trainable_variables, strict=True))
        return self._update(loss, top1)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, rows = data
        return self._update(*self._scores(rows, self.tower(x, training=False)))

    def _update(self, loss: Any, top1: Any) -> dict[str, Any]:
        self.loss_tracker.update_state(loss)
        self.top1_tracker.update_state(top1)
        return {"loss": self.loss_tracker.result(), "top1": self.top1_tracker.result()}

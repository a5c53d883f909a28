"""Training callbacks: a wall-clock budget with a cosine learning-rate schedule over it, and curve plots."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

log = logging.getLogger(__name__)


class BudgetSchedule(keras.callbacks.Callback):
    """Stops training after ``minutes`` (if given) and sets a warm-up + cosine learning rate.

    Progress is the larger of elapsed time over the budget and steps done over ``total_steps``, so
    the schedule ends at the budget whichever limit comes first.
    """

    def __init__(
        self,
        base_lr: float,
        total_steps: int,
        minutes: float | None,
        warmup: float = 0.03,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__()
        self.on_progress = on_progress  # e.g. a loss's margin schedule
        self.base_lr = base_lr
        self.total_steps = max(1, total_steps)
        self.seconds = minutes * 60.0 if minutes else None
        self.warmup = warmup
        self.step = 0
        self.start = 0.0
        self.stopped_by_budget = False

    def progress(self) -> float:
        p = self.step / self.total_steps
        if self.seconds:
            p = max(p, (time.monotonic() - self.start) / self.seconds)
        return min(p, 1.0)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.start = time.monotonic()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        p = self.progress()
        lr = self.base_lr * (p / self.warmup if p < self.warmup else 0.5 * (1 + math.cos(math.pi * p)))
        self.model.optimizer.learning_rate.assign(max(lr, self.base_lr * 0.01))
        if self.on_progress is not None:
            self.on_progress(p)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.seconds and time.monotonic() - self.start >= self.seconds:
            if not self.stopped_by_budget:
                log.info("time budget of %.1f min reached after %d steps", self.seconds / 60, self.step)
            self.stopped_by_budget = True
            self.model.stop_training = True


class EpochMetric(keras.callbacks.Callback):
    """Adds ``name`` = ``fn(model)`` to each epoch's logs, for checkpoints and early stopping to monitor."""

    def __init__(self, name: str, fn: Callable[[Any], float]) -> None:
        super().__init__()
        self.name = name
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float(self.fn(self.model))
        if logs is not None:
            logs[self.name] = value
        log.info("epoch %d: %s %.4f", epoch + 1, self.name, value)


class HardNegativeMiner(keras.callbacks.Callback):
    """Every ``every`` epochs, embeds each training identity's clean view and gives the sampler each
    identity's ``k`` nearest other identities, so later batches hold clusters of current look-alikes.
    """

    def __init__(self, sampler: Any, views: Any, every: int = 2, k: int = 6, batch: int = 256) -> None:
        super().__init__()
        self.sampler = sampler
        self.views = views  # (n, S, S, 3) uint8: clean view of each identity in sampler.index
        self.every = max(1, every)
        self.k = k
        self.batch = batch
        self.refreshes = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        import numpy as np

        t0 = time.monotonic()
        tower: Any = getattr(self.model, "tower", self.model)  # a SiameseModel's tower, or a plain tower
        emb = np.concatenate(
            [
                np.asarray(tower(self.views[i : i + self.batch], training=False))
                for i in range(0, len(self.views), self.batch)
            ]
        )
        sim = emb @ emb.T
        np.fill_diagonal(sim, -np.inf)
        k = min(self.k, len(emb) - 1)
        top = np.argpartition(-sim, k, axis=1)[:, :k]
        order = np.take_along_axis(sim, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        index = self.sampler.index
        self.sampler.set_neighbours({int(index[r]): [int(index[c]) for c in top[r]] for r in range(len(index))})
        self.refreshes += 1
        nearest = np.take_along_axis(sim, top[:, :1], axis=1)
        log.info(
            "hard negatives refreshed in %.1f s: median nearest-other similarity %.3f",
            time.monotonic() - t0,
            float(np.median(nearest)),
        )


def plot_curves(history: dict[str, list[float]], path: Path) -> Path | None:
    """Loss and pair-accuracy curves (training and validation, per epoch) as a PNG; None without a history.

    Drawn by dedup's one plot renderer (:func:`dedup.report.plots.curves_figure`), as the evaluation plots are.
    """
    from dedup.report.figure import to_png
    from dedup.report.plots import curves_figure

    if not history.get("loss"):
        return None
    path.write_bytes(to_png(curves_figure(history)))
    return path

"""Training callbacks: a wall-clock budget with a cosine learning-rate schedule over it, and curve plots."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import keras

log = logging.getLogger(__name__)


class BudgetSchedule(keras.callbacks.Callback):
    """Stops training after ``minutes`` (if given) and sets a warm-up + cosine learning rate.

    Progress is the larger of elapsed time over the budget and steps done over ``total_steps``, so
    the schedule ends at the budget whichever limit comes first.
    """

    def __init__(self, base_lr: float, total_steps: int, minutes: float | None, warmup: float = 0.03) -> None:
        super().__init__()
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

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.seconds and time.monotonic() - self.start >= self.seconds:
            if not self.stopped_by_budget:
                log.info("time budget of %.1f min reached after %d steps", self.seconds / 60, self.step)
            self.stopped_by_budget = True
            self.model.stop_training = True


def plot_curves(history: dict[str, list[float]], path: Path) -> Path | None:
    """Loss and pair-accuracy curves as a PNG; skipped (None) if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: training curves not plotted (history is in the card)")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "pair_acc"), strict=True):
        for prefix in ("", "val_"):
            if prefix + key in history:
                ax.plot(history[prefix + key], label=prefix + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

"""Distil a model's catalog tower into a cheaper one: same embedding space, fewer convolutions.

Ingest time is decode plus the catalog tower, so a tower with fewer multiply-adds makes every ingest
faster. Training a small tower from scratch would take as long as the first one and land in another
embedding space; instead the student starts from the teacher's own weights with some blocks removed
(each removed block is a residual one, so the rest still fits together) and learns to give the
teacher's vector for every training view (cosine regression). Cosine regression alone leaves errors
of a few hundredths on every vector, enough to merge two look-alike products the teacher keeps just
apart; with ``pair_weight`` the student also learns the teacher's similarities between the views of a
batch, and batches are built of the student's current look-alikes (as in training), so those pairs
are the ones it is taught to keep apart. Because the student lands in the
teacher's space, the teacher's query tower keeps working against the student's catalog vectors and is
carried over as it is; the duplicate threshold is calibrated again for the student.

:func:`distil_tower` writes a complete model folder (student tower, its TFLite export, the teacher's
query tower, a card with a ``distillation`` section).
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import ConfigError
from dedup.training import data as data_mod
from dedup.training.options import PHONE_SHARE, DistillOptions, resolve

log = logging.getLogger(__name__)


def parse_stages(text: str) -> tuple[tuple[int, int, int], ...]:
    """``"48x1,96x1,192x1,320x1"`` (width × blocks per stage, each stage halving the size) → stage tuples."""
    stages = []
    for part in text.split(","):
        try:
            width, repeats = (int(v) for v in part.lower().split("x"))
        except ValueError as exc:
            raise ConfigError(f"stage {part!r}: expected WIDTHxBLOCKS, e.g. 96x1") from exc
        if width < 8 or repeats < 1:
            raise ConfigError(f"stage {part!r}: width must be ≥ 8 and blocks ≥ 1")
        stages.append((width, 2, repeats))
    if not stages:
        raise ConfigError("no stages given")
    return tuple(stages)


def distil_tower(
    teacher_dir: Path,
    out_dir: Path,
    data_dir: Path | None = None,
    options: DistillOptions | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a student of the catalog tower in ``teacher_dir`` and write a full model folder to ``out_dir``.

    The pool is built as the teacher's was (same data, colour variants, collages, trim and phone share
    unless ``phone_share`` is given, ``views`` per product). Each step embeds ``batch_size`` views with the
    student and pulls each towards the teacher's vector of the same view; the weights with the best mean
    cosine on the validation products are kept (with ``pair_weight``, the lowest loss of the same kind on
    the validation views). The student's threshold is calibrated at
    ``target_precision`` on the validation products' pairs, as training does. ``init`` is a student tower file
    (``.keras``) to go on training instead (its stages win over ``stages``). ``pair_weight`` > 0 adds the
    relational term of :func:`relational_cosine_loss` and look-alike batches. Returns the card.
    """
    o: DistillOptions = resolve(DistillOptions, options, overrides)
    if out_dir.resolve() == teacher_dir.resolve():
        raise ConfigError("the student needs its own folder (--out must differ from the teacher's)")
    import keras

    from dedup.embedding.card import read_card, trims_background, write_card
    from dedup.embedding.export import export_tflite
    from dedup.embedding.tower import build_tower, copy_weights, stages_of
    from dedup.training.calibrate import calibrate
    from dedup.training.callbacks import BudgetSchedule, EpochMetric, HardNegativeMiner
    from dedup.training.trainer import (
        _embed_pool,
        _trainable_tower,
        _versions,
        embed_in_batches,
        fit_keeping_best,
        fit_record,
    )

    started = time.time()
    keras.utils.set_random_seed(o.seed)
    card = read_card(teacher_dir)
    size, dim = int(card["input_size"]), int(card["dim"])
    trim = trims_background(card)
    teacher = _trainable_tower(keras.models.load_model(teacher_dir / card["files"]["keras"], compile=False))

    data = card.get("data", {})
    share = float(data.get("phone_share", PHONE_SHARE)) if o.phone_share is None else o.phone_share
    ids = data_mod.load_identities(data_dir)
    ids = data_mod.add_colour_variants(ids, 1 if data.get("colour_variant_identities", 1) else 0, o.seed)
    ids = data_mod.add_collages(ids, int(data.get("collage_groups", 0)), o.seed)
    t0 = time.time()
    pool = data_mod.build_pool(ids, o.views, size, o.seed, workers=o.workers, trim=trim, phone_share=share)
    pool_seconds = time.time() - t0
    n, v = pool.views.shape[:2]
    targets = _embed_pool(teacher, pool.views)  # (n, v, dim)
    log.info("distillation pool: %d products × %d views, teacher vectors in %.0f s", n, v, time.time() - t0)
    train_idx, val_idx = data_mod.split_groups(pool, o.val_fraction, o.seed)
    val_x = pool.views[val_idx].reshape(-1, size, size, 3)
    val_t = targets[val_idx].reshape(-1, dim)

    if o.init is not None:
        student = _trainable_tower(keras.models.load_model(o.init, compile=False))
        copied = len(student.weights)
        stages = stages_of(student)
        log.info("student starts from %s", o.init)
    else:
        stages = o.stages
        student = build_tower(size, dim, stages=stages)
        copied = copy_weights(teacher, student)
        log.info("student starts from %d of its %d weight tensors taken from the teacher", copied, len(student.weights))
    rng = np.random.default_rng(o.seed)
    sampler = data_mod.BatchSampler(pool, train_idx, o.batch_size // 2, o.seed)

    def batches_forever() -> Any:
        while True:
            if o.pair_weight > 0:
                picks, cols = sampler.sample_views()  # look-alikes side by side, two views each
            else:
                picks = rng.choice(train_idx, size=o.batch_size)
                cols = rng.integers(0, v, size=o.batch_size)
            yield pool.views[picks, cols], targets[picks, cols]

    def val_cosine(model: Any) -> float:
        return float(np.mean(np.sum(embed_in_batches(model, val_x) * val_t, axis=1)))

    before = val_cosine(student)
    # Compile a wrapper, not the student, so the saved student file holds no optimizer state.
    fitted = keras.Model(student.input, student.output)
    loss = relational_cosine_loss(o.pair_weight) if o.pair_weight > 0 else keras.losses.CosineSimilarity()
    fitted.compile(optimizer=keras.optimizers.Adam(o.learning_rate), loss=loss, jit_compile=True)
    # Model choice follows the objective: with the relational term, the same loss over the validation views.
    monitor, mode = ("val_loss_pairs", "min") if o.pair_weight > 0 else ("val_cosine", "max")

    def val_loss_pairs(model: Any) -> float:
        emb = embed_in_batches(model, val_x)
        cos = float(np.mean(np.sum(emb * val_t, axis=1)))
        return 1.0 - cos + o.pair_weight * relational_error(emb, val_t)

    with tempfile.TemporaryDirectory(prefix="dedup-distil-") as tmp:
        best = Path(tmp) / "best.weights.h5"
        budget = BudgetSchedule(o.learning_rate, o.steps, o.minutes)
        callbacks = [budget, EpochMetric("val_cosine", val_cosine)]
        if o.pair_weight > 0:
            callbacks += [
                EpochMetric(monitor, val_loss_pairs),
                HardNegativeMiner(sampler, pool.views[train_idx, 0], every=2),
            ]
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                best, monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True
            ),
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=o.patience),
        ]
        history, fit_seconds = fit_keeping_best(
            fitted, batches_forever(), callbacks, best, steps=o.steps, steps_per_epoch=o.steps_per_epoch
        )
    val_emb = embed_in_batches(student, val_x)
    cos = np.sum(val_emb * val_t, axis=1)
    metrics = calibrate(val_emb.reshape(len(val_idx), v, dim), pool, val_idx, target=o.target_precision, seed=o.seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    student.save(out_dir / "tower.keras")
    quantisation = str(card.get("runtime", {}).get("quantisation", "float16"))
    tflite_name = f"tower_{quantisation}.tflite"
    export_tflite(student, out_dir / tflite_name, quantisation)
    files: dict[str, Any] = {"tflite": tflite_name, "keras": "tower.keras"}
    for key in ("query_tflite", "query_keras"):
        name = card["files"].get(key)
        if name and (teacher_dir / name).is_file():
            shutil.copy2(teacher_dir / name, out_dir / name)
            files[key] = name
    teacher_params = int(teacher.count_params())
    card.update(
        {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
            "threshold": metrics["threshold"],
            "validation": metrics,
            "software": _versions(),
            "command": o.command or " ".join(sys.argv),
        }
    )
    card["architecture"] = {
        **card.get("architecture", {}),
        "stages": [list(s) for s in stages],
        "params": int(student.count_params()),
        "distilled_from_params": teacher_params,
    }
    card["distillation"] = {
        "teacher": str(teacher_dir),
        "teacher_model_name": card.get("model_name"),
        "loss": "1 - cosine(student(view), teacher(view))"
        + (
            f" + {o.pair_weight:g} × weighted mean squared error of the batch's view similarities"
            if o.pair_weight
            else ""
        ),
        "pair_weight": o.pair_weight,
        "selected_by": monitor,
        "init": str(o.init)
        if o.init is not None
        else f"teacher weights for {copied} of {len(student.weights)} tensors",
        "data": {
            "products": n,
            "train_products": int(len(train_idx)),
            "val_products": int(len(val_idx)),
            "views_per_product": v,
            "phone_share": share,
            "pool_seconds": round(pool_seconds, 1),
        },
        "training": fit_record(
            learning_rate=o.learning_rate,
            batch_size=o.batch_size,
            steps=budget.step,
            history=history,
            minutes=o.minutes,
            fit_seconds=fit_seconds,
            started=started,
            seed=o.seed,
            options=o.as_dict(),
        ),
        "validation_cosine": {
            "before": round(before, 4),
            "mean": round(float(cos.mean()), 4),
            "p01": round(float(np.quantile(cos, 0.01)), 4),
        },
    }
    write_card(out_dir, card)
    log.info(
        "student written to %s: %d → %d parameters, validation cosine to the teacher %.4f (from %.4f), threshold %.4f",
        out_dir,
        teacher_params,
        student.count_params(),
        cos.mean(),
        before,
        metrics["threshold"],
    )
    return card


#: Teacher similarity above which a pair counts as a look-alike in the relational term (distance ≈ 0.89, a
#: little beyond the shipped threshold's 0.65), and how much more such a pair weighs than the others.
HARD_SIMILARITY = 0.6
HARD_BOOST = 10.0


def relational_cosine_loss(pair_weight: float) -> Any:
    """Per view: ``1 - cos(student, teacher)`` + ``pair_weight`` × the weighted mean squared difference
    between the student's and the teacher's similarities of that view to every view in the batch.

    ``y_true`` holds the teacher's unit vectors, ``y_pred`` the student's; pairs the teacher finds
    similar (look-alikes and the view's own product) weigh :data:`HARD_BOOST` times more, because the
    threshold lies among them.
    """
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        pred = y_pred / ops.maximum(ops.norm(y_pred, axis=-1, keepdims=True), 1e-12)
        cos = ops.sum(pred * y_true, axis=-1)
        t = ops.matmul(y_true, ops.transpose(y_true))
        s = ops.matmul(pred, ops.transpose(pred))
        w = 1.0 + HARD_BOOST * ops.cast(t > HARD_SIMILARITY, t.dtype)
        return (1.0 - cos) + pair_weight * ops.mean(w * ops.square(s - t), axis=-1)

    return loss


def relational_error(student: np.ndarray, teacher: np.ndarray) -> float:
    """The relational term of :func:`relational_cosine_loss` over all pairs of ``(n, dim)`` unit vectors, numpy."""
    t = teacher @ teacher.T
    w = 1.0 + HARD_BOOST * (t > HARD_SIMILARITY)
    return float(np.mean(w * np.square(student @ student.T - t)))

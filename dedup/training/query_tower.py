"""Train a model's query tower: phone photos (and copies) of a product → the catalog tower's vector of it.

The catalog tower embeds catalog images; a query photo taken with a phone (the product small on a
table, in other light, at an angle) lands further from its product than any catalog copy does.
Training the catalog tower harder on phone photos spreads the duplicates too and costs duplicate
precision. A second tower for queries only avoids that trade: it starts as a copy of the catalog
tower and learns to map each query view onto the frozen catalog tower's embedding of the clean
product (:class:`dedup.embedding.query_head.BankModel`), so catalog vectors, thresholds and the
duplicate pass stay exactly as they were.

:func:`train_query_tower` adds ``query_tower.keras`` and its ``.tflite`` export to a model folder and
records the training in the card (``files.query_tflite``, ``files.query_keras``, ``query_tower``).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dedup.training import data as data_mod
from dedup.training.options import QueryTowerOptions, resolve

log = logging.getLogger(__name__)


def train_query_tower(
    model_dir: Path,
    data_dir: Path | None = None,
    options: QueryTowerOptions | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the query tower of the model in ``model_dir`` and write it into that folder; returns the card.

    The pool is built like the catalog tower's (same data layouts, trim as the card says) with
    ``phone_share`` of the views as phone photos. Each step embeds ``batch_size`` views with the query
    tower and scores them against the frozen catalog tower's embeddings of every training product's
    clean image. The weights with the best validation top-1 (validation products' query views against
    all products) are kept; training stops at ``minutes``, ``steps`` or after ``patience`` epochs
    without improvement. ``input_size`` (default: the catalog tower's) lets the query tower look at
    query photos in more detail than catalog images need: the tower is fully convolutional up to its
    global pooling, so the catalog tower's weights start it at any size. ``init`` is a query tower
    file (``.keras``) to start from instead. The TFLite export is ``quantisation`` (int8 weights by default:
    half the size of float16 and no slower for the one-image batches of a query).
    """
    o: QueryTowerOptions = resolve(QueryTowerOptions, options, overrides)
    import keras

    from dedup.embedding.card import read_card, trims_background, write_card
    from dedup.embedding.export import export_tflite
    from dedup.embedding.query_head import BankModel
    from dedup.training.callbacks import BudgetSchedule, EpochMetric
    from dedup.training.trainer import (
        _trainable_tower,
        _versions,
        embed_in_batches,
        fit_keeping_best,
        fit_record,
    )

    started = time.time()
    keras.utils.set_random_seed(o.seed)
    card = read_card(model_dir)
    catalog_size = int(card["input_size"])
    size = o.input_size or catalog_size
    trim = trims_background(card)
    catalog = keras.models.load_model(model_dir / card["files"]["keras"], compile=False)

    ids = data_mod.load_identities(data_dir)
    ids = data_mod.add_colour_variants(ids, o.colour_variants, o.seed)
    ids = data_mod.add_collages(ids, o.collages, o.seed)
    t0 = time.time()
    pool = data_mod.build_pool(ids, o.views, size, o.seed, workers=o.workers, trim=trim, phone_share=o.phone_share)
    pool_seconds = time.time() - t0
    log.info("query pool: %d products × %d views in %.0f s", len(pool), o.views, pool_seconds)
    train_idx, val_idx = data_mod.split_groups(pool, o.val_fraction, o.seed)
    # (n, dim): the catalog vector of every product
    bank = embed_in_batches(catalog, _resized(pool.views[:, 0], catalog_size))
    phone = data_mod.ALL_KINDS.index("phone")
    val_views, val_rows = _query_views(pool, val_idx, phone)
    baseline = _top1(embed_in_batches(catalog, _resized(val_views, catalog_size)), bank, val_rows)
    log.info("validation phone top-1 with the catalog tower itself: %.3f", baseline)

    train_bank_rows = {int(i): r for r, i in enumerate(train_idx)}
    rng = np.random.default_rng(o.seed)

    def batches_forever() -> Any:
        n_views = pool.views.shape[1]
        while True:
            picks = rng.choice(train_idx, size=o.batch_size)
            v = rng.integers(0, n_views, size=o.batch_size)
            yield pool.views[picks, v], np.array([train_bank_rows[int(i)] for i in picks], np.int32)

    start = keras.models.load_model(o.init or model_dir / card["files"]["keras"], compile=False)
    tower = _trainable_tower(start)
    if tower.input_shape[1] != size:
        tower = _resized_tower(tower, size, int(card["dim"]))
    from dedup.embedding.backbones import backbone_of
    from dedup.embedding.tower import freeze_batchnorm, freeze_leading_blocks

    pretrained_trunk = backbone_of(tower).load_pretrained is not None
    if pretrained_trunk:  # as its catalog tower was fine-tuned: fixed statistics, early blocks left alone
        freeze_batchnorm(tower)
        freeze_leading_blocks(tower, int(card.get("architecture", {}).get("frozen_blocks") or 0))
    model = BankModel(tower, bank[train_idx], temperature=o.temperature)
    model(np.zeros((1, size, size, 3), np.uint8))
    # XLA helps the plain-conv tower on CPU and slows depthwise convolutions' gradients (see trainer.py).
    model.compile(optimizer=keras.optimizers.Adam(o.learning_rate), jit_compile=not pretrained_trunk)

    with tempfile.TemporaryDirectory(prefix="dedup-query-") as tmp:
        best = Path(tmp) / "best.weights.h5"
        budget = BudgetSchedule(o.learning_rate, o.steps, o.minutes)
        callbacks = [
            budget,
            EpochMetric("val_top1", lambda m: _top1(embed_in_batches(m.tower, val_views), bank, val_rows)),
            keras.callbacks.ModelCheckpoint(
                best, monitor="val_top1", mode="max", save_best_only=True, save_weights_only=True
            ),
            keras.callbacks.EarlyStopping(monitor="val_top1", mode="max", patience=o.patience),
        ]
        history, fit_seconds = fit_keeping_best(
            model, batches_forever(), callbacks, best, steps=o.steps, steps_per_epoch=o.steps_per_epoch
        )
    final = _top1(embed_in_batches(tower, val_views), bank, val_rows)

    tower.save(model_dir / "query_tower.keras")
    tflite_name = f"query_tower_{o.quantisation}.tflite"
    export_tflite(tower, model_dir / tflite_name, o.quantisation)
    card["files"]["query_keras"] = "query_tower.keras"
    card["files"]["query_tflite"] = tflite_name
    card["query_tower"] = {
        "purpose": "query photos (phone shots, copies) → the catalog tower's vector of the product",
        "input_size": size,
        "init": str(o.init) if o.init else "the catalog tower",
        "runtime": {"quantisation": o.quantisation},
        "loss": {"name": "softmax over the catalog-tower bank", "temperature": o.temperature},
        "data": {
            "source": str(data_dir) if data_dir is not None else "tuxpaint training split (dedup.training.sources)",
            "products": len(pool),
            "train_products": int(len(train_idx)),
            "val_products": int(len(val_idx)),
            "views_per_product": o.views,
            "phone_share": o.phone_share,
            "collage_groups": o.collages,
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
        "validation": {
            "queries": int(len(val_rows)),
            "bank": int(len(bank)),
            "phone_top1_catalog_tower": round(baseline, 4),
            "phone_top1_query_tower": round(final, 4),
        },
        "software": _versions(),
        "command": o.command or " ".join(sys.argv),
    }
    write_card(model_dir, card)
    log.info("query tower written to %s: validation phone top-1 %.3f → %.3f", model_dir, baseline, final)
    return card


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    """``images`` (n, S, S, 3) uint8 resized to ``size`` (bilinear, as the model input is made); as is if S == size."""
    if images.shape[1] == size:
        return images
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in images])


def _resized_tower(tower: Any, size: int, dim: int) -> Any:
    """The same tower for ``size`` px inputs, with ``tower``'s weights (the layers are size-independent)."""
    from dedup.embedding.backbones import backbone_of
    from dedup.embedding.tower import build_tower, stages_of

    spec = backbone_of(tower)
    shape: dict[str, Any] = {"stages": stages_of(tower)} if spec.name == "residual-cnn" else {}
    out = build_tower(size, dim, backbone=spec.name, **shape)
    out.set_weights(tower.get_weights())
    return out


def _query_views(pool: data_mod.Pool, index: np.ndarray, phone: int) -> tuple[np.ndarray, np.ndarray]:
    """The phone-photo views of the products ``index`` and each one's pool row."""
    rows, cols = np.nonzero(pool.kinds[index] == phone)
    return pool.views[index[rows], cols], index[rows]


def _top1(emb: np.ndarray, bank: np.ndarray, rows: np.ndarray) -> float:
    """Share of ``emb`` rows whose most similar ``bank`` row is ``rows``."""
    if len(rows) == 0:
        return 0.0
    return float(np.mean(np.argmax(emb @ bank.T, axis=1) == rows))

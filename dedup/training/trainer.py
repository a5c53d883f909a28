"""Train a tower end to end: data → fit → calibrate → export → model card.

:func:`train_model` is the one entry point (``dedup train`` and ``scripts/train_default.py`` call it).
"""

from __future__ import annotations

import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import ConfigError
from dedup.training import data as data_mod
from dedup.training.options import PHONE_SHARE, TrainOptions, resolve

log = logging.getLogger(__name__)


def train_model(
    data_dir: Path | None,
    out_dir: Path,
    options: TrainOptions | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a tower and write a model folder to ``out_dir``; returns the model card.

    ``data_dir`` None means the default training sources (:mod:`dedup.training.sources`); otherwise a
    folder in one of the layouts of :mod:`dedup.training.data`. ``options`` is the recipe
    (:class:`~dedup.training.options.TrainOptions`, whose defaults made the shipped model); keyword
    ``overrides`` change single fields of it (``train_model(d, out, steps=10)``). The weights of the best
    validation loss are kept. A ``from_model`` tower fine-tuned at another input size keeps its weights;
    a pretrained trunk's frozen stem and leading blocks make a CPU step cheap (their backward pass is most
    of it: 2.2 s a step of 96 images at 128 px with 5 blocks frozen, 4.1 s with none, on 2 cores).
    """
    o: TrainOptions = resolve(TrainOptions, options, overrides)
    import keras

    from dedup.embedding.backbones import backbone_of, get_backbone
    from dedup.embedding.card import read_card, trims_background
    from dedup.embedding.export import export_tflite
    from dedup.embedding.losses import get_loss
    from dedup.embedding.siamese import SiameseModel
    from dedup.embedding.tower import (
        DEFAULT_STAGES,
        at_input_size,
        build_tower,
        freeze_batchnorm,
        freeze_leading_blocks,
        mirror_wrap,
        round_gem_exponent,
        stages_of,
    )
    from dedup.training.calibrate import calibrate
    from dedup.training.callbacks import BudgetSchedule, HardNegativeMiner, plot_curves

    started = time.time()
    keras.utils.set_random_seed(o.seed)
    loss_kwargs: dict[str, Any] = {"temperature": o.temperature} if o.loss == "infonce" else {}
    if o.loss != "infonce":
        loss_kwargs.update(margin=o.margin, margin_start=o.margin_start)
    try:
        loss_fn = get_loss(o.loss, **loss_kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    start_card = read_card(o.from_model) if o.from_model is not None else None
    trim_background = o.trim_background
    if trim_background is None:  # a fine-tune keeps its start's preprocessing; a new tower trims
        trim_background = trims_background(start_card) if start_card is not None else True
    input_size = o.input_size
    if input_size is None:
        default_spec = get_backbone(o.backbone or ("residual-cnn" if o.stages else None))
        input_size = int(start_card["input_size"]) if start_card else default_spec.default_input_size
    ids = data_mod.load_identities(data_dir)
    n_sources = len(ids)
    ids = data_mod.add_colour_variants(ids, o.colour_variants, o.seed)
    ids = data_mod.add_collages(ids, o.collages, o.seed)
    n_train_sources = len(ids)
    if o.val_dir is not None:
        ids = ids + data_mod.offset_groups(data_mod.load_identities(o.val_dir), ids)
    t0 = time.time()
    pool = data_mod.build_pool(
        ids, o.views, input_size, o.seed, workers=o.workers, trim=trim_background, phone_share=o.phone_share
    )
    pool_seconds = time.time() - t0
    log.info("pool: %d identities × %d views in %.0f s", len(pool), o.views, pool_seconds)
    train_idx, val_idx = _split(pool, ids[:n_train_sources], o.val_fraction, o.seed, o.val_dir is not None)
    p = o.batch_size // 2
    sampler = data_mod.BatchSampler(pool, train_idx, p, o.seed)
    validation = None
    if len(val_idx) >= 2:
        vs = data_mod.BatchSampler(pool, val_idx, min(p, len(val_idx)), o.seed + 1)
        batches = [vs.sample() for _ in range(max(2, min(8, 4 * len(val_idx) // p)))]
        validation = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
        val_batch = len(batches[0][1])

    def batches_forever() -> Any:
        while True:
            yield sampler.sample()

    if o.from_model is not None:
        tower = _trainable_tower(keras.models.load_model(o.from_model / "tower.keras", compile=False))
        tower = at_input_size(tower, input_size)
        spec = backbone_of(tower)
        if o.backbone is not None and o.backbone != spec.name:
            raise ConfigError(f"--from-model {o.from_model} is a {spec.name} tower, not {o.backbone}")
        assert start_card is not None
        backbone_card = {
            **spec.card(pretrained=False),
            **start_card.get("backbone", {}),
            "fine_tuned_from": str(o.from_model),
        }
    else:
        # Stages shape only dedup's own CNN: asking for them without a backbone means that one.
        spec = get_backbone(o.backbone or ("residual-cnn" if o.stages else None))
        use_pretrained = o.pretrained and spec.load_pretrained is not None
        tower = build_tower(
            input_size,
            o.dim,
            backbone=spec.name,
            pretrained=use_pretrained,
            stages=o.stages or DEFAULT_STAGES,
            learn_gem_p=o.learn_gem_p,
        )
        backbone_card = spec.card(pretrained=use_pretrained)
    learning_rate = o.learning_rate or spec.default_learning_rate
    if o.freeze_bn and spec.load_pretrained is not None:
        log.info("BatchNorm statistics frozen in %d layers", freeze_batchnorm(tower))
    if o.frozen_blocks and spec.load_pretrained is not None:
        n_frozen = freeze_leading_blocks(tower, o.frozen_blocks)
        log.info("stem and %d blocks frozen (%d layers)", o.frozen_blocks, n_frozen)
    if o.init is not None:
        tower.load_weights(o.init)
    model = SiameseModel(tower, loss_fn)
    model(np.zeros((1, input_size, input_size, 3), np.uint8))  # build, so checkpoints can save weights
    # XLA makes the plain-conv tower faster on CPU, but depthwise convolutions' gradients far slower.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=spec.name == "residual-cnn")

    with tempfile.TemporaryDirectory(prefix="dedup-train-") as tmp:
        best = Path(tmp) / "best.weights.h5"
        budget = BudgetSchedule(learning_rate, o.steps, o.minutes, on_progress=getattr(loss_fn, "set_progress", None))
        monitor = "val_loss" if validation is not None else "loss"
        callbacks = [
            budget,
            keras.callbacks.ModelCheckpoint(best, monitor=monitor, save_best_only=True, save_weights_only=True),
            keras.callbacks.EarlyStopping(monitor=monitor, patience=o.patience),
        ]
        if o.hard_negatives > 0:
            callbacks.append(HardNegativeMiner(sampler, pool.views[sampler.index, 0], every=o.hard_negatives))
        history, fit_seconds = fit_keeping_best(
            model,
            batches_forever(),
            callbacks,
            best,
            steps=o.steps,
            steps_per_epoch=o.steps_per_epoch,
            validation_data=validation,
            validation_batch_size=val_batch if validation is not None else None,
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    gem_p = round_gem_exponent(tower)  # before calibration: the threshold is the exported tower's
    if gem_p is not None:
        log.info("GeM exponent %.4f rounded to %g for export", *gem_p)
    sym = mirror_wrap(tower) if o.mirror_pass else tower
    eval_idx = val_idx if len(val_idx) >= 2 else train_idx
    emb = _embed_pool(sym, pool.views[eval_idx])
    metrics = calibrate(emb, pool, eval_idx, target=0.99, seed=o.seed)
    if len(val_idx) < 2:
        log.warning("no validation split: the threshold is calibrated on training identities")
    sym.save(out_dir / "tower.keras")
    tflite_name = f"tower_{o.quantisation}.tflite"
    export_tflite(sym, out_dir / tflite_name, o.quantisation)
    curves = plot_curves(history, out_dir / "curves.png")

    n_train_id = int(len(train_idx))
    card: dict[str, Any] = {
        "model_name": f"tower-{'' if spec.name == 'residual-cnn' else spec.name + '-'}{input_size}px-{o.dim}d",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {
            "source": str(data_dir) if data_dir is not None else "default training sources (dedup.training.sources)",
            "sources": training_source_counts() if data_dir is None else {str(data_dir): n_sources},
            "source_identities": n_sources,
            "identities_with_colour_variants": len(pool),
            "colour_variant_identities": int(pool.variant.sum()),
            "train_identities": n_train_id,
            "val_identities": int(len(val_idx)),
            "validation_dir": str(o.val_dir) if o.val_dir is not None else None,
            "views_per_identity": o.views,
            "phone_share": o.phone_share,
            "collage_groups": o.collages,
            "collage_identities": int(sum(1 for i in pool.identities if i.collage_seed is not None)),
            "pool_seconds": round(pool_seconds, 1),
        },
        "backbone": backbone_card,
        "architecture": {
            "tower": f"{spec.description}; "
            + ("global avg+max pooling" if gem_p is None else f"GeM pooling (p = {gem_p[1]:g})")
            + ", dense, L2",
            "gem_p": None if gem_p is None else {"learned": round(gem_p[0], 4), "exported": gem_p[1]},
            "batchnorm": "frozen (ImageNet statistics)" if o.freeze_bn and spec.load_pretrained else "trained",
            "frozen_blocks": o.frozen_blocks if spec.load_pretrained else 0,
            "mirror_invariant": "exact: normalise(f(x) + f(mirror x)) at inference"
            if o.mirror_pass
            else "learned: mirrored copies are training positives",
            "stages": [list(st) for st in stages_of(tower)] if spec.name == "residual-cnn" else None,
            "params": int(tower.count_params()),
        },
        "input_size": input_size,
        "preprocess": {"trim_background": trim_background},
        "dim": o.dim,
        "loss": loss_fn.config(),
        "training": {
            "optimizer": "adam",
            "learning_rate": learning_rate,
            "schedule": "warm-up + cosine over the step or time budget",
            "hard_negative_refresh_epochs": o.hard_negatives,
            "batch_size": o.batch_size,
            "steps": budget.step,
            "epochs": len(history.get("loss", [])),
            "minutes_budget": o.minutes,
            "stopped_by_budget": budget.stopped_by_budget,
            "fit_seconds": round(fit_seconds, 1),
            "total_seconds": round(time.time() - started, 1),
            "seed": o.seed,
            "history": history,
            "options": o.as_dict(),
        },
        "validation": metrics,
        "threshold": metrics["threshold"],
        "distance": "euclidean on the unit sphere",
        "software": _versions(),
        "command": o.command or " ".join(sys.argv),
        "runtime": {"quantisation": o.quantisation},
        "files": {
            "tflite": tflite_name,
            "keras": "tower.keras",
            "curves": curves.name if curves else None,
        },
    }
    from dedup.embedding.card import write_card

    write_card(out_dir, card)
    log.info("model written to %s: threshold %.4f, val %s", out_dir, metrics["threshold"], metrics)
    return card


def training_source_counts() -> dict[str, int]:
    """Images per default training source (:func:`dedup.training.sources.training_sources`), for the card."""
    from dedup.training.sources import training_sources

    return {name: len(files) for name, files in training_sources().items()}


def fit_keeping_best(
    model: Any,
    batches: Any,
    callbacks: list[Any],
    best: Path,
    *,
    steps: int,
    steps_per_epoch: int,
    **fit_options: Any,
) -> tuple[dict[str, list[float]], float]:
    """``model.fit`` on an endless generator of ready-made batches for up to ``steps`` steps, then the weights a
    checkpoint callback saved at ``best`` (if it saved any). Returns the per-epoch history and the fit seconds."""
    fit_start = time.time()
    hist = model.fit(
        batches,
        steps_per_epoch=steps_per_epoch,
        epochs=max(1, -(-steps // steps_per_epoch)),
        callbacks=callbacks,
        shuffle=False,  # batches are sampled at random already
        # Keras writes its epoch lines itself: one a epoch, and none when warnings are silenced (dedup -q).
        verbose=2 if log.isEnabledFor(logging.WARNING) else 0,
        **fit_options,
    )
    fit_seconds = time.time() - fit_start
    if best.is_file():
        model.load_weights(best)
    return {k: [round(float(x), 5) for x in v] for k, v in hist.history.items()}, fit_seconds


def _split(
    pool: data_mod.Pool, train_ids: list[data_mod.Identity], val_fraction: float, seed: int, separate: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation identity indices: a random share of the groups, or (``separate``) the
    identities that came from the validation folder."""
    if not separate:
        return data_mod.split_groups(pool, val_fraction, seed)
    from_train = set(map(id, train_ids))
    is_val = np.array([id(ident) not in from_train for ident in pool.identities])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def fit_record(
    *,
    learning_rate: float,
    batch_size: int,
    steps: int,
    history: dict[str, list[float]],
    minutes: float | None,
    fit_seconds: float,
    started: float,
    seed: int,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card's ``training`` section of a :func:`fit_keeping_best` run (Adam) that began at ``started``;
    ``options`` is the job's ``options.as_dict()``, so the card says every knob that ran."""
    return {
        "optimizer": "adam",
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "steps": steps,
        "epochs": len(history.get("loss", [])),
        "minutes_budget": minutes,
        "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "seed": seed,
        "history": history,
        "options": options,
    }


def _trainable_tower(model: Any) -> Any:
    """The single-path tower inside a saved mirror-wrapped tower (or the model itself if it is not wrapped)."""
    import keras

    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner[0] if model.name.endswith("_sym") and len(inner) == 1 else model


def embed_in_batches(model: Any, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Embeddings ``(n, dim)`` of model inputs ``(n, S, S, 3)`` by a Keras tower, ``batch`` at a time."""
    out = [np.asarray(model(images[i : i + batch], training=False)) for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, int(model.output_shape[-1])), np.float32)


def _embed_pool(model: Any, views: np.ndarray) -> np.ndarray:
    """Embeddings ``(n, V, dim)`` of pool views ``(n, V, S, S, 3)``."""
    n, v = views.shape[:2]
    return embed_in_batches(model, views.reshape(n * v, *views.shape[2:])).reshape(n, v, -1)


def _versions() -> dict[str, str]:
    import keras
    import PIL
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def recalibrate(
    model_dir: Path,
    data_dir: Path | None = None,
    *,
    seed: int | None = None,
    target: float = 0.99,
    workers: int | None = None,
) -> dict[str, Any]:
    """Redo a model's threshold calibration on the validation identities it was trained with.

    Rebuilds the same pool and split as training (same data, views, colour variants and seed, read from
    the card), embeds the validation views with the shipped runtime, and writes the new threshold and
    metrics into the card. Returns the updated card.
    """
    from dedup.embedding.card import read_card, trims_background, write_card
    from dedup.embedding.encoder import load_encoder
    from dedup.training.calibrate import calibrate

    card = read_card(model_dir)
    train = card.get("training", {})
    seed = int(train.get("seed", 0)) if seed is None else seed
    data = card.get("data", {})
    views = int(data.get("views_per_identity", 16))
    n_variants = 1 if data.get("colour_variant_identities") else 0
    val_fraction = data.get("val_identities", 0) / max(1, data.get("identities_with_colour_variants", 1))
    ids = data_mod.add_colour_variants(data_mod.load_identities(data_dir), n_variants, seed)
    ids = data_mod.add_collages(ids, int(data.get("collage_groups", 0)), seed)
    n_train_sources = len(ids)
    val_dir = Path(data["validation_dir"]) if data.get("validation_dir") else None
    if val_dir is not None:
        ids = ids + data_mod.offset_groups(data_mod.load_identities(val_dir), ids)
    trim = trims_background(card)
    phone_share = float(data.get("phone_share", PHONE_SHARE))
    pool = data_mod.build_pool(
        ids, views, int(card["input_size"]), seed, workers=workers, trim=trim, phone_share=phone_share
    )
    _, val_idx = _split(pool, ids[:n_train_sources], round(val_fraction, 3) or 0.1, seed, val_dir is not None)
    encoder = load_encoder(model_dir)
    views_arr = pool.views[val_idx]
    n, v = views_arr.shape[:2]
    flat = views_arr.reshape(n * v, *views_arr.shape[2:])
    emb = np.concatenate([encoder.embed(flat[i : i + 256]) for i in range(0, len(flat), 256)]).reshape(n, v, -1)
    metrics = calibrate(emb, pool, val_idx, target=target, seed=seed)
    card["validation"] = metrics
    card["threshold"] = metrics["threshold"]
    card.setdefault("calibration_history", []).append(
        {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "threshold": metrics["threshold"],
            "runtime": encoder.runtime,
        }
    )
    write_card(model_dir, card)
    log.info("recalibrated %s: threshold %.4f", model_dir, metrics["threshold"])
    return card

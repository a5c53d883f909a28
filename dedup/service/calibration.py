"""The calibrate job: choose a model's duplicate threshold on a user's own labelled pairs or groups."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import numpy as np

from dedup.errors import ConfigError, ImageError, InputError
from dedup.matching.metrics import group_pairs, threshold_at_precision
from dedup.service.evaluation import read_truth
from dedup.service.evaluation_result import CalibrationResult
from dedup.service.store import Store

log = logging.getLogger(__name__)


def calibrate_threshold(
    store: Store, pairs_csv: str | os.PathLike[str], out_dir: str | os.PathLike[str], target: float = 0.99
) -> CalibrationResult:
    """Embed a ground truth (labelled pairs ``path_a,path_b,label`` or groups ``path,group``: every pair in a
    group is a duplicate, every pair across groups is not, as in ``evaluate``), pick the largest threshold
    with precision ≥ ``target`` and write a copy
    of the store's model with that threshold to ``out_dir`` (use it with ``--model``). Returns the figures.

    The weights are unchanged, so a store built with the original model stays valid with the copy.
    """
    from dedup.embedding.card import copy_model

    truth = read_truth(pairs_csv)
    if truth.form == "groups":
        a, b, labels = group_pairs(truth.groups)
    else:
        a, b, labels = truth.pair_a, truth.pair_b, truth.pair_label
    if not labels.any() or labels.all():
        raise InputError(f"{pairs_csv}: needs both duplicate (1) and non-duplicate (0) pairs")
    vectors = np.zeros((len(truth.paths), store.encoder.dim), np.float32)
    usable = np.zeros(len(truth.paths), bool)
    skipped: list[str] = []
    for n, path in enumerate(truth.paths):
        try:
            vectors[n] = store.embed_paths([path])[0]
            usable[n] = True
        except ImageError as exc:
            skipped.append(exc.message)
            log.warning("skipped %s", exc.message)
    keep = usable[a] & usable[b]
    a, b, labels = a[keep], b[keep], labels[keep]
    dist = np.linalg.norm(vectors[a] - vectors[b], axis=1)
    found = threshold_at_precision(dist, labels, target)
    if found is None:
        raise ConfigError(
            f"no threshold reaches precision {target} on these pairs: the closest pair is not a duplicate"
        )
    threshold, precision, recall = found
    from dedup.embedding.card import read_card, write_card

    src = store.model_dir
    out = Path(out_dir)
    if out.resolve() != Path(src).resolve():
        copy_model(Path(src), out)
    card = read_card(out)
    result = CalibrationResult(
        pairs=int(len(labels)),
        target_precision=target,
        threshold=round(threshold, 4),
        precision=precision,
        recall=recall,
        previous_threshold=card.get("threshold"),
        skipped_files=tuple(skipped),
    )
    card["threshold"] = result.threshold
    card.setdefault("calibration_history", []).append(
        {
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "source": str(pairs_csv),
            **result.as_dict(),
        }
    )
    write_card(out, card)
    return result

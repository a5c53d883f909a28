"""The calibrate job: choose a model's duplicate threshold on a user's own labelled pairs."""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import ConfigError, ImageError, InputError
from dedup.matching.metrics import threshold_at_precision
from dedup.service.store import Store

log = logging.getLogger(__name__)


def read_pairs(csv_path: Path) -> list[tuple[Path, Path, int]]:
    """Labelled pairs ``path_a,path_b,label`` (label 1 = duplicate); paths relative to the CSV's folder."""
    pairs: list[tuple[Path, Path, int]] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not {"path_a", "path_b", "label"} <= set(reader.fieldnames or []):
                raise InputError(f"{csv_path}: needs the columns path_a, path_b, label (1 = duplicate, 0 = not)")
            for line, row in enumerate(reader, start=2):
                label = (row["label"] or "").strip()
                if label not in ("0", "1"):
                    raise InputError(f"{csv_path}:{line}: label must be 0 or 1, not {label!r}")
                a, b = (csv_path.parent / row["path_a"].strip(), csv_path.parent / row["path_b"].strip())
                pairs.append((a, b, int(label)))
    except OSError as exc:
        raise InputError(f"{csv_path}: cannot read: {exc.strerror or exc}") from exc
    return pairs


def calibrate_threshold(
    store: Store, pairs_csv: str | os.PathLike[str], out_dir: str | os.PathLike[str], target: float = 0.99
) -> dict[str, Any]:
    """Embed the labelled pairs, pick the largest threshold with precision ≥ ``target`` and write a copy
    of the store's model with that threshold to ``out_dir`` (use it with ``--model``). Returns the figures.

    The weights are unchanged, so a store built with the original model stays valid with the copy.
    """
    from dedup.training.trainer import copy_model

    pairs = read_pairs(Path(pairs_csv))
    if not any(label for *_, label in pairs) or all(label for *_, label in pairs):
        raise InputError(f"{pairs_csv}: needs both duplicate (1) and non-duplicate (0) pairs")
    files = sorted({p for a, b, _ in pairs for p in (a, b)})
    vectors: dict[Path, np.ndarray] = {}
    skipped: list[str] = []
    for path in files:
        try:
            vectors[path] = store.embed_paths([path])[0]
        except ImageError as exc:
            skipped.append(exc.message)
            log.warning("skipped %s", exc.message)
    usable = [(a, b, y) for a, b, y in pairs if a in vectors and b in vectors]
    dist = np.array([float(np.linalg.norm(vectors[a] - vectors[b])) for a, b, _ in usable])
    labels = np.array([y for *_, y in usable])
    found = threshold_at_precision(dist, labels, target)
    if found is None:
        raise ConfigError(
            f"no threshold reaches precision {target} on these pairs: the closest pair is not a duplicate"
        )
    threshold, precision, recall = found
    from dedup.config import default_model_dir
    from dedup.embedding.card import read_card, write_card

    src = store.model_dir or default_model_dir()
    out = Path(out_dir)
    if out.resolve() != Path(src).resolve():
        copy_model(Path(src), out)
    card = read_card(out)
    result = {
        "pairs": len(usable),
        "skipped_files": skipped,
        "target_precision": target,
        "threshold": round(threshold, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "previous_threshold": card.get("threshold"),
    }
    card["threshold"] = result["threshold"]
    card.setdefault("calibration_history", []).append(
        {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "source": str(pairs_csv), **result}
    )
    write_card(out, card)
    return result

"""The model card: ``model_card.json`` beside every saved model, read and checked on load.

It records where the training data came from, the architecture, the loss and its settings, how long
training ran, validation metrics, the calibrated duplicate threshold, software versions, the exact
training command and the files of the model folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dedup.errors import ModelError
from dedup.imaging import ModelInput

CARD_NAME = "model_card.json"
CARD_VERSION = 1
#: Keys every card must have for :func:`dedup.embedding.load_encoder` to use it.
REQUIRED_KEYS = ("card_version", "model_name", "input_size", "dim", "threshold", "files")


def read_card(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The card of ``model_dir``; :class:`ModelError` if missing, unreadable or incomplete."""
    path = Path(model_dir) / CARD_NAME
    if not path.is_file():
        raise ModelError(f"no model card at {path}: is {model_dir} a model folder (train one with `dedup train`)?")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"the model card {path} cannot be read: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelError(f"the model card {path} is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelError(f"the model card {path} lacks {', '.join(missing)}")
    if card["card_version"] != CARD_VERSION:
        raise ModelError(f"the model card {path} has version {card['card_version']}; this dedup reads {CARD_VERSION}")
    return card


def trims_background(card: dict[str, Any]) -> bool:
    """Whether the card's model crops a uniform background border from its inputs (``preprocess``)."""
    return bool(card.get("preprocess", {}).get("trim_background", False))


def model_input_of(card: dict[str, Any]) -> ModelInput:
    """The preprocessing the card's model was trained with (input side, background trim)."""
    return ModelInput(int(card["input_size"]), trims_background(card))


def write_card(model_dir: str | os.PathLike[str], card: dict[str, Any]) -> Path:
    """Write ``card`` atomically (temporary file, then rename) and return its path."""
    folder = Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / CARD_NAME
    body = json.dumps({"card_version": CARD_VERSION, **card}, indent=2, sort_keys=False, default=str)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".card-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(body + "\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a model folder is meant to be shared
    os.replace(tmp, out)
    return out


def copy_model(src: Path, dst: Path) -> None:
    """Copy the files a model card names (and the card) from ``src`` to ``dst``."""
    card = read_card(src)
    dst.mkdir(parents=True, exist_ok=True)
    for name in [CARD_NAME, *[f for f in card["files"].values() if f]]:
        shutil.copy2(src / name, dst / name)

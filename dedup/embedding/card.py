"""The model card: ``model_card.json`` beside every saved model, read and checked on load.

It records where the training data came from, the architecture, the loss and its settings, how long
training ran, validation metrics, the calibrated duplicate threshold, software versions, the exact
training command and the files of the model folder.

Two views of one file: :func:`read_card` gives the JSON document, which the training jobs build and
extend section by section and :func:`write_card` writes; :func:`load_card` gives a :class:`ModelCard`,
the typed facts the runtime acts on (input side, dimension, threshold, preprocessing, files), checked
once when the card is read, so the encoder, the store and the command line never look them up by key.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ModelCard:
    """The facts of a model card the runtime uses, typed; ``document`` is the whole card as read.

    ``files`` maps a role (``tflite``, ``keras``, ``query_tflite``, ``query_keras``) to a file name in the
    model folder (None: not there). ``query_input_size`` is the query tower's input side when it has its
    own. Sections only training and people read (``data``, ``training``, ``validation``, ``command``...)
    stay in ``document``.
    """

    model_name: str
    input_size: int
    dim: int
    threshold: float
    files: Mapping[str, str | None]
    trim_background: bool = False
    query_input_size: int | None = None
    document: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, card: Mapping[str, Any], source: str = "the model card") -> ModelCard:
        """Check and type a card document (as :func:`read_card` gives it); :class:`ModelError` naming
        ``source`` and the bad field otherwise."""
        try:
            files = card["files"]
            if not isinstance(files, Mapping):
                raise TypeError("files is not an object")
            query_size = (card.get("query_tower") or {}).get("input_size")
            return cls(
                model_name=str(card["model_name"]),
                input_size=int(card["input_size"]),
                dim=int(card["dim"]),
                threshold=float(card["threshold"]),
                files={str(k): (str(v) if v else None) for k, v in files.items()},
                trim_background=trims_background(card),
                query_input_size=int(query_size) if query_size else None,
                document=dict(card),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{source} has a malformed field: {exc}") from exc

    @property
    def model_input(self) -> ModelInput:
        """The preprocessing the model was trained with (input side, background trim)."""
        return ModelInput(self.input_size, self.trim_background)

    @property
    def has_query_tower(self) -> bool:
        """Whether the model folder holds a query tower of its own (see :mod:`dedup.training.query_tower`)."""
        return bool(self.files.get("query_tflite") or self.files.get("query_keras"))

    def as_dict(self) -> dict[str, Any]:
        """The card document, with the typed fields as they are here."""
        out = dict(self.document or {})
        out.update(
            model_name=self.model_name,
            input_size=self.input_size,
            dim=self.dim,
            threshold=self.threshold,
            files=dict(self.files),
        )
        out.setdefault("preprocess", {})
        out["preprocess"] = {**out["preprocess"], "trim_background": self.trim_background}
        return out


def load_card(model_dir: str | os.PathLike[str]) -> ModelCard:
    """The typed card of ``model_dir``; :class:`ModelError` if missing, unreadable, incomplete or malformed."""
    return ModelCard.from_dict(read_card(model_dir), f"the model card in {model_dir}")


def trims_background(card: Mapping[str, Any]) -> bool:
    """Whether the card's model crops a uniform background border from its inputs (``preprocess``)."""
    return bool((card.get("preprocess") or {}).get("trim_background", False))


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
    card = load_card(src)
    dst.mkdir(parents=True, exist_ok=True)
    for name in [CARD_NAME, *[f for f in card.files.values() if f]]:
        shutil.copy2(src / name, dst / name)

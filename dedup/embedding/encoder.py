"""The inference side: load a trained tower from a model folder and embed images.

No TensorFlow at import time. The runtime is chosen on load, fastest first: LiteRT
(``ai_edge_litert``, no TensorFlow import) with XNNPACK, then ``tf.lite``, then the Keras tower.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dedup.config import model_dir_of
from dedup.embedding.card import ModelCard, load_card
from dedup.embedding.native_log import native_stderr_to_log
from dedup.errors import ModelError
from dedup.imaging import ModelInput

log = logging.getLogger(__name__)

MODEL_ID_PREFIX = "tower-v1-"


class Encoder(ABC):
    """Maps images to L2-normalised float32 embeddings; the card says what the model is."""

    model_id: str
    dim: int
    input_size: int
    threshold: float
    card: ModelCard
    runtime: str

    def __init__(
        self, card: ModelCard, weights: Path, model_id: str | None = None, input_size: int | None = None
    ) -> None:
        self.card = card
        self.dim = card.dim
        self.input_size = input_size or card.input_size
        self.threshold = card.threshold
        #: The preprocessing the model was trained with (input side, background trim).
        self.preprocess = ModelInput(self.input_size, card.trim_background)
        #: Names the vector space: the weights' (and preprocessing's) own, or, for a query tower, the catalog tower's.
        self.model_id = model_id or _model_id(weights, self.trim)
        self.weights = weights

    @property
    def trim(self) -> bool:
        """Whether a uniform background border is cropped before embedding (the model was trained that way)."""
        return self.preprocess.trim

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``(n, S, S, 3)`` uint8 → ``(n, dim)`` float32 unit rows; ``n`` may be 0."""
        arr = np.asarray(batch)
        s = self.input_size
        if arr.ndim != 4 or arr.shape[1:] != (s, s, 3):
            raise ValueError(f"expected a batch of shape (n, {s}, {s}, 3), got {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
        if arr.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        out = np.asarray(self._run(np.ascontiguousarray(arr)), dtype=np.float32)
        # Re-normalise: quantised runtimes drift slightly off the unit sphere.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB PIL images, preprocessed as the model was trained (:attr:`preprocess`)."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed(np.stack([self.model_input(im) for im in images]))

    def model_input(self, image: Image.Image) -> np.ndarray:
        """The ``(S, S, 3)`` uint8 input this model expects for an RGB image."""
        return self.preprocess(image)

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Raw embeddings of a non-empty uint8 batch."""


class LiteEncoder(Encoder):
    """A ``.tflite`` tower run by LiteRT or ``tf.lite`` with XNNPACK on all cores."""

    def __init__(
        self,
        card: ModelCard,
        weights: Path,
        prefer: str = "litert",
        model_id: str | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__(card, weights, model_id, input_size)
        self._lock = threading.Lock()  # an interpreter is not thread-safe
        self._interp, self.runtime = _make_interpreter(weights, prefer)
        self._inp = self._interp.get_input_details()[0]["index"]
        self._out = self._interp.get_output_details()[0]["index"]
        self._batch = -1

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if batch.shape[0] != self._batch:
                self._interp.resize_tensor_input(self._inp, list(batch.shape), strict=False)
                with native_stderr_to_log(log):
                    self._interp.allocate_tensors()
                self._batch = batch.shape[0]
            self._interp.set_tensor(self._inp, batch)
            self._interp.invoke()
            return np.array(self._interp.get_tensor(self._out))


class KerasEncoder(Encoder):
    """The ``tower.keras`` file run by Keras (slowest; used when no TFLite runtime is there)."""

    runtime = "keras"

    def __init__(
        self, card: ModelCard, weights: Path, model_id: str | None = None, input_size: int | None = None
    ) -> None:
        super().__init__(card, weights, model_id, input_size)
        import keras

        import dedup.embedding.tower  # noqa: F401 - registers the custom layers before loading

        self._model = keras.models.load_model(weights, compile=False)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._model(batch, training=False))


def load_encoder(model_dir: str | os.PathLike[str] | None = None, runtime: str | None = None) -> Encoder:
    """The encoder of a model folder (None or ``"default"``: the shipped model, see :func:`dedup.config.model_dir_of`).

    ``runtime`` forces ``"litert"``, ``"tflite"`` (TensorFlow's interpreter) or ``"keras"``; by default
    the card's ``runtime`` file is used with the fastest runtime installed. Raises
    :class:`~dedup.errors.ModelError` if the folder, its card or its weights are missing or corrupt.
    """
    folder = model_dir_of(model_dir)
    return _load(folder, load_card(folder), "", runtime, None)


def load_query_encoder(catalog: Encoder, model_dir: str | os.PathLike[str] | None = None) -> Encoder:
    """The encoder for query photos of a store whose catalog encoder is ``catalog``.

    A model folder with a query tower (card ``files.query_*``) gets it, run by the same runtime and
    carrying ``catalog``'s model id (its vectors live in that space); one without returns ``catalog``.
    """
    folder = model_dir_of(model_dir)
    if not catalog.card.has_query_tower:
        return catalog
    return _load(folder, catalog.card, "query_", catalog.runtime, catalog.model_id, catalog.card.query_input_size)


def _load(
    folder: Path,
    card: ModelCard,
    prefix: str,
    runtime: str | None,
    model_id: str | None,
    input_size: int | None = None,
) -> Encoder:
    """The encoder of the card's ``{prefix}tflite`` or ``{prefix}keras`` file, fastest runtime first."""
    tflite_name, keras_name = card.files.get(prefix + "tflite"), card.files.get(prefix + "keras")
    tflite = folder / tflite_name if tflite_name else None
    keras_file = folder / keras_name if keras_name else None
    if runtime not in (None, "litert", "tflite", "keras"):
        raise ModelError(f"unknown runtime {runtime!r}; use litert, tflite or keras")
    errors: list[str] = []
    if runtime != "keras" and tflite is not None:
        if not tflite.is_file():
            errors.append(f"{tflite} is missing")
        else:
            try:
                return LiteEncoder(card, tflite, prefer=runtime or "litert", model_id=model_id, input_size=input_size)
            except (ImportError, ValueError, RuntimeError) as exc:
                errors.append(f"{tflite}: {exc}")
    if runtime in (None, "keras") and keras_file is not None:
        if not keras_file.is_file():
            errors.append(f"{keras_file} is missing")
        else:
            try:
                return KerasEncoder(card, keras_file, model_id=model_id, input_size=input_size)
            except (ImportError, ValueError, OSError) as exc:
                errors.append(f"{keras_file}: {exc}")
    detail = "; ".join(errors) or "the card names no model file"
    raise ModelError(f"cannot load the {'query tower' if prefix else 'model'} in {folder}: {detail}")


def _make_interpreter(path: Path, prefer: str) -> tuple[Any, str]:
    """An interpreter for ``path``: LiteRT first (unless ``prefer`` is ``tflite``), then ``tf.lite``."""
    threads = os.cpu_count() or 1
    if prefer == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            log.info("ai_edge_litert is not installed; using tf.lite")
        else:
            with native_stderr_to_log(log):
                interp = Interpreter(model_path=str(path), num_threads=threads)
                interp.allocate_tensors()
            return interp, "litert"
    import tensorflow as tf

    with native_stderr_to_log(log):
        interp = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    return interp, "tflite"


def _model_id(weights: Path, trim: bool) -> str:
    digest = _sha256(weights)
    if trim:
        # Other inputs make other vectors: the id must change with the preprocessing, not only the weights.
        digest = hashlib.sha256(f"{digest}:trim_background".encode()).hexdigest()
    return MODEL_ID_PREFIX + digest[:12]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

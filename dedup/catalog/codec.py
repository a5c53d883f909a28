"""How vectors are stored: float32 little-endian bytes plus their dimension."""

from __future__ import annotations

import numpy as np

from dedup.errors import StoreError

#: Storage dtype of every vector: float32, little-endian whatever the machine.
STORED_DTYPE = np.dtype("<f4")


def encode_vector(vector: np.ndarray, sha256: str) -> tuple[bytes, int]:
    """The bytes and dimension of a 1-D vector; ``StoreError`` when it is not 1-D, empty or not finite."""
    array = np.asarray(vector, dtype=STORED_DTYPE)
    if array.ndim != 1 or array.size == 0:
        raise StoreError(f"vector for {sha256} has shape {array.shape}, expected a non-empty 1-D array")
    if not np.all(np.isfinite(array)):
        raise StoreError(f"vector for {sha256} contains NaN or infinity")
    return array.tobytes(), int(array.size)


def decode_vector(data: bytes, dim: int) -> np.ndarray:
    """A writable float32 array from stored bytes; ``StoreError`` when the length does not match ``dim``."""
    array = np.frombuffer(data, dtype=STORED_DTYPE)
    if array.size != dim:
        raise StoreError(f"stored vector has {array.size} values, its row says {dim}")
    return array.astype(np.float32)  # a copy: frombuffer views are read-only

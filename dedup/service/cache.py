"""A bounded, thread-safe LRU of embeddings keyed by model id and content hash.

A server sees the same bytes again and again (a page reloaded, a backend retrying an upload); the
sha256 of the bytes identifies the picture exactly, so its embedding can be reused without decoding.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

#: Default number of embeddings kept (a 128-value vector is 512 bytes: 4096 of them ≈ 2 MB).
DEFAULT_CACHE_SIZE = 4096


class EmbeddingCache:
    """Least-recently-used embeddings by ``(model_id, sha256)``, at most ``maxsize`` of them."""

    def __init__(self, maxsize: int = DEFAULT_CACHE_SIZE) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be 0 (no caching) or more, got {maxsize}")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str, sha256: str) -> np.ndarray | None:
        """The cached vector (read-only), or None; counts a hit or a miss."""
        key = (model_id, sha256)
        with self._lock:
            vector = self._items.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, model_id: str, sha256: str, vector: np.ndarray) -> None:
        """Remember a vector, dropping the least recently used one when full."""
        if self.maxsize == 0:
            return
        stored = np.array(vector, dtype=np.float32, copy=True)
        stored.setflags(write=False)  # callers share the array: nobody may change it in place
        key = (model_id, sha256)
        with self._lock:
            self._items[key] = stored
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def stats(self) -> dict[str, int]:
        """JSON-ready counters: size, maxsize, hits, misses."""
        with self._lock:
            return {"size": len(self._items), "maxsize": self.maxsize, "hits": self.hits, "misses": self.misses}

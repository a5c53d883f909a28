"""``NumpyIndex``: exact brute-force search in plain numpy, the reference FAISS is tested against.

Written for obviousness, not speed: every search scores every vector. It is also usable as a
dependency-free index for small catalogs (``create_index(dim, "numpy")``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dedup.index.base import (
    FloatArray,
    IdArray,
    VectorIndex,
    check_ids,
    check_k,
    check_max_distance,
    check_vectors,
    empty_results,
    ip_to_distance,
    sort_hits,
)

logger = logging.getLogger(__name__)


class NumpyIndex(VectorIndex):
    """Brute-force inner-product search over an (n, dim) float32 matrix with a parallel id array."""

    file_name = "vectors.npz"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._ids: IdArray = np.zeros(0, dtype=np.int64)  # (n,)
        self._vectors: FloatArray = np.zeros((0, self.dim), dtype=np.float32)  # (n, dim), row i ↔ _ids[i]

    @property
    def kind(self) -> str:
        return "numpy"

    def __len__(self) -> int:
        return int(self._ids.size)

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add ``vectors`` under ``ids``; ids already present are replaced."""
        id_arr = check_ids(ids, unique=True)
        vec = check_vectors(vectors, self.dim)
        if id_arr.size != vec.shape[0]:
            raise ValueError(f"got {id_arr.size} ids for {vec.shape[0]} vectors")
        self.remove(id_arr)
        self._ids = np.concatenate([self._ids, id_arr])
        self._vectors = np.concatenate([self._vectors, vec])

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids``; returns how many were present."""
        id_arr = check_ids(ids)
        keep = ~np.isin(self._ids, id_arr)
        removed = int(self._ids.size - keep.sum())
        if removed:
            self._ids = self._ids[keep]
            self._vectors = self._vectors[keep]
        return removed

    def _distances(self, queries: npt.ArrayLike) -> FloatArray:
        """Distances (q, n) from every query to every stored vector."""
        q = check_vectors(queries, self.dim, what="queries")
        return ip_to_distance(q @ self._vectors.T)  # (q, dim) @ (dim, n) → (q, n)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[FloatArray, IdArray]:
        """The ``k`` nearest per query, ascending distance then id; missing slots ``(inf, -1)``."""
        k = check_k(k)
        dist = self._distances(queries)
        out_d, out_i = empty_results(dist.shape[0], k)
        for row in range(dist.shape[0]):
            d, i = sort_hits(dist[row], self._ids)
            m = min(k, d.size)
            out_d[row, :m] = d[:m]
            out_i[row, :m] = i[:m]
        return out_d, out_i

    def range_search(self, queries: npt.ArrayLike, max_distance: float) -> list[tuple[FloatArray, IdArray]]:
        """Per query, all hits with distance <= ``max_distance``, ascending distance then id."""
        radius = check_max_distance(max_distance)
        dist = self._distances(queries)
        results = []
        for row in dist:
            hit = row <= radius
            results.append(sort_hits(row[hit], self._ids[hit]))
        return results

    def ids(self) -> IdArray:
        """All ids held, sorted."""
        return np.sort(self._ids)

    def reconstruct(self, ids: npt.ArrayLike) -> FloatArray:
        """The stored vectors of ``ids`` in the order given; KeyError for ids not held."""
        id_arr = check_ids(ids)
        if id_arr.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort(self._ids)
        sorted_ids = self._ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, id_arr), max(sorted_ids.size - 1, 0))
        found = sorted_ids[pos] == id_arr if sorted_ids.size else np.zeros(id_arr.size, dtype=bool)
        if not found.all():
            raise KeyError(f"ids not in the index: {id_arr[~found][:10].tolist()}")
        return self._vectors[order[pos]].copy()

    def write(self, path: Path) -> None:
        """Save ids and vectors as an uncompressed .npz at exactly ``path``."""
        # A file object stops numpy from appending ".npz" to our temporary name.
        with open(path, "wb") as fh:
            np.savez(fh, ids=self._ids, vectors=self._vectors)

    @classmethod
    def read(cls, path: Path) -> NumpyIndex:
        """Load a file written by ``write``; ValueError when its arrays are missing or inconsistent."""
        with np.load(path, allow_pickle=False) as data:
            if "ids" not in data or "vectors" not in data:
                raise ValueError(f"{path} lacks the 'ids' and 'vectors' arrays")
            ids = data["ids"]
            vectors = data["vectors"]
        if vectors.ndim != 2 or vectors.shape[1] < 1:
            raise ValueError(f"{path}: vectors have shape {vectors.shape}, expected (n, dim)")
        index = cls(vectors.shape[1])
        index.add(ids, vectors)
        if len(index) != ids.shape[0]:
            raise ValueError(f"{path}: {ids.shape[0]} ids but {len(index)} distinct")
        return index

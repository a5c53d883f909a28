"""``FaissIndex``: the product index, a FAISS ``IndexIDMap2`` so results carry our own int64 ids.

FAISS is imported inside the methods, never at module level, so ``import dedup.index`` stays
cheap for commands that never search (the import rule of DESIGN.md; a test checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dedup.index.base import (
    MISSING_ID,
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

# FAISS inner-product range search keeps ip > radius (strict). We widen the radius by this much
# and then filter exactly on our own distance, so a hit right at max_distance is not lost.
_RANGE_SLACK = 1e-5

#: Query batches smaller than this run on one OpenMP thread: waking the thread pool costs 8-20 ms on a
#: busy 2-core machine, far more than a one-query scan of 10^5 vectors on one core (measured).
_SMALL_BATCH = 8


@contextmanager
def _single_thread() -> Iterator[None]:
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class FaissIndex(VectorIndex):
    """Exact inner-product search: ``IndexIDMap2(IndexFlatIP(dim))``.

    ``IndexIDMap2`` (not ``IndexIDMap``) keeps a reverse map, which ``reconstruct`` needs.
    """

    file_name = "vectors.faiss"

    def __init__(self, dim: int, *, _faiss_index: Any = None) -> None:
        """A new empty exact index of dimension ``dim`` (``_faiss_index`` is for ``read`` only)."""
        super().__init__(dim)
        if _faiss_index is None:
            import faiss

            _faiss_index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._index = _faiss_index

    @property
    def kind(self) -> str:
        return "flat"

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add ``vectors`` under ``ids``; ids already present are replaced."""
        id_arr = check_ids(ids, unique=True)
        vec = check_vectors(vectors, self.dim)
        if id_arr.size != vec.shape[0]:
            raise ValueError(f"got {id_arr.size} ids for {vec.shape[0]} vectors")
        if id_arr.size == 0:
            return
        # IndexIDMap2 would happily store a second copy under the same id; remove first.
        replaced = self._remove_checked(id_arr)
        self._index.add_with_ids(vec, id_arr)
        if replaced:
            logger.debug("replaced %d existing ids while adding %d vectors", replaced, id_arr.size)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids``; returns how many were present."""
        return self._remove_checked(check_ids(ids))

    def _remove_checked(self, id_arr: IdArray) -> int:
        if id_arr.size == 0 or self._index.ntotal == 0:
            return 0
        # The python wrapper wraps an int64 array in an IDSelectorBatch.
        return int(self._index.remove_ids(id_arr))

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[FloatArray, IdArray]:
        """The ``k`` nearest per query, ascending distance; missing slots ``(inf, -1)``."""
        k = check_k(k)
        q = check_vectors(queries, self.dim, what="queries")
        out_d, out_i = empty_results(q.shape[0], k)
        n = len(self)
        if n == 0 or q.shape[0] == 0:
            return out_d, out_i
        # Ask FAISS for at most n neighbours: it allocates (q, k) heaps, and k may be huge.
        kk = min(k, n)
        if q.shape[0] < _SMALL_BATCH:
            with _single_thread():
                ip, found = self._index.search(q, kk)  # (q, kk) inner products, descending
        else:
            ip, found = self._index.search(q, kk)
        valid = found != MISSING_ID
        out_d[:, :kk] = np.where(valid, ip_to_distance(ip), np.float32(np.inf))
        out_i[:, :kk] = found
        return out_d, out_i

    def range_search(self, queries: npt.ArrayLike, max_distance: float) -> list[tuple[FloatArray, IdArray]]:
        """Per query, all hits with distance <= ``max_distance``, ascending distance then id."""
        radius = check_max_distance(max_distance)
        q = check_vectors(queries, self.dim, what="queries")
        if len(self) == 0 or q.shape[0] == 0:
            return [(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)) for _ in range(q.shape[0])]
        # d <= r  ⇔  ip >= 1 - r²/2 on the unit sphere.
        min_ip = 1.0 - radius * radius / 2.0 - _RANGE_SLACK
        lims, ip, found = self._index.range_search(q, min_ip)
        results = []
        for row in range(q.shape[0]):
            start, end = int(lims[row]), int(lims[row + 1])
            dist = ip_to_distance(ip[start:end])
            hit = dist <= radius
            results.append(sort_hits(dist[hit], found[start:end][hit].astype(np.int64, copy=False)))
        return results

    def ids(self) -> IdArray:
        """All ids held, sorted."""
        import faiss

        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False))

    def reconstruct(self, ids: npt.ArrayLike) -> FloatArray:
        """The stored vectors of ``ids`` in the order given; KeyError for ids not held."""
        id_arr = check_ids(ids)
        if id_arr.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Check first: FAISS answers an unknown key with a RuntimeError from C++.
        missing = np.setdiff1d(id_arr, self.ids())
        if missing.size:
            raise KeyError(f"ids not in the index: {missing[:10].tolist()}")
        return np.asarray(self._index.reconstruct_batch(id_arr), dtype=np.float32)

    def write(self, path: Path) -> None:
        """Save with ``faiss.write_index`` to exactly ``path``."""
        import faiss

        try:
            faiss.write_index(self._index, str(path))
        except RuntimeError as exc:
            # FAISS reports I/O failures (disk full, no permission) as RuntimeError; callers expect OSError.
            raise OSError(f"FAISS cannot write {path}: {exc}") from exc

    @classmethod
    def read(cls, path: Path) -> FaissIndex:
        """Load a file written by ``write``; ValueError if it is not an exact inner-product IndexIDMap2."""
        import faiss

        try:
            loaded = faiss.read_index(str(path))
        except RuntimeError as exc:
            # FAISS reports corrupt or truncated files as RuntimeError with a C++ location.
            raise ValueError(f"FAISS cannot read {path}: {exc}") from exc
        if not isinstance(loaded, faiss.IndexIDMap2):
            raise ValueError(f"{path} holds a {type(loaded).__name__}, expected IndexIDMap2")
        inner = faiss.downcast_index(loaded.index)
        if not isinstance(inner, faiss.IndexFlatIP) or loaded.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{path} wraps a {type(inner).__name__}, expected an exact IndexFlatIP")
        return cls(int(loaded.d), _faiss_index=loaded)

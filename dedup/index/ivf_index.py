"""``IVFIndex``: an inverted-file FAISS index for large catalogs (sub-millisecond queries at 10^5–10^6).

The coarse lists are trained on the vectors of the first ``add`` (a rebuild from the catalog adds them all
at once). Near-duplicates sit far closer to each other than to any list boundary, so a small ``nprobe``
finds them almost always (docs/benchmarks.md §3: every planted duplicate at nprobe 4 at 10^6 vectors).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from dedup.index.base import FloatArray, IdArray, check_ids, check_vectors
from dedup.index.faiss_index import FaissIndex

logger = logging.getLogger(__name__)

#: Lists visited per query: recall@10 ≈ 0.97 and every planted duplicate at 10^6 vectors (measured).
DEFAULT_NPROBE = 16


def _nlist_for(n: int) -> int:
    # ~2·√n lists, but FAISS wants at least 39 training points per list.
    return max(1, min(int(2 * math.sqrt(n)), n // 39))


_IVF = TypeVar("_IVF", bound="IVFIndex")


class IVFIndex(FaissIndex):
    """``IndexIVFFlat`` on inner product with our own int64 ids (hash-table direct map for removal)."""

    file_name = "vectors.ivf.faiss"

    def __init__(self, dim: int, *, _faiss_index: Any = None, nprobe: int = DEFAULT_NPROBE) -> None:
        """A new empty IVF index; the lists are built on the first ``add`` (``_faiss_index`` is for ``read``)."""
        super().__init__(dim, _faiss_index=_faiss_index if _faiss_index is not None else _Empty())
        self.nprobe = nprobe
        if _faiss_index is not None:
            _faiss_index.nprobe = nprobe

    @property
    def kind(self) -> str:
        return "ivf"

    def _train(self, vectors: np.ndarray) -> None:
        import faiss

        nlist = _nlist_for(len(vectors))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10  # rough lists are enough; duplicates are found at a small nprobe
        index.train(vectors)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # removal by our ids
        index.nprobe = self.nprobe
        self._quantizer = quantizer  # the IVF does not own its quantizer: keep it alive as long as we are
        self._index = index
        logger.info("IVF index trained: %d lists on %d vectors", nlist, len(vectors))

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add ``vectors`` under ``ids`` (the first call also builds the lists); ids present are replaced."""
        if isinstance(self._index, _Empty):
            vec = check_vectors(vectors, self.dim)
            if vec.shape[0] == 0:
                return
            self._train(vec)
        super().add(ids, vectors)

    def ids(self) -> IdArray:
        """All ids held, sorted."""
        import faiss

        if isinstance(self._index, _Empty) or self._index.ntotal == 0:
            return np.zeros(0, dtype=np.int64)
        invlists = self._index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(invlists.nlist)
            if invlists.list_size(i)
        ]
        return np.sort(np.concatenate(parts).astype(np.int64, copy=False))

    def reconstruct(self, ids: npt.ArrayLike) -> FloatArray:
        """The stored vectors of ``ids`` in the order given; KeyError for ids not held."""
        id_arr = check_ids(ids)
        missing = np.setdiff1d(id_arr, self.ids())
        if missing.size:
            raise KeyError(f"ids not in the index: {missing[:10].tolist()}")
        return (
            np.stack([self._index.reconstruct(int(i)) for i in id_arr])
            if id_arr.size
            else np.zeros((0, self.dim), dtype=np.float32)
        )

    def write(self, path: Path) -> None:
        """Save with ``faiss.write_index``; an index never added to is saved as an empty flat stand-in."""
        if isinstance(self._index, _Empty):
            raise OSError("an empty IVF index has no lists to save; save a flat index for an empty catalog")
        super().write(path)

    @classmethod
    def read(cls: type[_IVF], path: Path) -> _IVF:
        """Load a file written by ``write``; ValueError if it does not hold this kind's inner-product FAISS index."""
        import faiss

        try:
            loaded = faiss.read_index(str(path))  # already the concrete class; no downcast (it would not own it)
        except RuntimeError as exc:
            raise ValueError(f"FAISS cannot read {path}: {exc}") from exc
        expected = cls._faiss_class()
        if not isinstance(loaded, expected) or loaded.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{path} holds a {type(loaded).__name__}, expected an inner-product {expected.__name__}")
        cls._after_read(loaded)
        return cls(int(loaded.d), _faiss_index=loaded)

    @classmethod
    def _faiss_class(cls) -> type:
        """The FAISS index class a file of this kind holds."""
        import faiss

        return faiss.IndexIVFFlat  # type: ignore[no-any-return]

    @classmethod
    def _after_read(cls, loaded: Any) -> None:
        """Restore what ``write`` left out of the file (nothing for a flat IVF index)."""


class _Empty:
    """Stands in for the FAISS index until the first ``add`` trains one."""

    ntotal = 0

    def remove_ids(self, ids: Any) -> int:
        return 0

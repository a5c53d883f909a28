"""``PQIndex``: an inverted file of product-quantised codes, for catalogs that must fit in little memory.

Each vector is stored as :data:`PQ_M` one-byte codes (32 bytes at 8 bits) plus its 8-byte id, where a flat or IVF
index keeps the 512 bytes of a 128-d float32 vector; the saved file measured 54 bytes a vector at 20,000 vectors
(tests/test_pq_index.py). The price is approximate distances: on 20,000 clustered 128-d vectors the codes put the
true 10 nearest among the first 50 candidates (recall 0.9997) and planted copies at distance 0.2 first, but their
estimated distances were off by 0.03 on average and by 0.1 for those copies (0.30 instead of 0.20). Callers that
show a distance or compare it with a threshold therefore re-score the candidates on the catalog's exact vectors
(``approximate_scores`` is True; see ``dedup.index.base.exact_rerank`` and ``dedup.service.search``).

Why ``IndexIVFPQ`` and not ``IndexIVFPQFastScan`` (checked with faiss-cpu 1.15.1): both round-trip through
``write_index``/``read_index``, but fast-scan keeps its codes in ``BlockInvertedLists``, where the hash-table direct
map is refused on removal ("remove with hashtable is not supported with BlockInvertedLists"). Without that map every
removal (and every ``add``, which first removes the ids it replaces) scans all lists, and ``reconstruct`` by id is
unavailable. Fast-scan also takes only 4-bit codes, whose scores are coarser, so more candidates need re-scoring.
``IndexIVFPQ`` with 8-bit codes keeps removal by id at O(removed) and supports every call ``VectorIndex`` makes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from dedup.index.faiss_index import FaissIndex
from dedup.index.ivf_index import IVFIndex, _Empty, _nlist_for

logger = logging.getLogger(__name__)

#: Sub-quantisers per vector (the largest divisor of the dimension up to this is used): 32 codes of 8 bits.
PQ_M = 32
#: Bits per code once a catalog has at least 2**PQ_NBITS vectors to train each codebook on.
PQ_NBITS = 8
#: k-means iterations of the codebooks: rough codebooks are enough, because candidates are re-scored exactly.
PQ_NITER = 10


def _m_for(dim: int) -> int:
    # FAISS needs the dimension to split evenly into sub-vectors; 128-d gives 32 sub-vectors of 4 values.
    return max(m for m in range(1, min(PQ_M, dim) + 1) if dim % m == 0)


def _nbits_for(n: int) -> int:
    # A codebook of 2**b centroids needs at least 2**b training vectors (FAISS refuses fewer). Small catalogs get
    # the largest codebook they can train (1 to 7 bits below 256 vectors): the codebooks are fit to the very
    # vectors the index then holds, so more centroids only help them (measured: more of the true 10 nearest among
    # 50 candidates at 200 and 1,000 vectors than with FAISS's rule of 39 vectors a centroid, ~10,000 at 8 bits).
    # That rule is about vectors added after training; ``undertrained`` asks for a rebuild once they dominate.
    return max(1, min(PQ_NBITS, int(math.log2(max(1, n)))))


class PQIndex(IVFIndex):
    """``IndexIVFPQ`` on inner product with our own int64 ids (hash-table direct map for removal).

    The coarse lists follow the IVF rule (``_nlist_for``) and, like the codebooks, are trained on the vectors
    of the first ``add``. ``search`` and ``range_search`` answer in approximate distances; ``reconstruct``
    returns the decoded (approximate) vectors.
    """

    file_name = "vectors.ivfpq.faiss"

    @property
    def kind(self) -> str:
        return "ivfpq"

    @property
    def approximate_scores(self) -> bool:
        return True

    @property
    def undertrained(self) -> bool:
        """True once the index holds enough vectors for larger codebooks or 4× more lists than it was trained with."""
        if isinstance(self._index, _Empty):
            return False
        n = len(self)
        return int(self._index.pq.nbits) < _nbits_for(n) or 4 * int(self._index.nlist) < _nlist_for(n)

    @property
    def code_size(self) -> int:
        """Bytes of code per vector (the 8-byte id comes on top); 0 before the first ``add``."""
        return 0 if isinstance(self._index, _Empty) else int(self._index.code_size)

    def _train(self, vectors: np.ndarray) -> None:
        import faiss

        n = len(vectors)
        nlist, m, nbits = _nlist_for(n), _m_for(self.dim), _nbits_for(n)
        # k-means needs at least as many points as centroids; one vector and its opposite train 1-bit codebooks.
        sample = vectors if n >= 2 else np.concatenate([vectors, -vectors])
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10  # rough lists are enough; duplicates are found at a small nprobe
        index.pq.cp.niter = PQ_NITER
        # Below ~10,000 vectors the sizes above leave fewer than FAISS's recommended 39 training vectors a centroid
        # on purpose (see _nbits_for); without this FAISS prints a warning to stderr for every small catalog.
        index.cp.min_points_per_centroid = 1
        index.pq.cp.min_points_per_centroid = 1
        index.train(sample)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # removal by our ids
        index.nprobe = self.nprobe
        self._quantizer = quantizer  # the IVF does not own its quantizer: keep it alive as long as we are
        self._index = index
        logger.info(
            "IVF-PQ index trained: %d lists, %d codes of %d bits (%d bytes a vector) on %d vectors",
            nlist,
            m,
            nbits,
            index.code_size,
            n,
        )

    def write(self, path: Path) -> None:
        """Save with ``faiss.write_index``, without the direct map (``read`` rebuilds it from the lists)."""
        if isinstance(self._index, _Empty):
            raise OSError("an empty IVF-PQ index has no lists to save; save a flat index for an empty catalog")
        import faiss

        # The hash table costs 16 bytes a vector on disk, 40% on top of code and id (54 bytes a vector at 20,000
        # vectors instead of 70, measured); rebuilding it is one pass over the ids. Searches do not use it.
        self._index.set_direct_map_type(faiss.DirectMap.NoMap)  # type: ignore[attr-defined]
        try:
            FaissIndex.write(self, path)
        finally:
            self._index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]

    @classmethod
    def _faiss_class(cls) -> type:
        import faiss

        return faiss.IndexIVFPQ  # type: ignore[no-any-return]

    @classmethod
    def _after_read(cls, loaded: Any) -> None:
        import faiss

        loaded.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # not saved: see write

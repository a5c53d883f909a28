"""Vector index: FAISS behind our own int64 ids, an exact numpy reference, and atomic persistence.

Importing this package does not import FAISS; the implementation loads it on first use.
"""

from __future__ import annotations

from dedup.index.base import IndexInfo, VectorIndex, exact_rerank, ip_to_distance
from dedup.index.factory import INDEX_KINDS, create_index
from dedup.index.faiss_index import FaissIndex
from dedup.index.ivf_index import IVFIndex
from dedup.index.pq_index import PQIndex
from dedup.index.reference import NumpyIndex
from dedup.index.store import INFO_FILE, load_index, save_index

__all__ = [
    "INDEX_KINDS",
    "INFO_FILE",
    "FaissIndex",
    "IVFIndex",
    "IndexInfo",
    "NumpyIndex",
    "PQIndex",
    "VectorIndex",
    "create_index",
    "exact_rerank",
    "ip_to_distance",
    "load_index",
    "save_index",
]

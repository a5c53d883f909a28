"""The "closer than the threshold" graph over a whole catalog, for the duplicate report.

Small catalogs get an exact range search; large ones an inverted-file (IVF) range search, which finds
near-duplicate pairs almost perfectly at a small ``nprobe`` because duplicate pairs are far closer to
each other than to any cluster boundary (DESIGN.md; ``benchmarks/report_scale.py`` measures the recall).

The graph is built from the raw vectors it is given (the report passes the catalog's stored vectors), in an index
of its own, never from the store's index. Its distances are exact whatever index kind the store uses.

From :data:`COMPRESSED_MIN` vectors on, that index is an inverted file of product-quantised codes (IVF-PQ: 32 bytes
a vector instead of another 512-byte copy, 0.4 GB instead of 5 GB at 10^7): its range search runs at a radius
widened by :data:`PQ_SLACK` to make up for the codes' approximate distances, and every candidate pair is then
re-scored on the raw vectors and kept only within the threshold, so the edges and their distances are exact and
only recall depends on the codes (``benchmarks/report_scale.py --compressed`` measures it).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from dedup.index.base import check_max_distance, check_vectors

log = logging.getLogger(__name__)

#: Catalogs up to this many vectors are searched exactly.
EXACT_LIMIT = 50_000
#: Queries per FAISS range-search call: bounds the memory of one call's results.
CHUNK = 20_000
#: Catalogs from this many vectors get the compressed (IVF-PQ) neighbour search: the uncompressed IVF copy of the
#: vectors would double the pass's memory.
COMPRESSED_MIN = 2_000_000
#: How much wider than the threshold the compressed search looks; candidates are re-scored exactly. PQ codes
#: misjudge near-duplicate distances by ~0.1 on average: on 10^5 synthetic 128-d vectors (threshold 0.3,
#: benchmarks/report_scale.py) a slack of 0.15 found 0.939 of the planted pairs, 0.3 found 0.999 for 4 % more time.
PQ_SLACK = 0.3
#: Bytes of PQ code a vector in the compressed search (sub-quantisers of 8 bits).
PQ_CODE_BYTES = 32
_SLACK = 1e-5  # FAISS keeps ip > radius (strict); widen, then filter exactly


def neighbour_edges(
    vectors: npt.ArrayLike,
    threshold: float,
    exact: bool | None = None,
    nprobe: int = 8,
    seed: int = 0,
    compressed: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``(a, b)`` of row positions with ``a < b`` and distance ≤ ``threshold``.

    Returns ``(a, b, distance)`` arrays (int64, int64, float32). ``exact`` None picks exact search up to
    :data:`EXACT_LIMIT` vectors and IVF above; ``nprobe`` is the IVF lists visited per query. ``compressed``
    (None: from :data:`COMPRESSED_MIN` vectors on) makes the IVF one of PQ codes, re-scored exactly.
    """
    import faiss

    radius = check_max_distance(threshold)
    x = np.asarray(vectors, dtype=np.float32)
    dim = x.shape[1] if x.ndim == 2 else 0
    x = check_vectors(x, dim, what="vectors") if len(x) else x
    n = len(x)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if n < 2:
        return empty
    use_exact = n <= EXACT_LIMIT if exact is None else exact
    use_pq = not use_exact and (n >= COMPRESSED_MIN if compressed is None else compressed)
    index: Any
    if use_exact:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = max(16, min(int(2 * math.sqrt(n)), n // 40))  # FAISS wants ≥ 39 training points per list
        quantizer = faiss.IndexFlatIP(dim)
        if use_pq:
            m = max(k for k in range(1, min(PQ_CODE_BYTES, dim) + 1) if dim % k == 0)
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            index.pq.cp.niter = 10
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=40 * nlist, replace=False)] if n > 40 * nlist else x
        index.cp.niter = 10  # coarse lists only need to be roughly right: pairs are found at nprobe ≥ 4
        index.train(sample)
        index.nprobe = nprobe
        kind = "IVF-PQ" if use_pq else "IVF"
        log.info("%s neighbour search: %d vectors, %d lists, nprobe %d", kind, n, nlist, nprobe)
    for start in range(0, n, 10 * CHUNK):
        index.add(x[start : start + 10 * CHUNK])  # in slices: the encoder's temporaries stay small
    search_radius = radius + PQ_SLACK if use_pq else radius
    min_ip = 1.0 - min(2.0, search_radius) ** 2 / 2.0 - _SLACK
    parts_a: list[np.ndarray] = []
    parts_b: list[np.ndarray] = []
    parts_d: list[np.ndarray] = []
    for start in range(0, n, CHUNK):
        q = x[start : start + CHUNK]
        lims, ip, found = index.range_search(q, min_ip)
        rows = np.repeat(np.arange(start, start + len(q), dtype=np.int64), np.diff(lims).astype(np.int64))
        found = found.astype(np.int64, copy=False)
        if use_pq:
            # The codes only nominate: every candidate pair is scored again on the raw vectors.
            pair = rows != found
            rows, found = rows[pair], found[pair]
            ip = np.einsum("ij,ij->i", x[rows], x[found])
        dist = np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None)).astype(np.float32)
        keep = (rows < found) & (dist <= radius) if use_exact else (rows != found) & (dist <= radius)
        parts_a.append(rows[keep])
        parts_b.append(found[keep])
        parts_d.append(dist[keep])
    if not use_exact:
        # IVF may see a pair from one side only; keep each once.
        a, b, d = np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_d)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        key = lo * n + hi
        _, first = np.unique(key, return_index=True)
        return lo[first], hi[first], d[first]
    return np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_d)

"""Dedup pass scale: time and peak memory of the neighbour graph + keeper clustering at 10^4..10^6 vectors.

Synthetic clustered catalogs (product "families" of similar vectors, with planted near-duplicate copies),
each size in its own process so its peak RSS is its own:

    python benchmarks/report_scale.py                      # 1e4, 1e5, 1e6
    python benchmarks/report_scale.py --sizes 10000 100000 --exact-check 100000
    python benchmarks/report_scale.py --sizes 1000000 3000000 10000000 --compressed --queries 1000 --exact-check 0

``--compressed`` runs the pass on IVF-PQ codes re-scored exactly (what the report does from 2·10^6 vectors on),
and ``--queries N`` also builds the store's ``ivfpq`` index over the same vectors and times N single-vector
queries (top 10 of 50 candidates re-ranked on the exact vectors, one thread, as the server searches).

Prints seconds, peak RSS and duplicate-pair recall (planted pairs found; and against an exact pass where
``--exact-check`` allows) per size, and writes JSON (``--json``, default bench-data/report_scale.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 128
THRESHOLD = 0.3


def make_catalog(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors: families of similar products, 1/6 of them planted near copies of another row.

    Returns the vectors and the planted pairs (row positions). Built in one preallocated array, in chunks,
    so the benchmark's own data costs one copy of the catalog (n × 512 bytes), as a loaded catalog would.
    """
    rng = np.random.default_rng(seed)
    n_orig = int(n / 1.2)
    families = rng.normal(size=(max(1, n_orig // 50), DIM)).astype(np.float32)
    x = np.empty((n, DIM), dtype=np.float32)
    chunk = 100_000
    for start in range(0, n_orig, chunk):
        m = min(chunk, n_orig - start)
        block = families[rng.integers(0, len(families), m)] + 0.6 * rng.normal(size=(m, DIM)).astype(np.float32)
        x[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    src = rng.choice(n_orig, size=n - n_orig, replace=True).astype(np.int64)
    for start in range(0, len(src), chunk):
        s = src[start : start + chunk]
        noise = rng.normal(size=(len(s), DIM)).astype(np.float32)
        # Distance to the original ≈ 0.05-0.2.
        noise *= (rng.uniform(0.05, 0.2, size=len(s)) / np.linalg.norm(noise, axis=1)).astype(np.float32)[:, None]
        v = x[s] + noise
        x[n_orig + start : n_orig + start + len(s)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    pairs = np.stack([src, np.arange(n_orig, n, dtype=np.int64)], axis=1)
    return x, pairs


def run_one(n: int, exact: bool, compressed: bool = False, queries: int = 0) -> dict[str, float]:
    """Build the catalog, run the pass, return figures (called in a child process)."""
    from dedup.index.graph import neighbour_edges
    from dedup.matching import keeper_clusters

    vectors, planted = make_catalog(n)
    ids = np.arange(1, n + 1, dtype=np.int64)
    start = time.perf_counter()
    a, b, _ = neighbour_edges(vectors, THRESHOLD, exact=exact, compressed=compressed and not exact)
    t_graph = time.perf_counter() - start
    clusters = keeper_clusters(ids, vectors, (a, b), THRESHOLD, np.arange(n))
    total = time.perf_counter() - start
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    pd = np.sqrt(np.clip(2 - 2 * np.sum(vectors[planted[:, 0]] * vectors[planted[:, 1]], axis=1), 0, None))
    within = planted[pd <= THRESHOLD]
    recall = float(np.mean([(min(p, q), max(p, q)) in found for p, q in within.tolist()])) if len(within) else 1.0
    result = {
        "n": n,
        "exact": exact,
        "compressed": compressed and not exact,
        "graph_seconds": t_graph,
        "total_seconds": total,
        "edges": len(a),
        "clusters": len(clusters),
        "planted_pair_recall": recall,
    }
    if queries:
        result.update(_query_latency(vectors, ids, queries))
    return result


def _query_latency(vectors: np.ndarray, ids: np.ndarray, queries: int) -> dict[str, float]:
    """Build the store's ivfpq index over ``vectors`` and time single-vector queries with exact re-ranking."""
    import faiss

    from dedup.index import PQIndex, exact_rerank

    start = time.perf_counter()
    index = PQIndex(vectors.shape[1])
    index.add(ids, vectors)
    build = time.perf_counter() - start
    faiss.omp_set_num_threads(1)  # a server searches one vector at a time on one thread
    rng = np.random.default_rng(1)
    picks = rng.choice(len(vectors), size=queries, replace=False)
    noise = rng.normal(size=(queries, vectors.shape[1])).astype(np.float32) * 0.01
    q = vectors[picks] + noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    times, hits = [], 0
    for i in range(queries):
        t = time.perf_counter()
        _, cand = index.search(q[i : i + 1], 50)
        cand = cand[0][cand[0] >= 0]
        _, top = exact_rerank(q[i], cand, vectors[cand - 1], 10)
        times.append(time.perf_counter() - t)
        hits += int(top.size and top[0] == ids[picks[i]])
    times_ms = np.array(times) * 1000
    return {
        "index_build_seconds": build,
        "query_p50_ms": float(np.percentile(times_ms, 50)),
        "query_p95_ms": float(np.percentile(times_ms, 95)),
        "query_top1": hits / queries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--exact-check", type=int, default=100_000, help="also run an exact pass up to this size")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-data" / "report_scale.json")
    parser.add_argument("--compressed", action="store_true", help="IVF-PQ neighbour search, re-scored exactly")
    parser.add_argument("--queries", type=int, default=0, help="also time this many ivfpq queries")
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        # Up to the IVF limit the pass is exact anyway; above it, IVF, and an exact pass to compare with.
        modes = [True] if n <= 50_000 else [False] + ([True] if n <= args.exact_check else [])
        for exact in modes:
            r = _measure(n, exact, args.compressed, args.queries)
            results.append(r)
            print(
                f"n={n:>9,} {'exact' if exact else ('ivfpq' if r['compressed'] else 'ivf  ')} "
                f"total {r['total_seconds']:7.1f} s "
                f"(graph {r['graph_seconds']:6.1f} s)  peak {r['peak_rss_mb']:7.0f} MB  edges {r['edges']:>8,}  "
                f"clusters {r['clusters']:>7,}  planted-pair recall {r['planted_pair_recall']:.4f}"
                + (
                    f"  | ivfpq index built in {r['index_build_seconds']:.0f} s, query p50 {r['query_p50_ms']:.2f} ms "
                    f"p95 {r['query_p95_ms']:.2f} ms, top-1 {r['query_top1']:.3f}"
                    if "query_p50_ms" in r
                    else ""
                ),
                flush=True,
            )
        if len(modes) == 2:
            ivf, exact_run = results[-2], results[-1]
            print(
                f"    IVF found {ivf['edges'] / max(1, exact_run['edges']):.4f} of the exact pass's pairs, "
                f"in {ivf['total_seconds'] / exact_run['total_seconds']:.3f} of its time",
                flush=True,
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


def _measure(n: int, exact: bool, compressed: bool = False, queries: int = 0) -> dict[str, float]:
    code = (
        f"import json, sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'benchmarks')!r}]\n"
        f"from report_scale import run_one\nprint(json.dumps(run_one({n}, {exact}, {compressed}, {queries})))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"size {n} failed")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


if __name__ == "__main__":
    main()

"""Index choice: recall, latency and memory per vector of exact, IVF, HNSW and compressed FAISS indexes.

    python benchmarks/index_choice.py                 # 10^6 vectors (about 10-15 minutes on 2 cores)
    python benchmarks/index_choice.py --n 100000      # smaller, quicker

The catalog is synthetic and clustered like ``report_scale.py``'s (product families of similar vectors,
with planted near-duplicate copies), 128-dimensional unit vectors like the shipped model's. Two query sets:

- *generic*: catalog vectors moved a similar-product distance away (0.4-0.6): recall@10 against exact
  search, the usual measure;
- *duplicate*: planted copies; a hit is the copy's original found among the top 10. This is what the
  duplicate report and ``query`` need (DESIGN.md: graph indexes can lose planted pairs that IVF keeps).

Per index and search setting: build seconds, bytes per vector (serialised size, and resident-memory growth
while it was built), single-query latency p50/p99 (one query per call, as ``dedup query`` asks), batch
throughput, and the two recalls. The exact index is dedup's own (``dedup.index.create_index``); the others
are FAISS factory strings. Writes JSON (``--json``, default ``bench-data/index_choice.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run from a fresh clone: no install needed

from report_scale import DIM, make_catalog  # noqa: E402

K = 10


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_queries(x: np.ndarray, planted: np.ndarray, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generic queries (catalog rows moved 0.4-0.6 away), duplicate queries (planted copies) and their originals."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), size=nq, replace=False)
    noise = rng.normal(size=(nq, x.shape[1])).astype(np.float32)
    noise *= (rng.uniform(0.4, 0.6, nq) / np.linalg.norm(noise, axis=1))[:, None]
    generic = x[rows] + noise
    generic /= np.linalg.norm(generic, axis=1, keepdims=True)
    pick = planted[rng.choice(len(planted), size=min(nq, len(planted)), replace=False)]
    return generic.astype(np.float32), np.ascontiguousarray(x[pick[:, 1]]), pick[:, 0]


def _latency(search: Any, queries: np.ndarray, n: int = 300) -> tuple[float, float]:
    """p50 and p99 milliseconds of one-query calls ``search(query (1, d), K)``."""
    times = []
    for q in queries[:n]:
        t = time.perf_counter()
        search(q[None, :], K)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _recalls(ids_generic: np.ndarray, exact_generic: np.ndarray, ids_dup: np.ndarray, originals: np.ndarray) -> dict:
    inter = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids_generic, exact_generic, strict=True)]
    return {
        "recall_at_10": round(float(np.mean(inter)) / K, 4),
        "duplicate_recall_at_10": round(
            float(np.mean([o in row for o, row in zip(originals, ids_dup, strict=True)])), 4
        ),
    }


def _row(
    index: str,
    setting: str,
    build: float,
    file_bytes: int,
    rss_bytes_grown: int,
    n: int,
    latency: tuple[float, float],
    qps: float,
    recalls: dict,
) -> dict:
    """One result row: sizes per vector, latency percentiles, batch throughput and recalls."""
    return {
        "index": index,
        "setting": setting,
        "build_seconds": round(build, 2),
        "bytes_per_vector_file": round(file_bytes / n, 1),
        "bytes_per_vector_rss": round(rss_bytes_grown / n, 1),
        "p50_ms": round(latency[0], 3),
        "p99_ms": round(latency[1], 3),
        "batch_qps": round(qps, 1),
        **recalls,
    }


def _measure_dedup(
    index: Any,
    name: str,
    setting: str,
    search: Any,
    build: float,
    grown: int,
    x: np.ndarray,
    generic: np.ndarray,
    dup: np.ndarray,
    originals: np.ndarray,
    exact_generic: np.ndarray | None,
) -> tuple[dict, np.ndarray]:
    """Searches with ``search(queries) -> ids``, latency, saved size and the row of one of dedup's own indexes;
    also the generic-query ids (the ground truth when ``exact_generic`` is None: the index is the exact one)."""
    t = time.perf_counter()
    ids_generic = search(generic)
    batch = time.perf_counter() - t
    ids_dup = search(dup)
    p50, p99 = _latency(lambda q, k: search(q), generic)
    tmp = ROOT / "bench-data" / f".index_choice_{os.getpid()}.faiss"
    index.write(tmp)
    size = tmp.stat().st_size
    tmp.unlink()
    truth = ids_generic if exact_generic is None else exact_generic
    recalls = _recalls(ids_generic, truth, ids_dup, originals)
    row = _row(name, setting, build, size, grown, len(x), (p50, p99), len(generic) / batch, recalls)
    return row, ids_generic


def bench_exact(x: np.ndarray, generic: np.ndarray, dup: np.ndarray, originals: np.ndarray) -> tuple[dict, np.ndarray]:
    """dedup's own exact index (FAISS IndexIDMap2 over IndexFlatIP); also the ground truth for generic queries."""
    from dedup.index import create_index

    before = rss_bytes()
    t = time.perf_counter()
    index = create_index(x.shape[1])
    index.add(np.arange(len(x), dtype=np.int64), x)
    build = time.perf_counter() - t
    grown = rss_bytes() - before
    row, exact_generic = _measure_dedup(
        index,
        "exact (dedup FaissIndex: IDMap2 + FlatIP)",
        "-",
        lambda q, idx=index: idx.search(q, K)[1],
        build,
        grown,
        x,
        generic,
        dup,
        originals,
        None,
    )
    del index
    gc.collect()
    return row, exact_generic


def bench_dedup_kind(
    kind: str, x: np.ndarray, generic: np.ndarray, dup: np.ndarray, originals: np.ndarray, exact_generic: np.ndarray
) -> dict:
    """One of dedup's own index kinds as a store builds it (``create_index(kind)`` then one ``add``).

    An index with approximate scores is measured as a query uses it: 50 candidates re-ranked exactly on the
    stored vectors (here the catalog array itself).
    """
    from dedup.index import create_index, exact_rerank

    before = rss_bytes()
    t = time.perf_counter()
    index = create_index(x.shape[1], kind)
    index.add(np.arange(len(x), dtype=np.int64), x)
    build = time.perf_counter() - t
    grown = rss_bytes() - before
    fetch = 50 if index.approximate_scores else K

    def search(q: np.ndarray) -> np.ndarray:
        _, cand = index.search(q, fetch)
        if not index.approximate_scores:
            return cand
        out = np.full((len(q), K), -1, dtype=np.int64)
        for r in range(len(q)):
            ids = cand[r][cand[r] >= 0]
            _, ranked = exact_rerank(q[r], ids, x[ids], K)
            out[r, : len(ranked)] = ranked
        return out

    setting = f"nprobe={getattr(index, 'nprobe', '-')}" + (", 50 re-ranked" if index.approximate_scores else "")
    name = f"dedup kind {kind!r} ({type(index).__name__})"
    row, _ = _measure_dedup(index, name, setting, search, build, grown, x, generic, dup, originals, exact_generic)
    return row  # the index is freed on return (the search closure goes with it)


def bench_faiss(
    name: str,
    factory: str,
    x: np.ndarray,
    generic: np.ndarray,
    dup: np.ndarray,
    originals: np.ndarray,
    exact_generic: np.ndarray,
    param: str,
    values: list[int],
    train_size: int,
) -> list[dict]:
    """Build one FAISS factory index with our ids and measure it at each value of its search parameter."""
    import faiss

    before = rss_bytes()
    t = time.perf_counter()
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(1)
        sample = x[rng.choice(len(x), size=min(len(x), train_size), replace=False)]
        index.train(sample)
    if "HNSW" in factory:
        index = faiss.IndexIDMap(index)  # HNSW cannot take ids itself
    index.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    build = time.perf_counter() - t
    grown = rss_bytes() - before
    size = len(faiss.serialize_index(index))
    params = faiss.ParameterSpace()
    rows = []
    for v in values:
        params.set_index_parameter(index, param, v)
        t = time.perf_counter()
        _, ids_generic = index.search(generic, K)
        batch = time.perf_counter() - t
        _, ids_dup = index.search(dup, K)
        p50, p99 = _latency(index.search, generic)
        rows.append(
            _row(
                f"{name} ({factory})",
                f"{param}={v}",
                build,
                size,
                grown,
                len(x),
                (p50, p99),
                len(generic) / batch,
                _recalls(ids_generic, exact_generic, ids_dup, originals),
            )
        )
        print(_line(rows[-1]), flush=True)
    del index
    gc.collect()
    return rows


def _line(r: dict) -> str:
    return (
        f"{r['index']:<44} {r['setting']:<14} build {r['build_seconds']:7.1f} s  "
        f"{r['bytes_per_vector_file']:6.0f} B/vec (rss {r['bytes_per_vector_rss']:6.0f})  "
        f"p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  {r['batch_qps']:9.0f} q/s  "
        f"R@10 {r['recall_at_10']:.3f}  dup R@10 {r['duplicate_recall_at_10']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="catalog vectors")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default about 4 sqrt(n))")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ivf", "hnsw", "pq", "dedup"], help="leave these out")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-data" / "index_choice.json")
    args = parser.parse_args()
    import faiss

    started = time.perf_counter()
    x, planted = make_catalog(args.n)
    generic, dup, originals = make_queries(x, planted, args.queries, seed=2)
    nlist = args.nlist or int(2 ** round(np.log2(4 * np.sqrt(args.n))))
    train = min(args.n, 50 * nlist)
    print(
        f"{args.n:,} vectors x {DIM}, {len(generic)} generic + {len(dup)} duplicate queries, "
        f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads, nlist {nlist}",
        flush=True,
    )
    rows = []
    exact_row, exact_generic = bench_exact(x, generic, dup, originals)
    rows.append(exact_row)
    print(_line(exact_row), flush=True)
    common = (x, generic, dup, originals, exact_generic)
    if "dedup" not in args.skip:
        for kind in ("ivf", "ivfpq"):
            rows.append(bench_dedup_kind(kind, *common))
            print(_line(rows[-1]), flush=True)
    if "ivf" not in args.skip:
        rows += bench_faiss("IVF", f"IVF{nlist},Flat", *common, "nprobe", [1, 4, 16, 64], train)
    if "hnsw" not in args.skip:
        rows += bench_faiss("HNSW", "HNSW32,Flat", *common, "efSearch", [16, 64, 128], train)
    if "pq" not in args.skip:
        # 32 one-byte codes + the 8-byte id each IVF list keeps: 40 bytes a vector, under the 64-byte target
        # ("np": no polysemous training, which we would not use and which is most of the training time).
        rows += bench_faiss("IVF-PQ", f"IVF{nlist},PQ32np", *common, "nprobe", [4, 16, 64], train)
        # 32 four-bit codes (16 bytes) + id: 24 bytes a vector, searched with SIMD fast-scan.
        rows += bench_faiss("IVF-PQ fast-scan", f"IVF{nlist},PQ32x4fs", *common, "nprobe", [4, 16, 64], train)
    result = {
        "n": args.n,
        "dim": DIM,
        "queries": len(generic),
        "nlist": nlist,
        "threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"{result['seconds']} s; JSON written to {args.json}")


if __name__ == "__main__":
    main()

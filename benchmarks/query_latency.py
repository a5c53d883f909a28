"""Query latency of the HTTP API and of the library, over synthetic catalogs of 10,000 and 100,000 images.

For each size: random unit vectors are written straight into a fresh store's catalog (``Catalog.write_batch``,
5,000 images per transaction, every image a hard link to one real sample file), the real server is started
(uvicorn, in a subprocess, on a free loopback port), and ``POST /api/v1/query`` is timed with 600 px JPEGs at 1
and 4 concurrent clients (threads with keep-alive ``http.client`` connections). Every request sends different
bytes, so the server's embedding cache never answers: the figures include decoding and inference. Then the
same images go through ``query_bytes`` in this process, and random vectors through ``search_vector`` alone.

    python benchmarks/query_latency.py                        # 10,000 and 100,000; ~3-6 minutes on 2 cores
    python benchmarks/query_latency.py --sizes 10000 --requests 100 --out /tmp/q.json

Loopback only; the stores live in a temporary folder (or ``--workdir``) removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dedup.service import open_store, query_bytes, search_vector  # noqa: E402
from dedup.types import ImageRecord  # noqa: E402

SAMPLE_FILE = ROOT / "catalog_samples" / "catalog" / "products" / "animals" / "capybara.jpg"
QUERY_SOURCES = sorted((ROOT / "catalog_samples" / "queries").glob("*.jpg"))
BATCH = 5_000
#: Hard links per source file (ext4 allows 65,000 links to one inode).
LINKS_PER_FILE = 50_000


def build_store(folder: Path, n: int, seed: int = 0) -> dict[str, float]:
    """A store whose catalog holds ``n`` images with random unit vectors; returns timings."""
    started = time.perf_counter()
    files = folder / "files"
    files.mkdir(parents=True)
    sample = files / "sample.jpg"
    shutil.copy(SAMPLE_FILE, sample)
    with Image.open(sample) as im:
        width, height = im.size
    size, mtime = sample.stat().st_size, sample.stat().st_mtime
    rng = np.random.default_rng(seed)
    with open_store(folder / "store") as store:
        model_id, dim = store.encoder.model_id, store.encoder.dim
        catalog = store.catalog
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            vectors = rng.standard_normal((stop - start, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            records, by_sha = [], {}
            for i, vector in zip(range(start, stop), vectors, strict=True):
                path = files / f"img_{i:07d}.jpg"
                source = files / f"sample_{i // LINKS_PER_FILE}.jpg"
                if not source.exists():
                    shutil.copy2(sample, source)
                os.link(source, path)  # a real file behind every row, so thumbnails work
                sha = hashlib.sha256(f"synthetic-{seed}-{i}".encode()).hexdigest()
                records.append(
                    ImageRecord(
                        path=str(path),
                        sha256=sha,
                        pixel_hash=sha,
                        width=width,
                        height=height,
                        format="JPEG",
                        bytes=size,
                        mtime=mtime,
                        product_id=f"SYN-{i // 4:06d}",
                    )
                )
                by_sha[sha] = vector
            catalog.write_batch(records, by_sha, [], model_id, None)
        written = time.perf_counter()
        store.index  # noqa: B018 - build and save the index now, so the server starts by loading it
        indexed = time.perf_counter()
    return {"catalog_write_s": written - started, "index_build_s": indexed - written}


def query_images(count: int, seed: int = 1) -> list[bytes]:
    """``count`` distinct 600 px JPEGs (sample query photos, each with a small random patch)."""
    rng = np.random.default_rng(seed)
    bases = []
    for src in QUERY_SOURCES:
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((600, 600), Image.Resampling.LANCZOS)
            bases.append(im)
    out = []
    for i in range(count):
        im = bases[i % len(bases)].copy()
        patch = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im.paste(Image.fromarray(patch), (int(rng.integers(0, im.width - 8)), int(rng.integers(0, im.height - 8))))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def multipart(data: bytes, k: int = 5) -> tuple[bytes, str]:
    boundary = "dedupbenchboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{k}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    port = free_port()
    code = (
        "import sys\nfrom dedup.api import serve\nfrom dedup.service import open_store\n"
        "serve(open_store(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]), api_key='')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(store_dir), str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, port, time.perf_counter() - started
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not come up within 300 s")


def load(port: int, bodies: list[tuple[bytes, str]], clients: int, max_s: float) -> dict[str, float]:
    """Send every body once, from ``clients`` threads; latency per request in ms."""
    latencies: list[float] = []
    errors = [0]
    next_i = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + max_s

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= len(bodies):
                break
            body, ctype = bodies[i]
            t0 = time.perf_counter()
            conn.request("POST", "/api/v1/query", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            resp.read()
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                if resp.status == 200:
                    latencies.append(dt)
                else:
                    errors[0] += 1
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return summarise(latencies, wall) | {"errors": errors[0]}


def summarise(latencies_ms: list[float], wall_s: float) -> dict[str, float]:
    arr = np.asarray(latencies_ms, dtype=np.float64)
    if not len(arr):
        return {"n": 0}
    return {
        "n": int(len(arr)),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "mean_ms": round(float(arr.mean()), 2),
        "max_ms": round(float(arr.max()), 2),
        "req_per_s": round(len(arr) / wall_s, 1),
    }


def in_process(store_dir: Path, images: list[bytes], vectors: int) -> dict[str, dict[str, Any]]:
    with open_store(store_dir) as store:
        query_bytes(store, images[0], "warm-up", 5)  # loads model and index
        # What the figures are of: a model, its query tower or not, and the views a query embeds.
        query = store.query_encoder
        setup = {
            "model_id": store.encoder.model_id,
            "query_tower": query is not store.encoder,
            "query_input_px": query.input_size,
            "query_views": [[v.fraction, v.mirror] for v in store.config.query_views],
        }
        lat = []
        t0 = time.perf_counter()
        for i, data in enumerate(images):
            t = time.perf_counter()
            query_bytes(store, data, f"q{i}", 5)
            lat.append((time.perf_counter() - t) * 1000)
        full = summarise(lat, time.perf_counter() - t0)
        rng = np.random.default_rng(2)
        qs = rng.standard_normal((vectors, store.encoder.dim)).astype(np.float32)
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        lat = []
        t0 = time.perf_counter()
        for q in qs:
            t = time.perf_counter()
            search_vector(store, "v", q, 5)
            lat.append((time.perf_counter() - t) * 1000)
        search = summarise(lat, time.perf_counter() - t0)
    return {"query_bytes": full, "search_vector": search, "setup": setup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=200, help="timed HTTP requests per run (after 10 warm-up)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit of one HTTP run")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "bench-data" / "query_latency.json"
    )
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dedup-qlat-"))
    work.mkdir(parents=True, exist_ok=True)
    warm = 10
    images = query_images(warm + args.requests * len(args.clients))
    bodies = [multipart(d) for d in images]
    results: dict[str, object] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "loadavg_start": os.getloadavg(),
        "query_image": {"width_height": Image.open(io.BytesIO(images[0])).size, "bytes": len(images[0])},
        "runs": [],
    }
    rows = []
    try:
        for n in args.sizes:
            folder = work / f"n{n}"
            print(f"building a catalog of {n:,} synthetic images ...", flush=True)
            build = build_store(folder, n)
            proc, port, start_s = start_server(folder / "store", folder / "server.log")
            run: dict[str, object] = {"images": n, **{k: round(v, 2) for k, v in build.items()}}
            run["server_start_s"] = round(start_s, 2)
            try:
                load(port, bodies[:warm], 1, args.seconds)  # warm-up: first requests pay for lazy set-up
                offset = warm
                for c in args.clients:
                    chunk = bodies[offset : offset + args.requests]
                    offset += args.requests
                    stats = load(port, chunk, c, args.seconds)
                    run[f"http_{c}_clients"] = stats
                    rows.append((n, f"HTTP, {c} client(s)", stats))
                    print(f"  {n:>7,}  HTTP {c} client(s): {stats}", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            local = in_process(folder / "store", images[warm : warm + min(100, args.requests)], 200)
            run["in_process"] = local
            rows.append((n, "query_bytes (in process)", local["query_bytes"]))
            rows.append((n, "search_vector only", local["search_vector"]))
            print(f"  {n:>7,}  in process: {local['setup']}", flush=True)
            results["runs"].append(run)  # type: ignore[attr-defined]
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    print()
    print(f"{'images':>8}  {'what':<26} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7}")
    for n, what, s in rows:
        print(
            f"{n:>8,}  {what:<26} {s.get('n', 0):>5} {s.get('p50_ms', 0):>8} {s.get('p99_ms', 0):>8} "
            f"{s.get('req_per_s', 0):>7}"
        )
    print(f"\nload average at start {results['loadavg_start']}, at end {results['loadavg_end']}; JSON: {args.out}")


if __name__ == "__main__":
    main()

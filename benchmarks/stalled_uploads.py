"""A flood of stalled uploads against `dedup serve`: how fast they are dropped, and what other clients see meanwhile.

    python benchmarks/stalled_uploads.py [--stalled 60] [--queries 20]

Starts the real server (default deadlines: 5 s idle, 60 s in all; 32 uploads in flight, 8 a client) over the
sample animals, then:

1. **baseline**: ``--queries`` query uploads, one after another, from 127.0.0.2; their median latency;
2. **flood**: ``--stalled`` connections from 127.0.0.1 that each send an upload's headers (declaring 100,000 bytes)
   and a few bytes of body, then nothing. While they hang, the same queries from 127.0.0.2 and health checks from
   127.0.0.1 are timed. Each stalled connection's answer (408 or 503) and the time it came are recorded.

Prints the answers by status, how long the stalled clients were held (median and worst), and the other clients'
latency during the flood as a ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import free_port  # noqa: E402 - the test helper is the one way to find a port


def _query(port: int, photo: bytes, source: str) -> float:
    # Bytes after the JPEG's end are ignored by the decoder but change its sha256: no embedding-cache hit.
    photo = photo + uuid.uuid4().bytes
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n\r\n'.encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(source, 0))
    conn.request("POST", "/api/v1/query", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"query answered {response.status}")
    return time.perf_counter() - started


def _health(port: int) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    conn.close()
    return time.perf_counter() - started


def _stall(port: int, started: float, results: list[tuple[int, float, float]]) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(
        b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n--b\r\n"
    )
    data = b""
    answered = None
    try:
        while chunk := sock.recv(65536):
            data += chunk
            answered = answered or time.monotonic()
    except OSError:
        pass
    closed = time.monotonic()
    sock.close()
    status = int(data.split(b" ")[1]) if data.startswith(b"HTTP/") else 0
    results.append((status, (answered or closed) - started, closed - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stalled", type=int, default=60)
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    photo = (ROOT / "catalog_samples" / "queries" / "farm__phone.jpg").read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DEDUP_API_KEY", None)
    with tempfile.TemporaryDirectory(prefix="dedup-stall-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "catalog_samples" / "catalog" / "products" / "animals", work / "catalog")
        dedup = [sys.executable, "-m", "dedup", "--store", str(work / "store")]
        subprocess.run([*dedup, "ingest", str(work / "catalog")], env=env, check=True, capture_output=True)
        port = free_port()
        server = subprocess.Popen(
            [*dedup, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(600):
                try:
                    _health(port)
                    break
                except OSError:
                    time.sleep(0.2)
            _query(port, photo, "127.0.0.2")  # warm: the first query pays for lazy work
            baseline = [_query(port, photo, "127.0.0.2") for _ in range(args.queries)]
            started = time.monotonic()
            results: list[tuple[int, float, float]] = []
            threads = [
                threading.Thread(target=_stall, args=(port, started, results), daemon=True) for _ in range(args.stalled)
            ]
            for t in threads:
                t.start()
            time.sleep(0.5)
            during = [_query(port, photo, "127.0.0.2") for _ in range(args.queries)]
            health = [_health(port) for _ in range(args.queries)]
            for t in threads:
                t.join(timeout=120)
        finally:
            server.terminate()
            server.wait(timeout=60)
    by_status = Counter(status for status, _, _ in results)
    print(f"{args.stalled} stalled uploads: answers {dict(sorted(by_status.items()))}")
    for code in sorted(by_status):
        answered = sorted(a for s, a, _ in results if s == code)
        closed = sorted(c for s, _, c in results if s == code)
        print(
            f"  {code}: answered after {statistics.median(answered):.3f} s (median), {answered[-1]:.3f} s (worst); "
            f"connection closed after {closed[-1]:.3f} s (worst)"
        )
    b, d = statistics.median(baseline), statistics.median(during)
    print(
        f"query from another address: {b * 1000:.0f} ms alone, {d * 1000:.0f} ms during the flood "
        f"(ratio {d / b:.2f}); /healthz during the flood {statistics.median(health) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()

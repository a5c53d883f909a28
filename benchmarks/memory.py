"""Peak memory of decoding large images: the loader alone, an ingest, and the HTTP server under concurrent uploads.

    python benchmarks/memory.py [--out bench-data/memory]

Makes large test images (8-bit RGB, 16-bit grey, palette, RGBA PNGs and a large JPEG), then measures, each in a
fresh process so one peak does not hide another:

1. **decode**: the peak RSS that ``dedup.imaging.load_image(path, target=224)`` adds, against the plain Pillow
   recipe measured in the same run (open, load, convert to RGB at full size, with the 16-bit stretch done in float64
   as dedup did before, then ``thumbnail``). The ratio is dedup / plain.
2. **ingest**: the peak RSS of ``dedup ingest`` of a folder of small images plus one large one, minus that of the
   same folder without it.
3. **server**: the server's peak RSS (``VmHWM``) added by four concurrent ``/api/v1/query`` uploads of the 16-bit
   image (a smooth one, under the 20 MB upload limit), and by four concurrent thumbnail requests for a large
   catalog image.

Prints one table; docs/benchmarks.md keeps the latest figures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

#: Decode one file in a fresh process; prints the peak RSS it added in MiB (after imports and a small warm-up).
#: VmHWM, not ru_maxrss: after fork and exec the latter starts from the parent's RSS at the fork.
_DECODE = r"""
import sys
import numpy as np
from PIL import Image
from dedup.imaging import load_image, _to_rgb

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def plain(path, target):
    img = Image.open(path)
    img.load()
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - lo) * (255.0 / max(hi - lo, 1e-9))).astype(np.uint8), "L")
    rgb = _to_rgb(img)
    rgb.thumbnail((2 * target, 2 * target), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rgb

how, path, warm = sys.argv[1], sys.argv[2], sys.argv[3]
(load_image(warm, target=224) if how == "dedup" else plain(warm, 224))
before = peak_mib()
out = load_image(path, target=224).image if how == "dedup" else plain(path, 224)
print(round(peak_mib() - before, 1))
"""


def make_images(folder: Path) -> dict[str, Path]:
    """The large test images (made once; a photo-like texture so PNG does not compress them to nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = {
        "RGB PNG 8000x6000": folder / "rgb_8000x6000.png",
        "16-bit grey PNG 8100x8100": folder / "grey16_8100.png",
        "palette PNG 8000x8000": folder / "palette_8000.png",
        "RGBA PNG 6000x6000": folder / "rgba_6000.png",
        "JPEG 8000x6000": folder / "photo_8000x6000.jpg",
        "smooth 16-bit grey PNG 8100x8100": folder / "grey16_smooth_8100.png",
    }

    def texture(w: int, h: int) -> np.ndarray:
        small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
        return big

    for name, path in images.items():
        if path.exists():
            continue
        if name.startswith("RGB PNG"):
            Image.fromarray(texture(8000, 6000)).save(path, compress_level=1)
        elif name.startswith("smooth 16-bit"):
            # A gradient: ~1 MB of PNG, under the server's 20 MB upload limit (the textured one is not).
            ramp = (np.arange(8100, dtype=np.uint32) * 8 % 65536).astype(np.uint16)
            Image.fromarray(np.tile(ramp, (8100, 1))).save(path)
        elif name.startswith("16-bit"):
            grey = texture(8100, 8100)[..., 0].astype(np.uint16) * 257
            Image.fromarray(grey).save(path, compress_level=1)
        elif name.startswith("palette"):
            Image.fromarray(texture(8000, 8000)).quantize(64).save(path, compress_level=1)
        elif name.startswith("RGBA"):
            rgb = texture(6000, 6000)
            Image.fromarray(np.dstack([rgb, rgb[..., 1]]), "RGBA").save(path, compress_level=1)
        else:
            Image.fromarray(texture(8000, 6000)).save(path, quality=90)
    return images


def decode_peaks(images: dict[str, Path], warm: Path) -> list[dict[str, object]]:
    rows = []
    for name, path in images.items():
        peak = {}
        for how in ("dedup", "plain"):
            cmd = [sys.executable, "-c", _DECODE, how, str(path), str(warm)]
            peak[how] = float(subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=True).stdout)
        rows.append({"image": name, "MB": round(path.stat().st_size / 1e6, 1), **peak})
    return rows


def _max_rss_of(cmd: list[str]) -> float:
    """Peak RSS (MiB) of the largest process ``cmd`` ran (the command itself or one of its children).

    A small wrapper process runs it, so the figure is not the one this (image-making) process had at the fork.
    """
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    return float(subprocess.run([sys.executable, "-c", code, *cmd], env=ENV, capture_output=True, text=True).stdout)


def ingest_peaks(images: dict[str, Path], work: Path) -> list[dict[str, object]]:
    small = work / "small"
    small.mkdir(exist_ok=True)
    for i, p in enumerate(sorted((ROOT / "catalog_samples" / "catalog" / "products").rglob("*.jpg"))[:40]):
        (small / f"{i:03d}.jpg").write_bytes(p.read_bytes())
    dedup = [sys.executable, "-m", "dedup"]
    base = _max_rss_of([*dedup, "--store", str(work / "s0"), "ingest", str(small)])
    rows = []
    for n, (name, path) in enumerate(images.items(), start=1):
        folder = work / f"with{n}"
        folder.mkdir(exist_ok=True)
        for p in small.iterdir():
            (folder / p.name).write_bytes(p.read_bytes())
        (folder / path.name).write_bytes(path.read_bytes())
        peak = _max_rss_of([*dedup, "--store", str(work / f"s{n}"), "ingest", str(folder)])
        rows.append({"image": name, "ingest peak MiB": round(peak, 1), "added MiB": round(peak - base, 1)})
    return rows


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _post(port: int, path: str, data: bytes) -> int:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    status = conn.getresponse().status
    conn.close()
    return status


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def server_peaks(images: dict[str, Path], work: Path) -> list[dict[str, object]]:
    sys.path.insert(0, str(ROOT))
    from tests.servers import free_port

    catalog = work / "server-catalog"
    catalog.mkdir(exist_ok=True)
    big = images["RGB PNG 8000x6000"]
    (catalog / big.name).write_bytes(big.read_bytes())
    store = work / "server-store"
    subprocess.run([sys.executable, "-m", "dedup", "--store", str(store), "ingest", str(catalog)], env=ENV, check=True)
    port = free_port()
    log = open(work / "server.log", "wb")  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "dedup", "--store", str(store), "serve", "--port", str(port)],
        env=ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rows = []
    try:
        for _ in range(600):
            try:
                if _get(port, "/healthz") == 200:
                    break
            except OSError:
                time.sleep(0.2)
        upload = images["smooth 16-bit grey PNG 8100x8100"].read_bytes()
        jobs = [
            ("4 concurrent queries, 16-bit 8100x8100", lambda: _post(port, "/api/v1/query", upload)),
            ("4 concurrent thumbnails, RGB 8000x6000", lambda: _get(port, "/api/v1/images/1/thumbnail")),
        ]
        for name, job in jobs:
            before = _status(proc.pid, "VmRSS")
            # VmHWM cannot be reset from outside: measure it against this job's starting RSS.
            start_hwm = _status(proc.pid, "VmHWM")
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                statuses = [f.result() for f in [pool.submit(job) for _ in range(4)]]
            peak = _status(proc.pid, "VmHWM")
            rows.append(
                {
                    "job": name,
                    "statuses": statuses,
                    "RSS before MiB": round(before, 1),
                    "peak MiB": round(max(peak, start_hwm), 1),
                    "added MiB": round(max(0.0, peak - before), 1) if peak > start_hwm else "≤ earlier peak",
                }
            )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-data" / "memory")
    args = parser.parse_args()
    images = make_images(args.out)
    warm = ROOT / "catalog_samples" / "queries" / "farm__phone.jpg"
    print(f"cores {os.cpu_count()}, Python {sys.version.split()[0]}, Pillow {Image.__version__}")
    print("\n1. decode (peak RSS added, MiB): dedup's loader vs plain Pillow, same run")
    for row in decode_peaks(images, warm):
        ratio = row["dedup"] / row["plain"] if row["plain"] else float("nan")  # type: ignore[operator]
        print(
            f"  {row['image']:<28} {row['MB']:>6} MB file  dedup {row['dedup']:>7}  plain {row['plain']:>7}  "
            f"ratio {ratio:.2f}"
        )
    with tempfile.TemporaryDirectory(prefix="dedup-mem-") as tmp:
        print("\n2. ingest (40 sample JPEGs + one large image; peak RSS of the ingest process)")
        for row in ingest_peaks(images, Path(tmp)):
            print(f"  {row['image']:<28} peak {row['ingest peak MiB']:>7} MiB  added {row['added MiB']:>7} MiB")
        print("\n3. server (dedup serve; VmHWM against the RSS before the job)")
        for row in server_peaks(images, Path(tmp)):
            print("  " + json.dumps(row))


if __name__ == "__main__":
    main()

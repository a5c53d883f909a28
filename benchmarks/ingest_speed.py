"""Ingest speed and peak memory, against decode-only and imagehash pHash over the same folder.

Each contender runs in its own process (so peak RSS is its own) over the same files, in one run:

    python benchmarks/make_jpegs.py bench-data/jpegs -n 5000
    python benchmarks/ingest_speed.py bench-data/jpegs
    python benchmarks/ingest_speed.py catalog_samples/catalog
    python benchmarks/ingest_speed.py bench-data/jpegs --model bench-data/models/old   # a second model beside

pHash runs twice: in one process, and on as many worker processes as the machine has cores (what a user
would run instead of dedup, which uses every core); ``ingest_time_over_phash_pool`` is against the latter.

Decode-only is dedup's loader over the folder with two threads; decode stage is ingest's own decoding (the
same per-file work, pixel hash and background trim included, in worker processes as ingest runs it), so
the ratio against it is what embedding and storing add to ingest. Prints images/s, wall and CPU seconds and
peak RSS for each (the process's own, and summed with its
decoding worker processes: shared pages count twice there, so it is an upper bound), the ratios against pHash and
decode-only, and writes the figures as JSON (``--json PATH``, default ``bench-data/ingest_speed.json``).
The contenders run ``--rounds`` times in turn (default 3); the figures are medians, each ratio the
median of the rounds' own ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a fresh clone: no install needed

DECODE_ONLY = """
import sys, time
from dedup.config import IMAGE_EXTENSIONS
from dedup.imaging import iter_image_files, load_image, to_model_input
from dedup.errors import ImageError
from concurrent.futures import ThreadPoolExecutor
import os
files = iter_image_files(sys.argv[1], IMAGE_EXTENSIONS)
def work(p):
    try:
        to_model_input(load_image(p, target=int(sys.argv[2])).image, int(sys.argv[2]))
    except ImageError:
        pass
with ThreadPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(work, files))
print(len(files))
"""

# Ingest's own decoding stage without the model and the store: the same per-file work (read, sha256, draft
# decode, pixel hash, the model's input) in the same kind of workers (processes, 32 files a task as
# dedup.service.ingest.CHUNK; not imported, so this process loads no more than decoding needs).
DECODE_STAGE = """
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from dedup.config import IMAGE_EXTENSIONS
from dedup.imaging import ModelInput, decode_files, iter_image_files
from dedup.workers import init_worker
files = iter_image_files(sys.argv[1], IMAGE_EXTENSIONS)
pre = ModelInput(int(sys.argv[2]), trim=sys.argv[3] == "trim")
chunks = [files[i : i + 32] for i in range(0, len(files), 32)]
ctx = multiprocessing.get_context("fork")
with ProcessPoolExecutor(os.cpu_count(), mp_context=ctx, initializer=init_worker) as pool:
    n = sum(len(r) for r in pool.map(decode_files, chunks, [pre] * len(chunks)))
print(n)
"""

PHASH = """
import sys
import imagehash
from PIL import Image
from dedup.config import IMAGE_EXTENSIONS
from dedup.imaging import iter_image_files
files = iter_image_files(sys.argv[1], IMAGE_EXTENSIONS)
n = 0
for p in files:
    try:
        with Image.open(p) as im:
            imagehash.phash(im)
        n += 1
    except Exception:
        pass
print(n)
"""

# pHash on every core: a process pool over the files, as a user would run it at scale.
PHASH_POOL = """
import os, sys
from multiprocessing import Pool
import imagehash
from PIL import Image
from dedup.config import IMAGE_EXTENSIONS
from dedup.imaging import iter_image_files
def work(p):
    try:
        with Image.open(p) as im:
            imagehash.phash(im)
        return 1
    except Exception:
        return 0
if __name__ == "__main__":
    files = iter_image_files(sys.argv[1], IMAGE_EXTENSIONS)
    with Pool(os.cpu_count()) as pool:
        print(sum(pool.map(work, files, chunksize=32)))
"""


def _tree_rss_mb(root: int) -> float:
    """Summed RSS of ``root`` and its descendants now, from /proc (shared pages count in each: an upper bound)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(fields[21])
    pages, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        pages += rss.get(pid, 0)
        frontier.extend(children.get(pid, []))
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run(cmd: list[str]) -> dict[str, float]:
    """Run a command; its wall seconds, CPU seconds (user + system, its reaped children's included), own peak
    RSS in MB (from wait4) and the peak summed RSS of it and its worker processes (sampled every 0.25 s)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    tree_peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal tree_peak
        while not stop.wait(0.25):
            tree_peak = max(tree_peak, _tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    if os.path.isdir("/proc"):
        sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code not in (0, 3):
        err = proc.stderr.read().decode() if proc.stderr else ""
        sys.exit(f"{' '.join(cmd)} failed ({code}):\n{err[-2000:]}")
    own = usage.ru_maxrss / 1024.0
    return {
        "seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": own,
        "peak_tree_rss_mb": max(own, tree_peak),
    }


def _round(folder: Path, size: int, trim: bool, models: list[Path]) -> dict[str, dict[str, float]]:
    """One run of each contender over ``folder``, back to back."""
    results = {"phash": _run([sys.executable, "-c", PHASH, str(folder)])}
    results["phash_pool"] = _run([sys.executable, "-c", PHASH_POOL, str(folder)])
    results["decode_only"] = _run([sys.executable, "-c", DECODE_ONLY, str(folder), str(size)])
    stage = [sys.executable, "-c", DECODE_STAGE, str(folder), str(size), "trim" if trim else "whole"]
    results["decode_stage"] = _run(stage)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        ingest = [sys.executable, "-m", "dedup", "-q", "--store", str(store), "ingest", str(folder)]
        results["dedup_ingest"] = _run(ingest)
        results["dedup_ingest_again"] = _run(ingest)
        shutil.rmtree(store, ignore_errors=True)
        for k, model in enumerate(models):
            other = Path(tmp) / f"store{k}"
            cmd = [sys.executable, "-m", "dedup", "-q", "--store", str(other), "--model", str(model), "ingest"]
            results[f"dedup_ingest_model{k + 1}"] = _run([*cmd, str(folder)])
    return results


def _ratios(r: dict[str, dict[str, float]]) -> dict[str, float]:
    return {
        "ingest_time_over_phash": r["dedup_ingest"]["seconds"] / r["phash"]["seconds"],
        "ingest_time_over_phash_pool": r["dedup_ingest"]["seconds"] / r["phash_pool"]["seconds"],
        **{
            f"{name[len('dedup_') :]}_time_over_phash_pool": v["seconds"] / r["phash_pool"]["seconds"]
            for name, v in r.items()
            if name.startswith("dedup_ingest_model")
        },
        "ingest_speed_over_decode_only": r["decode_only"]["seconds"] / r["dedup_ingest"]["seconds"],
        "ingest_cpu_over_decode_only_cpu": r["dedup_ingest"]["cpu_seconds"] / r["decode_only"]["cpu_seconds"],
        "ingest_speed_over_decode_stage": r["decode_stage"]["seconds"] / r["dedup_ingest"]["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--json", type=Path, default=ROOT / "bench-data" / "ingest_speed.json")
    parser.add_argument("--size", type=int, default=None, help="model input size (default: the model's)")
    parser.add_argument("--model", type=Path, action="append", default=[], help="another model folder to time")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of all contenders; figures are the medians (default 3)"
    )
    args = parser.parse_args()

    from dedup.config import IMAGE_EXTENSIONS
    from dedup.embedding.encoder import load_encoder
    from dedup.imaging import iter_image_files

    n = len(iter_image_files(args.folder, IMAGE_EXTENSIONS))
    encoder = load_encoder()
    size = args.size or encoder.input_size
    # Contenders alternate round by round, and ratios are taken within a round, so a slow spell of a
    # shared machine weighs on both sides of a ratio rather than on one contender.
    rounds = []
    for i in range(max(1, args.rounds)):
        rounds.append(_round(args.folder, size, encoder.trim, args.model))
        print(f"  round {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in _ratios(rounds[-1]).items()), flush=True)
    results: dict[str, dict[str, float]] = {}
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        seconds = statistics.median(r["seconds"] for r in runs)
        results[name] = {
            "seconds": seconds,
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "peak_tree_rss_mb": max(r["peak_tree_rss_mb"] for r in runs),
            "images_per_s": n / seconds,
        }
    per_round = [_ratios(r) for r in rounds]
    ratios = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}
    print(f"{n} images in {args.folder} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"  model {encoder.model_id} ({encoder.runtime}, {encoder.input_size} px, trim {encoder.trim})")
    print(f"  medians of {len(rounds)} round(s):")
    for name, r in results.items():
        print(
            f"  {name:20s} {r['images_per_s']:8.1f} img/s  {r['seconds']:7.2f} s  {r['cpu_seconds']:7.2f} s CPU"
            f"  peak RSS {r['peak_rss_mb']:.0f} MB (with workers ≤ {r['peak_tree_rss_mb']:.0f})"
        )
    for name, v in ratios.items():
        # Three decimals: a target of 0.5 must not read as met at 0.497.
        print(f"  {name:32s} {v:.3f}  (rounds: {', '.join(f'{r[name]:.3f}' for r in per_round)})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "images": n,
                "folder": str(args.folder),
                "model_id": encoder.model_id,
                "other_models": [str(m) for m in args.model],
                "results": results,
                "ratios": ratios,
                "rounds": rounds,
                "ratios_per_round": per_round,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

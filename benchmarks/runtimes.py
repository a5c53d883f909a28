"""Inference runtimes of one model: Keras against TensorFlow Lite float32, float16 and int8, speed and accuracy.

Every runtime embeds the same images, the catalog of the accuracy benchmark's dev split
(``bench-data/accuracy-set``, made by ``benchmarks/accuracy.py``): speed is the median time per image over
timed batches of 64 model inputs (decode excluded), accuracy is pair precision / recall / F1 at the model
card's threshold against the split's truth, and agreement is the mean and smallest cosine to the Keras
embedding of each image. Both the exactly mirror-invariant form (``normalise(f(x) + f(mirror x))``) and
the single pass ``f(x)`` are measured when the saved model is the mirror-invariant one.

    python benchmarks/runtimes.py                      # the shipped model; ~2 minutes on 2 cores
    python benchmarks/runtimes.py --model /tmp/m --json /tmp/runtimes.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dedup.config import default_model_dir  # noqa: E402
from dedup.embedding.card import read_card  # noqa: E402
from dedup.imaging import load_image, to_model_input  # noqa: E402
from dedup.matching.metrics import group_pairs, pair_scores  # noqa: E402

BATCH = 64


def load_split(data: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Model inputs ``(n, size, size, 3)`` and group labels of a split's catalog images."""
    with open(data / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    inputs = np.stack([to_model_input(load_image(data / r["path"], target=size).image, size) for r in rows])
    return inputs, [r["group"] for r in rows]


def lite_runner(blob: bytes) -> Any:
    """A function embedding a uint8 batch with LiteRT (XNNPACK, all cores)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob, num_threads=os.cpu_count() or 1)
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    shape: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        if list(x.shape) != shape:
            interp.resize_tensor_input(inp, list(x.shape), strict=False)
            interp.allocate_tensors()
            shape[:] = list(x.shape)
        interp.set_tensor(inp, x)
        interp.invoke()
        return np.array(interp.get_tensor(out))

    return run


def measure(run: Any, inputs: np.ndarray, repeats: int = 5) -> tuple[np.ndarray, float]:
    """Unit embeddings of all inputs and the median milliseconds per image over timed batches."""
    emb = np.concatenate([run(inputs[i : i + BATCH]) for i in range(0, len(inputs), BATCH)])
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    batch = inputs[:BATCH]
    run(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - t0)
    return emb, float(np.median(times)) / len(batch) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data" / "accuracy-set" / "dev")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-data" / "runtimes.json")
    args = parser.parse_args()
    if not (args.data / "truth.csv").is_file():
        raise SystemExit(f"{args.data}/truth.csv not found: run `python benchmarks/accuracy.py` once to make the set")

    import keras
    import tensorflow as tf

    import dedup.embedding.tower  # noqa: F401 - registers the custom layers
    from dedup.embedding.export import export_tflite
    from dedup.embedding.tower import mirror_wrap

    folder = args.model or default_model_dir()
    card = read_card(folder)
    threshold = float(card["threshold"])
    saved = keras.models.load_model(folder / card["files"]["keras"], compile=False)
    inner = [layer for layer in saved.layers if isinstance(layer, keras.Model)]
    single = inner[0] if saved.name.endswith("_sym") and len(inner) == 1 else saved
    forms = {"mirror-invariant": mirror_wrap(single), "single pass": single}

    inputs, groups = load_split(args.data, int(card["input_size"]))
    i, j, labels = group_pairs(groups)
    print(f"{len(inputs)} images, {int(labels.sum())} duplicate pairs, threshold {threshold:.4f}", flush=True)
    rows: list[dict[str, Any]] = []
    for form, model in forms.items():
        reference, keras_ms = measure(lambda x, m=model: np.asarray(m(x, training=False)), inputs)
        candidates: list[tuple[str, Any, float | None]] = [("keras", None, None)]
        with tempfile.TemporaryDirectory() as tmp:
            for quant in ("float32", "float16", "int8"):
                path = export_tflite(model, Path(tmp) / f"{quant}.tflite", quant)
                candidates.append((f"tflite {quant}", lite_runner(path.read_bytes()), path.stat().st_size / 1e6))
            for name, run, mb in candidates:
                emb, ms = (reference, keras_ms) if run is None else measure(run, inputs)
                dist = np.linalg.norm(emb[i] - emb[j], axis=1)
                s = pair_scores(dist, labels, threshold)
                cos = np.sum(emb * reference, axis=1)
                rows.append(
                    {
                        "form": form,
                        "runtime": name,
                        "file_mb": round(mb, 2) if mb else None,
                        "ms_per_image": round(ms, 3),
                        "precision": round(s.precision or 0.0, 4),
                        "recall": round(s.recall or 0.0, 4),
                        "f1": round(s.f1 or 0.0, 4),
                        "cosine_to_keras_mean": round(float(cos.mean()), 5),
                        "cosine_to_keras_min": round(float(cos.min()), 5),
                    }
                )
                r = rows[-1]
                print(
                    f"{form:17s} {name:15s} {r['ms_per_image']:7.3f} ms/img  P {r['precision']:.3f} "
                    f"R {r['recall']:.3f} F1 {r['f1']:.3f}  cos mean {r['cosine_to_keras_mean']:.5f} "
                    f"min {r['cosine_to_keras_min']:.5f}",
                    flush=True,
                )
    result = {
        "model": str(folder),
        "threshold": threshold,
        "images": len(inputs),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "tensorflow": tf.__version__,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

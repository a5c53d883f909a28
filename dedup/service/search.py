"""Query and compare: embed an image, search the index, join the catalog."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from dedup.config import IMAGE_EXTENSIONS
from dedup.errors import ImageError
from dedup.imaging import decode_bytes, iter_image_files, load_image
from dedup.service.store import Store
from dedup.types import CompareResult, Hit, QueryResult

log = logging.getLogger(__name__)


def _search(store: Store, name: str, vector: np.ndarray, k: int) -> QueryResult:
    index = store.index
    distances, ids = index.search(vector[None, :], k)
    found = [(float(d), int(i)) for d, i in zip(distances[0], ids[0], strict=True) if i >= 0]
    infos = store.catalog.images([i for _, i in found])
    hits = [
        Hit(rank=r, distance=d, image=infos[i])
        for r, (d, i) in enumerate(((d, i) for d, i in found if i in infos), start=1)
    ]
    return QueryResult(query=name, k=k, hits=hits)


def image_files(items: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand query arguments: files stay as given, folders become the image files under them."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        out.extend(iter_image_files(p, IMAGE_EXTENSIONS) if p.is_dir() else [p])
    return out


def query_paths(store: Store, paths: Sequence[str | os.PathLike[str]], k: int) -> Iterator[QueryResult | ImageError]:
    """Top-k catalog images for each query file, in input order; a bad file yields its ImageError."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    encoder = store.encoder
    for p in paths:
        try:
            loaded = load_image(p, target=encoder.input_size)
        except ImageError as exc:
            yield exc
            continue
        vector = encoder.embed_images([loaded.image])[0]
        yield _search(store, str(p), vector, k)


def query_bytes(store: Store, data: bytes, name: str, k: int) -> QueryResult:
    """Top-k catalog images for image bytes held in memory (an upload); raises ImageError."""
    encoder = store.encoder
    loaded = decode_bytes(data, name, target=encoder.input_size)
    return _search(store, name, encoder.embed_images([loaded.image])[0], k)


def compare_paths(store: Store, a: str | os.PathLike[str], b: str | os.PathLike[str]) -> CompareResult:
    """Distance between two image files and the verdict at the model's threshold."""
    va, vb = store.embed_paths([Path(a), Path(b)])
    distance = float(np.sqrt(max(0.0, 2.0 - 2.0 * float(va @ vb))))
    return CompareResult(path_a=str(a), path_b=str(b), distance=distance, threshold=store.encoder.threshold)

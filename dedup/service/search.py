"""Query and compare: embed an image, search the index, join the catalog; thumbnails of catalog images."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dedup.config import IMAGE_EXTENSIONS, MAX_PIXELS, QueryView
from dedup.errors import ImageError
from dedup.imaging import decode_bytes, iter_image_files, load_image, thumbnail_jpeg, view_images
from dedup.service.cache import EmbeddingCache
from dedup.service.store import Store
from dedup.types import CompareResult, Hit, ImageInfo, QueryResult

log = logging.getLogger(__name__)


#: An index with approximate scores is asked for this many candidates per wanted hit (and at least
#: RERANK_MIN), which are then re-scored on the catalog's exact vectors.
RERANK_FACTOR = 4
RERANK_MIN = 50


def _neighbours(store: Store, vector: np.ndarray, n: int) -> list[tuple[float, ImageInfo]]:
    """The ``n`` nearest catalog images, nearest first, joined with their catalog rows; distances are exact.

    ``vector`` is one embedding ``(dim,)`` or several views of one query ``(m, dim)``: then an image's
    distance is its smallest distance to any view.
    """
    views = np.atleast_2d(vector)
    index = store.index
    if index.approximate_scores:
        return _reranked_neighbours(store, views, n)
    distances, ids = index.search(views, n)
    found = _closest(distances.ravel(), ids.ravel(), n)
    infos = store.catalog.images([i for i, _ in found])
    return [(d, infos[i]) for i, d in found if i in infos]


def _reranked_neighbours(store: Store, vector: np.ndarray, n: int) -> list[tuple[float, ImageInfo]]:
    """:func:`_neighbours` for an index of compressed codes: over-fetch, then re-score on the stored vectors.

    The codes rank well enough to put the true nearest among the first few dozen candidates, but their
    distances are estimates, and users see distances and compare them with the model's threshold.
    """
    from dedup.index import exact_rerank

    _, ids = store.index.search(vector, max(RERANK_FACTOR * n, RERANK_MIN))
    candidates = list(dict.fromkeys(int(i) for i in ids.ravel() if i >= 0))
    infos = store.catalog.images(candidates)
    stored = store.catalog.stored_vectors({info.sha256 for info in infos.values()}, store.encoder.model_id)
    # An image deleted since the index was last brought up to date has no row (or vector) any more: skip it.
    known = [i for i in candidates if i in infos and infos[i].sha256 in stored]
    if len(known) < len(candidates):
        log.debug("%d index candidates have no stored vector; skipped", len(candidates) - len(known))
    if not known:
        return []
    vectors = np.stack([stored[infos[i].sha256] for i in known])
    ids_arr = np.asarray(known, dtype=np.int64)
    reranked = [exact_rerank(view, ids_arr, vectors, len(known)) for view in vector]
    found = _closest(np.concatenate([d for d, _ in reranked]), np.concatenate([i for _, i in reranked]), n)
    return [(d, infos[i]) for i, d in found]


def _closest(distances: np.ndarray, ids: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The ``n`` ids with the smallest distance, nearest first (then by id); an id seen under several views keeps
    its smallest distance; id -1 (an empty index slot) is skipped."""
    best: dict[int, float] = {}
    for d, i in zip(distances.tolist(), ids.tolist(), strict=True):
        if i >= 0 and d < best.get(i, np.inf):
            best[i] = d
    return sorted(best.items(), key=lambda t: (t[1], t[0]))[:n]


def _search(store: Store, name: str, vector: np.ndarray, k: int) -> QueryResult:
    hits = [Hit(rank=r, distance=d, image=info) for r, (d, info) in enumerate(_neighbours(store, vector, k), start=1)]
    return QueryResult(query=name, k=k, hits=hits)


def search_vector(
    store: Store,
    name: str,
    vector: np.ndarray,
    k: int,
    category: str | None = None,
    per_product: bool = False,
) -> QueryResult:
    """Top-k catalog images for an embedding ``(dim,)`` or a query's views ``(m, dim)`` (an image then scores
    its best view); with ``category``, only images of products in it; with ``per_product``, only the best
    image of each product (an image without a product stands for itself), so k hits are k products.

    The category match ignores case. Filtering over-fetches from the index and widens the search
    until k hits are found or the whole index was looked at. Not safe to call while another
    thread changes the index: a server serialises index access itself.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    store.require_current_model()
    if category is None and not per_product:
        return _search(store, name, vector, k)
    total = len(store.index)
    fetch = min(total, max(8 * k, 64))
    kept: list[tuple[float, ImageInfo]] = []
    while fetch > 0:
        kept = _filtered(_neighbours(store, vector, fetch), category, per_product)
        if len(kept) >= k or fetch >= total:
            break
        fetch = min(total, fetch * 4)
    hits = [Hit(rank=r, distance=d, image=info) for r, (d, info) in enumerate(kept[:k], start=1)]
    return QueryResult(query=name, k=k, hits=hits, per_product=per_product)


def _filtered(
    found: list[tuple[float, ImageInfo]], category: str | None, per_product: bool
) -> list[tuple[float, ImageInfo]]:
    """Neighbours (nearest first) in ``category`` (case-insensitive), the first of each product if asked."""
    wanted = category.casefold() if category is not None else None
    seen: set[str] = set()
    kept = []
    for d, info in found:
        if wanted is not None and (info.category or "").casefold() != wanted:
            continue
        if per_product:
            key = f"p:{info.product_id}" if info.product_id else f"i:{info.image_id}"
            if key in seen:
                continue
            seen.add(key)
        kept.append((d, info))
    return kept


def embed_bytes(
    store: Store,
    data: bytes,
    name: str = "<upload>",
    *,
    cache: EmbeddingCache | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """The embedding of image bytes held in memory; raises ImageError when they are not a usable image.

    The bytes are checked by decoding them (never by a name or a declared type). With a ``cache``,
    bytes that were embedded before are neither decoded nor embedded again.
    """
    encoder = store.encoder
    return _decode_cached(
        data,
        name,
        encoder.input_size,
        encoder.model_id,
        lambda img: encoder.embed_images([img])[0],
        cache,
        max_pixels,
    )


def _decode_cached(
    data: bytes,
    name: str,
    target: int,
    key: str,
    embed: Callable[[Image.Image], np.ndarray],
    cache: EmbeddingCache | None,
    max_pixels: int,
    digest: str | None = None,
) -> np.ndarray:
    """``embed`` of the bytes decoded for ``target`` px inputs, through ``cache`` under ``key`` and the bytes'
    sha256 when given."""
    if cache is not None and data:
        digest = digest or hashlib.sha256(data).hexdigest()
        cached = cache.get(key, digest)
        if cached is not None:
            return cached
    loaded = decode_bytes(data, name, target=target, max_pixels=max_pixels, sha256=digest)
    out = embed(loaded.image)
    if cache is not None:
        cache.put(key, loaded.sha256, out)
    return out


def query_views(store: Store, image: Image.Image, sha256: str | None = None) -> np.ndarray:
    """Embeddings ``(m, dim)`` of a query image: its views in the store's ``query_views`` (crops, mirror images).

    The views go through the store's query encoder (the model's query tower, trained to map phone
    photos and copies of a product onto its catalog vector). The views are cut from the decoded image,
    so a query costs one decode and ``m`` model inputs in one batch. When the query's bytes (``sha256``)
    are a catalog file's, that file's stored vector is a view too: an exact copy comes back at distance 0.
    """
    encoder = store.query_encoder
    views = encoder.embed(np.stack([encoder.model_input(v) for v in view_images(image, store.config.query_views)]))
    return views if sha256 is None else _with_stored_view(store, sha256, views)


def _with_stored_view(store: Store, sha256: str, views: np.ndarray) -> np.ndarray:
    """``views`` and, when the catalog holds these bytes (``sha256``) now, their stored vector first."""
    if store.query_encoder is store.encoder and QueryView(1.0) in store.config.query_views:
        return views  # the catalog tower's whole view already is that vector
    stored = store.catalog.stored_vectors([sha256], store.encoder.model_id).get(sha256)
    return views if stored is None else np.concatenate([stored[None].astype(np.float32), views])


def embed_query_bytes(
    store: Store,
    data: bytes,
    name: str = "<upload>",
    *,
    cache: EmbeddingCache | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """The query views ``(m, dim)`` of image bytes held in memory (see :func:`query_views`); raises ImageError."""
    key = f"{store.encoder.model_id}#query{','.join(map(str, store.config.query_views))}:{store.config.query_tower}"
    target = store.query_encoder.input_size
    digest = hashlib.sha256(data).hexdigest()
    views = _decode_cached(data, name, target, key, lambda img: query_views(store, img), cache, max_pixels, digest)
    # Looked up on every call, not cached with the views: the bytes may have joined the catalog since.
    return _with_stored_view(store, digest, views)


def image_files(items: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand query arguments: files stay as given, folders become the image files under them."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        out.extend(iter_image_files(p, IMAGE_EXTENSIONS) if p.is_dir() else [p])
    return out


def query_paths(
    store: Store,
    paths: Sequence[str | os.PathLike[str]],
    k: int,
    category: str | None = None,
    per_product: bool = False,
) -> Iterator[QueryResult | ImageError]:
    """Top-k catalog images for each query file, in input order; a bad file yields its ImageError.

    With ``category``, only images of products in that category (case-insensitive) are returned; with
    ``per_product``, the best image of each product (see :func:`search_vector`).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    for p in paths:
        try:
            loaded = load_image(p, target=store.query_encoder.input_size)
        except ImageError as exc:
            yield exc
            continue
        yield search_vector(store, str(p), query_views(store, loaded.image, loaded.sha256), k, category, per_product)


def query_bytes(
    store: Store,
    data: bytes,
    name: str,
    k: int,
    *,
    category: str | None = None,
    per_product: bool = False,
    cache: EmbeddingCache | None = None,
    max_pixels: int = MAX_PIXELS,
) -> QueryResult:
    """Top-k catalog images for image bytes held in memory (an upload); raises ImageError.

    ``category``, ``per_product``, ``cache`` and ``max_pixels`` are as in :func:`search_vector` and :func:`embed_bytes`.
    """
    views = embed_query_bytes(store, data, name, cache=cache, max_pixels=max_pixels)
    return search_vector(store, name, views, k, category, per_product)


def _distance(va: np.ndarray, vb: np.ndarray) -> float:
    """Euclidean distance of two unit vectors (rounding can push ``2 - 2 a·b`` just below 0)."""
    return float(np.sqrt(max(0.0, 2.0 - 2.0 * float(va @ vb))))


def compare_bytes(
    store: Store,
    data_a: bytes,
    data_b: bytes,
    names: tuple[str, str] = ("<a>", "<b>"),
    *,
    cache: EmbeddingCache | None = None,
    max_pixels: int = MAX_PIXELS,
) -> CompareResult:
    """Distance between two images held in memory and the verdict at the model's threshold; raises ImageError."""
    va = embed_bytes(store, data_a, names[0], cache=cache, max_pixels=max_pixels)
    vb = embed_bytes(store, data_b, names[1], cache=cache, max_pixels=max_pixels)
    return CompareResult(
        path_a=names[0], path_b=names[1], distance=_distance(va, vb), threshold=store.encoder.threshold
    )


def compare_paths(store: Store, a: str | os.PathLike[str], b: str | os.PathLike[str]) -> CompareResult:
    """Distance between two image files and the verdict at the model's threshold."""
    va, vb = store.embed_paths([Path(a), Path(b)])
    return CompareResult(path_a=str(a), path_b=str(b), distance=_distance(va, vb), threshold=store.encoder.threshold)


def image_thumbnail(store: Store, image_id: int, size: int = 160) -> bytes | None:
    """A JPEG thumbnail (longer side ``size``) of a catalog image's file; None when the id is unknown.

    Raises ImageError when the file is gone or no longer decodes.
    """
    info = store.catalog.images([image_id]).get(image_id)
    if info is None:
        return None
    return thumbnail_jpeg(load_image(info.path, target=size).image, size=size)

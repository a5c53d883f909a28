"""Queries with several views of one photo: centred crops, best view per catalog image (real store and model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.config import QUERY_CROPS
from dedup.imaging import centre_crops, load_image
from dedup.service import Store, embed_query_bytes, query_paths, search_vector
from dedup.service.cache import EmbeddingCache
from dedup.service.search import query_views
from dedup.types import IngestSummary

from .conftest import SAMPLE_QUERIES


def test_centre_crops_keep_the_centre() -> None:
    img = Image.new("RGB", (200, 100), "white")
    whole, half = centre_crops(img, (1.0, 0.5))
    assert whole is img and half.size == (100, 50)
    with pytest.raises(ValueError):
        centre_crops(img, (0.0,))


def test_query_distance_is_the_best_view(ingested: tuple[Store, IngestSummary]) -> None:
    store, _ = ingested
    photo = sorted(SAMPLE_QUERIES.glob("*.jpg"))[0]
    views = query_views(store, load_image(photo, target=store.encoder.input_size).image)
    assert views.shape == (len(QUERY_CROPS), store.encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(views, axis=1), 1.0, atol=1e-5)
    result = search_vector(store, photo.name, views, 5)
    ids, vectors = store.catalog.indexed_vectors(store.encoder.model_id)
    # Exact best-view distances over the whole catalog, by brute force.
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (vectors @ views.T))).min(axis=1)
    order = np.lexsort((ids, dist))[:5]
    assert [h.image.image_id for h in result.hits] == [int(i) for i in ids[order]]
    np.testing.assert_allclose([h.distance for h in result.hits], dist[order], atol=1e-4)
    # The whole view alone can only be farther from each hit.
    single = search_vector(store, photo.name, views[0], 5)
    assert single.hits[0].distance >= result.hits[0].distance - 1e-6


def test_query_of_catalog_bytes_finds_them_at_distance_zero(ingested: tuple[Store, IngestSummary]) -> None:
    store, _ = ingested
    info = store.catalog.images([1])[1]
    data = Path(info.path).read_bytes()
    cache = EmbeddingCache()
    views = embed_query_bytes(store, data, "x", cache=cache)
    assert embed_query_bytes(store, data, "x", cache=cache) is not None and cache.stats()["hits"] == 1
    top = search_vector(store, "x", views, 1).hits[0]
    assert top.distance < 1e-3
    paths = list(query_paths(store, [info.path], 1))
    assert not isinstance(paths[0], Exception) and paths[0].hits[0].distance < 1e-3

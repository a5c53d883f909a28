"""Queries with several views of one photo (crops, mirror images), best view per catalog image (real store, model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.config import ENV_QUERY_VIEWS, QUERY_VIEWS, QueryView, query_views_from_env
from dedup.errors import ConfigError
from dedup.imaging import load_image, view_images
from dedup.service import Store, embed_query_bytes, open_store, query_paths, search_vector
from dedup.service.cache import EmbeddingCache
from dedup.service.search import query_views
from dedup.types import IngestSummary

from .conftest import SAMPLE_QUERIES


def test_views_keep_the_centre_and_mirror_it() -> None:
    img = Image.new("RGB", (200, 100), "white")
    img.paste((255, 0, 0), (50, 25, 100, 75))  # red on the left half of the centre
    whole, half, mirrored = view_images(img, (QueryView(1.0), QueryView(0.5), QueryView(0.5, mirror=True)))
    assert whole is img and half.size == mirrored.size == (100, 50)
    assert half.getpixel((10, 25)) == (255, 0, 0) and half.getpixel((90, 25)) == (255, 255, 255)
    assert mirrored.getpixel((90, 25)) == (255, 0, 0) and mirrored.getpixel((10, 25)) == (255, 255, 255)
    with pytest.raises(ValueError):
        view_images(img, (QueryView(0.0),))


def test_off_centre_views_crop_around_their_centre_inside_the_frame() -> None:
    img = Image.new("RGB", (200, 100), "white")
    img.paste((0, 0, 255), (0, 0, 60, 30))  # blue in the top-left corner
    corner, clamped = view_images(img, (QueryView(0.5, cx=0.25, cy=0.25), QueryView(0.5, cx=0.0, cy=1.0)))
    assert corner.size == clamped.size == (100, 50)
    assert corner.getpixel((5, 5)) == (0, 0, 255) and corner.getpixel((80, 40)) == (255, 255, 255)
    assert clamped.getpixel((5, 5)) == (255, 255, 255)  # bottom-left quarter: moved inwards, no blue
    assert str(QueryView(0.6, True, 0.3, 0.7)) == "0.6m@0.3:0.7"


@pytest.fixture
def three_view_store(ingested: tuple[Store, IngestSummary], monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The ingested samples opened again with queries looking at three views."""
    monkeypatch.setenv(ENV_QUERY_VIEWS, "1,0.8,0.6m")
    with open_store(ingested[0].config.root) as store:
        yield store


def test_query_views_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert query_views_from_env() == QUERY_VIEWS
    monkeypatch.setenv(ENV_QUERY_VIEWS, "1, 0.7M")
    assert query_views_from_env() == (QueryView(1.0), QueryView(0.7, mirror=True))
    assert ",".join(map(str, query_views_from_env())) == "1,0.7m"
    monkeypatch.setenv(ENV_QUERY_VIEWS, "1,0.6@0.3:0.7,0.6m@1:0")
    assert query_views_from_env() == (QueryView(1.0), QueryView(0.6, False, 0.3, 0.7), QueryView(0.6, True, 1.0, 0.0))
    assert ",".join(map(str, query_views_from_env())) == "1,0.6@0.3:0.7,0.6m@1:0"
    for bad in ("0", "1,x", "1.5", "m", "0.8mm", "1,", "0.6@0.3", "0.6@2:0.5", "0.6@a:b"):
        monkeypatch.setenv(ENV_QUERY_VIEWS, bad)
        with pytest.raises(ConfigError):
            query_views_from_env()


def test_query_distance_is_the_best_view(three_view_store: Store) -> None:
    store = three_view_store
    photo = sorted(SAMPLE_QUERIES.glob("*.jpg"))[0]
    views = query_views(store, load_image(photo, target=store.encoder.input_size).image)
    assert views.shape == (3, store.encoder.dim)
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


def test_query_of_catalog_bytes_finds_them_at_distance_zero(three_view_store: Store) -> None:
    store = three_view_store
    info = store.catalog.images([1])[1]
    data = Path(info.path).read_bytes()
    cache = EmbeddingCache()
    views = embed_query_bytes(store, data, "x", cache=cache)
    assert embed_query_bytes(store, data, "x", cache=cache) is not None and cache.stats()["hits"] == 1
    top = search_vector(store, "x", views, 1).hits[0]
    assert top.distance < 1e-3
    paths = list(query_paths(store, [info.path], 1))
    assert not isinstance(paths[0], Exception) and paths[0].hits[0].distance < 1e-3

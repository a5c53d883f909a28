"""The duplicate report's neighbour graph: exact, IVF and compressed (IVF-PQ) searches against each other."""

from __future__ import annotations

import numpy as np
import pytest

from dedup.index.graph import neighbour_edges

THRESHOLD = 0.3


def _catalog(n: int, seed: int = 0) -> np.ndarray:
    """Families of similar unit vectors, a sixth of them near copies (distance 0.05–0.2) of another row."""
    rng = np.random.default_rng(seed)
    n_orig = int(n / 1.2)
    families = rng.normal(size=(max(1, n_orig // 50), 64)).astype(np.float32)
    x = families[rng.integers(0, len(families), n_orig)] + 0.6 * rng.normal(size=(n_orig, 64)).astype(np.float32)
    src = rng.integers(0, n_orig, n - n_orig)
    noise = rng.normal(size=(len(src), 64)).astype(np.float32)
    noise *= (rng.uniform(0.05, 0.2, len(src)) / np.linalg.norm(noise, axis=1)).astype(np.float32)[:, None]
    x = np.concatenate([x / np.linalg.norm(x, axis=1, keepdims=True), 0 * noise])
    x[n_orig:] = x[src] + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def catalog() -> np.ndarray:
    return _catalog(30_000)


def _pairs(edges: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[tuple[int, int], float]:
    a, b, d = edges
    assert np.all(a < b)
    return dict(zip(zip(a.tolist(), b.tolist(), strict=True), d.tolist(), strict=True))


def test_the_compressed_search_finds_the_exact_pairs_at_their_exact_distances(catalog: np.ndarray) -> None:
    exact = _pairs(neighbour_edges(catalog, THRESHOLD, exact=True))
    assert len(exact) > 4000
    for compressed in (False, True):
        found = _pairs(neighbour_edges(catalog, THRESHOLD, exact=False, compressed=compressed))
        assert found.keys() <= exact.keys()  # never a pair beyond the threshold
        for pair in list(found)[:2000]:
            assert abs(found[pair] - exact[pair]) < 1e-5  # distances re-scored on the raw vectors
        assert len(found) / len(exact) >= 0.99, (compressed, len(found), len(exact))

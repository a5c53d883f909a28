"""Keeper-centred clustering on small, hand-placed vectors."""

from __future__ import annotations

import numpy as np

from dedup.matching import keeper_clusters


def _unit(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), np.sin(a)], dtype=np.float32)


def _neighbours(vectors: np.ndarray, ids: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges (row positions a < b) within ``thr``: the reference for what a neighbour search returns."""
    d = np.sqrt(np.clip(2 - 2 * vectors @ vectors.T, 0, None))
    a, b = np.nonzero(np.triu(d <= thr, k=1))
    return a, b


def test_chain_does_not_merge_far_ends() -> None:
    # Points on the unit circle; threshold 0.2 ≈ 11.5° of arc.
    vectors = np.stack(
        [
            _unit(0),  # id 10: A
            _unit(10),  # id 11: B, close to A and to C
            _unit(20),  # id 12: C, close to B, far from A (d ≈ 0.35)
            _unit(90),  # id 13: alone
        ]
    )
    ids = np.array([10, 11, 12, 13], dtype=np.int64)
    preference = np.array([0, 1, 2, 3])  # A is the best keeper
    clusters = keeper_clusters(ids, vectors, _neighbours(vectors, ids, 0.2), 0.2, preference)
    assert [c.members for c in clusters] == [(10, 11)]  # C is left alone: it is far from keeper A
    assert clusters[0].distances[0] == 0.0
    assert 0.15 < clusters[0].distances[1] < 0.2


def test_keeper_in_the_middle_takes_both_ends() -> None:
    vectors = np.stack([_unit(0), _unit(10), _unit(20)])
    ids = np.array([1, 2, 3], dtype=np.int64)
    preference = np.array([1, 0, 2])  # B preferred: both A and C are within the threshold of B
    clusters = keeper_clusters(ids, vectors, _neighbours(vectors, ids, 0.2), 0.2, preference)
    assert len(clusters) == 1
    assert clusters[0].keeper == 2 and set(clusters[0].members) == {1, 2, 3}


def test_exact_copies_and_determinism() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vectors = np.concatenate([base, base[:5]])  # ids 50..54 are exact copies of ids 0..4
    ids = np.arange(55, dtype=np.int64)
    preference = np.arange(55)
    nb = _neighbours(vectors, ids, 0.05)
    first = keeper_clusters(ids, vectors, nb, 0.05, preference)
    second = keeper_clusters(ids, vectors, nb, 0.05, preference)
    assert first == second
    assert sorted(c.members for c in first) == [(i, i + 50) for i in range(5)]
    assert all(c.keeper == c.members[0] for c in first)


def test_empty_catalog() -> None:
    empty = np.zeros((0, 4), dtype=np.float32)
    no_edges = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert keeper_clusters(np.zeros(0, dtype=np.int64), empty, no_edges, 0.3, np.zeros(0)) == []


def test_not_duplicate_mark_splits_and_confirmed_mark_joins() -> None:
    vectors = np.stack(
        [
            _unit(0),  # id 1: keeper
            _unit(5),  # id 2: near 1, but marked "not a duplicate" of 1
            _unit(6),  # id 3: near 1 and 2
            _unit(60),  # id 4: far from everyone, confirmed duplicate of 3
        ]
    )
    ids = np.array([1, 2, 3, 4], dtype=np.int64)
    edges = _neighbours(vectors, ids, 0.2)
    clusters = keeper_clusters(ids, vectors, edges, 0.2, np.arange(4), must_link=[(3, 4)], cannot_link=[(1, 2)])
    assert [c.members for c in clusters] == [(1, 3, 4)]  # 2 is kept out; 4 rides with 3
    assert clusters[0].distances[2] > 0.2  # the confirmed member is reported with its real distance
    assert not any({1, 2} <= set(c.members) for c in clusters)

"""Clusters of near-duplicates that cannot chain.

Single-link grouping (connected components of the "closer than the threshold" graph) lets
A≈B and B≈C put A and C together even when they are far apart. Here every cluster is centred on its
keeper: the preferred member of a connected component is taken as keeper, every member within the
threshold *of the keeper* joins it, and the rest of the component is clustered again the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cluster:
    """One duplicate cluster: the keeper's id first, then members by distance to the keeper."""

    keeper: int
    members: tuple[int, ...]  # includes the keeper, at position 0
    distances: tuple[float, ...]  # to the keeper, aligned with members (0.0 for the keeper)


def _components(n: int, edges_a: np.ndarray, edges_b: np.ndarray) -> list[np.ndarray]:
    """Connected components (union-find with path halving) over positions 0..n-1."""
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    for a, b in zip(edges_a.tolist(), edges_b.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    order = np.argsort(roots, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(roots[order])) + 1)
    return [g for g in groups if len(g) > 1]


def keeper_clusters(
    ids: np.ndarray,
    vectors: np.ndarray,
    neighbours: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float,
    preference: np.ndarray,
) -> list[Cluster]:
    """Group near-duplicates around keepers.

    ``ids`` (n,) and ``vectors`` (n, d) describe the catalog; ``neighbours[i]`` holds (distances, ids)
    of the neighbours of ``ids[i]`` within ``threshold`` (as a range search returns them);
    ``preference`` (n,) ranks candidates as keeper, lower is better (0 = best). The result is
    deterministic: clusters are ordered by size (largest first), then by keeper id.
    """
    n = len(ids)
    if n == 0:
        return []
    pos_of = {int(i): p for p, i in enumerate(ids.tolist())}
    ea: list[int] = []
    eb: list[int] = []
    for p, (_, nb_ids) in enumerate(neighbours):
        for j in nb_ids.tolist():
            q = pos_of.get(int(j))
            if q is not None and q != p:
                ea.append(p)
                eb.append(q)
    clusters: list[Cluster] = []
    for comp in _components(n, np.asarray(ea, dtype=np.int64), np.asarray(eb, dtype=np.int64)):
        remaining = comp[np.lexsort((ids[comp], preference[comp]))]  # best keeper first, ties by id
        while len(remaining) > 1:
            keeper = remaining[0]
            # Distances to the keeper on the unit sphere, from the inner product (vectors are unit-norm).
            ip = vectors[remaining] @ vectors[keeper]
            dist = np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None))
            dist[0] = 0.0
            inside = dist <= threshold
            if int(inside.sum()) > 1:
                inside[0] = False  # the keeper goes first, whatever ties with it
                others, odist = remaining[inside], dist[inside]
                order = np.lexsort((ids[others], odist))
                members = np.concatenate([[keeper], others[order]])
                mdist = np.concatenate([[0.0], odist[order]])
                inside[0] = True
                clusters.append(
                    Cluster(
                        keeper=int(ids[keeper]),
                        members=tuple(int(ids[m]) for m in members),
                        distances=tuple(float(round(d, 6)) for d in mdist),
                    )
                )
                remaining = remaining[~inside]
            else:
                remaining = remaining[1:]
    clusters.sort(key=lambda c: (-len(c.members), c.keeper))
    return clusters

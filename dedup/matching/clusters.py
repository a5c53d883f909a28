"""Clusters of near-duplicates that cannot chain, respecting review decisions.

Single-link grouping (connected components of the "closer than the threshold" graph) lets A≈B and B≈C
put A and C together even when they are far apart. Here every cluster is centred on its keeper: the
preferred member of a connected component becomes keeper, every member within the threshold *of the
keeper* joins it, and the rest of the component is clustered again the same way.

Review decisions: a pair confirmed as duplicates always ends in one cluster (the pair moves as one
unit, and the images of a confirmed unit in a cluster are anchors like its keeper: a member within
the threshold of any anchor joins, so confirming A ≈ B never pulls A or B away from its own copies);
a pair marked not-duplicate never ends in one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cluster:
    """One duplicate cluster: the keeper's id first, then members by distance to the keeper."""

    keeper: int
    members: tuple[int, ...]  # includes the keeper, at position 0
    distances: tuple[float, ...]  # to the keeper, aligned with members (0.0 for the keeper)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self, nodes: np.ndarray | None = None) -> list[np.ndarray]:
        """Sets of positions sharing a root (all positions, or only ``nodes``), each sorted."""
        nodes = np.arange(len(self.parent)) if nodes is None else nodes
        roots = np.array([self.find(int(i)) for i in nodes], dtype=np.int64)
        order = np.argsort(roots, kind="stable")
        return np.split(nodes[order], np.flatnonzero(np.diff(roots[order])) + 1)


def _positions_of(ids: np.ndarray) -> Callable[[int], int | None]:
    """Id → row position by binary search: a dict over 10^6 ids would cost ~100 MB."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    n = len(ids)

    def position(image_id: int) -> int | None:
        k = int(np.searchsorted(sorted_ids, image_id))
        return int(order[k]) if k < n and sorted_ids[k] == image_id else None

    return position


def _pairs(position: Callable[[int], int | None], pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Id pairs as row-position pairs, dropping pairs with an id not in the catalog."""
    out = []
    for a, b in pairs:
        pa, pb = position(a), position(b)
        if pa is not None and pb is not None:
            out.append((pa, pb))
    return out


def _graph(
    n: int, edges: tuple[np.ndarray, np.ndarray], must: Sequence[tuple[int, int]]
) -> tuple[_UnionFind, _UnionFind, np.ndarray]:
    """The duplicate graph's components, the confirmed units, and the positions with an edge or a mark."""
    graph = _UnionFind(n)
    for a, b in zip(np.asarray(edges[0]).tolist(), np.asarray(edges[1]).tolist(), strict=True):
        graph.union(a, b)
    units = _UnionFind(n)  # confirmed pairs move together
    for a, b in must:
        graph.union(a, b)
        units.union(a, b)
    touched = np.unique(
        np.concatenate(
            [
                np.asarray(edges[0], np.int64),
                np.asarray(edges[1], np.int64),
                np.asarray([p for pair in must for p in pair], np.int64),
            ]
        )
    )
    return graph, units, touched


def duplicate_components(
    ids: np.ndarray, edges: tuple[np.ndarray, np.ndarray], must_link: Iterable[tuple[int, int]] = ()
) -> list[list[int]]:
    """Image ids of each connected component (of two or more) of the duplicate graph plus confirmed pairs.

    The members of one component are the candidates that :func:`keeper_clusters` may put in one cluster,
    so a keeper rule that compares members (``central``) compares them within a component.
    """
    if len(ids) == 0:
        return []
    graph, _, touched = _graph(len(ids), edges, _pairs(_positions_of(ids), must_link))
    return [ids[comp].tolist() for comp in graph.groups(touched) if len(comp) > 1]


def keeper_clusters(
    ids: np.ndarray,
    vectors: np.ndarray,
    edges: tuple[np.ndarray, np.ndarray],
    threshold: float,
    preference: np.ndarray,
    must_link: Iterable[tuple[int, int]] = (),
    cannot_link: Iterable[tuple[int, int]] = (),
) -> list[Cluster]:
    """Group near-duplicates around keepers.

    ``ids`` (n,) and unit-norm ``vectors`` (n, d) describe the catalog; ``edges`` are two arrays of row
    positions of pairs within ``threshold`` (from a neighbour search); ``preference`` (n,) ranks keeper
    candidates, lower is better. ``must_link`` / ``cannot_link`` are pairs of *ids* (review decisions).
    A confirmed pair is one unit, and its images are anchors of the cluster it joins: another member
    joins when it is within the threshold of the keeper or of an anchor, so confirming A ≈ B keeps the
    copies of A and of B with them.
    Deterministic: clusters come largest first, then by keeper id.
    """
    n = len(ids)
    if n == 0:
        return []
    position = _positions_of(ids)
    must = _pairs(position, must_link)
    cannot = {(min(a, b), max(a, b)) for a, b in _pairs(position, cannot_link)}
    graph, units, touched = _graph(n, edges, must)
    clusters: list[Cluster] = []
    for comp in graph.groups(touched):
        if len(comp) < 2:
            continue
        clusters.extend(_split_component(comp, ids, vectors, threshold, preference, units, cannot))
    clusters.sort(key=lambda c: (-len(c.members), c.keeper))
    return clusters


def _nearest(vectors: np.ndarray, rows: np.ndarray, anchors: Sequence[int]) -> np.ndarray:
    """Distance on the unit sphere from each of ``rows`` to the nearest of ``anchors`` (row positions)."""
    ip = vectors[rows] @ vectors[np.asarray(anchors, dtype=np.int64)].T
    return np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None)).min(axis=1)


def _split_component(
    comp: np.ndarray,
    ids: np.ndarray,
    vectors: np.ndarray,
    threshold: float,
    preference: np.ndarray,
    units: _UnionFind,
    cannot: set[tuple[int, int]],
) -> list[Cluster]:
    unit_of = {int(p): units.find(int(p)) for p in comp}
    members_of: dict[int, list[int]] = {}
    for p in comp.tolist():
        members_of.setdefault(unit_of[p], []).append(p)
    remaining = sorted(comp.tolist(), key=lambda p: (preference[p], ids[p]))  # best keeper first
    out: list[Cluster] = []
    while len(remaining) > 1:
        keeper = remaining[0]
        rem = np.asarray(remaining, dtype=np.int64)
        # Distances on the unit sphere, from the inner product, to the keeper: what the report shows.
        to_keeper = np.sqrt(np.clip(2.0 - 2.0 * (vectors[rem] @ vectors[keeper]), 0.0, None))
        k_of = dict(zip(remaining, to_keeper.tolist(), strict=True))
        k_of[keeper] = 0.0
        chosen = list(members_of[unit_of[keeper]])
        chosen_units = {unit_of[keeper]}
        # Who joins is measured from the anchors: the keeper's unit, and every confirmed unit (two or more
        # images) that joined, so each image of a confirmed pair brings its own near copies along.
        nearest = _nearest(vectors, rem, chosen)
        grown = True
        while grown:
            grown = False
            d_of = dict(zip(remaining, nearest.tolist(), strict=True))
            # Other units, closest member first; a unit joins when its closest member is within the threshold.
            candidates = sorted(
                {unit_of[p] for p in remaining} - chosen_units,
                key=lambda u: (min(d_of[m] for m in members_of[u]), min(ids[m] for m in members_of[u])),
            )
            for u in candidates:
                if min(d_of[m] for m in members_of[u]) > threshold:
                    break
                if any((min(a, b), max(a, b)) in cannot for a in members_of[u] for b in chosen):
                    continue
                chosen.extend(members_of[u])
                chosen_units.add(u)
                if len(members_of[u]) > 1:
                    nearest = np.minimum(nearest, _nearest(vectors, rem, members_of[u]))
                    grown = True
                    break  # new anchors: rank the rest again
        taken = set(chosen)
        if len(chosen) > 1:
            others = sorted((m for m in chosen if m != keeper), key=lambda m: (k_of[m], ids[m]))
            out.append(
                Cluster(
                    keeper=int(ids[keeper]),
                    members=(int(ids[keeper]), *(int(ids[m]) for m in others)),
                    distances=(0.0, *(round(float(k_of[m]), 6) for m in others)),
                )
            )
        remaining = [p for p in remaining if p not in taken]
    return out

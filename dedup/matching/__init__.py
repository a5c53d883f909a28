"""Pure-numpy duplicate matching: neighbour graphs, clusters that do not chain, keeper choice."""

from dedup.matching.clusters import Cluster, duplicate_components, keeper_clusters
from dedup.matching.keeper import DEFAULT_KEEP, KeepPolicy

__all__ = ["DEFAULT_KEEP", "Cluster", "KeepPolicy", "duplicate_components", "keeper_clusters"]

"""Pure-numpy duplicate matching: neighbour graphs, clusters that do not chain, keeper choice."""

from dedup.matching.clusters import Cluster, keeper_clusters

__all__ = ["Cluster", "keeper_clusters"]

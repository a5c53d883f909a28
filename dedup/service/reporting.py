"""The duplicate report job: catalog vectors → neighbours below the threshold → keeper clusters."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time

import numpy as np

from dedup.matching import keeper_clusters
from dedup.service.store import Store
from dedup.types import ImageInfo

log = logging.getLogger(__name__)


def _tier(member: ImageInfo, keeper: ImageInfo) -> str:
    if member.sha256 == keeper.sha256:
        return "exact"
    if member.pixel_hash and member.pixel_hash == keeper.pixel_hash:
        return "same_pixels"
    return "near"


def _member(info: ImageInfo, distance: float, tier: str) -> dict[str, object]:
    return {
        "image_id": info.image_id,
        "path": info.path,
        "product_id": info.product_id,
        "sha256": info.sha256,
        "width": info.width,
        "height": info.height,
        "bytes": info.bytes,
        "distance": round(distance, 6),
        "tier": tier,
    }


def build_report(store: Store, threshold: float | None = None) -> dict[str, object]:
    """Cluster the catalog's near-duplicates and return the report JSON of DESIGN.md.

    The keeper of each cluster is the highest resolution copy, then the largest file, then the
    earliest ingested; every member is within ``threshold`` of its keeper.
    """
    started = time.monotonic()
    thr = store.encoder.threshold if threshold is None else float(threshold)
    if thr < 0:
        raise ValueError(f"threshold must be a distance ≥ 0, got {thr}")
    ids, vectors = store.catalog.indexed_vectors(store.encoder.model_id)
    index = store.index
    neighbours = index.range_search(vectors, thr) if len(ids) else []
    infos = store.catalog.images(ids.tolist())
    # Keeper preference: more pixels, then more bytes, then ingested earlier (lower rank = better).
    keys = [
        (-infos[i].width * infos[i].height, -infos[i].bytes, infos[i].ingested_at.timestamp(), i) for i in ids.tolist()
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    preference = np.empty(len(keys), dtype=np.int64)
    preference[np.asarray(order, dtype=np.int64)] = np.arange(len(keys))
    clusters = keeper_clusters(ids, vectors, neighbours, thr, preference)
    out_clusters = []
    for c in clusters:
        keeper = infos[c.keeper]
        members = [
            _member(infos[m], d, _tier(infos[m], keeper) if m != c.keeper else "keeper")
            for m, d in zip(c.members, c.distances, strict=True)
        ]
        cid = hashlib.sha256(keeper.sha256.encode()).hexdigest()[:16]
        out_clusters.append(
            {
                "id": cid,
                "keep": members[0],
                "reason": "highest resolution, then largest file, then oldest",
                "members": members,
            }
        )
    duplicates = sum(len(c.members) - 1 for c in clusters)
    return {
        "threshold": thr,
        "model": store.encoder.model_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "clusters": out_clusters,
        "summary": {
            "images": int(len(ids)),
            "clusters": len(clusters),
            "duplicates": duplicates,
            "seconds": round(time.monotonic() - started, 3),
        },
    }

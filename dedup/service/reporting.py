"""The duplicate report job: catalog vectors → neighbour graph → keeper clusters → history and diff."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import ConfigError, InputError
from dedup.matching import keeper_clusters
from dedup.service.store import Store
from dedup.types import ImageInfo

log = logging.getLogger(__name__)

DEFAULT_KEEP = "resolution,size,oldest"
_POLICY_WORDS = {
    "resolution": "highest resolution",
    "size": "largest file",
    "oldest": "ingested first",
    "newest": "ingested last",
}


def parse_keep_policy(text: str) -> list[str]:
    """Split and check a keeper policy such as ``folder:/data/master,resolution,size,oldest``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError("the keep policy is empty; use e.g. resolution,size,oldest")
    out = []
    for item in items:
        if item.startswith("folder:") and len(item) > len("folder:"):
            # Absolute, with a trailing separator, once: "/data/master" must not match "/data/master-old/x.jpg".
            item = "folder:" + os.path.join(os.path.abspath(item[len("folder:") :]), "")
        elif item not in _POLICY_WORDS:
            raise ConfigError(
                f"unknown keep policy {item!r}; use resolution, size, oldest, newest or folder:PATH, comma-separated"
            )
        out.append(item)
    return out


def _policy_key(info: ImageInfo, policy: Sequence[str]) -> tuple[Any, ...]:
    """Sort key of a keeper candidate under a parsed ``policy`` (smaller is better); ties end on the image id."""
    key: list[Any] = []
    for item in policy:
        if item == "resolution":
            key.append(-info.width * info.height)
        elif item == "size":
            key.append(-info.bytes)
        elif item == "oldest":
            key.append(info.ingested_at.timestamp())
        elif item == "newest":
            key.append(-info.ingested_at.timestamp())
        else:  # folder:PATH, normalised by parse_keep_policy
            key.append(0 if info.path.startswith(item[len("folder:") :]) else 1)
    key.append(info.image_id)
    return tuple(key)


def _reason(keeper: ImageInfo, runner_up: ImageInfo, policy: Sequence[str]) -> str:
    """Why the keeper won: the first policy rule that tells it from the next best member."""
    kk, kr = _policy_key(keeper, policy), _policy_key(runner_up, policy)
    for item, a, b in zip(policy, kk, kr, strict=False):
        if a != b:
            if item.startswith("folder:"):
                return f"in the preferred folder {item[len('folder:') :]}"
            if item == "resolution":
                return f"highest resolution ({keeper.width}x{keeper.height})"
            if item == "size":
                return f"largest file ({keeper.bytes:,} bytes)"
            return _POLICY_WORDS[item]
    return "tie on every rule: lowest image id"


def _tier(member: ImageInfo, keeper: ImageInfo) -> str:
    if member.sha256 == keeper.sha256:
        return "exact"
    if member.pixel_hash and member.pixel_hash == keeper.pixel_hash:
        return "same_pixels"
    return "near"


def _member(info: ImageInfo, distance: float, tier: str, confirmed: bool) -> dict[str, Any]:
    return {
        "image_id": info.image_id,
        "path": info.path,
        "product_id": info.product_id,
        "title": info.title,
        "sha256": info.sha256,
        "width": info.width,
        "height": info.height,
        "bytes": info.bytes,
        "format": info.format,
        "distance": round(distance, 6),
        "tier": tier,
        "confirmed": confirmed,
    }


def _positions(ids: np.ndarray, wanted: Sequence[int]) -> np.ndarray:
    """Row positions of ``wanted`` image ids in ``ids`` (sorted, as the catalog returns them); -1 when absent.

    A binary search, not a dict over the whole catalog (which costs ~100 MB at 10^6 images).
    """
    w = np.asarray(wanted, dtype=np.int64)
    pos = np.searchsorted(ids, w)
    inside = pos < len(ids)
    found = np.zeros(len(w), dtype=bool)
    found[inside] = ids[pos[inside]] == w[inside]
    return np.where(found, pos, -1)


def cluster_id(anchor_path: str) -> str:
    """Stable cluster id from the path of its earliest-ingested member (lowest image id).

    New images get higher ids, so a cluster keeps its id when it grows, shrinks or changes keeper.
    """
    return hashlib.sha256(anchor_path.encode("utf-8")).hexdigest()[:16]


def _diff(current: dict[str, set[int]], previous: dict[str, set[int]]) -> tuple[dict[str, str], list[str]]:
    """Change of each current cluster against the previous run, and the previous ids that are gone."""
    change: dict[str, str] = {}
    for cid, members in current.items():
        old = previous.get(cid)
        if old is None:
            change[cid] = "new"
        elif old == members:
            change[cid] = "unchanged"
        elif old < members:
            change[cid] = "grown"
        elif members < old:
            change[cid] = "shrunk"
        else:
            change[cid] = "changed"
    resolved = sorted(set(previous) - set(current))
    return change, resolved


def build_report(
    store: Store,
    threshold: float | None = None,
    keep: str = DEFAULT_KEEP,
    since: int | None = None,
    save: bool = True,
    exact: bool | None = None,
) -> dict[str, Any]:
    """Cluster the catalog's near-duplicates and return the report (the JSON of DESIGN.md, extended).

    Every member is within ``threshold`` of its cluster's keeper (review-confirmed pairs excepted); the
    keeper is chosen by the ``keep`` policy. The run is compared with run ``since`` (default: the
    previous run) and, with ``save``, stored in the catalog's history and under ``<store>/reports/``.
    """
    started = time.monotonic()
    from dedup.index.graph import neighbour_edges

    thr = store.encoder.threshold if threshold is None else float(threshold)
    if not 0.0 <= thr <= 2.0:
        raise ConfigError(f"threshold must be a distance between 0 and 2, got {thr}")
    policy = parse_keep_policy(keep)
    catalog = store.catalog
    if since is not None and catalog.report_run(since) is None:
        raise InputError(f"there is no report run {since} to compare with")
    store.require_current_model()
    ids, vectors = catalog.indexed_vectors(store.encoder.model_id)
    a, b, _ = neighbour_edges(vectors, thr, exact=exact) if len(ids) > 1 else (np.zeros(0, np.int64),) * 3
    marks = catalog.marks()
    must = [(x, y) for x, y, d in marks if d == "duplicate"]
    cannot = [(x, y) for x, y, d in marks if d == "not_duplicate"]
    # Only images with a neighbour or a mark can be in a cluster: load their facts, not the whole catalog's.
    touched = set(ids[np.unique(np.concatenate([a, b]))].tolist()) if len(a) else set()
    touched |= {i for pair in must for i in pair}
    infos = catalog.images(sorted(touched))
    preference = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
    ranked = sorted(infos.values(), key=lambda info: _policy_key(info, policy))
    ranked_pos = _positions(ids, [info.image_id for info in ranked])
    known = ranked_pos >= 0
    preference[ranked_pos[known]] = np.arange(len(ranked))[known]
    clusters = keeper_clusters(ids, vectors, (a, b), thr, preference, must_link=must, cannot_link=cannot)

    confirmed_pairs = {(x, y) for x, y in must}
    out_clusters: list[dict[str, Any]] = []
    for c in clusters:
        keeper = infos[c.keeper]
        runner_up = min((infos[m] for m in c.members[1:]), key=lambda info: _policy_key(info, policy))
        members = []
        for m, d in zip(c.members, c.distances, strict=True):
            tier = "keeper" if m == c.keeper else _tier(infos[m], keeper)
            confirmed = any((min(m, o), max(m, o)) in confirmed_pairs for o in c.members if o != m)
            members.append(_member(infos[m], d, tier, confirmed))
        out_clusters.append(
            {
                "id": cluster_id(infos[min(c.members)].path),
                "keep": members[0],
                "reason": _reason(keeper, runner_up, policy),
                "members": members,
            }
        )
    separated = [
        {"a": x, "b": y}
        for x, y in cannot
        if (x in touched or y in touched) and bool((_positions(ids, [x, y]) >= 0).all())
    ]

    previous_id = since if since is not None else catalog.previous_report_run()
    previous = (
        {cid: {m[0] for m in ms} for cid, ms in catalog.report_clusters(previous_id).items()}
        if previous_id is not None
        else {}
    )
    change, resolved = _diff({c["id"]: {m["image_id"] for m in c["members"]} for c in out_clusters}, previous)
    tiers: dict[str, int] = {}
    for oc in out_clusters:
        oc["change"] = change[oc["id"]]
        for m in oc["members"][1:]:
            tiers[m["tier"]] = tiers.get(m["tier"], 0) + 1
    summary: dict[str, Any] = {
        "images": int(len(ids)),
        "clusters": len(out_clusters),
        "duplicates": sum(len(c["members"]) - 1 for c in out_clusters),
        "by_tier": tiers,
        "changes": {
            k: sum(1 for c in out_clusters if c["change"] == k)
            for k in ("new", "grown", "shrunk", "changed", "unchanged")
        },
        "resolved": len(resolved),
        "review_marks": {"duplicate": len(must), "not_duplicate": len(cannot)},
        "seconds": round(time.monotonic() - started, 3),
    }
    report: dict[str, Any] = {
        "threshold": thr,
        "model": store.encoder.model_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "keep_policy": policy,
        "run_id": None,
        "previous_run_id": previous_id,
        "clusters": out_clusters,
        "resolved": [{"id": cid, "image_ids": sorted(previous[cid])} for cid in resolved],
        "not_duplicate_marks": separated,
        "summary": summary,
    }
    if save:
        _save(store, report)
    return report


def _save(store: Store, report: dict[str, Any]) -> None:
    """Store the run in the catalog history and as JSON under ``<store>/reports/`` (``latest.json`` too)."""
    rows = [
        (c["id"], m["image_id"], m["path"], m["tier"] == "keeper", m["tier"], float(m["distance"]))
        for c in report["clusters"]
        for m in c["members"]
    ]
    run_id = store.catalog.save_report(
        report["threshold"],
        report["model"],
        {"keep_policy": report["keep_policy"], "previous_run_id": report["previous_run_id"]},
        report["summary"],
        rows,
    )
    report["run_id"] = run_id
    folder = store.config.reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    for name in (f"run-{run_id:06d}.json", "latest.json"):
        tmp = folder / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)  # readers (the HTTP API) never see a half-written file


def thumbnails(report: dict[str, Any], size: int = 160, limit: int = 2000) -> dict[str, str]:
    """Data-URI JPEG thumbnails of report members (at most ``limit``), by path; unreadable files are skipped."""
    import base64

    from dedup.errors import ImageError
    from dedup.imaging import load_image, thumbnail_jpeg

    out: dict[str, str] = {}
    for c in report["clusters"]:
        for m in c["members"]:
            if len(out) >= limit:
                return out
            path = m["path"]
            if path in out:
                continue
            try:
                data = thumbnail_jpeg(load_image(Path(path), target=size).image, size)
            except ImageError as exc:
                log.info("no thumbnail for %s: %s", path, exc.reason)
                continue
            out[path] = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
    return out

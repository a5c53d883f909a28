"""The duplicate report job: catalog vectors → neighbour graph → keeper clusters → history and diff.

:func:`build_report` composes the parts: the neighbour graph of the catalog's vectors
(``dedup.index.graph``), the keeper policy's order of each component's members
(``dedup.matching.keeper``, with pixel signals from ``dedup.service.signals``), clusters that do not
chain (``dedup.matching.clusters``), then the change of each cluster against the previous run. The
result is a typed :class:`~dedup.types.Report`; :func:`save_report` adds it to the history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dedup.errors import ConfigError, InputError
from dedup.fsutil import atomic_write_bytes, atomic_write_text
from dedup.matching import DEFAULT_KEEP, KeepPolicy, duplicate_components, keeper_clusters
from dedup.matching.keeper import Candidate, keeper_order, keeper_reason
from dedup.service.signals import pixel_signals
from dedup.service.store import Store
from dedup.types import ImageInfo, Report, ReportCluster, ReportMember, ReportSummary

log = logging.getLogger(__name__)


def _candidate(info: ImageInfo) -> Candidate:
    return Candidate(info.image_id, info.path, info.width, info.height, info.bytes, info.ingested_at.timestamp())


def _tier(member: ImageInfo, keeper: ImageInfo) -> str:
    if member.sha256 == keeper.sha256:
        return "exact"
    if member.pixel_hash and member.pixel_hash == keeper.pixel_hash:
        return "same_pixels"
    return "near"


def _member(info: ImageInfo, distance: float, tier: str, confirmed: bool) -> ReportMember:
    return ReportMember(
        image_id=info.image_id,
        path=info.path,
        product_id=info.product_id,
        title=info.title,
        sha256=info.sha256,
        width=info.width,
        height=info.height,
        bytes=info.bytes,
        format=info.format,
        distance=round(distance, 6),
        tier=tier,
        confirmed=confirmed,
    )


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
) -> Report:
    """Cluster the catalog's near-duplicates and return the report.

    Every member is within ``threshold`` of its cluster's keeper (or of an image confirmed as the
    keeper's duplicate); the keeper is chosen by the ``keep`` policy (``dedup.matching.keeper``). The
    run is compared with run ``since`` (default: the previous run); with ``save`` it is stored in the
    catalog's history and under ``<store>/reports/`` (:func:`save_report` does it later otherwise).
    """
    started = time.monotonic()
    from dedup.index.graph import neighbour_edges

    thr = store.encoder.threshold if threshold is None else float(threshold)
    if not 0.0 <= thr <= 2.0:
        raise ConfigError(f"threshold must be a distance between 0 and 2, got {thr}")
    policy = KeepPolicy.parse(keep)
    catalog = store.catalog
    if since is not None and catalog.report_run(since) is None:
        raise InputError(f"there is no report run {since} to compare with")
    store.require_current_model()
    ids, vectors = catalog.indexed_vectors(store.encoder.model_id)
    a, b, _ = neighbour_edges(vectors, thr, exact=exact) if len(ids) > 1 else (np.zeros(0, np.int64),) * 3
    marks = catalog.marks()
    must = [(x, y) for x, y, d in marks if d == "duplicate"]
    cannot = [(x, y) for x, y, d in marks if d == "not_duplicate"]
    # Only images with a neighbour or a confirmed mark can be in a cluster: load their facts, not the catalog's.
    components = duplicate_components(ids, (a, b), must)
    touched = sorted({i for comp in components for i in comp})
    infos = catalog.images(touched)
    components = [[i for i in comp if i in infos] for comp in components]
    candidates = {i: _candidate(info) for i, info in infos.items()}
    signals = pixel_signals(store, infos.values()) if policy.needs_pixels else {}
    ranked, facts = keeper_order(components, candidates, signals, policy)
    preference = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
    ranked_pos = _positions(ids, ranked)
    known = ranked_pos >= 0
    preference[ranked_pos[known]] = np.arange(len(ranked))[known]
    found = keeper_clusters(ids, vectors, (a, b), thr, preference, must_link=must, cannot_link=cannot)

    confirmed_pairs = set(must)
    rank_of = {image_id: r for r, image_id in enumerate(ranked)}
    drafts: list[tuple[str, tuple[ReportMember, ...], tuple[str, str]]] = []
    for c in found:
        keeper = infos[c.keeper]
        runner_up = min(c.members[1:], key=rank_of.__getitem__)
        members = tuple(
            _member(
                infos[m],
                d,
                "keeper" if m == c.keeper else _tier(infos[m], keeper),
                any((min(m, o), max(m, o)) in confirmed_pairs for o in c.members if o != m),
            )
            for m, d in zip(c.members, c.distances, strict=True)
        )
        why = keeper_reason(candidates[c.keeper], candidates[runner_up], policy, signals, facts)
        drafts.append((cluster_id(infos[min(c.members)].path), members, why))
    separated = tuple(
        (x, y) for x, y in cannot if (x in infos or y in infos) and bool((_positions(ids, [x, y]) >= 0).all())
    )

    previous_id = since if since is not None else catalog.previous_report_run()
    previous = (
        {cid: {m[0] for m in ms} for cid, ms in catalog.report_clusters(previous_id).items()}
        if previous_id is not None
        else {}
    )
    change, resolved = _diff({cid: {m.image_id for m in ms} for cid, ms, _ in drafts}, previous)
    clusters = tuple(
        ReportCluster(id=cid, members=ms, reason=why[1], keep_rule=why[0], change=change[cid])
        for cid, ms, why in drafts
    )
    tiers: dict[str, int] = {}
    for cl in clusters:
        for m in cl.remove:
            tiers[m.tier] = tiers.get(m.tier, 0) + 1
    summary = ReportSummary(
        images=int(len(ids)),
        clusters=len(clusters),
        duplicates=sum(len(cl.remove) for cl in clusters),
        by_tier=tiers,
        changes={k: sum(1 for cl in clusters if cl.change == k) for k in CHANGES},
        resolved=len(resolved),
        review_marks={"duplicate": len(must), "not_duplicate": len(cannot)},
        seconds=time.monotonic() - started,
    )
    report = Report(
        threshold=thr,
        model=store.encoder.model_id,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        keep_policy=policy.rules,
        run_id=None,
        previous_run_id=previous_id,
        clusters=clusters,
        resolved=tuple((cid, tuple(sorted(previous[cid]))) for cid in resolved),
        not_duplicate_marks=separated,
        summary=summary,
    )
    return save_report(store, report) if save else report


#: The changes a cluster can show against the previous run, in the order the summary lists them.
CHANGES = ("new", "grown", "shrunk", "changed", "unchanged")


def save_report(store: Store, report: Report) -> Report:
    """Store the run in the catalog history and as JSON under ``<store>/reports/`` (``latest.json`` too).

    Returns the report with its ``run_id``. A run in the history is what the next run's
    "new/grown/resolved" is counted against, so a report that then fails to reach its reader must be
    taken back with :func:`forget_report`.
    """
    rows = [
        (c.id, m.image_id, m.path, m.tier == "keeper", m.tier, float(m.distance))
        for c in report.clusters
        for m in c.members
    ]
    run_id = store.catalog.save_report(
        report.threshold,
        report.model,
        {"keep_policy": list(report.keep_policy), "previous_run_id": report.previous_run_id},
        report.summary.as_dict(),
        rows,
    )
    report = dataclasses.replace(report, run_id=run_id)
    folder = store.config.reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.as_dict(), indent=2)
    for name in (f"run-{run_id:06d}.json", "latest.json"):
        atomic_write_text(folder / name, text)  # readers (the HTTP API) never see a half-written file
    return report


def forget_report(store: Store, report: Report) -> None:
    """Undo :func:`save_report`: drop the run from the history and its JSON, and point ``latest.json`` back
    at the run before it (or remove it). For a report whose output could not be written."""
    if report.run_id is None:
        return
    store.catalog.delete_report_run(report.run_id)
    folder = store.config.reports_dir
    (folder / f"run-{report.run_id:06d}.json").unlink(missing_ok=True)
    previous = store.catalog.previous_report_run()
    latest = folder / "latest.json"
    source = folder / f"run-{previous:06d}.json" if previous is not None else None
    if source is not None and source.is_file():
        atomic_write_bytes(latest, source.read_bytes())
    else:
        latest.unlink(missing_ok=True)


def thumbnails(report: Report, size: int = 160, limit: int = 2000) -> dict[str, str]:
    """Data-URI JPEG thumbnails of report members (at most ``limit``), by path; unreadable files are skipped."""
    import base64

    from dedup.errors import ImageError
    from dedup.imaging import load_image, thumbnail_jpeg

    out: dict[str, str] = {}
    for c in report.clusters:
        for m in c.members:
            if len(out) >= limit:
                return out
            path = m.path
            if path in out:
                continue
            try:
                data = thumbnail_jpeg(load_image(Path(path), target=size).image, size)
            except ImageError as exc:
                log.info("no thumbnail for %s: %s", path, exc.reason)
                continue
            out[path] = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
    return out

"""Plain result and record types shared by every layer (no behaviour, no heavy imports)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Image row status values.
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_MISSING = "missing"


def distance_to_similarity(distance: float) -> float:
    """Cosine similarity of two unit vectors from their Euclidean distance (``1 - d²/2``), clipped to [0, 1]."""
    return float(min(1.0, max(0.0, 1.0 - distance * distance / 2.0)))


@dataclass(frozen=True)
class ProductRecord:
    """One product from the metadata CSV (or implied by a file stem)."""

    product_id: str
    title: str | None = None
    category: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRecord:
    """A successfully decoded image file, as ingest writes it to the catalog."""

    path: str  # absolute path, the image's identity in the catalog
    sha256: str  # of the file bytes
    pixel_hash: str  # sha256 of the normalised decoded pixels (same picture, other encoding → same hash)
    width: int  # of the original image (after EXIF orientation)
    height: int
    format: str  # Pillow format name, e.g. "JPEG"
    bytes: int
    mtime: float
    product_id: str | None


@dataclass(frozen=True)
class FailedFile:
    """A file that could not be ingested, with a reason a person understands."""

    path: str
    kind: str  # short machine-readable reason, see dedup.errors.ImageError
    reason: str
    bytes: int | None = None
    mtime: float | None = None


@dataclass(frozen=True)
class KnownFile:
    """What the catalog already knows about a path, to decide whether a file changed."""

    image_id: int
    path: str
    bytes: int | None
    mtime: float | None
    sha256: str | None
    status: str
    model_id: str | None


@dataclass(frozen=True)
class ImageInfo:
    """An image row joined with its product, as queries and reports show it."""

    image_id: int
    path: str
    product_id: str | None
    sha256: str
    pixel_hash: str | None
    width: int
    height: int
    bytes: int
    format: str | None
    ingested_at: dt.datetime
    title: str | None = None
    category: str | None = None


@dataclass
class IngestSummary:
    """Counts of one ingest run: ``seen == new + reused + changed + unchanged + failed + known_failed``.

    ``failures`` are this run's new failures (files read and refused now); ``known_failures`` are files
    that failed before and are unchanged since (same size and mtime): they are not read again, and only
    new failures make ``dedup ingest`` exit 3, so a nightly run over a folder with one broken file the
    shop never fixes exits 0 after the first night.
    """

    seen: int = 0
    new: int = 0  # embedded for the first time (new content)
    changed: int = 0  # known path whose content changed
    unchanged: int = 0  # path, size and mtime as before: skipped without reading
    reused: int = 0  # new path whose content (sha256) was already embedded: vector reused
    failed: int = 0  # new failures of this run
    known_failed: int = 0  # unchanged files that failed before
    pruned: int = 0
    products_updated: int = 0  # unchanged images whose product changed in the metadata CSV
    orphan_products: int = 0  # products left without images (see ``orphans``)
    seconds: float = 0.0
    failures: list[FailedFile] = field(default_factory=list)
    known_failures: list[FailedFile] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # product ids with no image any more

    @property
    def images_per_second(self) -> float:
        """Files handled per wall-clock second (seen / seconds)."""
        return self.seen / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view (failures as path/kind/reason)."""
        return {
            "seen": self.seen,
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "reused": self.reused,
            "failed": self.failed,
            "known_failed": self.known_failed,
            "pruned": self.pruned,
            "products_updated": self.products_updated,
            "orphan_products": self.orphan_products,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "failures": [{"path": f.path, "kind": f.kind, "reason": f.reason} for f in self.failures],
            "known_failures": [{"path": f.path, "kind": f.kind, "reason": f.reason} for f in self.known_failures],
            "orphans": list(self.orphans),
        }


@dataclass(frozen=True)
class Hit:
    """One query result."""

    rank: int
    distance: float
    image: ImageInfo

    @property
    def similarity(self) -> float:
        return distance_to_similarity(self.distance)


@dataclass(frozen=True)
class QueryResult:
    """The top-k neighbours of one query image."""

    query: str
    k: int
    hits: list[Hit]
    per_product: bool = False  # one hit per product (its best image)

    def as_dict(self) -> dict[str, object]:
        """The query JSON of DESIGN.md."""
        return {
            "query": self.query,
            "k": self.k,
            "per_product": self.per_product,
            "results": [
                {
                    "rank": h.rank,
                    "path": h.image.path,
                    "product_id": h.image.product_id,
                    "distance": round(h.distance, 6),
                    "similarity": round(h.similarity, 6),
                }
                for h in self.hits
            ],
        }


@dataclass(frozen=True)
class CompareResult:
    """Distance and verdict for two images."""

    path_a: str
    path_b: str
    distance: float
    threshold: float

    @property
    def similarity(self) -> float:
        return distance_to_similarity(self.distance)

    @property
    def duplicate(self) -> bool:
        return self.distance <= self.threshold

    def as_dict(self) -> dict[str, object]:
        """The compare JSON of the command line and the HTTP API."""
        return {
            "a": self.path_a,
            "b": self.path_b,
            "similarity": round(self.similarity, 6),
            "distance": round(self.distance, 6),
            "threshold": self.threshold,
            "duplicate": self.duplicate,
        }


#: Version of the report JSON. Version 2 added ``schema_version`` and each cluster's ``keep_rule`` to the
#: fields of version 1, which it keeps as they were.
REPORT_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class ReportMember:
    """One image of a duplicate cluster, with its distance to the cluster's keeper."""

    image_id: int
    path: str
    product_id: str | None
    title: str | None
    sha256: str
    width: int
    height: int
    bytes: int
    format: str | None
    distance: float  # to the keeper (0.0 for the keeper)
    tier: str  # keeper, exact (same bytes), same_pixels (same decoded pixels) or near
    confirmed: bool  # in a pair a person marked as duplicates

    def as_dict(self) -> dict[str, object]:
        """The member object of the report JSON."""
        return {
            "image_id": self.image_id,
            "path": self.path,
            "product_id": self.product_id,
            "title": self.title,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "format": self.format,
            "distance": round(self.distance, 6),
            "tier": self.tier,
            "confirmed": self.confirmed,
        }


@dataclass(frozen=True)
class ReportCluster:
    """One duplicate cluster: the keeper first, why it was chosen, and its change since the last run."""

    id: str  # stable across runs (from the earliest-ingested member's path)
    members: tuple[ReportMember, ...]  # the keeper first, then by distance to it
    reason: str  # a sentence: the keep rule that decided and its figures
    keep_rule: str  # that rule's name (central, detail, resolution, size, oldest, newest, folder, id)
    change: str  # new, grown, shrunk, changed or unchanged against the previous run

    @property
    def keep(self) -> ReportMember:
        """The suggested keeper."""
        return self.members[0]

    @property
    def remove(self) -> tuple[ReportMember, ...]:
        """The members a user would delete: every one but the keeper."""
        return self.members[1:]

    def as_dict(self) -> dict[str, object]:
        """The cluster object of the report JSON."""
        return {
            "id": self.id,
            "keep": self.keep.as_dict(),
            "reason": self.reason,
            "keep_rule": self.keep_rule,
            "change": self.change,
            "members": [m.as_dict() for m in self.members],
        }


@dataclass(frozen=True)
class ReportSummary:
    """The counts of one report run."""

    images: int
    clusters: int
    duplicates: int  # members that are not keepers
    by_tier: dict[str, int]
    changes: dict[str, int]  # clusters by change (new, grown, shrunk, changed, unchanged)
    resolved: int  # clusters of the previous run that are gone
    review_marks: dict[str, int]
    seconds: float

    def as_dict(self) -> dict[str, object]:
        """The summary object of the report JSON."""
        return {
            "images": self.images,
            "clusters": self.clusters,
            "duplicates": self.duplicates,
            "by_tier": dict(self.by_tier),
            "changes": dict(self.changes),
            "resolved": self.resolved,
            "review_marks": dict(self.review_marks),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Report:
    """One duplicate report: clusters, what was resolved since the previous run, and the counts."""

    threshold: float
    model: str
    created_at: str  # ISO 8601, UTC
    keep_policy: tuple[str, ...]
    run_id: int | None  # None until the run is saved to the history
    previous_run_id: int | None  # the run the changes are counted against
    clusters: tuple[ReportCluster, ...]
    resolved: tuple[tuple[str, tuple[int, ...]], ...]  # (cluster id, its image ids then)
    not_duplicate_marks: tuple[tuple[int, int], ...]
    summary: ReportSummary

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """A report read back from its JSON (version 2; ValueError naming the problem for anything else)."""
        version = data.get("schema_version")
        if version != REPORT_SCHEMA_VERSION:
            raise ValueError(f"report JSON schema_version {version!r}; this dedup reads {REPORT_SCHEMA_VERSION}")
        try:
            clusters = tuple(
                ReportCluster(
                    id=c["id"],
                    members=tuple(ReportMember(**m) for m in c["members"]),
                    reason=c["reason"],
                    keep_rule=c["keep_rule"],
                    change=c["change"],
                )
                for c in data["clusters"]
            )
            return cls(
                threshold=float(data["threshold"]),
                model=data["model"],
                created_at=data["created_at"],
                keep_policy=tuple(data["keep_policy"]),
                run_id=data["run_id"],
                previous_run_id=data["previous_run_id"],
                clusters=clusters,
                resolved=tuple((r["id"], tuple(r["image_ids"])) for r in data["resolved"]),
                not_duplicate_marks=tuple((p["a"], p["b"]) for p in data["not_duplicate_marks"]),
                summary=ReportSummary(**data["summary"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a dedup report: {exc}") from exc

    def remove_paths(self) -> list[str]:
        """Every non-keeper's path, cluster by cluster: the files a user would delete."""
        return [m.path for c in self.clusters for m in c.remove]

    def as_dict(self) -> dict[str, object]:
        """The report JSON (``schema_version`` :data:`REPORT_SCHEMA_VERSION`)."""
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "threshold": self.threshold,
            "model": self.model,
            "created_at": self.created_at,
            "keep_policy": list(self.keep_policy),
            "run_id": self.run_id,
            "previous_run_id": self.previous_run_id,
            "clusters": [c.as_dict() for c in self.clusters],
            "resolved": [{"id": cid, "image_ids": list(ids)} for cid, ids in self.resolved],
            "not_duplicate_marks": [{"a": a, "b": b} for a, b in self.not_duplicate_marks],
            "summary": self.summary.as_dict(),
        }

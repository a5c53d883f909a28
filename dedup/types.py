"""Plain result and record types shared by every layer (no behaviour, no heavy imports)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

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
    """Counts of one ingest run: ``seen == new + reused + changed + unchanged + failed``."""

    seen: int = 0
    new: int = 0  # embedded for the first time (new content)
    changed: int = 0  # known path whose content changed
    unchanged: int = 0  # path, size and mtime as before: skipped without reading
    reused: int = 0  # new path whose content (sha256) was already embedded: vector reused
    failed: int = 0
    pruned: int = 0
    seconds: float = 0.0
    failures: list[FailedFile] = field(default_factory=list)

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
            "pruned": self.pruned,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "failures": [{"path": f.path, "kind": f.kind, "reason": f.reason} for f in self.failures],
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

    def as_dict(self) -> dict[str, object]:
        """The query JSON of DESIGN.md."""
        return {
            "query": self.query,
            "k": self.k,
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

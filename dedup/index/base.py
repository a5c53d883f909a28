"""The vector index plug point: the sidecar record, the abstract base and shared argument checks.

Every implementation stores L2-normalised float32 vectors under our own int64 ids (the catalog's
image ids, never positions and never Python's ``hash()``) and answers in Euclidean distance on the
unit sphere, ``d = sqrt(max(0, 2 - 2 * ip))``, ascending. Missing result slots are ``(inf, -1)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

#: The id FAISS puts in result slots it could not fill; therefore never a valid id of ours.
MISSING_ID = -1


@dataclass(frozen=True)
class IndexInfo:
    """The JSON sidecar saved beside an index: what it was built from and what it holds."""

    model_id: str
    dim: int
    count: int
    generation: int  # the catalog generation the index reflects
    kind: str = "flat"  # factory kind, see dedup.index.create_index

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the five fields."""
        return {
            "model_id": self.model_id,
            "dim": self.dim,
            "count": self.count,
            "generation": self.generation,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IndexInfo:
        """Parse a sidecar dict; raises ValueError naming the first missing or mistyped field.

        Unknown extra keys are ignored so that a newer writer's sidecar stays readable.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"index sidecar must be a JSON object, got {type(d).__name__}")
        return cls(
            model_id=_sidecar_field(d, "model_id", str),
            dim=_sidecar_field(d, "dim", int, minimum=1),
            count=_sidecar_field(d, "count", int, minimum=0),
            generation=_sidecar_field(d, "generation", int, minimum=0),
            # Optional: sidecars written before kinds existed were all "flat".
            kind=_sidecar_field(d, "kind", str) if "kind" in d else "flat",
        )


def _sidecar_field(d: Mapping[str, Any], name: str, typ: type, *, minimum: int | None = None) -> Any:
    """``d[name]`` checked to be a ``typ`` (and >= ``minimum``), else ValueError naming the field."""
    if name not in d:
        raise ValueError(f"index sidecar has no {name!r} field")
    value: Any = d[name]
    # bool is a subclass of int in Python; a sidecar saying "dim": true is corrupt.
    if not isinstance(value, typ) or isinstance(value, bool):
        raise ValueError(f"index sidecar field {name!r} must be {typ.__name__}, got {value!r}")
    if minimum is not None and isinstance(value, int) and value < minimum:
        raise ValueError(f"index sidecar field {name!r} must be >= {minimum}, got {value!r}")
    return value


class VectorIndex(ABC):
    """Nearest-neighbour search over unit vectors keyed by our own non-negative int64 ids.

    Implementations: ``FaissIndex`` (the product), ``IVFIndex`` and ``PQIndex`` (large catalogs; the
    latter's distances are approximate) and ``NumpyIndex`` (plain brute force, the reference the tests
    compare against). Persistence lives in ``dedup.index.store``, which calls
    ``write``/``read`` on a temporary path and makes the result atomic.
    """

    #: The file name ``save_index`` uses inside the index folder.
    file_name: ClassVar[str]

    dim: int

    def __init__(self, dim: int) -> None:
        """An empty index for ``dim``-dimensional vectors."""
        self.dim = check_dim(dim)

    @property
    @abstractmethod
    def kind(self) -> str:
        """The factory kind this index was created with (recorded in the sidecar)."""

    @property
    def approximate_scores(self) -> bool:
        """True when search distances are estimates (compressed codes), not exact.

        Callers that show a distance or compare it with a threshold then fetch more candidates than they need
        and re-score them on the exact vectors (:func:`exact_rerank`).
        """
        return False

    @property
    def undertrained(self) -> bool:
        """True when the index now holds far more vectors than it was trained on, so a rebuild would serve better.

        Only trained indexes (compressed codes) say so; the store then rebuilds from the catalog when it loads.
        """
        return False

    @abstractmethod
    def __len__(self) -> int:
        """Number of vectors held."""

    @abstractmethod
    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add ``vectors`` (n, dim) under ``ids`` (n,); ids already present are replaced, never duplicated."""

    @abstractmethod
    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids``; returns how many were present. Unknown ids are ignored."""

    @abstractmethod
    def search(self, queries: npt.ArrayLike, k: int) -> tuple[FloatArray, IdArray]:
        """The ``k`` nearest per query: (distances float32 (q, k) ascending, ids int64 (q, k)).

        Slots beyond the number of vectors held are ``(inf, -1)``.
        """

    @abstractmethod
    def range_search(self, queries: npt.ArrayLike, max_distance: float) -> list[tuple[FloatArray, IdArray]]:
        """Per query, every vector with distance <= ``max_distance``: (distances ascending, ids)."""

    @abstractmethod
    def ids(self) -> IdArray:
        """All ids held, sorted ascending."""

    @abstractmethod
    def reconstruct(self, ids: npt.ArrayLike) -> FloatArray:
        """The stored vectors (n, dim) of ``ids``; raises KeyError if any id is not held."""

    @abstractmethod
    def write(self, path: Path) -> None:
        """Serialise to exactly ``path`` (no suffix added); the store handles atomicity and fsync."""

    @classmethod
    @abstractmethod
    def read(cls, path: Path) -> VectorIndex:
        """Load what ``write`` wrote; raises ValueError or OSError when the file is not usable."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, dim={self.dim}, count={len(self)})"


def ip_to_distance(ip: npt.ArrayLike) -> FloatArray:
    """Euclidean distance of unit vectors from their inner product: ``sqrt(max(0, 2 - 2 * ip))``."""
    ip32 = np.asarray(ip, dtype=np.float32)
    # Rounding can push ip of identical vectors a hair above 1; clamp so the sqrt stays real.
    return np.sqrt(np.maximum(np.float32(0.0), np.float32(2.0) - np.float32(2.0) * ip32)).astype(np.float32, copy=False)


def check_dim(dim: int) -> int:
    """Validate a vector dimension (a positive int) and return it."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def check_ids(ids: npt.ArrayLike, *, unique: bool = False) -> IdArray:
    """Return ``ids`` as a contiguous 1-D int64 array of non-negative values, or raise ValueError.

    Any integer dtype is accepted if its values fit int64; floats and bools are refused because a
    silently truncated id would point at the wrong image.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"ids must be an integer (int64) array, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.min() < 0:
        # -1 marks an empty result slot in FAISS, so negative ids would be ambiguous.
        raise ValueError(f"ids must be non-negative, got {int(out.min())}")
    if unique and np.unique(out).size != out.size:
        raise ValueError("ids must not repeat within one call")
    return out


def check_vectors(vectors: npt.ArrayLike, dim: int, *, what: str = "vectors") -> FloatArray:
    """Return ``vectors`` as a C-contiguous float32 (n, dim) array, or raise ValueError."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return arr


def check_k(k: int) -> int:
    """Validate the number of neighbours (a positive int) and return it."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_max_distance(max_distance: float) -> float:
    """Validate a range-search radius (a finite distance >= 0) and return it as float."""
    value = float(max_distance)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"max_distance must be a finite distance >= 0, got {max_distance!r}")
    return value


def empty_results(n_queries: int, k: int) -> tuple[FloatArray, IdArray]:
    """Search results with every slot missing: ``(inf, -1)``."""
    return (
        np.full((n_queries, k), np.inf, dtype=np.float32),
        np.full((n_queries, k), MISSING_ID, dtype=np.int64),
    )


def sort_hits(distances: FloatArray, ids: IdArray) -> tuple[FloatArray, IdArray]:
    """Order one query's hits by distance, then id (ties get a stable, reproducible order)."""
    order = np.lexsort((ids, distances))
    return distances[order], ids[order]


def exact_rerank(
    query: npt.ArrayLike, ids: npt.ArrayLike, vectors: npt.ArrayLike, k: int
) -> tuple[FloatArray, IdArray]:
    """The ``k`` nearest of the candidates ``ids`` to one ``query``, scored exactly on their ``vectors`` (n, dim).

    Returns (distances float32 ascending, then by id; ids int64), at most ``k`` of each and no missing slots. This is
    how answers of an index with ``approximate_scores`` become exact: its ``search`` picks the candidates, the
    caller supplies their stored vectors.
    """
    k = check_k(k)
    flat = np.asarray(query, dtype=np.float32).reshape(-1)
    q = check_vectors(flat[None, :], flat.size, what="query")[0]
    id_arr = check_ids(ids)
    if id_arr.size == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    vec = check_vectors(vectors, q.size)
    if vec.shape[0] != id_arr.size:
        raise ValueError(f"got {id_arr.size} ids for {vec.shape[0]} vectors")
    distances, ranked = sort_hits(ip_to_distance(vec @ q), id_arr)
    return distances[:k], ranked[:k]

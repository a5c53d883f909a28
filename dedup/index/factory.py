"""``create_index``: the one place that maps an index kind name to an implementation."""

from __future__ import annotations

from dedup.errors import ConfigError
from dedup.index.base import VectorIndex, check_dim
from dedup.index.faiss_index import FaissIndex
from dedup.index.ivf_index import IVFIndex
from dedup.index.pq_index import PQIndex
from dedup.index.reference import NumpyIndex

#: Kind name → implementation (the sidecar's ``kind``). The kinds a user may choose are
#: :data:`dedup.config.INDEX_KIND_NAMES` (the command line lists them without importing FAISS); "numpy" is
#: the reference the tests compare against. A test checks the two lists agree.
INDEX_KINDS: dict[str, type[VectorIndex]] = {
    "flat": FaissIndex,  # exact inner product in FAISS: the default
    "ivf": IVFIndex,  # inverted lists: large catalogs (see dedup.config.IVF_MIN_VECTORS)
    "ivfpq": PQIndex,  # inverted lists of 32-byte codes: large catalogs in little memory; approximate scores
    "numpy": NumpyIndex,  # exact brute force in numpy: the reference
}


def index_class(kind: str) -> type[VectorIndex]:
    """The implementation of ``kind``; ConfigError naming the valid kinds if it is unknown."""
    try:
        return INDEX_KINDS[kind]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(INDEX_KINDS))
        raise ConfigError(f"unknown index kind {kind!r}; valid kinds: {valid}") from None


def create_index(dim: int, kind: str = "flat") -> VectorIndex:
    """A new empty index of ``dim``-dimensional unit vectors of one of :data:`INDEX_KINDS`."""
    cls = index_class(kind)
    try:
        dim = check_dim(dim)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cls(dim)

"""The jobs of dedup (ingest, report, query, compare) composed from catalog, index and encoder.

This is the public Python API that the command line and the HTTP server both use::

    from dedup.service import open_store
    with open_store("./my-store") as store:
        summary = ingest_folder(store, "./photos", metadata="products.csv")
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from dedup.config import StoreConfig
from dedup.service.store import Store

if TYPE_CHECKING:
    from dedup.report import render_report
    from dedup.service.cache import EmbeddingCache
    from dedup.service.calibration import calibrate_threshold
    from dedup.service.evaluation import evaluate, evaluation_text
    from dedup.service.evaluation_result import CalibrationResult, EvaluationResult
    from dedup.service.ingest import ingest_folder
    from dedup.service.reporting import DEFAULT_KEEP, build_report, forget_report, save_report, thumbnails
    from dedup.service.review import clear_pair, mark_pair
    from dedup.service.search import (
        compare_bytes,
        compare_paths,
        embed_bytes,
        embed_query_bytes,
        image_files,
        image_thumbnail,
        query_bytes,
        query_paths,
        search_vector,
    )
    from dedup.service.upload import AddedImage, add_image, recover_uploads

# Each job's module loads on first use: a command imports what its job needs and no more (an ingest
# started ~0.25 s later, its decoding workers too, when importing this package loaded every job).
_LAZY = {
    "render_report": "dedup.report",
    "EmbeddingCache": "dedup.service.cache",
    "evaluate": "dedup.service.evaluation",
    "evaluation_text": "dedup.service.evaluation",
    "EvaluationResult": "dedup.service.evaluation_result",
    "CalibrationResult": "dedup.service.evaluation_result",
    "calibrate_threshold": "dedup.service.calibration",
    "ingest_folder": "dedup.service.ingest",
    "DEFAULT_KEEP": "dedup.service.reporting",
    "build_report": "dedup.service.reporting",
    "save_report": "dedup.service.reporting",
    "forget_report": "dedup.service.reporting",
    "thumbnails": "dedup.service.reporting",
    "mark_pair": "dedup.service.review",
    "clear_pair": "dedup.service.review",
    "compare_bytes": "dedup.service.search",
    "compare_paths": "dedup.service.search",
    "embed_bytes": "dedup.service.search",
    "embed_query_bytes": "dedup.service.search",
    "image_files": "dedup.service.search",
    "image_thumbnail": "dedup.service.search",
    "query_bytes": "dedup.service.search",
    "query_paths": "dedup.service.search",
    "search_vector": "dedup.service.search",
    "AddedImage": "dedup.service.upload",
    "add_image": "dedup.service.upload",
    "recover_uploads": "dedup.service.upload",
}


def __getattr__(name: str) -> Any:
    """The public names of the job modules, imported when first asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def open_store(
    store: str | os.PathLike[str] | None = None,
    db_url: str | None = None,
    model: str | os.PathLike[str] | None = None,
    index_kind: str | None = None,
) -> Store:
    """Open a store folder (``DEDUP_STORE`` / ``./dedup-store`` by default); parts load on first use.

    ``model`` is a model folder (``DEDUP_MODEL``; the shipped model by default). ``index_kind`` ("auto",
    "flat", "ivf", "ivfpq"; ``DEDUP_INDEX_KIND``) picks the index; the saved index is rebuilt from the
    catalog when its kind differs. Settings resolve in :meth:`dedup.config.StoreConfig.resolve`, as for
    the command line.
    """
    return Store(StoreConfig.resolve(store, db_url, index_kind, model))


__all__ = [
    "Store",
    "open_store",
    "ingest_folder",
    "build_report",
    "query_paths",
    "query_bytes",
    "compare_paths",
    "compare_bytes",
    "embed_bytes",
    "embed_query_bytes",
    "search_vector",
    "image_thumbnail",
    "add_image",
    "recover_uploads",
    "AddedImage",
    "EmbeddingCache",
    "image_files",
    "render_report",
    "save_report",
    "forget_report",
    "thumbnails",
    "mark_pair",
    "clear_pair",
    "DEFAULT_KEEP",
    "evaluate",
    "evaluation_text",
    "EvaluationResult",
    "calibrate_threshold",
    "CalibrationResult",
]

"""Add one uploaded image to a store: keep its bytes under a content-derived name, catalog it, index it."""

from __future__ import annotations

import logging
import os
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dedup.config import INDEX_SAVE_INTERVAL_S, MAX_PIXELS
from dedup.errors import StoreError
from dedup.fsutil import fsync_dir, publish, stage, stale_temporaries
from dedup.imaging import decode_bytes
from dedup.service.cache import EmbeddingCache
from dedup.service.store import Store
from dedup.types import STATUS_OK, ImageInfo, ImageRecord, ProductRecord

log = logging.getLogger(__name__)

#: File extension for each decoded format; other formats get their lower-cased Pillow name.
_EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",  # a multi-picture JPEG (phone cameras) is a JPEG file
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "PPM": ".ppm",
}


@dataclass(frozen=True)
class AddedImage:
    """The catalog row of an added image; ``created`` is False when the same bytes were there already."""

    image: ImageInfo
    created: bool


def uploads_dir(store: Store) -> Path:
    """The folder that keeps uploaded files: ``<store root>/uploads``."""
    return store.config.root / "uploads"


def _extension(fmt: str) -> str:
    # The format comes from the decoder, never from the client; still, keep the name to [a-z0-9].
    return _EXTENSIONS.get(fmt.upper()) or "." + (re.sub(r"[^a-z0-9]", "", fmt.lower()) or "img")


def _stage(path: Path, data: bytes) -> Path | None:
    """Write ``data`` durably to a temporary file beside ``path``; None when ``path`` already holds it.

    The file is renamed into place (:func:`_publish`) only after the catalog row naming it is committed, so a
    server killed in between leaves a temporary file (swept when the store next opens), never an upload that no
    row knows about.
    """
    if path.is_file() and path.stat().st_size == len(data):
        return None  # the name is the content's hash: the same size means the same bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    return stage(path, lambda tmp: tmp.write_bytes(data))


def _publish(staged: Path | None, path: Path) -> None:
    """Move a staged upload to its final name (atomic), or nothing when it was already there."""
    if staged is not None:
        publish(staged, path)


def _discard(staged: Path | None) -> None:
    if staged is not None:
        staged.unlink(missing_ok=True)


def recover_uploads(store: Store) -> int:
    """Finish or drop the uploads a killed server left staged; returns how many were put in place.

    A staged file whose catalog row was committed (the server died between the commit and the rename) is
    renamed into place; one without a row (it died before the commit: the client got no answer) is removed.
    """
    folder = uploads_dir(store)
    stale = stale_temporaries(folder)
    if not stale:
        return 0
    known = store.catalog.known_files([str(target) for _, target in stale])
    placed = 0
    for tmp, target in stale:
        row = known.get(str(target))
        if row is not None and row.status == STATUS_OK and not target.exists():
            os.replace(tmp, target)
            placed += 1
        else:
            tmp.unlink(missing_ok=True)
    fsync_dir(folder)
    log.info("uploads: %d staged file(s) put in place, %d dropped", placed, len(stale) - placed)
    return placed


def add_image(
    store: Store,
    data: bytes,
    product_id: str,
    title: str | None = None,
    category: str | None = None,
    *,
    name: str = "<upload>",
    cache: EmbeddingCache | None = None,
    max_pixels: int = MAX_PIXELS,
    index_lock: AbstractContextManager[object] | None = None,
) -> AddedImage:
    """Add image bytes to the catalog and the index under ``product_id``; raises ImageError if unusable.

    The bytes are checked by decoding, then kept as ``<store>/uploads/<sha256><ext>`` (the extension
    of the decoded format), so no client-chosen name ever reaches the file system and the same bytes
    added twice give the same image row (``created`` False, product left as it was). The product is
    created or updated with ``title`` and ``category`` (None keeps what is stored).

    The catalog write happens under the store's write lock. ``index_lock`` is taken after it, around
    the index refresh and update, for callers that search the same store from other threads.
    """
    if not product_id.strip():
        raise ValueError("product_id must not be empty")
    encoder = store.encoder
    loaded = decode_bytes(data, name, target=encoder.input_size, max_pixels=max_pixels)
    path = uploads_dir(store) / f"{loaded.sha256}{_extension(loaded.format)}"
    catalog = store.catalog

    # Embed before taking any lock: it is the slow part, and it needs no shared state.
    vector = cache.get(encoder.model_id, loaded.sha256) if cache is not None else None
    if vector is None:
        stored = catalog.stored_vectors([loaded.sha256], encoder.model_id)
        vector = stored.get(loaded.sha256)
    if vector is None:
        vector = encoder.embed_images([loaded.image])[0]
    if cache is not None:
        cache.put(encoder.model_id, loaded.sha256, vector)

    with store.write_lock(), index_lock if index_lock is not None else nullcontext():
        known = catalog.known_files([str(path)]).get(str(path))
        staged = _stage(path, data)
        if known is not None and known.status == STATUS_OK and known.sha256 == loaded.sha256:
            _publish(staged, path)  # the row is there; make sure its file is too
            info = catalog.images([known.image_id]).get(known.image_id)
            if info is None:
                raise StoreError(f"image {known.image_id} vanished from the catalog while it was read")
            return AddedImage(image=info, created=False)
        try:
            # Bring the index up to the catalog first: another process may have written since we last looked.
            store.index  # noqa: B018
            catalog.upsert_products([ProductRecord(product_id=product_id, title=title, category=category)])
            record = ImageRecord(
                path=str(path),
                sha256=loaded.sha256,
                pixel_hash=loaded.pixel_hash,
                width=loaded.width,
                height=loaded.height,
                format=loaded.format,
                bytes=len(data),
                mtime=(staged or path).stat().st_mtime,  # a rename keeps the mtime
                product_id=product_id,
            )
            (image_id,) = catalog.write_batch([record], {loaded.sha256: vector}, [], encoder.model_id, None)
        except BaseException:
            _discard(staged)
            raise
        _publish(staged, path)
        # A row of this path that was not ok (e.g. marked missing) is not in the index; ok rows returned above.
        store.update_index(
            add_ids=np.asarray([image_id], dtype=np.int64),
            add_vectors=np.asarray(vector, dtype=np.float32)[None, :],
        )
        store.save_index(interval_s=INDEX_SAVE_INTERVAL_S)
        info = catalog.images([image_id]).get(image_id)
    if info is None:
        raise StoreError(f"image {image_id} vanished from the catalog right after it was written")
    log.info("added %s (product %s, image %d)", path.name, product_id, image_id)
    return AddedImage(image=info, created=True)

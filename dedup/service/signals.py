"""Pixel signals of the keeper rules for the images a report compares, read from the files once.

A report needs the signals (``dedup.matching.keeper.PixelSignals``) of the images in duplicate
clusters only, so they are computed when a report first meets an image, from its file, and cached in
the catalog by content (sha256): the next night's report reads them back and decodes only new members.
A file that is gone, unreadable or changed since ingest (another sha256) gets no signals; the keeper
rules then rank it last and the report says nothing is wrong with the rest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dedup.errors import ImageError
from dedup.matching.keeper import PixelSignals
from dedup.service.store import Store
from dedup.types import ImageInfo

log = logging.getLogger(__name__)

#: Version of the signal definition (``dedup.imaging.keeper_signals``); bump it when that changes, and the
#: cached rows of older versions are computed again.
SIGNALS_VERSION = 1


def _compute(info: ImageInfo) -> tuple[bytes, float, float | None] | None:
    """The signals of one catalog image from its file, or None when the file cannot give them."""
    from dedup.imaging import KEEPER_DECODE_TARGET, keeper_signals, load_image

    try:
        loaded = load_image(info.path, target=KEEPER_DECODE_TARGET)
    except ImageError as exc:
        log.info("no keeper signals for %s: %s", info.path, exc.reason)
        return None
    if loaded.sha256 != info.sha256:
        log.info("no keeper signals for %s: the file changed since it was ingested", info.path)
        return None
    thumb, detail = keeper_signals(loaded.image)
    return thumb.tobytes(), detail, loaded.quality


def pixel_signals(store: Store, infos: Iterable[ImageInfo], workers: int | None = None) -> dict[int, PixelSignals]:
    """Signals by image id for ``infos``: from the catalog's cache, else from the files (then cached)."""
    from dedup.imaging import KEEPER_THUMB_SIDE

    infos = list(infos)
    cached = store.catalog.keeper_signals({i.sha256 for i in infos}, SIGNALS_VERSION)
    todo: dict[str, ImageInfo] = {}
    for info in infos:
        if info.sha256 not in cached:
            todo.setdefault(info.sha256, info)
    if todo:
        # Decoding releases the GIL: threads keep every core busy without a process pool's start-up cost.
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            fresh = dict(zip(todo, pool.map(_compute, todo.values()), strict=True))
        computed = {sha: v for sha, v in fresh.items() if v is not None}
        store.catalog.save_keeper_signals(computed, SIGNALS_VERSION)
        cached.update(computed)
        log.info("keeper signals: %d computed, %d unavailable", len(computed), len(fresh) - len(computed))
    shape = (KEEPER_THUMB_SIDE, KEEPER_THUMB_SIDE, 3)
    out: dict[int, PixelSignals] = {}
    for info in infos:
        value = cached.get(info.sha256)
        if value is not None:
            thumb = np.frombuffer(value[0], dtype=np.uint8).reshape(shape)
            out[info.image_id] = PixelSignals(thumb, value[1], value[2])
    return out

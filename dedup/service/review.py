"""Review decisions: a person marks a pair of images as duplicates or not, and later reports obey."""

from __future__ import annotations

import os
from pathlib import Path

from dedup.errors import InputError
from dedup.service.store import Store


def resolve_image(store: Store, ref: str) -> int:
    """An image id from a catalog image id (digits) or a path of an ingested image."""
    if ref.isdigit():
        infos = store.catalog.images([int(ref)])
        if int(ref) not in infos:
            raise InputError(f"there is no ingested image with id {ref}")
        return int(ref)
    path = os.path.normpath(str(Path(ref).expanduser().resolve()))
    info = store.catalog.image_by_path(path)
    if info is None:
        raise InputError(f"{ref}: not an ingested image (ingest its folder first, or give its image id)")
    return info.image_id


def mark_pair(store: Store, a: str, b: str, decision: str, note: str | None = None) -> tuple[int, int]:
    """Record ``decision`` (``duplicate`` / ``not_duplicate``) for images ``a`` and ``b`` (paths or ids)."""
    ia, ib = resolve_image(store, a), resolve_image(store, b)
    if ia == ib:
        raise InputError(f"{a} and {b} are the same image")
    store.catalog.set_mark(ia, ib, decision, note)
    return ia, ib


def clear_pair(store: Store, a: str, b: str) -> tuple[int, int, str]:
    """Undo the review decision on images ``a`` and ``b`` (paths or ids); returns their ids and the decision.

    InputError when the pair has no decision, so a typo does not pass for an undo.
    """
    ia, ib = resolve_image(store, a), resolve_image(store, b)
    removed = store.catalog.clear_mark(ia, ib)
    if removed is None:
        raise InputError(f"images {ia} and {ib} have no review decision to clear")
    return ia, ib, removed

"""Atomic persistence of an index folder: the index file plus the ``index.json`` sidecar.

Layout of the folder (``<store>/index/`` in DESIGN.md)::

    vectors.faiss   (kind "flat"; kind "numpy" writes vectors.npz)
    index.json      IndexInfo: model id, dimension, count, catalog generation, kind

Each file is written through :func:`dedup.fsutil.atomic_write` (a temporary file beside it, fsynced,
then moved over the old one with ``os.replace``), so a reader sees either the old or the new file,
never half of one. The sidecar is
replaced after the index file: after a crash the sidecar may describe the *previous* save (an older
generation, so the caller catches up or rebuilds), but it never describes a file that is not there.
The folder itself is never deleted.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

from dedup.errors import ConfigError, StoreError
from dedup.fsutil import atomic_write, atomic_write_text
from dedup.index.base import IndexInfo, VectorIndex
from dedup.index.factory import INDEX_KINDS, index_class

logger = logging.getLogger(__name__)

#: The sidecar's file name inside the index folder.
INFO_FILE = "index.json"

# What reading a damaged index file raises: FaissIndex.read turns FAISS's RuntimeError into
# ValueError; np.load raises ValueError, OSError, EOFError or BadZipFile depending on the damage.
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)


def save_index(index: VectorIndex, info: IndexInfo, folder: Path) -> None:
    """Write ``index`` and its sidecar ``info`` into ``folder`` atomically (created if needed).

    ``info`` must describe ``index`` (same dim, count and kind), else ValueError. OS failures
    raise StoreError; the previous files then stay as they were.
    """
    if (info.dim, info.count, info.kind) != (index.dim, len(index), index.kind):
        raise ValueError(
            f"sidecar (dim={info.dim}, count={info.count}, kind={info.kind!r}) does not describe "
            f"the index (dim={index.dim}, count={len(index)}, kind={index.kind!r})"
        )
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / index.file_name, index.write)
        atomic_write_text(folder / INFO_FILE, json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise StoreError(f"cannot save the index to {folder}: {exc}") from exc
    logger.info("saved %s index of %d vectors (generation %d) to %s", info.kind, info.count, info.generation, folder)


def load_index(folder: Path) -> tuple[VectorIndex, IndexInfo] | None:
    """Load the index saved in ``folder`` with its sidecar; None when no index was saved there.

    Raises StoreError when the sidecar or index file is unreadable, or when they disagree (the
    caller should then rebuild the index from the catalog).
    """
    folder = Path(folder)
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        strays = [cls.file_name for cls in INDEX_KINDS.values() if (folder / cls.file_name).exists()]
        if strays:
            # Only an interrupted first save leaves this; the file is unusable without its sidecar.
            logger.warning("%s has %s but no %s: treating the index as absent", folder, strays, INFO_FILE)
        return None
    try:
        info = IndexInfo.from_json(json.loads(info_path.read_text(encoding="utf-8")))
        cls = index_class(info.kind)
    except (OSError, UnicodeDecodeError, ValueError, ConfigError) as exc:
        # json.JSONDecodeError is a ValueError; ConfigError names the valid kinds.
        raise StoreError(f"index sidecar {info_path} is unreadable: {exc}") from exc
    index_path = folder / cls.file_name
    if not index_path.is_file():
        raise StoreError(f"index sidecar {info_path} describes {index_path.name}, which is missing")
    try:
        index = cls.read(index_path)
    except _READ_ERRORS as exc:
        raise StoreError(f"index file {index_path} is unreadable: {exc}") from exc
    if index.dim != info.dim or len(index) != info.count:
        raise StoreError(
            f"index file {index_path} holds {len(index)} vectors of dim {index.dim}, but its sidecar "
            f"says {info.count} of dim {info.dim}"
        )
    logger.debug("loaded %r (generation %d) from %s", index, info.generation, folder)
    return index, info

"""A store: one catalog, one derived index and one encoder, opened lazily and kept in step."""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dedup.config import IVF_MIN_VECTORS, StoreConfig
from dedup.errors import StoreError
from dedup.fsutil import sweep_temporaries

if TYPE_CHECKING:  # heavy modules load only when a job needs them
    from dedup.catalog import Catalog
    from dedup.embedding.encoder import Encoder
    from dedup.imaging import ModelInput
    from dedup.index.base import VectorIndex

log = logging.getLogger(__name__)

#: The first bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


class Store:
    """The parts of one store folder, each loaded on first use.

    The catalog is the source of truth; the FAISS index is derived from it and rebuilt whenever
    its sidecar (model id, count, catalog generation, kind) disagrees with the catalog and the
    configured kind, or when a trained index holds far more vectors than it was trained on.
    """

    def __init__(
        self,
        config: StoreConfig,
        ivf_min_vectors: int = IVF_MIN_VECTORS,
    ) -> None:
        if config.index_kind is not None:
            from dedup.index.factory import index_class

            index_class(config.index_kind)  # ConfigError naming the valid kinds, before any work is done
        self.config = config
        self.ivf_min_vectors = ivf_min_vectors
        self._catalog: Catalog | None = None
        self._encoder: Encoder | None = None
        self._query_encoder: Encoder | None = None
        self._index: VectorIndex | None = None
        self._index_generation = -1
        self._model_checked_at = -1  # catalog generation at the last require_current_model that passed
        self._last_save = 0.0

    @property
    def model_dir(self) -> Path:
        """The folder of the model this store embeds with (from its config)."""
        return self.config.model_dir

    # -- parts ---------------------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        """The SQL catalog, migrated to the latest schema on first use."""
        if self._catalog is None:
            from dedup.catalog import Catalog

            self._check_catalog_file()
            self.config.root.mkdir(parents=True, exist_ok=True)
            for folder in (self.config.root, self.config.index_dir, self.config.reports_dir):
                sweep_temporaries(folder)  # what writes killed outright left behind
            self._catalog = Catalog(self.config.db_url)
        return self._catalog

    def _check_catalog_file(self) -> None:
        """Refuse (StoreError, exit 4) a SQLite catalog file that is not a database, and a missing or empty one
        beside a saved index: opening it would start an empty catalog and then overwrite that index with it.

        The index is derived from the catalog, so it is not proof of anything, but it is the sign that this store
        held images: a catalog lost or truncated to 0 bytes (a full disk, a bad copy) must be restored, not
        silently replaced. The index and the file are left as they are.
        """
        from dedup.catalog.engine import sqlite_file
        from dedup.index.store import INFO_FILE

        path = sqlite_file(self.config.db_url)
        if path is None:
            return
        size: int | None = None
        header = b""
        try:
            if path.exists():
                size = path.stat().st_size
                with open(path, "rb") as fh:
                    header = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StoreError(f"cannot read the catalog {path}: {exc.strerror or exc}") from exc
        if size and header != SQLITE_HEADER:
            raise StoreError(
                f"the catalog {path} is not a SQLite database (damaged, or another file): restore it from a backup, "
                "or move it away to start the store afresh; nothing was changed"
            )
        index_info = self.config.index_dir / INFO_FILE
        if not size and index_info.is_file():
            state = "missing" if size is None else "empty (0 bytes)"
            raise StoreError(
                f"the catalog {path} is {state}, but the store has an index ({index_info.parent}): refusing to "
                "start a new catalog over it. Restore the catalog from a backup, or remove the index folder to "
                "start the store afresh; nothing was changed"
            )

    @property
    def encoder(self) -> Encoder:
        """The embedding model (the shipped default unless a model folder was given)."""
        if self._encoder is None:
            from dedup.embedding.encoder import load_encoder

            self._encoder = load_encoder(self.model_dir)
            log.info(
                "model %s (dim %d, threshold %.4f)",
                self._encoder.model_id,
                self._encoder.dim,
                self._encoder.threshold,
            )
        return self._encoder

    @property
    def preprocess(self) -> ModelInput:
        """How the catalog model wants its images, from its card: known before the model itself is loaded."""
        if self._encoder is not None:
            return self._encoder.preprocess
        from dedup.embedding.card import load_card

        return load_card(self.model_dir).model_input

    def catalog_is_new(self) -> bool:
        """True when the catalog does not exist yet (its SQLite file is not there); False when it does or
        cannot be told without connecting (another database)."""
        if self._catalog is not None:
            return False
        from dedup.catalog.engine import sqlite_file

        path = sqlite_file(self.config.db_url)
        return path is not None and not path.exists()

    @property
    def query_encoder(self) -> Encoder:
        """The encoder of query photos: the model's query tower if it has one (and the config wants it), else
        :attr:`encoder`. Its vectors live in the catalog encoder's space and carry its model id."""
        if self._query_encoder is None:
            from dedup.embedding.encoder import load_query_encoder

            if self.config.query_tower == "off":
                self._query_encoder = self.encoder
            else:
                self._query_encoder = load_query_encoder(self.encoder, self.model_dir)
        return self._query_encoder

    @property
    def index(self) -> VectorIndex:
        """The vector index, in step with the catalog (reloaded or rebuilt when it is stale)."""
        generation = self.catalog.generation()
        if self._index is None or generation != self._index_generation:
            self._index = self._load_or_rebuild(generation)
            self._index_generation = generation
        return self._index

    def _load_or_rebuild(self, generation: int) -> VectorIndex:
        from dedup.index import create_index, load_index

        model_id = self.encoder.model_id
        loaded = None
        try:
            loaded = load_index(self.config.index_dir)
        except StoreError as exc:
            log.warning("index unusable, rebuilding from the catalog: %s", exc)
        if loaded is not None:
            index, info = loaded
            fresh = info.model_id == model_id and info.generation == generation and len(index) == info.count
            wanted = self._kind_for(info.count)
            if fresh and index.kind == wanted and not index.undertrained:
                return index
            log.info(
                "index is stale (model %s, generation %d, kind %s%s; catalog has model %s, generation %d, "
                "wants kind %s): rebuilding",
                info.model_id,
                info.generation,
                info.kind,
                ", trained on far fewer vectors than it holds" if index.undertrained else "",
                model_id,
                generation,
                wanted,
            )
        ids, vectors = self.catalog.indexed_vectors(model_id)
        index = create_index(self.encoder.dim, self._kind_for(len(ids)))
        if len(ids):
            index.add(ids, vectors)
        self._index, self._index_generation = index, generation
        self.save_index(force=True)
        log.info("index rebuilt from the catalog: %d vectors", len(index))
        return index

    def _kind_for(self, count: int) -> str:
        """The configured index kind; automatically, exact search for small catalogs and IVF from ``ivf_min_vectors``.

        The index is rebuilt whenever this changes. An empty catalog always gets a flat index: IVF lists and PQ
        codebooks are trained on the first vectors, and an untrained index cannot be saved.
        """
        if count == 0:
            return "flat"
        if self.config.index_kind is not None:
            return self.config.index_kind
        return "ivf" if count >= max(1, self.ivf_min_vectors) else "flat"

    def update_index(
        self,
        add_ids: np.ndarray | None = None,
        add_vectors: np.ndarray | None = None,
        remove_ids: np.ndarray | None = None,
    ) -> None:
        """Apply a catalog write that was just committed to the in-memory index.

        The index then reflects the catalog's current generation; it reaches disk with the next
        :meth:`save_index`. Call it right after the write, while holding :meth:`write_lock`.
        """
        index = self._index if self._index is not None else self.index
        if remove_ids is not None and len(remove_ids):
            index.remove(remove_ids)
        if add_ids is not None and add_vectors is not None and len(add_ids):
            index.add(add_ids, add_vectors)
        self._index_generation = self.catalog.generation()

    def save_index(self, force: bool = False, interval_s: float = 0.0) -> None:
        """Save the index atomically with its sidecar; with ``interval_s``, at most that often."""
        if self._index is None:
            return
        now = time.monotonic()
        if not force and now - self._last_save < interval_s:
            return
        from dedup.index import IndexInfo, save_index

        info = IndexInfo(
            model_id=self.encoder.model_id,
            dim=self.encoder.dim,
            count=len(self._index),
            generation=self._index_generation,
            kind=self._index.kind,
        )
        save_index(self._index, info, self.config.index_dir)
        self._last_save = now

    # -- locking ---------------------------------------------------------------------------------------
    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the store's write lock: one writer at a time (another waits, and says so).

        A SQLite catalog lives on this machine: the lock is a file lock on ``<store>/.lock``. A catalog on a
        database server (PostgreSQL) may be shared by stores on several machines: the lock is then the
        database's (:meth:`dedup.catalog.Catalog.writer_lock`), so their writers take turns.
        """
        from dedup.catalog.engine import sqlite_file

        if sqlite_file(self.config.db_url) is None and self.catalog.locks_writers:
            with self.catalog.writer_lock():
                yield
            return
        self.config.root.mkdir(parents=True, exist_ok=True)
        with open(self.config.root / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("another dedup process is writing to %s; waiting for it", self.config.root)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reads ---------------------------------------------------------------------------------------
    def require_existing(self, with_images: bool = True) -> None:
        """Raise StoreError (exit 4) naming the store when it was never created, or (``with_images``) holds
        no image at all (not even a failed one).

        Only ``dedup ingest`` creates a store: a mistyped ``--store`` in a cron line must fail, not
        report "no duplicates tonight" from a new empty catalog.
        """
        hint = "run `dedup ingest FOLDER` with this --store first, or check --store / DEDUP_STORE"
        self._check_catalog_file()  # a lost catalog beside an index says so, rather than "no store"
        if self.catalog_is_new():
            raise StoreError(f"there is no store at {self.config.root} (no catalog there): {hint}")
        if with_images and self.catalog.image_count() == 0:
            raise StoreError(f"the store at {self.config.root} holds no images: {hint}")

    def require_current_model(self) -> None:
        """Raise StoreError (exit 4) when catalog images were embedded by another model than the store's.

        Their vectors live in another space: a report or a query would silently leave them out (with a
        new default model: all of them). ``dedup ingest`` re-embeds such images with the current model.
        """
        generation = self.catalog.generation()
        if generation == self._model_checked_at:
            return  # nothing was written since the last check
        by_model = self.catalog.ok_images_by_model()
        current = self.encoder.model_id
        stale = {m: n for m, n in by_model.items() if m != current}
        if stale:
            total = sum(by_model.values())
            names = ", ".join(f"{n} by {m}" for m, n in sorted(stale.items()))
            raise StoreError(
                f"{sum(stale.values())} of {total} images in {self.config.root} were embedded by another model "
                f"({names}); the current model is {current}. Run `dedup ingest FOLDER` on the same folder(s) "
                "again to re-embed them (unchanged files are re-read once), or pass --model with the old model."
            )
        self._model_checked_at = generation

    def embed_paths(self, paths: list[Path]) -> np.ndarray:
        """Embed image files (decoded with the safe loader); raises ImageError on a bad file."""
        from dedup.imaging import load_image

        enc = self.encoder
        images = [load_image(p, target=enc.input_size).image for p in paths]
        return enc.embed_images(images)

    def close(self) -> None:
        """Release the catalog's connections."""
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

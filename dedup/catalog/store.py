"""The catalog: the source of truth for products, images and their vectors, behind one small class."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dedup.catalog import history, reads, signals, writes
from dedup.catalog.coltypes import utcnow
from dedup.catalog.engine import WRITE_OPTION, brief, open_engine, safe_url
from dedup.catalog.models import GENERATION_KEY, RUN_RUNNING, RUN_STATUSES, IngestRun, Meta
from dedup.errors import StoreError
from dedup.fsutil import process_alive
from dedup.types import FailedFile, ImageInfo, ImageRecord, KnownFile, ProductRecord

log = logging.getLogger(__name__)


class _ChangeCounter:
    """SQLite's ``PRAGMA data_version`` on a private read-only connection: it changes whenever another
    connection (of this process or another) commits. None from :meth:`read` when it cannot be told."""

    def __init__(self, database: str | None) -> None:
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                uri = Path(database).expanduser().resolve().as_uri() + "?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            except sqlite3.Error as exc:
                log.debug("no change counter for %s: %s", database, exc)

    def read(self) -> int | None:
        if self._conn is None:
            return None
        with self._lock:
            try:
                row = self._conn.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error:
                return None
        return int(row[0]) if row else None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


#: The key of the writers' advisory lock on PostgreSQL (any 64-bit number no other program uses: "dedupWRT").
WRITER_LOCK_KEY = int.from_bytes(b"dedupWRT", "big") & (2**63 - 1)


class Catalog:
    """Products, images and vectors in a SQL database, migrated to the newest schema on open.

    Every method runs in its own short transaction. Database errors come out as ``StoreError``.
    Use as a context manager, or call ``close()``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._shown = safe_url(url)
        self._engine = open_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._changes = (
            _ChangeCounter(self._engine.url.database) if self._engine.url.get_backend_name() == "sqlite" else None
        )
        self._generation: tuple[int, int] | None = None  # (change count, generation) last read
        log.info("catalog open: %s", self._shown)

    def close(self) -> None:
        """Release every database connection."""
        if self._changes is not None:
            self._changes.close()
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self._shown!r})"

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """A session inside one transaction, committed on success; database errors become StoreError."""
        try:
            with self._sessions() as session, session.begin():
                if write:
                    # Take the write lock at BEGIN so a concurrent writer makes us wait, not fail.
                    session.connection(execution_options={WRITE_OPTION: True})
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"catalog {self._shown}: {brief(exc)}") from exc

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A Core connection inside one read transaction. Reads made for every query use it: an ORM session
        costs ~0.5 ms more a call, a twentieth of a query's budget."""
        try:
            with self._engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"catalog {self._shown}: {brief(exc)}") from exc

    # -- writers -----------------------------------------------------------------------------------

    @property
    def locks_writers(self) -> bool:
        """Whether :meth:`writer_lock` coordinates writers through the database (PostgreSQL). SQLite's writers
        share one machine, and the store's lock file serves them."""
        return self._engine.url.get_backend_name() == "postgresql"

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the catalog's writer lock for the ``with`` block: one writer at a time, on every machine.

        On PostgreSQL a session advisory lock (``pg_advisory_lock``) on a connection kept for the block: a writer
        on another machine waits, and says so; the lock goes with the connection if the process dies. Elsewhere a
        no-op (see :attr:`locks_writers`).
        """
        if not self.locks_writers:
            yield
            return
        key = {"key": WRITER_LOCK_KEY}
        try:
            conn = self._engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar()
            if not got:
                log.warning("another dedup process is writing to catalog %s; waiting for it", self._shown)
                conn.execute(text("SELECT pg_advisory_lock(:key)"), key)
            conn.commit()  # the lock belongs to the session, not to this transaction
        except SQLAlchemyError as exc:
            raise StoreError(f"catalog {self._shown}: cannot take the writer lock: {brief(exc)}") from exc
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), key)
                conn.commit()
            except SQLAlchemyError:
                conn.invalidate()  # closing the broken session releases its lock on the server
            finally:
                conn.close()

    # -- index bookkeeping -------------------------------------------------------------------------

    def generation(self) -> int:
        """The counter bumped by every change to the set of indexed vectors.

        Read before every query (is the index still in step?): for SQLite, only when some connection has
        committed since the last read, which SQLite's ``data_version`` tells for ~10 µs instead of ~0.5 ms.
        """
        changes = self._changes.read() if self._changes is not None else None
        cached = self._generation
        if changes is not None and cached is not None and cached[0] == changes:
            return cached[1]
        with self._connection() as c:
            value = reads.generation(c)
        if changes is not None:
            self._generation = (changes, value)
        return value

    def get_meta(self, key: str) -> str | None:
        """A stored setting, or None."""
        with self._session() as s:
            return s.scalar(select(Meta.value).where(Meta.key == key))

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting. The generation counter is managed by the catalog and cannot be set."""
        if key == GENERATION_KEY:
            raise ValueError(f"meta key {key!r} is managed by the catalog")
        with self._session(write=True) as s:
            s.merge(Meta(key=key, value=value))

    # -- ingest --------------------------------------------------------------------------------------

    def known_files(self, paths: Sequence[str] | None = None) -> dict[str, KnownFile]:
        """What is stored about each of ``paths`` (all image rows when None), by path."""
        with self._session() as s:
            return reads.known_files(s, paths)

    def vector_ids_for(self, sha256s: Iterable[str], model_id: str) -> dict[str, int]:
        """Ids of vectors already stored for these contents under ``model_id``, by sha256."""
        with self._session() as s:
            return reads.vector_ids(s, sha256s, model_id)

    def stored_vectors(self, sha256s: Iterable[str], model_id: str) -> dict[str, np.ndarray]:
        """Vectors already stored for these contents under ``model_id`` (float32, 1-D), by sha256."""
        with self._connection() as c:
            return reads.stored_vectors(c, sha256s, model_id)

    def begin_run(self, root: str, model_id: str) -> int:
        """Record the start of an ingest of ``root`` by this host and process; returns the run id.

        Runs still marked running by this host whose process is gone were killed: they are marked interrupted.
        Another host's runs are left alone, whatever their state: several machines may ingest into one catalog
        (PostgreSQL), and only a run's own host can tell whether its process still lives. Runs recorded before
        runs had owners count as this host's.
        """
        host, pid = socket.gethostname(), os.getpid()
        with self._session(write=True) as s:
            for stale in s.scalars(select(IngestRun).where(IngestRun.status == RUN_RUNNING)):
                if stale.host in (None, host) and (stale.pid is None or not process_alive(stale.pid)):
                    stale.status = "interrupted"
            run = IngestRun(
                root=root,
                model_id=model_id,
                status=RUN_RUNNING,
                counts={},
                started_at=utcnow(),
                host=host,
                pid=pid,
            )
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, counts: dict[str, object]) -> None:
        """Record how an ingest ended: ``status`` is finished, interrupted or failed."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        with self._session(write=True) as s:
            run = s.get(IngestRun, run_id)
            if run is None:
                raise StoreError(f"catalog {self._shown}: no ingest run {run_id}")
            run.status, run.counts, run.finished_at = status, dict(counts), utcnow()

    def upsert_products(self, products: Iterable[ProductRecord]) -> None:
        """Insert products or update them by ``product_id``.

        None values and attributes not given keep what is stored.
        """
        with self._session(write=True) as s:
            writes.upsert_products(s, products)

    def write_batch(
        self,
        records: Sequence[ImageRecord],
        vectors: Mapping[str, np.ndarray],
        failures: Sequence[FailedFile],
        model_id: str,
        run_id: int | None,
    ) -> list[int]:
        """In one transaction: store new vectors (by sha256), upsert ok and failed image rows by path, link
        products (creating bare ones for unknown ids) and bump the generation once.

        Returns the image ids of ``records`` in order. Raises ``StoreError`` when a record's content has no
        vector, neither in ``vectors`` nor stored.
        """
        if not records and not vectors and not failures:
            return []
        with self._session(write=True) as s:
            return writes.write_batch(s, records, vectors, failures, model_id, run_id)

    def mark_missing(self, paths: Sequence[str]) -> list[int]:
        """Mark the images of ``paths`` as missing (vectors stay linked); returns the ids that changed."""
        with self._session(write=True) as s:
            return writes.mark_missing(s, paths)

    def delete_images(self, paths: Sequence[str]) -> list[int]:
        """Delete the image rows of ``paths``; returns their ids. Their vectors stay, keyed by content."""
        with self._session(write=True) as s:
            return writes.delete_images(s, paths)

    # -- queries -------------------------------------------------------------------------------------

    def indexed_vectors(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids (int64, (n,)) and vectors (float32, (n, dim)) of ok images under ``model_id``, by id."""
        with self._session() as s:
            return reads.indexed_vectors(s, model_id)

    def images(self, ids: Sequence[int]) -> dict[int, ImageInfo]:
        """Decoded images (ok or missing) by id, with their product; unknown and failed ids are left out."""
        with self._connection() as c:
            return reads.images(c, ids)

    def image_by_path(self, path: str) -> ImageInfo | None:
        """The decoded image stored under ``path``, or None."""
        with self._session() as s:
            return reads.image_by_path(s, path)

    def vector_of_image(self, image_id: int) -> np.ndarray | None:
        """The stored vector of an image, or None."""
        with self._session() as s:
            return reads.vector_of_image(s, image_id)

    def failed_files(self) -> list[FailedFile]:
        """Files whose last ingest failed, by path."""
        with self._session() as s:
            return reads.failed_files(s)

    def product(self, product_id: str) -> dict[str, object] | None:
        """A product's fields and its images (``image_id``, ``path``, ``status``), or None."""
        with self._session() as s:
            return reads.product(s, product_id)

    def ok_images_by_model(self) -> dict[str, int]:
        """How many usable images each model embedded, by model id (one entry unless a re-ingest is due)."""
        with self._session() as s:
            return reads.ok_images_by_model(s)

    def image_products(self, paths: Sequence[str]) -> dict[str, str | None]:
        """The product id of each readable image at ``paths`` (None when it has none); others are left out."""
        with self._session() as s:
            return reads.image_products(s, paths)

    def assign_products(self, assignments: Mapping[str, str]) -> int:
        """Link the images at the given paths to the given product ids; returns how many changed."""
        with self._session(write=True) as s:
            return writes.assign_products(s, assignments)

    def orphan_products(self) -> list[str]:
        """Product ids with no image, sorted."""
        with self._session() as s:
            return reads.orphan_products(s)

    def image_count(self) -> int:
        """How many image rows the catalog holds, of any status."""
        with self._session() as s:
            return reads.image_count(s)

    def stats(self) -> dict[str, object]:
        """JSON-ready counts: products, images by status, vectors, contents, models, last run, generation."""
        with self._session() as s:
            return reads.stats(s)

    def keeper_signals(self, sha256s: Iterable[str], version: int) -> dict[str, signals.SignalRow]:
        """Stored keeper-rule pixel signals (thumbnail bytes, detail, JPEG quality) by sha256, for ``version``."""
        with self._session() as s:
            return signals.read_signals(s, sha256s, version)

    def save_keeper_signals(self, values: Mapping[str, signals.SignalRow], version: int) -> None:
        """Store keeper-rule pixel signals by sha256 (a cache: replaces what was there)."""
        if values:
            with self._session(write=True) as s:
                signals.save_signals(s, values, version)

    # -- report history and review decisions ---------------------------------------------------------

    def save_report(
        self,
        threshold: float,
        model_id: str,
        params: dict[str, Any],
        summary: dict[str, Any],
        members: Sequence[history.MemberRow],
    ) -> int:
        """Store a report run and its members (cluster_id, image_id, path, is_keeper, tier, distance)."""
        with self._session(write=True) as s:
            return history.save_report(s, threshold, model_id, params, summary, members)

    def report_run(self, run_id: int) -> dict[str, Any] | None:
        """A report run's id, time, threshold, model, parameters and summary, or None."""
        with self._session() as s:
            return history.run_info(s, run_id)

    def previous_report_run(self, before: int | None = None) -> int | None:
        """The id of the newest report run (older than ``before`` when given), or None."""
        with self._session() as s:
            return history.previous_run_id(s, before)

    def report_clusters(self, run_id: int) -> dict[str, list[tuple[int, str, bool]]]:
        """Cluster id → members (image id, path, is keeper) of one report run."""
        with self._session() as s:
            return history.run_clusters(s, run_id)

    def delete_report_run(self, run_id: int) -> None:
        """Remove a report run from the history (a run whose report never reached its reader)."""
        with self._session(write=True) as s:
            history.delete_run(s, run_id)

    def set_mark(self, image_a: int, image_b: int, decision: str, note: str | None = None) -> None:
        """Record a review decision (``duplicate`` or ``not_duplicate``) on a pair of images."""
        with self._session(write=True) as s:
            history.set_mark(s, image_a, image_b, decision, note)

    def clear_mark(self, image_a: int, image_b: int) -> str | None:
        """Remove the review decision on a pair; returns the decision removed, or None when there was none."""
        with self._session(write=True) as s:
            return history.clear_mark(s, image_a, image_b)

    def marks(self) -> list[tuple[int, int, str]]:
        """Every review decision as (image_a, image_b, decision) with image_a < image_b."""
        with self._session() as s:
            return history.all_marks(s)

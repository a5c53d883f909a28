"""Ingest: walk a folder, decode and embed what is new, write the catalog, keep the index in step."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dedup.config import BATCH_SIZE, IMAGE_EXTENSIONS, INDEX_SAVE_INTERVAL_S, INGEST_ENGINES
from dedup.errors import ConfigError, ImageError, InputError, ModelError
from dedup.imaging import DecodedFile, ModelInput, decode_files, iter_image_files
from dedup.service.metadata import ProductMetadata, read_metadata
from dedup.service.store import Store
from dedup.types import STATUS_FAILED, STATUS_OK, FailedFile, ImageRecord, IngestSummary, KnownFile
from dedup.workers import init_worker

if TYPE_CHECKING:
    from dedup.catalog import Catalog

log = logging.getLogger(__name__)

#: Called with (files done, files to do) as ingest goes.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Engine:
    """Where an ingest's decoding runs: ``local`` (``processes`` forces worker processes or threads) or ``ray``
    (``workers`` CPUs for a local Ray instance; ``RAY_ADDRESS`` names a cluster instead)."""

    name: str = "local"
    workers: int | None = None
    processes: bool | None = None


@dataclass(frozen=True)
class _Todo:
    path: Path
    size: int
    mtime: float
    known: KnownFile | None


def ingest_folder(
    store: Store,
    folder: str | os.PathLike[str],
    metadata: str | os.PathLike[str] | None = None,
    prune: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    decode_processes: bool | None = None,
    engine: str = "local",
    workers: int | None = None,
) -> IngestSummary:
    """Ingest every image under ``folder`` into ``store`` and return the counts.

    Files whose path, size and mtime are unchanged are skipped without being read; content already
    embedded (same sha256) reuses its vector. Each batch is one catalog transaction followed by an
    index update, so an interrupted run leaves a consistent catalog that the next run completes.
    Files are decoded by worker processes when there are at least :data:`PROCESS_MIN_FILES` of them
    (``decode_processes`` forces processes or threads). ``engine="ray"`` decodes and embeds on a Ray cluster
    instead (``dedup.service.ray_engine``; ``workers`` CPUs for a local Ray instance), writing the same way.
    """
    if engine not in INGEST_ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(INGEST_ENGINES)}, not {engine!r}")
    run_on = Engine(engine, workers, decode_processes)
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"{folder}: not a folder")
    meta = read_metadata(Path(metadata) if metadata else None, root)
    started = time.monotonic()
    summary = IngestSummary()
    # Three stages run at once: workers decode the next DECODE_AHEAD batches, this thread embeds batch i, and a
    # writer thread stores batch i-1 (catalog transaction + index update). The model releases the GIL; the
    # writer is mostly Python, so it is the one overlapped.
    with store.write_lock(), ExitStack() as pools, ThreadPoolExecutor(1) as writer:
        files = iter_image_files(root, IMAGE_EXTENSIONS)
        summary.seen = len(files)
        todo: list[_Todo] | None = None
        known: dict[str, KnownFile] = {}
        decoding: _DecodeQueue | None = None
        if store.catalog_is_new():
            # A new catalog has nothing to skip: decode the first batches while the catalog, model and index load.
            todo = _plan(files, {}, "", summary, None)
            decoding = pools.enter_context(_decode_queue(store, todo, batch_size, store.preprocess, run_on))
        catalog = store.catalog
        encoder = store.encoder
        store.index  # noqa: B018 - load or rebuild it so it matches the catalog before we add to it
        if meta.products:
            catalog.upsert_products(meta.products.values())
        if todo is None or decoding is None:
            known = catalog.known_files()
            todo = _plan(files, known, encoder.model_id, summary, catalog)
            decoding = pools.enter_context(_decode_queue(store, todo, batch_size, encoder.preprocess, run_on))
        run_id = catalog.begin_run(str(root), encoder.model_id)
        status = "interrupted"
        try:
            done = 0
            if progress:
                progress(0, len(todo))
            in_flight: tuple[Future[None], _Prepared] | None = None
            while (next_batch := decoding.next()) is not None:
                batch, decoded = next_batch
                # Vectors of the batch still being written are not in the catalog yet: reuse them.
                unwritten = in_flight[1].new_vectors if in_flight is not None else {}
                prepared = _prepare_batch(store, batch, decoded, meta.product_for, summary, unwritten)
                done = _await_write(in_flight, done, len(todo), progress)
                in_flight = (writer.submit(_write_batch, store, prepared, run_id), prepared)
            done = _await_write(in_flight, done, len(todo), progress)
            if prune:
                summary.pruned = _prune(store, root, {str(p) for p in files}, known)
            if metadata:
                summary.products_updated = _apply_metadata(store, files, meta)
            summary.orphans = catalog.orphan_products()
            summary.orphan_products = len(summary.orphans)
            status = "finished"
        finally:
            decoding.cancel()
            summary.failed = len(summary.failures)
            summary.known_failed = len(summary.known_failures)
            summary.seconds = time.monotonic() - started
            store.save_index(force=True)
            catalog.finish_run(run_id, status, summary.as_dict())
    log.info(
        "ingest %s: seen %d, new %d, changed %d, unchanged %d, reused %d, failed %d, pruned %d (%.1f img/s)",
        root,
        summary.seen,
        summary.new,
        summary.changed,
        summary.unchanged,
        summary.reused,
        summary.failed,
        summary.pruned,
        summary.images_per_second,
    )
    return summary


#: Files to decode from which ingest decodes in worker processes rather than threads: below it, starting
#: the processes costs more than they save.
PROCESS_MIN_FILES = 512


def _decode_pool(files: int, processes: bool | None = None) -> Executor:
    """Workers to decode ``files`` files, one per core: processes for many files, threads for few.

    Processes decode side by side without sharing the GIL (whose Python parts held both cores to ~175 %
    with threads, ~190 % with processes), and hand back only facts and the small model input. They are
    forked when this process runs no other Python thread, else started from a fork server (forking a
    process whose other threads may hold locks is not safe).
    """
    workers = max(1, os.cpu_count() or 1)
    methods = multiprocessing.get_all_start_methods()
    if processes is None:
        processes = files >= PROCESS_MIN_FILES and workers > 1
    if not processes or not {"fork", "forkserver"} & set(methods):
        return ThreadPoolExecutor(workers)
    method = "fork" if threading.active_count() == 1 and "fork" in methods else "forkserver"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["dedup.imaging", "dedup.workers"])  # the server imports what workers run, once
    # A worker must not outlive an ingest killed outright (it would wait forever on its task pipe), and Ctrl-C
    # is this process's to handle.
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker)


def _decode_queue(
    store: Store, todo: Sequence[_Todo], batch_size: int, preprocess: ModelInput, engine: Engine
) -> _DecodeQueue:
    """A :class:`_DecodeQueue` over ``todo``: decoding in :func:`_decode_pool`'s workers, or decoding and embedding
    in Ray tasks."""
    if engine.name == "ray":
        from dedup.service.ray_engine import RayPool, embed_files

        return _DecodeQueue(lambda: RayPool(engine.workers), todo, batch_size, embed_files, str(store.model_dir))
    return _DecodeQueue(lambda: _decode_pool(len(todo), engine.processes), todo, batch_size, decode_files, preprocess)


def _plan(
    files: Sequence[Path],
    known: dict[str, KnownFile],
    model_id: str,
    summary: IngestSummary,
    catalog: Catalog | None,
) -> list[_Todo]:
    """The files to read: new ones, and known ones whose size, mtime or model changed.

    Unchanged files are counted; a known broken file that is still the same is listed as a known failure
    (from ``catalog``'s failure list) without being read.
    """
    todo: list[_Todo] = []
    previous_failures: dict[str, FailedFile] | None = None
    for path in files:
        try:
            st = path.stat()
        except OSError:
            try:
                # A dangling link or a link loop: go on with the link's own facts, and the loader records why.
                st = path.lstat()
            except OSError as exc:
                summary.failures.append(FailedFile(str(path), "io", f"cannot stat: {exc.strerror or exc}"))
                continue
        k = known.get(str(path))
        if k is not None and k.bytes == st.st_size and k.mtime == st.st_mtime:
            if k.status == STATUS_OK and k.model_id == model_id:
                summary.unchanged += 1
                continue
            if k.status == STATUS_FAILED and catalog is not None:
                # Still the same broken file: report it again without re-reading it.
                if previous_failures is None:
                    previous_failures = {f.path: f for f in catalog.failed_files()}
                if k.path in previous_failures:
                    summary.known_failures.append(previous_failures[k.path])
                continue
        todo.append(_Todo(path, st.st_size, st.st_mtime, k))
    return todo


#: Batches decoding ahead of the one being embedded. Once running, one would do (the cores are busy either way);
#: three keep both cores decoding while a new catalog, the model and the index load (~1 s), which measured
#: 0.3–0.4 s faster on 5,000 files for ~14 MB more model input in memory.
DECODE_AHEAD = 3


#: Files per decoding task: enough to make handing a task to a worker cheap next to its work, few enough to
#: keep both workers busy to the end of a batch.
CHUNK = 32


#: The failure kind of a file whose decoding worker died on it twice (killed, or out of memory).
DECODER_DIED = "decoder_died"


class _DecodeQueue:
    """Batches of ``todo`` decoding in a pool from ``new_pool``, :data:`DECODE_AHEAD` in flight, handed out in order.

    A worker process that dies (killed, or by the kernel for memory) breaks its pool and every task in it. The
    queue then starts a new pool, decodes the broken batch's files one task each, and any file whose task breaks
    that pool too is decoded alone; a file that kills a worker on its own is returned as a ``decoder_died``
    failure. So a dead worker costs at most its batch's time, never a file, and the ingest goes on.
    """

    def __init__(
        self,
        new_pool: Callable[[], Executor],
        todo: Sequence[_Todo],
        batch_size: int,
        task: Callable[[list[Path], Any], list[DecodedFile | ImageError]],
        task_arg: Any,
    ):
        # ``task(paths, task_arg)`` decodes a chunk: decode_files with the model's input, or (Ray) embed_files.
        self._new_pool, self._task, self._task_arg = new_pool, task, task_arg
        self._pool = new_pool()
        self._batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        self._queued: deque[tuple[Sequence[_Todo], list[Future[list[DecodedFile | ImageError]]]]] = deque()
        self._submitted = 0
        self._fill()

    def __enter__(self) -> _DecodeQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, batch: Sequence[_Todo]) -> list[Future[list[DecodedFile | ImageError]]]:
        chunks = [[t.path for t in batch[i : i + CHUNK]] for i in range(0, len(batch), CHUNK)]
        return [self._pool.submit(self._task, c, self._task_arg) for c in chunks]

    def _fill(self) -> None:
        while len(self._queued) < DECODE_AHEAD and self._submitted < len(self._batches):
            batch = self._batches[self._submitted]
            self._queued.append((batch, self._submit(batch)))
            self._submitted += 1

    def _restart(self) -> None:
        """Replace the broken pool and resubmit the batches queued in it."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._new_pool()
        self._queued = deque((batch, self._submit(batch)) for batch, _ in self._queued)

    def next(self) -> tuple[Sequence[_Todo], list[DecodedFile | ImageError]] | None:
        """The next batch and its decoded files (in order), or None when all were handed out."""
        if not self._queued:
            return None
        batch, futures = self._queued.popleft()
        try:
            decoded = [d for f in futures for d in f.result()]
        except BrokenExecutor:
            log.warning(
                "a decoding worker stopped abruptly (killed, or out of memory) on one of %d files from %s; "
                "decoding them again in new workers",
                len(batch),
                batch[0].path,
            )
            self._restart()
            decoded = self._decode_apart(batch)
        self._fill()
        return batch, decoded

    def _decode_apart(self, batch: Sequence[_Todo]) -> list[DecodedFile | ImageError]:
        """Decode ``batch`` one file a task; files whose task breaks the pool again are decoded alone."""
        futures = [self._pool.submit(self._task, [t.path], self._task_arg) for t in batch]
        results: list[DecodedFile | ImageError | None] = []
        for f in futures:
            try:
                results.append(f.result()[0])
            except BrokenExecutor:
                results.append(None)
        if any(r is None for r in results):
            self._restart()
        for i, (item, result) in enumerate(zip(batch, results, strict=True)):
            if result is not None:
                continue
            try:
                results[i] = self._pool.submit(self._task, [item.path], self._task_arg).result()[0]
            except BrokenExecutor:
                log.warning("%s: its decoding worker died on it alone; recorded as %s", item.path, DECODER_DIED)
                results[i] = ImageError(
                    str(item.path),
                    DECODER_DIED,
                    "the decoding worker died on this file (killed, or out of memory); ingest again to retry it",
                )
                self._restart()
        return [r for r in results if r is not None]

    def cancel(self) -> None:
        """Drop the batches not handed out (an interrupted ingest need not finish decoding them)."""
        for _, futures in self._queued:
            for f in futures:
                f.cancel()
        self._queued.clear()


@dataclass(frozen=True)
class _Prepared:
    """One embedded batch, ready to be written."""

    batch: Sequence[_Todo]
    records: list[ImageRecord]
    failures: list[FailedFile]
    new_vectors: dict[str, np.ndarray]  # contents embedded for this batch, by sha256
    vectors: list[np.ndarray]  # one per record, in order


def _prepare_batch(
    store: Store,
    batch: Sequence[_Todo],
    decoded: Sequence[DecodedFile | ImageError],
    product_for: Callable[[Path], str],
    summary: IngestSummary,
    unwritten: dict[str, np.ndarray],
) -> _Prepared:
    """Embed the new contents of a decoded batch and count it; ``unwritten`` holds vectors in flight."""
    encoder, catalog = store.encoder, store.catalog
    good: list[tuple[_Todo, DecodedFile, ImageRecord]] = []
    failures: list[FailedFile] = []
    for item, result in zip(batch, decoded, strict=True):
        if isinstance(result, ImageError):
            log.info("skipped %s", result.message)  # the caller reports failures; no double output
            failures.append(FailedFile(str(item.path), result.kind, result.reason, item.size, item.mtime))
            continue
        record = ImageRecord(
            path=str(item.path),
            sha256=result.sha256,
            pixel_hash=result.pixel_hash,
            width=result.width,
            height=result.height,
            format=result.format,
            bytes=item.size,
            mtime=item.mtime,
            product_id=product_for(item.path),
        )
        good.append((item, result, record))
    records = [rec for _, _, rec in good]
    stored = catalog.stored_vectors([r.sha256 for r in records], encoder.model_id)
    stored.update({r.sha256: unwritten[r.sha256] for r in records if r.sha256 in unwritten})
    # Embed each new content once, even when the batch holds several copies of it.
    fresh: dict[str, np.ndarray] = {}
    new_vectors: dict[str, np.ndarray] = {}
    for _, dec, rec in good:
        if rec.sha256 in stored:
            continue
        if dec.vector is not None:  # embedded where it was decoded (a Ray worker)
            if dec.model_id != encoder.model_id:
                raise ModelError(
                    f"a worker embedded {rec.path} with model {dec.model_id}, this store uses {encoder.model_id}: "
                    "install the same dedup and model folder on every node"
                )
            new_vectors.setdefault(rec.sha256, dec.vector)
        else:
            fresh.setdefault(rec.sha256, dec.model_input)
    if fresh:
        emb = encoder.embed(np.stack(list(fresh.values())))
        new_vectors.update(zip(fresh.keys(), emb, strict=True))

    counted_new: set[str] = set()
    for item, _, rec in good:
        k = item.known
        if k is not None and k.status == STATUS_OK and k.sha256 == rec.sha256 and k.model_id == encoder.model_id:
            summary.unchanged += 1  # touched (new mtime) but the same content
        elif k is not None and k.status == STATUS_OK:
            summary.changed += 1
        elif rec.sha256 in new_vectors and rec.sha256 not in counted_new:
            counted_new.add(rec.sha256)
            summary.new += 1
        else:
            summary.reused += 1
    summary.failures.extend(failures)
    vectors = [new_vectors[r.sha256] if r.sha256 in new_vectors else stored[r.sha256] for r in records]
    # A vector reused from the batch in flight is stored by that batch's transaction, committed before this one's.
    return _Prepared(batch, records, failures, new_vectors, vectors)


def _await_write(
    in_flight: tuple[Future[None], _Prepared] | None, done: int, total: int, progress: Progress | None
) -> int:
    """Wait for the batch being written (if any) and report progress; returns the files done."""
    if in_flight is None:
        return done
    in_flight[0].result()
    done += len(in_flight[1].batch)
    if progress:
        progress(done, total)
    return done


def _write_batch(store: Store, prepared: _Prepared, run_id: int) -> None:
    """One catalog transaction for the batch, then the same change to the in-memory index."""
    encoder = store.encoder
    records = prepared.records
    ids = store.catalog.write_batch(records, prepared.new_vectors, prepared.failures, encoder.model_id, run_id)
    # A known path that is now broken must leave the index.
    ok_paths = {r.path for r in records}
    gone = [t.known.image_id for t in prepared.batch if t.known is not None and t.known.path not in ok_paths]
    store.update_index(
        add_ids=np.asarray(ids, dtype=np.int64),
        add_vectors=np.stack(prepared.vectors).astype(np.float32) if prepared.vectors else None,
        remove_ids=np.asarray(gone, dtype=np.int64),
    )
    store.save_index(interval_s=INDEX_SAVE_INTERVAL_S)


def _apply_metadata(store: Store, files: Sequence[Path], meta: ProductMetadata) -> int:
    """Link every known file under the ingested folder to the product the metadata CSV names now.

    Files read in this run got their product as they were written; this catches the unchanged ones, so
    moving ``whale.jpg`` from P2 to P9 in the CSV takes effect on the next ingest without touching the file.
    """
    wanted = {str(p): meta.product_for(p) for p in files}
    current = store.catalog.image_products(list(wanted))
    changes = {path: pid for path, pid in wanted.items() if path in current and current[path] != pid}
    updated = store.catalog.assign_products(changes)
    if updated:
        log.info("metadata: %d unchanged images moved to another product", updated)
    return updated


def _prune(store: Store, root: Path, present: set[str], known: dict[str, KnownFile]) -> int:
    """Mark images under ``root`` whose files disappeared as missing and drop them from the index."""
    prefix = str(root) + os.sep
    missing = [
        p
        for p, k in known.items()
        if p.startswith(prefix) and p not in present and k.status != "missing" and not os.path.exists(p)
    ]
    if not missing:
        return 0
    ids = store.catalog.mark_missing(missing)
    store.update_index(remove_ids=np.asarray(ids, dtype=np.int64))
    return len(ids)

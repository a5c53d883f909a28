"""Ingest on a Ray cluster: files decoded *and embedded* by Ray tasks, written through the local ingest's path.

``dedup ingest FOLDER --engine ray`` (or ``ingest_folder(..., engine="ray")``) uses the same planning, batching,
catalog transactions, index updates and failure records as a local ingest (``dedup.service.ingest``); only the
work of a batch moves: instead of decoding in local processes and embedding here, each task of 32 files runs
:func:`embed_files` on a Ray worker, which decodes them with the safe loader and embeds them with the store's
model (loaded once per worker process), and sends back the facts and the vectors, never the pixels. The driver
writes each batch in one transaction, so an interrupted run leaves no duplicate rows and the next run finishes
it, exactly as locally.

Where it runs: the cluster at ``RAY_ADDRESS`` when that is set (``ray start --head`` on one machine, ``ray start
--address=...`` on the others), else a local Ray instance with ``workers`` CPUs (all cores by default), stopped
when the ingest ends. Every node must have dedup (and the model folder, at the same path) installed, and see the
files at the paths the driver lists (a shared mount), as Ray tasks read them where they run.

Nothing imports Ray unless this engine is chosen: it is the ``[ray]`` extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dedup.errors import ConfigError, ImageError
from dedup.imaging import DecodedFile, decode_files

if TYPE_CHECKING:
    from dedup.embedding.encoder import Encoder

log = logging.getLogger(__name__)

#: The environment variable naming a running Ray cluster (Ray's own).
ENV_RAY_ADDRESS = "RAY_ADDRESS"

_ENCODERS: dict[str, Encoder] = {}  # one per model folder, per worker process
_EMPTY = np.zeros((0, 0, 3), dtype=np.uint8)


def embed_files(paths: Sequence[str | os.PathLike[str]], model_dir: str) -> list[DecodedFile | ImageError]:
    """Decode and embed ``paths`` with the model in ``model_dir`` (the body of one Ray task).

    Returns what :func:`dedup.imaging.decode_files` returns, each decoded file carrying its vector and model id
    instead of its model input; unusable files are their ImageError, as locally.
    """
    encoder = _ENCODERS.get(model_dir)
    if encoder is None:
        from dedup.embedding.encoder import load_encoder

        encoder = _ENCODERS[model_dir] = load_encoder(model_dir)
    decoded = decode_files(paths, encoder.preprocess)
    good = [d for d in decoded if isinstance(d, DecodedFile)]
    if not good:
        return decoded
    vectors = iter(encoder.embed(np.stack([d.model_input for d in good])))
    return [
        replace(d, model_input=_EMPTY, vector=np.asarray(next(vectors), np.float32), model_id=encoder.model_id)
        if isinstance(d, DecodedFile)
        else d
        for d in decoded
    ]


class RayPool(Executor):
    """An Executor whose tasks are Ray tasks: ``submit(embed_files, paths, model_dir)`` returns their Future.

    Joins the cluster at ``RAY_ADDRESS``, else starts a local instance with ``workers`` CPUs (stopped again by
    :meth:`shutdown`). Ray retries a task whose worker died (three times), so a killed worker costs time, not
    files.
    """

    def __init__(self, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--engine ray needs Ray: pip install 'dedup[ray]'") from exc
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            address = os.environ.get(ENV_RAY_ADDRESS)
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
            if address:
                ray.init(address=address, **options)
            else:
                # The workers import dedup from where this process does (a checkout or an installed package).
                root = str(Path(__file__).resolve().parents[2])
                path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
                runtime_env = {"env_vars": {"PYTHONPATH": path}}
                ray.init(num_cpus=workers or os.cpu_count() or 1, runtime_env=runtime_env, **options)
                self._started = True
            log.info("ray: %s, %s CPUs", address or "local instance", ray.cluster_resources().get("CPU"))
        self._task = ray.remote(num_cpus=1)(embed_files)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``embed_files(*args)`` as a Ray task (the only function this pool runs)."""
        if fn is not embed_files:
            raise ValueError("a RayPool runs embed_files only")
        future: Future[Any] = self._task.remote(*args, **kwargs).future()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the local Ray instance this pool started (a cluster joined by address keeps running)."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False

"""Run the HTTP app with uvicorn: one process, one model, one index in memory."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys

import uvicorn

from dedup.api.app import create_app
from dedup.service import Store

log = logging.getLogger(__name__)


def serve(store: Store, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None) -> None:
    """Serve ``store`` over HTTP until interrupted (Ctrl-C or SIGTERM end it cleanly).

    One worker process: the model and the index are loaded once, before the first request is
    accepted. ``api_key`` is as in :func:`dedup.api.create_app` (None: ``DEDUP_API_KEY``).

    Unless ``OMP_NUM_THREADS`` is set, index searches run on one OpenMP thread: a server searches
    one vector at a time, and waking a thread team for that costs more than the search itself
    (measured on 2 busy cores: 10,000 images, 42 → 18 ms per HTTP query; 100,000, 61 → 36 ms).
    """
    _single_threaded_search()
    app = create_app(store, api_key=api_key)
    if app.state.dedup.api_key is None and not _is_loopback(host):
        log.warning("serving on %s without an API key: anyone who can reach it can add images", host)
    uvicorn.run(app, host=host, port=port, workers=1, proxy_headers=False, server_header=False)


def _single_threaded_search() -> None:
    # OpenMP reads the variable once, when FAISS's library loads; the store loads FAISS lazily.
    if "OMP_NUM_THREADS" in os.environ:
        return
    if "faiss" in sys.modules:
        log.info("FAISS is already loaded: its OpenMP threads stay as they are")
        return
    os.environ["OMP_NUM_THREADS"] = "1"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Ingest on Ray (``--engine ray``) on a local Ray instance with 2 workers: the same catalog as a local ingest.

The same sample folder is ingested twice, locally and through Ray tasks that decode and embed; the catalogs must
hold the same rows (paths, sha256, failures with their reasons), vectors within 1e-6 and the same duplicate
clusters. An ingest through Ray killed outright half-way is finished by the next run without a duplicate row, and
the saved index then matches the catalog.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dedup.service import build_report, ingest_folder, open_store

from .conftest import SAMPLE_CATALOG
from .test_faults import DEDUP, ENV, _catalog_invariants, _count_rows, _saved_index_matches_catalog
from .test_ingest import _index_matches_catalog, _make_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install -e '.[ray]')"
    ),
]


def _ray_stop() -> None:
    # A driver killed outright leaves its local Ray instance behind; nothing else on a test machine uses Ray.
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, check=False)


def test_a_ray_ingest_makes_the_catalog_a_local_one_makes(tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    shutil.copytree(SAMPLE_CATALOG, folder)
    stores = {}
    for engine in ("local", "ray"):
        store = open_store(tmp_path / engine)
        summary = ingest_folder(store, folder, engine=engine, workers=2)
        stores[engine] = (store, summary)
    try:
        (local, s_local), (ray, s_ray) = stores["local"], stores["ray"]
        assert (s_ray.new, s_ray.reused, s_ray.failed) == (s_local.new, s_local.reused, s_local.failed)
        rows = {e: {k.path: k.sha256 for k in s.catalog.known_files().values()} for e, (s, _) in stores.items()}
        assert rows["ray"] == rows["local"]
        failed = {e: {(f.path, f.kind) for f in s.catalog.failed_files()} for e, (s, _) in stores.items()}
        assert failed["ray"] == failed["local"] and failed["ray"]
        model = local.encoder.model_id
        vectors = {}
        for engine, (store, _) in stores.items():
            ids, vecs = store.catalog.indexed_vectors(model)
            paths = {i.image_id: i.path for i in store.catalog.images(ids.tolist()).values()}
            vectors[engine] = {paths[int(i)]: v for i, v in zip(ids, vecs, strict=True)}
        assert vectors["ray"].keys() == vectors["local"].keys()
        worst = max(float(np.abs(vectors["ray"][p] - vectors["local"][p]).max()) for p in vectors["local"])
        assert worst <= 1e-6
        _index_matches_catalog(ray)
        clusters = {
            e: sorted(sorted(m.path for m in c.members) for c in build_report(s, save=False).clusters)
            for e, (s, _) in stores.items()
        }
        assert clusters["ray"] == clusters["local"] and clusters["ray"]
    finally:
        for store, _ in stores.values():
            store.close()
        _ray_stop()


def test_a_killed_ray_ingest_is_finished_by_the_next_run(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    n = 1500
    _make_images(folder, n, size=120)
    store_dir = tmp_path / "store"
    db = store_dir / "catalog.sqlite"
    cmd = [*DEDUP, "--store", str(store_dir), "ingest", str(folder), "--engine", "ray", "--workers", "2"]
    try:
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while _count_rows(db) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the ingest finished before it could be killed"
        proc.kill()
        proc.wait(timeout=60)
        assert 0 < _catalog_invariants(db) < n
        _ray_stop()
        final = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
        assert final.returncode == 0, final.stderr
        assert _catalog_invariants(db) == n
        _saved_index_matches_catalog(store_dir)
    finally:
        _ray_stop()

"""The catalog on PostgreSQL as on SQLite: the same jobs on both, and what only a shared server allows.

A throwaway PostgreSQL cluster (``tests/pg.py``: Debian's binaries, initdb in a temporary folder, a free loopback
port) serves the session (``pg_server`` in conftest); every test gets a database of its own. The scenarios run on
both backends: ingest, re-ingest and prune, the report and its history, review marks, the HTTP API, and the
ownership of ingest runs (every test of tests/test_catalog.py runs on both as well). Then the PostgreSQL-only
ones: two stores (two machines' folders) on one catalog, each ingesting its own folder and each reporting every
image; writers of different stores taking turns through the advisory lock; Alembic's command line upgrading and
downgrading a PostgreSQL database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dedup.catalog.models import IngestRun
from dedup.service import Store, build_report, ingest_folder, mark_pair, open_store

from . import pg
from .conftest import ROOT, SAMPLE_CATALOG, SAMPLE_QUERIES
from .test_ingest import _index_matches_catalog

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh catalog URL: a SQLite file, or a new database on the throwaway server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return pg.fresh_database(request.getfixturevalue("pg_server"))


def _folder(tmp_path: Path, *parts: str) -> Path:
    """A copy of some sample folders (products of one kind and their edited copies)."""
    dst = tmp_path / "photos"
    for part in parts:
        shutil.copytree(SAMPLE_CATALOG / part, dst / part)
    return dst


def test_ingest_report_review_and_prune(tmp_path: Path, db_url: str) -> None:
    folder = _folder(tmp_path, "products/symbols", "duplicates")
    with open_store(tmp_path / "store", db_url=db_url) as store:
        first = ingest_folder(store, folder)
        assert first.new > 20 and first.failed == 0
        again = ingest_folder(store, folder)
        assert again.new == 0 and again.unchanged == first.seen
        _index_matches_catalog(store)
        report = build_report(store)
        assert report.clusters and report.run_id == 1
        cluster = report.clusters[0]
        keep, other = cluster.keep, cluster.remove[0]
        mark_pair(store, str(keep.image_id), str(other.image_id), "not_duplicate")
        second = build_report(store)
        assert second.previous_run_id == 1
        together = [c for c in second.clusters if {keep.path, other.path} <= {m.path for m in c.members}]
        assert together == []  # a reviewed "not a duplicate" pair is never put in one cluster again
        Path(other.path).unlink()
        pruned = ingest_folder(store, folder, prune=True)
        assert pruned.pruned == 1
        _index_matches_catalog(store)


def test_http_api(tmp_path: Path, db_url: str) -> None:
    from fastapi.testclient import TestClient

    from dedup.api import create_app

    folder = _folder(tmp_path, "products/animals")
    with open_store(tmp_path / "store", db_url=db_url) as store:
        ingest_folder(store, folder)
        with TestClient(create_app(store, api_key="")) as client:
            photo = (SAMPLE_QUERIES / "farm__phone.jpg").read_bytes()
            found = client.post("/api/v1/query", files={"image": ("q.jpg", photo)}, data={"k": "3"})
            assert found.status_code == 200 and len(found.json()["results"]) == 3
            added = client.post("/api/v1/images", files={"image": ("n.jpg", photo)}, data={"product_id": "PG/1"})
            assert added.status_code == 201, added.text
            assert (
                client.get("/api/v1/products/PG%2F1").json()["images"][0]["image_id"]
                == added.json()["image"]["image_id"]
            )
        _index_matches_catalog(store)


def test_runs_belong_to_their_host_and_process(tmp_path: Path, db_url: str) -> None:
    with open_store(tmp_path / "store", db_url=db_url) as store:
        catalog = store.catalog
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        with catalog._session(write=True) as s:  # runs another machine and a killed process left "running"
            s.add(IngestRun(root="/elsewhere", model_id="m", status="running", counts={}, host="machine-b", pid=1))
            s.add(
                IngestRun(
                    root="/here", model_id="m", status="running", counts={}, host=socket.gethostname(), pid=dead.pid
                )
            )
        ingest_folder(store, _folder(tmp_path, "products/animals"))
        with catalog._session() as s:
            runs = {r.root: r for r in s.query(IngestRun)}
    assert runs["/elsewhere"].status == "running"  # machine B's ingest is B's to judge
    assert runs["/here"].status == "interrupted"
    mine = next(r for root, r in runs.items() if root.endswith("photos"))
    assert (mine.status, mine.host, mine.pid) == ("finished", socket.gethostname(), os.getpid())


def test_two_stores_on_one_catalog_see_every_image(tmp_path: Path, pg_server: str) -> None:
    url = pg.fresh_database(pg_server)
    a_folder = _folder(tmp_path / "a", "products/symbols", "duplicates")
    b_folder = _folder(tmp_path / "b", "products/animals")
    with open_store(tmp_path / "a" / "store", db_url=url) as a, open_store(tmp_path / "b" / "store", db_url=url) as b:
        in_a = ingest_folder(a, a_folder)
        in_b = ingest_folder(b, b_folder)
        total = in_a.new + in_a.reused + in_b.new + in_b.reused
        for store in (a, b):
            _index_matches_catalog(store)  # each machine's index caught up with the other's writes
            assert len(store.index) == total
            report = build_report(store, save=False)
            assert report.summary.images == total
        # A query through B finds A's images: one catalog, two derived indexes.
        from dedup.service import query_paths

        a_image = next(iter(sorted((a_folder / "products" / "symbols").iterdir())))
        (result,) = list(query_paths(b, [a_image], k=1))
        assert not isinstance(result, Exception) and result.hits[0].image.path == str(a_image)


def test_writers_of_two_stores_take_turns(tmp_path: Path, pg_server: str) -> None:
    url = pg.fresh_database(pg_server)
    a = open_store(tmp_path / "a", db_url=url)
    b = open_store(tmp_path / "b", db_url=url)
    entered = threading.Event()

    def second_writer(store: Store) -> None:
        with store.write_lock():
            entered.set()

    try:
        with a.write_lock():
            waiting = threading.Thread(target=second_writer, args=(b,))
            waiting.start()
            time.sleep(0.5)
            assert not entered.is_set()  # B's writer waits for A's, though their lock files differ
        waiting.join(timeout=30)
        assert entered.is_set()
    finally:
        a.close()
        b.close()


def test_alembic_upgrades_and_downgrades_a_postgres_database(pg_server: str) -> None:
    url = pg.fresh_database(pg_server)
    args = [sys.executable, "-m", "alembic", "-c", "alembic.ini", "-x", f"url={url}"]
    for step in (["upgrade", "head"], ["downgrade", "0003"], ["upgrade", "head"], ["check"]):
        done = subprocess.run([*args, *step], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (step, done.stderr)

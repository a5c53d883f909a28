"""Shared fixtures: the shipped samples, fresh stores, and one ingested store per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dedup.service import Store, ingest_folder, open_store
from dedup.types import IngestSummary

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "catalog_samples"
SAMPLE_CATALOG = SAMPLES / "catalog"
SAMPLE_QUERIES = SAMPLES / "queries"


@pytest.fixture(scope="session")
def sample_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of catalog_samples/catalog (tests may not touch the repository's files)."""
    dst = tmp_path_factory.mktemp("samples") / "catalog"
    shutil.copytree(SAMPLE_CATALOG, dst)
    return dst


@pytest.fixture(scope="session")
def ingested(tmp_path_factory: pytest.TempPathFactory, sample_copy: Path) -> Iterator[tuple[Store, IngestSummary]]:
    """One store holding the ingested samples, shared by read-only tests."""
    store = open_store(tmp_path_factory.mktemp("store"))
    summary = ingest_folder(store, sample_copy, metadata=sample_copy / "products.csv")
    yield store, summary
    store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An empty store of its own."""
    s = open_store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (tests/pg.py); skips when it cannot run here."""
    from . import pg

    reason = pg.missing()
    if reason is not None:
        pytest.skip(reason)
    with pg.throwaway_server() as url:
        yield url

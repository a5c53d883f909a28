"""The compressed ``ivfpq`` index: size on disk, exact re-ranking, ids, tiny catalogs, and a store that uses it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dedup.config import ENV_INDEX_KIND, INDEX_KIND_NAMES, StoreConfig
from dedup.errors import ConfigError, StoreError
from dedup.index import (
    INDEX_KINDS,
    INFO_FILE,
    IndexInfo,
    IVFIndex,
    NumpyIndex,
    PQIndex,
    create_index,
    exact_rerank,
    load_index,
    save_index,
)
from dedup.service import Store, ingest_folder, open_store, query_paths, search_vector
from dedup.types import IngestSummary, QueryResult

from .conftest import SAMPLE_QUERIES

DIM = 128  # the shipped model's dimension: 32 sub-quantisers of 4 values
N = 20_000
N_COPIES = 300
#: Candidates per query before re-ranking, as dedup.service.search asks for k = 5.
CANDIDATES = 50


def ip(distance: np.ndarray) -> np.ndarray:
    """The inner product behind a unit-sphere distance: scores compare there, where no sqrt magnifies rounding."""
    return 1.0 - np.asarray(distance, dtype=np.float64) ** 2 / 2.0


def clustered(rng: np.random.Generator, n: int, dim: int = DIM, families: int = 400) -> np.ndarray:
    """Unit vectors in ``families`` clusters (look-alike products), as an embedding model makes them."""
    centres = rng.normal(size=(families, dim)).astype(np.float32)
    x = centres[rng.integers(0, families, n)] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near_copies(rng: np.random.Generator, originals: np.ndarray, distance: float) -> np.ndarray:
    """Unit vectors at about ``distance`` from each original (a re-encoded or lightly edited image)."""
    noise = rng.normal(size=originals.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    out = originals + distance * noise
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class Catalog20k:
    """20,000 catalog vectors under sparse ids, their compressed index, the exact reference, and planted copies."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        self.vectors = clustered(rng, N)
        self.ids = np.arange(N, dtype=np.int64) * 5 + 1_000_003
        self.index = create_index(DIM, "ivfpq")
        self.index.add(self.ids, self.vectors)
        self.reference = NumpyIndex(DIM)
        self.reference.add(self.ids, self.vectors)
        # Queries not in the catalog, each at distance ≤ 0.2 from one catalog vector (the first 300).
        self.copies = near_copies(rng, self.vectors[:N_COPIES], 0.19)
        self.copy_of = self.ids[:N_COPIES]

    def reranked(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k by exact distance among the index's candidates; the exact vectors stand in for the catalog's."""
        _, cand = self.index.search(query[None, :], max(4 * k, CANDIDATES))
        cand = cand[0][cand[0] >= 0]
        return exact_rerank(query, cand, self.reference.reconstruct(cand), k)


@pytest.fixture(scope="module")
def big() -> Catalog20k:
    return Catalog20k()


def test_factory_and_flags() -> None:
    assert INDEX_KINDS["ivfpq"] is PQIndex
    assert set(INDEX_KINDS) - {"numpy"} == set(INDEX_KIND_NAMES)  # the command line's list, kept without FAISS
    index = create_index(DIM, "ivfpq")
    assert isinstance(index, PQIndex) and isinstance(index, IVFIndex) and index.kind == "ivfpq"
    assert index.approximate_scores and not create_index(DIM).approximate_scores
    assert not create_index(DIM, "ivf").approximate_scores and not NumpyIndex(DIM).approximate_scores
    assert len(index) == 0 and index.search(np.eye(DIM, dtype=np.float32)[:1], 3)[1].tolist() == [[-1, -1, -1]]


def test_20000_vectors_take_at_most_64_bytes_each_on_disk(big: Catalog20k, tmp_path: Path) -> None:
    assert big.index.code_size == 32  # 32 sub-quantisers × 8 bits
    assert not big.index.undertrained
    save_index(big.index, IndexInfo("m", DIM, N, 1, kind="ivfpq"), tmp_path)
    size = (tmp_path / PQIndex.file_name).stat().st_size
    per_vector = size / N
    print(f"ivfpq at {N} vectors: {size} bytes, {per_vector:.1f} bytes a vector")
    assert per_vector <= 64


def test_save_load_round_trip(big: Catalog20k, tmp_path: Path) -> None:
    info = IndexInfo("m", DIM, N, 4, kind="ivfpq")
    save_index(big.index, info, tmp_path)
    loaded = load_index(tmp_path)
    assert loaded is not None
    index, again_info = loaded
    assert again_info == info and type(index) is PQIndex and len(index) == N
    assert json.loads((tmp_path / INFO_FILE).read_text())["kind"] == "ivfpq"
    np.testing.assert_array_equal(index.ids(), big.ids)
    queries = big.copies[:20]
    for got, want in zip(index.search(queries, 10), big.index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    # The direct map left out of the file is rebuilt on load (removal by id), and restored in the saved index.
    assert index.remove(big.ids[:3]) == 3 and len(index) == N - 3
    np.testing.assert_allclose(
        index.reconstruct(big.ids[3:5]), big.index.reconstruct(big.ids[3:5]), atol=1e-6
    )  # the same decoded codes
    assert len(big.index) == N and big.index.reconstruct(big.ids[:1]).shape == (1, DIM)


def test_planted_copies_are_first_after_reranking(big: Catalog20k) -> None:
    # The planted pairs really are within 0.2 and nearest to each other in the exact reference.
    d_ref, i_ref = big.reference.search(big.copies, 1)
    assert np.all(d_ref[:, 0] <= 0.2) and np.array_equal(i_ref[:, 0], big.copy_of)
    for row, query in enumerate(big.copies):
        d, i = big.reranked(query, 5)
        assert i[0] == big.copy_of[row], f"copy {row}"
        assert abs(ip(d[0]) - ip(d_ref[row, 0])) < 1e-6


def test_reranked_scores_are_the_exact_ones(big: Catalog20k) -> None:
    rng = np.random.default_rng(11)
    queries = np.concatenate([big.copies[:40], big.vectors[rng.choice(N, 40, replace=False)]])
    k = 10
    d_ref, i_ref = big.reference.search(queries, k)
    d_pq, _ = big.index.search(queries, k)
    assert np.abs(d_pq - d_ref).max() > 1e-2  # raw scores are estimates: re-ranking is needed at all
    hits = 0
    for row, query in enumerate(queries):
        d, i = big.reranked(query, k)
        # Every re-ranked score is the exact inner-product distance of its id...
        np.testing.assert_allclose(ip(d), big.reference.reconstruct(i) @ query, atol=1e-6, rtol=0)
        assert np.all(np.diff(d) >= 0)
        # ...and the list is the reference's wherever the candidates held the true neighbours.
        hits += int(np.array_equal(i, i_ref[row]))
        np.testing.assert_allclose(ip(d[0]), ip(d_ref[row, 0]), atol=1e-6)
    assert hits >= 0.95 * len(queries)


def test_remove_and_replace_by_id(big: Catalog20k) -> None:
    index = create_index(DIM, "ivfpq")
    ids, vectors = big.ids[:3000], big.vectors[:3000]
    index.add(ids, vectors)
    assert index.remove(np.concatenate([ids[:100], [7]])) == 100  # unknown ids are ignored
    assert len(index) == 2900
    np.testing.assert_array_equal(index.ids(), ids[100:])
    _, found = index.search(vectors[:100], 20)
    assert not np.isin(found, ids[:100]).any()
    with pytest.raises(KeyError):
        index.reconstruct(ids[:1])
    index.add(ids[100:110], vectors[:10])  # re-adding replaces, never duplicates
    assert len(index) == 2900
    _, top = index.search(vectors[:10], 1)
    np.testing.assert_array_equal(top[:, 0], ids[100:110])


@pytest.mark.parametrize("n", [1, 2, 50])
def test_tiny_catalogs_still_work(n: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(n)
    vectors = clustered(rng, n, families=5)
    ids = np.arange(n, dtype=np.int64) * 10
    index = create_index(DIM, "ivfpq")
    index.add(ids, vectors)
    assert isinstance(index, PQIndex) and len(index) == n
    assert 0 < index.code_size < 32  # smaller codebooks: fewer than 256 vectors cannot train 8-bit ones
    save_index(index, IndexInfo("m", DIM, n, 1, kind="ivfpq"), tmp_path)
    loaded = load_index(tmp_path)
    assert loaded is not None and len(loaded[0]) == n
    for row in range(n):
        _, cand = loaded[0].search(vectors[row : row + 1], CANDIDATES)
        cand = cand[0][cand[0] >= 0]
        d, i = exact_rerank(vectors[row], cand, vectors[cand // 10], 1)
        assert i[0] == ids[row] and d[0] < 1e-3
    assert loaded[0].remove(ids[:1]) == 1 and len(loaded[0]) == n - 1


def test_a_grown_index_says_it_is_undertrained() -> None:
    rng = np.random.default_rng(3)
    index = create_index(DIM, "ivfpq")
    index.add(np.arange(50), clustered(rng, 50, families=5))
    assert not index.undertrained
    index.add(np.arange(50, 1000), clustered(rng, 950, families=5))  # codebooks and lists trained on 50
    assert index.undertrained


def test_read_refuses_other_files(tmp_path: Path) -> None:
    ivf = create_index(DIM, "ivf")
    ivf.add(np.arange(100), clustered(np.random.default_rng(0), 100))
    ivf.write(tmp_path / "ivf.faiss")
    with pytest.raises(ValueError, match="IndexIVFPQ"):
        PQIndex.read(tmp_path / "ivf.faiss")
    with pytest.raises(OSError, match="empty"):
        create_index(DIM, "ivfpq").write(tmp_path / "empty.faiss")
    index = create_index(DIM, "ivfpq")
    index.add(np.arange(100), clustered(np.random.default_rng(1), 100))
    save_index(index, IndexInfo("m", DIM, 100, 1, kind="ivfpq"), tmp_path / "pq")
    path = tmp_path / "pq" / PQIndex.file_name
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(StoreError, match="unreadable"):
        load_index(tmp_path / "pq")


def test_exact_rerank_checks_its_inputs() -> None:
    q = np.eye(4, dtype=np.float32)[0]
    d, i = exact_rerank(q, np.array([5, 6, 7]), np.eye(4, dtype=np.float32)[[1, 0, 0]], 2)
    assert i.tolist() == [6, 7] and d.tolist() == [0.0, 0.0]  # ties by id
    assert exact_rerank(q, np.zeros(0, np.int64), np.zeros((0, 4), np.float32), 3)[1].size == 0
    with pytest.raises(ValueError, match="ids"):
        exact_rerank(q, np.array([1, 2]), np.eye(4, dtype=np.float32)[:1], 1)


# --- choosing the kind: config, environment, command line --------------------------------------------------


def test_store_config_index_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_INDEX_KIND, raising=False)
    assert StoreConfig.resolve(tmp_path).index_kind is None
    assert StoreConfig.resolve(tmp_path, index_kind="auto").index_kind is None
    assert StoreConfig.resolve(tmp_path, index_kind="IVFPQ").index_kind == "ivfpq"
    monkeypatch.setenv(ENV_INDEX_KIND, "ivfpq")
    assert StoreConfig.resolve(tmp_path).index_kind == "ivfpq"
    assert StoreConfig.resolve(tmp_path, index_kind="flat").index_kind == "flat"  # the argument wins
    with pytest.raises(ConfigError, match="valid kinds"):
        Store(StoreConfig.resolve(tmp_path, index_kind="hnsw"))


def test_cli_refuses_an_unknown_index_kind(tmp_path: Path) -> None:
    from dedup.cli import cli

    result = CliRunner().invoke(cli, ["--store", str(tmp_path), "--index-kind", "hnsw", "stats"])
    assert result.exit_code == 2 and "hnsw" in result.output


# --- a store that uses it ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pq_store(tmp_path_factory: pytest.TempPathFactory, sample_copy: Path) -> Iterator[Store]:
    """The samples ingested through the real path into a store configured for ``ivfpq``."""
    root = tmp_path_factory.mktemp("pq") / "store"
    with open_store(root, index_kind="ivfpq") as store:
        ingest_folder(store, sample_copy, metadata=sample_copy / "products.csv")
    # The first index of an empty catalog is flat (nothing to train on yet): reopening builds the compressed one.
    store = open_store(root, index_kind="ivfpq")
    yield store
    store.close()


def test_store_builds_and_keeps_the_compressed_index(pq_store: Store) -> None:
    index = pq_store.index
    assert index.kind == "ivfpq" and index.approximate_scores
    folder = pq_store.config.index_dir
    assert json.loads((folder / INFO_FILE).read_text())["kind"] == "ivfpq"
    assert (folder / PQIndex.file_name).is_file()
    ids, _ = pq_store.catalog.indexed_vectors(pq_store.encoder.model_id)
    np.testing.assert_array_equal(index.ids(), ids)
    with open_store(pq_store.config.root, index_kind="ivfpq") as again:  # fresh: loaded, not rebuilt
        assert again.index.kind == "ivfpq" and len(again.index) == len(ids)


def test_store_queries_match_the_flat_store(pq_store: Store, ingested: tuple[Store, IngestSummary]) -> None:
    flat_store, _ = ingested
    assert flat_store.index.kind == "flat"
    queries = sorted(SAMPLE_QUERIES.iterdir())
    catalog_images = [Path(p) for p in sorted(flat_store.catalog.known_files())[::25]]
    paths = queries + [p for p in catalog_images if p.suffix.lower() in {".jpg", ".png"}]
    got = list(query_paths(pq_store, paths, k=5))
    want = list(query_paths(flat_store, paths, k=5))
    compared = 0
    for g, w in zip(got, want, strict=True):
        if not isinstance(w, QueryResult):
            assert not isinstance(g, QueryResult)  # a broken file fails in both
            continue
        assert isinstance(g, QueryResult)
        # The same top-1; byte-identical copies in the samples tie at distance 0, and either may come first.
        tied = {h.image.path for h in w.hits if ip(w.hits[0].distance) - ip(h.distance) < 1e-6}
        assert g.hits[0].image.path in tied, g.query
        # Re-ranked distances are the exact ones the flat index reports.
        np.testing.assert_allclose(
            ip([h.distance for h in g.hits]), ip([h.distance for h in w.hits]), atol=1e-6, err_msg=g.query
        )
        compared += 1
    assert compared >= len(queries)
    # The category filter over-fetches through the same path.
    vector = pq_store.embed_paths([queries[0]])[0]
    for category in ("animals", "Household"):
        g_hits = search_vector(pq_store, "q", vector, 3, category).hits
        w_hits = search_vector(flat_store, "q", vector, 3, category).hits
        assert len(g_hits) == len(w_hits) == 3  # distances slot by slot: exact copies tie, in either order
        np.testing.assert_allclose(ip([h.distance for h in g_hits]), ip([h.distance for h in w_hits]), atol=1e-6)
        assert all((h.image.category or "").casefold() == category.casefold() for h in g_hits)


def test_store_rebuilds_when_the_kind_changes(pq_store: Store, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(pq_store.config.root, root)
    # The catalog URL is stored in the config, not the folder: point the copy at its own catalog.
    config = StoreConfig(root=root, db_url=f"sqlite:///{root / 'catalog.sqlite'}")
    with Store(config) as store:  # automatic: a small catalog gets the exact index back
        assert store.index.kind == "flat"
    sidecar = root / "index" / INFO_FILE
    assert json.loads(sidecar.read_text())["kind"] == "flat"

    # The command line passes the kind on, from the environment or from --index-kind (which wins).
    from dedup.cli import cli

    query = ["query", str(sorted(SAMPLE_QUERIES.iterdir())[0]), "--format", "json"]
    result = CliRunner().invoke(cli, ["--store", str(root), *query], env={ENV_INDEX_KIND: "ivfpq"})
    assert result.exit_code == 0, result.output
    assert json.loads(sidecar.read_text())["kind"] == "ivfpq"
    assert json.loads(result.stdout.splitlines()[0])["results"]
    result = CliRunner().invoke(
        cli, ["--store", str(root), "--index-kind", "flat", *query], env={ENV_INDEX_KIND: "ivfpq"}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(sidecar.read_text())["kind"] == "flat"

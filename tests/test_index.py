"""Tests of dedup.index: FAISS against the numpy reference, our ids, persistence and the import rule."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dedup.errors import ConfigError, StoreError
from dedup.index import (
    INFO_FILE,
    FaissIndex,
    IndexInfo,
    NumpyIndex,
    VectorIndex,
    create_index,
    load_index,
    save_index,
)

KINDS = ["flat", "numpy"]
# FAISS and numpy sum inner products in different orders; near d = 0 the sqrt magnifies a 1e-7
# difference in ip to ~5e-4 in distance, so distances are compared with this absolute tolerance.
ATOL = 1e-3

# Toy unit vectors in 4-D, with the distance of each to E0 (the usual query).
E0 = [1.0, 0.0, 0.0, 0.0]  # d(E0) = 0: the query itself
E1 = [0.0, 1.0, 0.0, 0.0]  # orthogonal: d = sqrt(2)
NEG_E0 = [-1.0, 0.0, 0.0, 0.0]  # opposite: d = 2, the largest distance on the sphere
AT_60 = [0.5, math.sqrt(3) / 2, 0.0, 0.0]  # 60 degrees away: ip = 0.5 exactly, so d = 1 exactly


def toy(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_knn_match(reference: VectorIndex, queries: np.ndarray, d_new: np.ndarray, i_new: np.ndarray, k: int) -> None:
    """FAISS's kNN answer equals the reference's, allowing for ties.

    After the idea of faiss contrib/evaluation.py ``check_ref_knn_with_draws``: distances must
    agree slot by slot; ids must agree as sets within each run of (near-)equal distances, except
    the last run, which k may cut short (any of the tied candidates may fill it).
    """
    d_ref, i_ref = reference.search(queries, k)
    np.testing.assert_allclose(d_new, d_ref, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(i_new == -1, i_ref == -1)
    for row in range(len(queries)):
        found = i_new[row][i_new[row] != -1]
        assert len(set(found.tolist())) == found.size, "an id appears twice in one result row"
        # Every reported (distance, id) pair is true, whatever order ties came in.
        true_d = np.sqrt(np.maximum(0, 2 - 2 * reference.reconstruct(found) @ queries[row]))
        np.testing.assert_allclose(d_new[row, : found.size], true_d, atol=ATOL, rtol=0)
        if np.array_equal(i_new[row], i_ref[row]):
            continue
        finite = np.where(np.isfinite(d_ref[row]), d_ref[row], 1e9)
        runs = np.split(np.arange(k), np.flatnonzero(np.diff(finite) > ATOL) + 1)
        for run in runs[:-1]:
            assert set(i_new[row, run].tolist()) == set(i_ref[row, run].tolist()), f"row {row} slots {run}"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- FAISS against the reference -------------------------------------------------------------


@pytest.mark.parametrize("n_queries", [1, 37])  # FAISS uses a plain loop below 20 queries, BLAS above
def test_faiss_knn_matches_reference(n_queries: int) -> None:
    rng = np.random.default_rng(0)
    vectors = unit_vectors(rng, 400, 32)
    vectors[10:13] = vectors[9]  # ids 9..12 are exact duplicates: four-way ties for every query
    # Large, non-contiguous ids, as a catalog that deleted rows would have.
    ids = np.sort(rng.choice(2**62, size=400, replace=False)).astype(np.int64)
    fast, ref = FaissIndex(32), NumpyIndex(32)
    fast.add(ids, vectors)
    ref.add(ids, vectors)
    # Half the queries are stored vectors (distance 0 and the duplicate ties), half are new.
    queries = np.concatenate(
        [vectors[rng.choice(400, n_queries - n_queries // 2)], unit_vectors(rng, n_queries // 2, 32)]
    )
    queries[0] = vectors[9]
    for k in (1, 4, 10):
        d_new, i_new = fast.search(queries, k)
        assert d_new.dtype == np.float32 and i_new.dtype == np.int64 and d_new.shape == (n_queries, k)
        assert np.all(np.diff(d_new, axis=1) >= -1e-6), "distances must ascend"
        assert_knn_match(ref, queries, d_new, i_new, k)
    # The duplicate cluster is found whole, whatever order FAISS lists it in.
    assert set(fast.search(queries[:1], 4)[1][0].tolist()) == set(ids[9:13].tolist())


def test_faiss_range_search_matches_reference() -> None:
    rng = np.random.default_rng(1)
    vectors = unit_vectors(rng, 300, 16)
    ids = np.arange(300, dtype=np.int64) * 1000 + 17
    fast, ref = FaissIndex(16), NumpyIndex(16)
    fast.add(ids, vectors)
    ref.add(ids, vectors)
    queries = np.concatenate([vectors[:5], unit_vectors(rng, 5, 16)])
    for radius in (0.0, 0.9, 1.2, 2.0):
        got, want = fast.range_search(queries, radius), ref.range_search(queries, radius)
        assert len(got) == len(want) == len(queries)
        for (d_got, i_got), (d_want, i_want) in zip(got, want, strict=True):
            assert set(i_got.tolist()) == set(i_want.tolist())
            np.testing.assert_allclose(d_got, d_want, atol=ATOL, rtol=0)
            assert np.all(d_got <= radius) and np.all(np.diff(d_got) >= 0)
    assert all(len(i) == 300 for _, i in fast.range_search(queries, 2.0))  # the whole sphere


# --- behaviour every implementation shares ---------------------------------------------------


def test_search_returns_our_ids(kind: str) -> None:
    index = create_index(4, kind)
    big = np.array([2**40 + 3, 7, 2**62], dtype=np.int64)
    index.add(big, toy(E1, E0, AT_60))
    d, i = index.search(toy(E0), 3)
    assert i.tolist() == [[7, 2**62, 2**40 + 3]]  # E0 itself, then 60 degrees, then orthogonal
    np.testing.assert_allclose(d, [[0.0, 1.0, math.sqrt(2)]], atol=1e-6)
    assert index.ids().tolist() == sorted(big.tolist())
    np.testing.assert_array_equal(index.reconstruct(np.array([2**62, 7])), toy(AT_60, E0))


def test_readding_an_id_replaces_it(kind: str) -> None:
    index = create_index(4, kind)
    index.add(np.array([7, 8]), toy(E0, NEG_E0))
    index.add(np.array([7]), toy(E1))  # id 7 moves from E0 to E1
    assert len(index) == 2
    assert index.ids().tolist() == [7, 8]
    d, i = index.search(toy(E1), 2)
    assert i.tolist() == [[7, 8]]
    np.testing.assert_allclose(d[0, 0], 0.0, atol=1e-6)
    np.testing.assert_array_equal(index.reconstruct([7]), toy(E1))


def test_repeated_id_within_one_add_is_refused(kind: str) -> None:
    index = create_index(4, kind)
    with pytest.raises(ValueError, match="repeat"):
        index.add(np.array([3, 3]), toy(E0, E1))
    assert len(index) == 0


def test_remove(kind: str) -> None:
    index = create_index(4, kind)
    index.add(np.array([1, 2, 3]), toy(E0, E1, AT_60))
    assert index.remove(np.array([2, 99])) == 1  # 99 was never added: ignored
    assert index.remove(np.array([2])) == 0
    assert index.ids().tolist() == [1, 3]
    _, i = index.search(toy(E1), 3)
    assert 2 not in i[0].tolist()
    assert index.remove(np.array([1, 3])) == 2 and len(index) == 0


def test_k_larger_than_index_pads_missing_slots(kind: str) -> None:
    index = create_index(4, kind)
    index.add(np.array([5, 6]), toy(E0, E1))
    d, i = index.search(toy(E0, E1), 5)
    assert d.shape == i.shape == (2, 5)
    assert i[:, 2:].tolist() == [[-1, -1, -1], [-1, -1, -1]]
    assert np.isinf(d[:, 2:]).all() and np.isfinite(d[:, :2]).all()


def test_empty_index(kind: str) -> None:
    index = create_index(4, kind)
    d, i = index.search(toy(E0), 3)
    assert i.tolist() == [[-1, -1, -1]] and np.isinf(d).all()
    assert [len(hits[1]) for hits in index.range_search(toy(E0, E1), 2.0)] == [0, 0]
    assert index.ids().tolist() == [] and index.remove(np.array([1])) == 0
    assert index.search(np.zeros((0, 4), np.float32), 2)[0].shape == (0, 2)


def test_range_search_includes_the_boundary(kind: str) -> None:
    index = create_index(4, kind)
    index.add(np.array([1, 2, 3, 4]), toy(E0, AT_60, E1, NEG_E0))
    (d, i), (d_neg, i_neg) = index.range_search(toy(E0, NEG_E0), 1.0)
    assert i.tolist() == [1, 2]  # d = 0 and d = 1 exactly: max_distance is inclusive
    np.testing.assert_allclose(d, [0.0, 1.0], atol=1e-6)
    assert i_neg.tolist() == [4]


def test_inputs_are_checked(kind: str) -> None:
    index = create_index(4, kind)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        index.add(np.array([1]), np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="integer"):
        index.add(np.array([1.0]), toy(E0))
    with pytest.raises(ValueError, match="1-D"):
        index.add(np.array([[1]]), toy(E0))
    with pytest.raises(ValueError, match="2 ids for 1 vectors"):
        index.add(np.array([1, 2]), toy(E0))
    with pytest.raises(ValueError, match="non-negative"):
        index.add(np.array([-1]), toy(E0))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.array([1]), toy([math.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="k must be"):
        index.search(toy(E0), 0)
    with pytest.raises(ValueError, match="max_distance"):
        index.range_search(toy(E0), -0.5)
    with pytest.raises(ValueError, match="queries"):
        index.search(np.ones(4, np.float32), 1)  # a single query must still be (1, dim)
    with pytest.raises(KeyError):
        index.reconstruct(np.array([42]))
    # float64 vectors and int32 ids are converted, not refused.
    index.add(np.array([1], dtype=np.int32), np.array([E0], dtype=np.float64))
    assert index.ids().dtype == np.int64 and len(index) == 1


def test_unknown_kind_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="flat, ivf, ivfpq, numpy"):
        create_index(8, "hnsw")
    with pytest.raises(ConfigError, match="dim"):
        create_index(0)
    assert isinstance(create_index(8), FaissIndex)


# --- persistence -------------------------------------------------------------------------------


def filled(kind: str, n: int = 50, dim: int = 8) -> tuple[VectorIndex, IndexInfo]:
    rng = np.random.default_rng(2)
    index = create_index(dim, kind)
    index.add(rng.choice(10**12, size=n, replace=False).astype(np.int64), unit_vectors(rng, n, dim))
    return index, IndexInfo(model_id="mnv3-small-128@1", dim=dim, count=n, generation=12, kind=kind)


def test_save_load_round_trip(kind: str, tmp_path: Path) -> None:
    index, info = filled(kind)
    folder = tmp_path / "store" / "index"  # created by save_index
    save_index(index, info, folder)
    loaded = load_index(folder)
    assert loaded is not None
    again, again_info = loaded
    assert again_info == info and type(again) is type(index)
    np.testing.assert_array_equal(again.ids(), index.ids())
    queries = unit_vectors(np.random.default_rng(3), 4, 8)
    for got, want in zip(again.search(queries, 5), index.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)
    assert json.loads((folder / INFO_FILE).read_text()) == {
        "model_id": "mnv3-small-128@1",
        "dim": 8,
        "count": 50,
        "generation": 12,
        "kind": kind,
    }


def test_save_is_atomic_and_keeps_the_folder(kind: str, tmp_path: Path) -> None:
    index, info = filled(kind)
    (tmp_path / "keep.txt").write_text("not ours")  # the folder is never wiped
    save_index(index, info, tmp_path)
    index.remove(index.ids()[:10])
    save_index(index, IndexInfo("mnv3-small-128@1", 8, 40, 13, kind), tmp_path)  # overwrite in place
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["keep.txt", INFO_FILE, type(index).file_name])
    loaded = load_index(tmp_path)
    assert loaded is not None and loaded[1].generation == 13 and len(loaded[0]) == 40


def test_save_refuses_a_sidecar_that_does_not_describe_the_index(tmp_path: Path) -> None:
    index, info = filled("flat")
    with pytest.raises(ValueError, match="does not describe"):
        save_index(index, IndexInfo("m", 8, info.count + 1, 1), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_absent_index_is_none(tmp_path: Path) -> None:
    assert load_index(tmp_path / "nowhere") is None
    assert load_index(tmp_path) is None
    # An index file without its sidecar (an interrupted first save) also counts as absent.
    (tmp_path / "vectors.faiss").write_bytes(b"half")
    assert load_index(tmp_path) is None


def test_sidecar_disagreeing_with_the_index_raises(kind: str, tmp_path: Path) -> None:
    index, info = filled(kind)
    save_index(index, info, tmp_path)
    sidecar = json.loads((tmp_path / INFO_FILE).read_text())
    (tmp_path / INFO_FILE).write_text(json.dumps({**sidecar, "count": 51}))
    with pytest.raises(StoreError, match="sidecar says 51"):
        load_index(tmp_path)
    (tmp_path / INFO_FILE).write_text(json.dumps({**sidecar, "dim": 16}))
    with pytest.raises(StoreError, match="dim 16"):
        load_index(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"garbage" * 20,  # not an index at all
        lambda data: data[: len(data) // 2],  # truncated: the crash atomic saving prevents
        lambda data: b"",  # empty file
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_corrupt_index_file_raises_store_error(kind: str, tmp_path: Path, damage) -> None:
    index, info = filled(kind)
    save_index(index, info, tmp_path)
    path = tmp_path / type(index).file_name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StoreError, match="unreadable"):
        load_index(tmp_path)


def test_bad_or_dangling_sidecar_raises_store_error(tmp_path: Path) -> None:
    index, info = filled("flat")
    save_index(index, info, tmp_path)
    (tmp_path / INFO_FILE).write_text("{not json")
    with pytest.raises(StoreError, match="sidecar"):
        load_index(tmp_path)
    (tmp_path / INFO_FILE).write_text(json.dumps({**info.to_json(), "kind": "hnsw"}))
    with pytest.raises(StoreError, match="valid kinds"):
        load_index(tmp_path)
    (tmp_path / INFO_FILE).write_text(json.dumps(info.to_json()))
    (tmp_path / "vectors.faiss").unlink()
    with pytest.raises(StoreError, match="missing"):
        load_index(tmp_path)


def test_index_info_json() -> None:
    info = IndexInfo(model_id="m", dim=256, count=0, generation=3)
    assert IndexInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
    assert IndexInfo.from_json({"model_id": "m", "dim": 256, "count": 0, "generation": 3}).kind == "flat"
    with pytest.raises(ValueError, match="'dim'"):
        IndexInfo.from_json({"model_id": "m", "dim": True, "count": 0, "generation": 3})
    with pytest.raises(ValueError, match="'count'"):
        IndexInfo.from_json({"model_id": "m", "dim": 4, "count": -1, "generation": 3})
    with pytest.raises(ValueError, match="'generation'"):
        IndexInfo.from_json({"model_id": "m", "dim": 4, "count": 0})


# --- the import rule ---------------------------------------------------------------------------


def test_importing_dedup_index_does_not_import_faiss() -> None:
    code = "import sys, dedup.index; print('faiss' in sys.modules)"
    repo_root = Path(__file__).resolve().parents[1]  # so the checkout is importable without installing
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root)
    assert out.stdout.strip() == "False"


# -- IVF ---------------------------------------------------------------------------------------------------


def _clustered_with_copies(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3,000 unit vectors in 60 families, plus 300 near copies (distance ≈ 0.05) of the first 300 rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, 32)).astype(np.float32)
    base = centres[rng.integers(0, 60, 3000)] + 0.5 * rng.normal(size=(3000, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    noise = rng.normal(size=(300, 32)).astype(np.float32)
    copies = base[:300] + 0.05 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    vectors = np.concatenate([base, copies]).astype(np.float32)
    ids = np.arange(10_000, 10_000 + len(vectors), dtype=np.int64)
    return ids, vectors, ids[3000:]


def test_ivf_finds_planted_copies_like_the_reference() -> None:
    from dedup.index import create_index

    ids, vectors, copy_ids = _clustered_with_copies()
    ivf = create_index(32, "ivf")
    ivf.add(ids, vectors)
    ref = NumpyIndex(32)
    ref.add(ids, vectors)
    _, got = ivf.search(vectors[:300], 2)  # each original: itself, then its copy
    _, want = ref.search(vectors[:300], 2)
    assert np.mean(got[:, 1] == want[:, 1]) >= 0.99
    assert set(got[:, 1].tolist()) <= set(copy_ids.tolist()) | set(ids.tolist())
    found = ivf.range_search(vectors[:50], 0.1)
    assert all(copy_ids[i] in hits.tolist() for i, (_, hits) in enumerate(found))


def test_ivf_replace_remove_save_and_load(tmp_path: Path) -> None:
    from dedup.index import IndexInfo, create_index, load_index, save_index

    ids, vectors, _ = _clustered_with_copies()
    ivf = create_index(32, "ivf")
    assert len(ivf) == 0 and ivf.search(vectors[:1], 3)[1][0].tolist() == [-1, -1, -1]
    ivf.add(ids, vectors)
    ivf.add(ids[:5], vectors[:5])  # re-adding replaces
    assert len(ivf) == len(ids)
    assert ivf.remove(ids[:10]) == 10 and len(ivf) == len(ids) - 10
    np.testing.assert_array_equal(ivf.ids(), ids[10:])
    np.testing.assert_allclose(ivf.reconstruct(ids[20:23]), vectors[20:23], atol=1e-6)
    save_index(ivf, IndexInfo("m", 32, len(ivf), 7, kind="ivf"), tmp_path)
    loaded = load_index(tmp_path)
    assert loaded is not None
    index, info = loaded
    assert info.kind == "ivf" and index.kind == "ivf" and len(index) == len(ivf)
    d, i = index.search(vectors[30:31], 1)
    assert i[0, 0] == ids[30] and d[0, 0] < 1e-3

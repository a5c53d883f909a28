"""Ingest on real files: counts, reuse, changes, pruning, failures, and the index staying in step."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.index import NumpyIndex
from dedup.service import Store, ingest_folder, open_store, query_paths
from dedup.types import IngestSummary, QueryResult

from .conftest import SAMPLE_CATALOG


def _make_images(folder: Path, n: int, seed: int = 0, size: int = 160) -> list[Path]:
    """n distinct JPEGs: random coloured rectangles on white (each its own 'product')."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = Image.new("RGB", (size, size), (255, 255, 255))
        for _ in range(4):
            x0, y0 = rng.integers(0, size - 40, 2)
            w, h = rng.integers(20, 60, 2)
            img.paste(tuple(int(c) for c in rng.integers(0, 255, 3)), (int(x0), int(y0), int(x0 + w), int(y0 + h)))
        p = folder / f"img_{i:04d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def _index_matches_catalog(store: Store) -> None:
    ids, vectors = store.catalog.indexed_vectors(store.encoder.model_id)
    index = store.index
    assert len(index) == len(ids)
    assert np.array_equal(np.sort(index.ids()), np.sort(ids))
    if len(ids):
        ref = NumpyIndex(store.encoder.dim)
        ref.add(ids, vectors)
        d_faiss, _ = index.search(vectors[:10], 3)
        d_ref, _ = ref.search(vectors[:10], 3)
        np.testing.assert_allclose(d_faiss, d_ref, atol=1e-3)


def test_samples_ingest(ingested: tuple[Store, IngestSummary], sample_copy: Path) -> None:
    store, summary = ingested
    broken = sorted((sample_copy / "broken").iterdir())
    assert summary.seen == sum(1 for p in sample_copy.rglob("*") if p.is_file() and p.suffix != ".csv")
    assert summary.failed == len(broken)
    assert {Path(f.path).name for f in summary.failures} == {p.name for p in broken}
    assert all(f.reason for f in summary.failures)
    # Byte-identical copies in the samples reuse their source's vector instead of being embedded again.
    exact = list(sample_copy.rglob("*__exact_copy*"))
    assert summary.reused >= len(exact) > 0
    assert summary.new + summary.reused == summary.seen - summary.failed
    assert summary.new + summary.reused + summary.changed + summary.unchanged + summary.failed == summary.seen
    stats = store.catalog.stats()
    assert stats["images"]["ok"] == summary.seen - summary.failed  # type: ignore[index]
    _index_matches_catalog(store)


def test_metadata_links_products(ingested: tuple[Store, IngestSummary], sample_copy: Path) -> None:
    store, _ = ingested
    import csv

    with open(sample_copy / "products.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if not r["path"].startswith("broken/"))
    info = store.catalog.image_by_path(str(sample_copy / row["path"]))
    assert info is not None and info.product_id == row["product_id"]
    product = store.catalog.product(row["product_id"])
    assert product is not None and product["title"] == row["title"]


def test_second_ingest_embeds_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _make_images(folder, 12)
    with open_store(tmp_path / "s") as store:
        first = ingest_folder(store, folder)
        again = ingest_folder(store, folder)
    assert (first.new, first.failed) == (12, 0)
    assert (again.new, again.reused, again.changed, again.unchanged) == (0, 0, 0, 12)


def test_a_new_catalog_is_known_before_it_is_opened(tmp_path: Path) -> None:
    """Ingest starts decoding before a new catalog is created; only a catalog that is not there counts as new."""
    folder = tmp_path / "photos"
    _make_images(folder, 3)
    with open_store(tmp_path / "s") as store:
        assert store.catalog_is_new()
        assert store.preprocess == store.encoder.preprocess  # from the card, as the loaded model says
        ingest_folder(store, folder)
        assert not store.catalog_is_new()
    with open_store(tmp_path / "s") as store:
        assert not store.catalog_is_new()
        assert ingest_folder(store, folder).unchanged == 3
    assert not open_store(tmp_path / "m", db_url="sqlite://").catalog_is_new()  # in memory: cannot tell


def test_same_bytes_new_name_reuses_vector_and_change_replaces(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = _make_images(folder, 6)
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, folder)
        shutil.copyfile(paths[0], folder / "copy_of_0.jpg")
        # Overwrite image 1 with new content (a different picture under the same name).
        _make_images(tmp_path / "other", 1, seed=99)[0].replace(paths[1])
        summary = ingest_folder(store, folder)
        assert (summary.new, summary.reused, summary.changed, summary.unchanged) == (0, 1, 1, 5)
        result = next(iter(query_paths(store, [paths[0]], k=2)))
        assert isinstance(result, QueryResult)
        assert {Path(h.image.path).name for h in result.hits} == {"img_0000.jpg", "copy_of_0.jpg"}
        assert all(h.distance < 1e-3 for h in result.hits)
        top = next(iter(query_paths(store, [paths[1]], k=1)))
        assert isinstance(top, QueryResult) and top.hits[0].distance < 1e-3
        assert len(store.catalog.known_files()) == 7  # updated in place, no duplicate row
        _index_matches_catalog(store)


def test_prune_marks_missing_and_drops_from_index(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = _make_images(folder, 5)
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, folder)
        paths[2].unlink()
        kept = ingest_folder(store, folder)  # without --prune nothing is dropped
        assert kept.pruned == 0 and len(store.index) == 5
        summary = ingest_folder(store, folder, prune=True)
        assert summary.pruned == 1
        assert store.catalog.stats()["images"]["missing"] == 1  # type: ignore[index]
        assert len(store.index) == 4
        _index_matches_catalog(store)


def test_broken_file_reported_and_others_go_in(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _make_images(folder, 3)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not a picture")
    shutil.copyfile(SAMPLE_CATALOG / "broken" / "truncated.jpg", folder / "cut.jpg")
    with open_store(tmp_path / "s") as store:
        summary = ingest_folder(store, folder)
        kinds = {Path(f.path).name: f.kind for f in summary.failures}
        assert kinds == {"zero.jpg": "empty", "text.png": "not_image", "cut.jpg": "truncated"}
        assert summary.new == 3 and len(store.index) == 3
        assert {Path(f.path).name for f in store.catalog.failed_files()} == set(kinds)
        # A fixed file goes in on the next run and leaves the failed list.
        _make_images(tmp_path / "fix", 1, seed=5)[0].replace(folder / "zero.jpg")
        again = ingest_folder(store, folder)
        # The two still-broken files did not change: known failures, not read again, not new ones.
        assert again.new == 1 and again.failed == 0 and again.known_failed == 2
        assert {Path(f.path).name for f in again.known_failures} == {"text.png", "cut.jpg"}
        assert len(store.index) == 4


@pytest.mark.parametrize("beside_a_thread", [False, True], ids=["forked", "fork-server"])
def test_decoding_processes_store_what_threads_store(tmp_path: Path, beside_a_thread: bool) -> None:
    folder = tmp_path / "photos"
    paths = _make_images(folder, 20)
    shutil.copyfile(paths[0], folder / "copy.jpg")
    (folder / "text.png").write_text("not a picture")
    shutil.copyfile(SAMPLE_CATALOG / "broken" / "truncated.jpg", folder / "cut.jpg")

    def run(name: str, processes: bool) -> tuple[IngestSummary, dict[str, np.ndarray]]:
        with open_store(tmp_path / name) as store:
            summary = ingest_folder(store, folder, batch_size=8, decode_processes=processes)
            _index_matches_catalog(store)
            ids, vectors = store.catalog.indexed_vectors(store.encoder.model_id)
            info = store.catalog.images(ids.tolist())
            return summary, {info[int(i)].path: v for i, v in zip(ids, vectors, strict=True)}

    threads = run("threads", False)
    if beside_a_thread:
        # Another thread is running: the workers come from a fork server, not a fork of this process.
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)
        other.start()
        try:
            processes = run("processes", True)
        finally:
            stop.set()
            other.join()
    else:
        processes = run("processes", True)
    for summary in (threads[0], processes[0]):
        assert (summary.new, summary.reused, summary.failed) == (20, 1, 2)
    kinds = {Path(f.path).name: f.kind for f in processes[0].failures}
    assert kinds == {"text.png": "not_image", "cut.jpg": "truncated"}
    assert processes[1].keys() == threads[1].keys() and len(threads[1]) == 21
    for path, vector in threads[1].items():
        np.testing.assert_allclose(processes[1][path], vector, atol=1e-6)


def test_index_rebuilt_when_missing_or_stale(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _make_images(folder, 8)
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, folder)
    shutil.rmtree(tmp_path / "s" / "index")
    with open_store(tmp_path / "s") as store:
        _index_matches_catalog(store)
    sidecar = tmp_path / "s" / "index" / "index.json"
    sidecar.write_text(sidecar.read_text().replace('"generation": ', '"generation": 1000'))
    with open_store(tmp_path / "s") as store:
        _index_matches_catalog(store)


def test_missing_folder_is_an_input_error(store: Store, tmp_path: Path) -> None:
    from dedup.errors import InputError

    with pytest.raises(InputError):
        ingest_folder(store, tmp_path / "nope")


def test_large_catalogs_get_an_ivf_index(tmp_path: Path) -> None:
    from dedup.config import StoreConfig

    folder = tmp_path / "photos"
    paths = _make_images(folder, 30)
    config = StoreConfig.resolve(tmp_path / "s")
    with Store(config, ivf_min_vectors=20) as store:  # 30 images: over the limit
        ingest_folder(store, folder)
    with Store(config, ivf_min_vectors=20) as store:
        assert store.index.kind == "ivf"
        _index_matches_catalog(store)
        top = next(iter(query_paths(store, [paths[7]], k=1)))
        assert isinstance(top, QueryResult) and Path(top.hits[0].image.path) == paths[7]
    with Store(config, ivf_min_vectors=1000) as store:  # under the limit again: rebuilt as exact
        assert store.index.kind == "flat"
        _index_matches_catalog(store)


def test_a_store_of_another_model_asks_for_a_re_ingest(tmp_path: Path) -> None:
    """Vectors of another model live in another space: report and query refuse (exit 4) until ingest re-embeds."""
    import json

    from click.testing import CliRunner

    from dedup.cli import cli
    from dedup.config import default_model_dir
    from dedup.errors import EXIT_STORE, StoreError
    from dedup.service import build_report

    folder = tmp_path / "photos"
    paths = _make_images(folder, 6)
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, folder)
        old_id = store.encoder.model_id
    other = tmp_path / "other-model"
    shutil.copytree(default_model_dir(), other)
    card = json.loads((other / "model_card.json").read_text())
    card["preprocess"]["trim_background"] = not card["preprocess"].get("trim_background", False)
    (other / "model_card.json").write_text(json.dumps(card))  # other inputs, other vectors: another model id
    with open_store(tmp_path / "s", model=other) as store:
        assert store.encoder.model_id != old_id
        with pytest.raises(StoreError, match=r"6 of 6 images .* another model .*dedup ingest"):
            build_report(store, save=False)
        with pytest.raises(StoreError, match="re-embed"):
            next(iter(query_paths(store, [paths[0]], 3)))
    run = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "--model", str(other), "report"])
    assert run.exit_code == EXIT_STORE and "dedup ingest" in run.output
    with open_store(tmp_path / "s", model=other) as store:
        again = ingest_folder(store, folder)
        assert again.new + again.changed + again.reused == 6
        assert store.catalog.ok_images_by_model() == {store.encoder.model_id: 6}
        report = build_report(store, save=False)
        assert report.model == store.encoder.model_id
        _index_matches_catalog(store)

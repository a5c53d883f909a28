"""The catalog on a real SQLite file: writes, vector reuse by content, statuses, generation, stats."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dedup.catalog import Catalog
from dedup.errors import StoreError
from dedup.types import STATUS_FAILED, STATUS_MISSING, STATUS_OK, FailedFile, ImageRecord, ProductRecord

MODEL = "toy-4d"


def unit(*values: float) -> np.ndarray:
    """A float32 unit vector, as the encoder returns them."""
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


#: Toy embeddings by content hash: "red" and "red-copy" are near duplicates, "blue" is far from both.
VECTORS = {
    "sha-red": unit(1, 0, 0, 0),
    "sha-red-copy": unit(0.99, 0.1, 0, 0),
    "sha-blue": unit(0, 0, 1, 0),
}


def record(path: str, sha256: str, product_id: str | None = None, width: int = 64) -> ImageRecord:
    return ImageRecord(
        path=path,
        sha256=sha256,
        pixel_hash=f"px-{sha256}",
        width=width,
        height=48,
        format="JPEG",
        bytes=1000 + width,
        mtime=1_700_000_000.0,
        product_id=product_id,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new catalog's URL: a SQLite file, or a fresh database on the throwaway PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'catalog.sqlite'}"
    from . import pg

    return pg.fresh_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'catalog.sqlite'}"


@pytest.fixture
def catalog(url: str) -> Iterator[Catalog]:
    with Catalog(url) as cat:
        yield cat


def test_write_batch_round_trip(catalog: Catalog) -> None:
    records = [record("/img/red.jpg", "sha-red", "P1"), record("/img/blue.jpg", "sha-blue", "P2")]
    ids = catalog.write_batch(records, VECTORS, [], MODEL, None)

    assert len(set(ids)) == 2
    got_ids, got = catalog.indexed_vectors(MODEL)
    assert got_ids.dtype == np.int64 and got.dtype == np.float32
    assert got_ids.tolist() == sorted(ids)
    by_id = dict(zip(got_ids.tolist(), got, strict=True))
    for image_id, rec in zip(ids, records, strict=True):
        assert by_id[image_id].tobytes() == VECTORS[rec.sha256].astype("<f4").tobytes()
        vec = catalog.vector_of_image(image_id)
        assert vec is not None and vec.tobytes() == by_id[image_id].tobytes()

    infos = catalog.images(ids)
    assert infos[ids[0]].path == "/img/red.jpg" and infos[ids[0]].product_id == "P1"
    assert infos[ids[1]].sha256 == "sha-blue" and infos[ids[1]].width == 64
    assert infos[ids[0]].ingested_at.tzinfo is not None
    assert infos[ids[0]].ingested_at.utcoffset() == dt.timedelta(0)
    assert catalog.image_by_path("/img/blue.jpg") == infos[ids[1]]
    assert catalog.image_by_path("/img/nowhere.jpg") is None
    assert catalog.vector_of_image(999) is None
    # Vectors of another model are not mixed in.
    ids_other, vecs_other = catalog.indexed_vectors("other-model")
    assert ids_other.shape == (0,) and vecs_other.shape[0] == 0


def test_same_content_under_new_path_reuses_the_vector(catalog: Catalog) -> None:
    first = catalog.write_batch([record("/a/red.jpg", "sha-red")], {"sha-red": VECTORS["sha-red"]}, [], MODEL, None)
    assert catalog.vector_ids_for(["sha-red", "sha-blue"], MODEL).keys() == {"sha-red"}
    stored = catalog.stored_vectors(["sha-red", "sha-blue"], MODEL)
    assert stored.keys() == {"sha-red"} and stored["sha-red"].tobytes() == VECTORS["sha-red"].tobytes()
    # The caller found the content known, so it passes no vector for it.
    second = catalog.write_batch([record("/b/red-renamed.jpg", "sha-red")], {}, [], MODEL, None)

    assert first != second
    stats = catalog.stats()
    assert stats["vectors"] == 1 and stats["distinct_sha256"] == 1
    a, b = catalog.vector_of_image(first[0]), catalog.vector_of_image(second[0])
    assert a is not None and b is not None and a.tobytes() == b.tobytes()
    # A vector passed again for known content is not stored twice.
    catalog.write_batch([record("/c/red.jpg", "sha-red")], {"sha-red": VECTORS["sha-red"]}, [], MODEL, None)
    assert catalog.stats()["vectors"] == 1
    # Another model embeds the same content separately.
    catalog.write_batch([record("/a/red.jpg", "sha-red")], {"sha-red": unit(0, 1, 0, 0)}, [], "other", None)
    assert catalog.stats()["vectors"] == 2


def test_same_path_is_updated_not_duplicated(catalog: Catalog) -> None:
    (first,) = catalog.write_batch([record("/img/x.jpg", "sha-red")], VECTORS, [], MODEL, None)
    (again,) = catalog.write_batch([record("/img/x.jpg", "sha-blue", width=99)], {}, [], MODEL, None)

    assert again == first
    info = catalog.images([first])[first]
    assert info.sha256 == "sha-blue" and info.width == 99
    ids, vecs = catalog.indexed_vectors(MODEL)
    assert ids.tolist() == [first]
    assert vecs[0].tobytes() == VECTORS["sha-blue"].tobytes()
    assert catalog.stats()["images"] == {STATUS_OK: 1, STATUS_FAILED: 0, STATUS_MISSING: 0, "total": 1}


def test_failures_are_recorded_and_leave_the_index(catalog: Catalog) -> None:
    (ok_id,) = catalog.write_batch([record("/img/good.jpg", "sha-red")], VECTORS, [], MODEL, None)
    broken = FailedFile("/img/broken.jpg", kind="truncated", reason="image file is truncated", bytes=12, mtime=5.0)
    catalog.write_batch([], {}, [broken], MODEL, None)

    assert catalog.failed_files() == [broken]
    known = catalog.known_files()
    assert known["/img/broken.jpg"].status == STATUS_FAILED
    assert known["/img/broken.jpg"].sha256 is None and known["/img/broken.jpg"].bytes == 12
    assert catalog.image_by_path("/img/broken.jpg") is None  # nothing decoded to show

    # A good file that now fails drops out of the index; fixed again, it comes back with the same id.
    now_broken = FailedFile("/img/good.jpg", kind="corrupt", reason="cannot identify image file")
    catalog.write_batch([], {}, [now_broken], MODEL, None)
    assert catalog.indexed_vectors(MODEL)[0].tolist() == []
    assert catalog.vector_of_image(ok_id) is None
    (fixed,) = catalog.write_batch([record("/img/good.jpg", "sha-red")], {}, [], MODEL, None)
    assert fixed == ok_id
    assert catalog.indexed_vectors(MODEL)[0].tolist() == [ok_id]
    assert [f.path for f in catalog.failed_files()] == ["/img/broken.jpg"]


def test_mark_missing_removes_from_indexed_vectors(catalog: Catalog) -> None:
    ids = catalog.write_batch(
        [record("/img/red.jpg", "sha-red"), record("/img/blue.jpg", "sha-blue")], VECTORS, [], MODEL, None
    )
    before = catalog.generation()

    assert catalog.mark_missing(["/img/red.jpg", "/img/never-seen.jpg"]) == [ids[0]]
    assert catalog.generation() == before + 1
    assert catalog.indexed_vectors(MODEL)[0].tolist() == [ids[1]]
    assert catalog.known_files(["/img/red.jpg"])["/img/red.jpg"].status == STATUS_MISSING
    assert catalog.vector_of_image(ids[0]) is not None  # kept, should the file come back
    # Nothing changes the second time, so the index is not made stale.
    assert catalog.mark_missing(["/img/red.jpg"]) == []
    assert catalog.generation() == before + 1


def test_delete_images(catalog: Catalog) -> None:
    ids = catalog.write_batch([record("/img/red.jpg", "sha-red")], VECTORS, [], MODEL, None)
    before = catalog.generation()
    assert catalog.delete_images(["/img/red.jpg", "/img/unknown.jpg"]) == ids
    assert catalog.generation() == before + 1
    assert catalog.known_files() == {}
    assert catalog.vector_ids_for(["sha-red"], MODEL).keys() == {"sha-red"}


def test_generation_bumps_once_per_write(catalog: Catalog) -> None:
    assert catalog.generation() == 0
    catalog.write_batch(
        [record(f"/img/{i}.jpg", sha) for i, sha in enumerate(VECTORS)],
        VECTORS,
        [FailedFile("/img/bad.jpg", "empty", "file is empty")],
        MODEL,
        None,
    )
    assert catalog.generation() == 1
    catalog.write_batch([record("/img/9.jpg", "sha-red")], {}, [], MODEL, None)
    assert catalog.generation() == 2
    # Reads, products, runs and empty batches leave it alone.
    catalog.indexed_vectors(MODEL)
    catalog.stats()
    catalog.upsert_products([ProductRecord("P9")])
    catalog.finish_run(catalog.begin_run("/img", MODEL), "finished", {})
    assert catalog.write_batch([], {}, [], MODEL, None) == []
    assert catalog.generation() == 2


def test_record_without_vector_is_refused_and_nothing_is_written(catalog: Catalog) -> None:
    with pytest.raises(StoreError, match="no vector"):
        catalog.write_batch(
            [record("/img/red.jpg", "sha-red"), record("/img/new.jpg", "sha-unembedded")],
            {"sha-red": VECTORS["sha-red"]},
            [],
            MODEL,
            None,
        )
    assert catalog.known_files() == {}
    assert catalog.stats()["vectors"] == 0
    assert catalog.generation() == 0


def test_bad_vectors_are_refused(catalog: Catalog) -> None:
    catalog.write_batch([record("/img/red.jpg", "sha-red")], VECTORS, [], MODEL, None)
    with pytest.raises(StoreError, match="values"):
        catalog.write_batch([record("/img/z.jpg", "sha-z")], {"sha-z": unit(1, 1)}, [], MODEL, None)
    with pytest.raises(StoreError, match="1-D"):
        catalog.write_batch([record("/img/z.jpg", "sha-z")], {"sha-z": np.ones((2, 2))}, [], MODEL, None)
    with pytest.raises(StoreError, match="NaN"):
        catalog.write_batch([record("/img/z.jpg", "sha-z")], {"sha-z": np.full(4, np.nan)}, [], MODEL, None)


def test_products_with_attributes(catalog: Catalog) -> None:
    catalog.upsert_products(
        [
            ProductRecord("P1", title="Red mug", category="kitchen", attributes={"colour": "red"}),
            ProductRecord("P2", title="Blue mug"),
        ]
    )
    (image_id,) = catalog.write_batch([record("/img/red.jpg", "sha-red", "P1")], VECTORS, [], MODEL, None)
    # A sparser record keeps what is known and merges attributes.
    catalog.upsert_products([ProductRecord("P1", attributes={"size": "L"})])

    p1 = catalog.product("P1")
    assert p1 is not None
    assert p1["title"] == "Red mug" and p1["category"] == "kitchen"
    assert p1["attributes"] == {"colour": "red", "size": "L"}
    assert p1["images"] == [{"image_id": image_id, "path": "/img/red.jpg", "status": STATUS_OK}]
    info = catalog.images([image_id])[image_id]
    assert (info.title, info.category) == ("Red mug", "kitchen")
    assert catalog.product("nope") is None


def test_unknown_product_id_creates_a_bare_product(catalog: Catalog) -> None:
    pair = [record("/img/a.jpg", "sha-red", "SKU-7"), record("/img/b.jpg", "sha-blue", "SKU-7")]
    ids = catalog.write_batch(pair, VECTORS, [], MODEL, None)
    product = catalog.product("SKU-7")
    assert product is not None and product["title"] is None and product["attributes"] == {}
    assert product["images"] == [
        {"image_id": ids[0], "path": "/img/a.jpg", "status": STATUS_OK},
        {"image_id": ids[1], "path": "/img/b.jpg", "status": STATUS_OK},
    ]
    assert catalog.stats()["products"] == 1


def test_runs_and_stats(catalog: Catalog) -> None:
    run_id = catalog.begin_run("/img", MODEL)
    catalog.write_batch(
        [record("/img/red.jpg", "sha-red", "P1"), record("/img/red2.jpg", "sha-red", "P1")],
        VECTORS,
        [FailedFile("/img/bad.jpg", "not_image", "not an image")],
        MODEL,
        run_id,
    )
    catalog.mark_missing(["/img/red2.jpg"])
    catalog.finish_run(run_id, "finished", {"seen": 3, "failed": 1})

    stats = catalog.stats()
    assert stats["products"] == 1
    assert stats["images"] == {STATUS_OK: 1, STATUS_FAILED: 1, STATUS_MISSING: 1, "total": 3}
    assert stats["vectors"] == 3  # every vector passed is stored, used or not
    assert stats["distinct_sha256"] == 1
    assert stats["models"] == {MODEL: 3}
    assert stats["generation"] == 2
    last = stats["last_run"]
    assert isinstance(last, dict)
    assert last["id"] == run_id and last["status"] == "finished" and last["counts"] == {"seen": 3, "failed": 1}
    assert last["finished_at"] is not None and str(last["finished_at"]).endswith("+00:00")

    with pytest.raises(ValueError, match="run status"):
        catalog.finish_run(run_id, "done", {})
    with pytest.raises(StoreError, match="no ingest run"):
        catalog.finish_run(12345, "failed", {})


def test_known_files_in_chunks(catalog: Catalog) -> None:
    # More paths than one IN list holds.
    records = [record(f"/img/{i:04d}.jpg", "sha-red") for i in range(1234)]
    ids = catalog.write_batch(records, VECTORS, [], MODEL, None)
    assert len(set(ids)) == 1234
    wanted = [r.path for r in records[::2]] + ["/img/unknown.jpg"]
    known = catalog.known_files(wanted)
    assert len(known) == 617 and "/img/unknown.jpg" not in known
    assert known["/img/0002.jpg"].image_id == ids[2] and known["/img/0002.jpg"].model_id == MODEL
    assert len(catalog.known_files()) == 1234
    assert len(catalog.images(ids)) == 1234
    assert catalog.indexed_vectors(MODEL)[1].shape == (1234, 4)


def test_meta(catalog: Catalog) -> None:
    assert catalog.get_meta("threshold") is None
    catalog.set_meta("threshold", "0.35")
    catalog.set_meta("threshold", "0.4")
    assert catalog.get_meta("threshold") == "0.4"
    with pytest.raises(ValueError, match="managed"):
        catalog.set_meta("generation", "99")


def test_reopen_keeps_data(url: str) -> None:
    with Catalog(url) as first:
        ids = first.write_batch([record("/img/red.jpg", "sha-red")], VECTORS, [], MODEL, None)
    # Opening again runs the migrations again: nothing to do, nothing lost.
    with Catalog(url) as second:
        assert second.generation() == 1
        assert second.indexed_vectors(MODEL)[0].tolist() == ids
    with Catalog(url) as third:
        assert third.known_files()["/img/red.jpg"].image_id == ids[0]


def test_two_catalogs_on_one_file(url: str) -> None:
    with Catalog(url) as a, Catalog(url) as b:
        a.write_batch([record("/img/red.jpg", "sha-red")], VECTORS, [], MODEL, None)
        b.write_batch([record("/img/blue.jpg", "sha-blue")], {}, [], MODEL, None)
        assert a.generation() == b.generation() == 2
        assert len(a.indexed_vectors(MODEL)[0]) == 2


@pytest.mark.parametrize("bad", ["not a url", "nosuchdialect://x/y"])
def test_bad_url_raises_store_error(bad: str) -> None:
    with pytest.raises(StoreError, match="cannot open catalog"):
        Catalog(bad)


def test_unwritable_sqlite_path_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open catalog"):
        Catalog(f"sqlite:///{blocker / 'catalog.sqlite'}")


def test_not_a_database_raises_store_error(tmp_path: Path) -> None:
    garbage = tmp_path / "catalog.sqlite"
    garbage.write_bytes(b"this is not a sqlite file" * 100)
    with pytest.raises(StoreError, match="cannot open catalog"):
        Catalog(f"sqlite:///{garbage}")


def test_catalog_from_a_newer_version_raises_store_error(sqlite_url: str) -> None:
    url = sqlite_url
    Catalog(url).close()
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = 'from-the-future'")
    conn.close()
    with pytest.raises(StoreError, match="cannot migrate catalog"):
        Catalog(url)


def test_generation_sees_commits_of_another_catalog_object(url: str) -> None:
    """The cached generation is re-read once any other connection (here another Catalog) has committed."""
    with Catalog(url) as reader, Catalog(url) as writer:
        assert reader.generation() == 0
        assert reader.generation() == 0  # answered from the change counter
        writer.write_batch([record("/img/red.jpg", "sha-red")], VECTORS, [], MODEL, None)
        assert reader.generation() == 1
        writer.delete_images(["/img/red.jpg"])
        assert reader.generation() == 2 == writer.generation()

"""The HTTP API over a real store, the shipped model and the sample images: every endpoint, every bad upload."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dedup.api import create_app
from dedup.service import Store, build_report, ingest_folder, open_store

from .conftest import SAMPLE_QUERIES

Q = "/api/v1/query"


@pytest.fixture(scope="module")
def api_store(tmp_path_factory: pytest.TempPathFactory, sample_copy: Path) -> Iterator[Store]:
    """A store of the ingested samples that these tests may also write to (uploads)."""
    store = open_store(tmp_path_factory.mktemp("api") / "store")
    ingest_folder(store, sample_copy, metadata=sample_copy / "products.csv")
    yield store
    store.close()


@pytest.fixture(scope="module")
def client(api_store: Store) -> Iterator[TestClient]:
    """The app without an API key; entering the client runs the start-up (model and index loaded)."""
    with TestClient(create_app(api_store, api_key="")) as c:
        yield c


@pytest.fixture(scope="module")
def product_jpeg(sample_copy: Path) -> Path:
    return sorted((sample_copy / "products").rglob("*.jpg"))[0]


def _query(client: TestClient, data: bytes, name: str = "photo.jpg", **form: str) -> dict:
    r = client.post(Q, files={"image": (name, data, "image/jpeg")}, data=form)
    assert r.status_code == 200, r.text
    return r.json()


def _assert_error(r, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def _png(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


# -- reads -----------------------------------------------------------------------------------------------


def test_healthz_reports_model_and_sizes(client: TestClient, api_store: Store) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["model"] == api_store.encoder.model_id
    assert body["images"] == api_store.catalog.stats()["images"]["ok"] > 100  # type: ignore[index]
    assert body["index_size"] == body["images"]


def test_page_is_self_contained(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    # Works offline: nothing is fetched from another host.
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    assert 'type="file"' in r.text and "/api/v1/query" in r.text and "/api/v1/reports/latest" in r.text


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/query",
        "/api/v1/compare",
        "/api/v1/images",
        "/api/v1/products/{product_id}",
        "/api/v1/images/{image_id}/thumbnail",
        "/api/v1/reports/latest",
        "/healthz",
    } <= set(paths)
    assert client.get("/docs").status_code == 200


def test_query_top_k_with_catalog_fields(client: TestClient, product_jpeg: Path) -> None:
    body = _query(client, product_jpeg.read_bytes(), name=product_jpeg.name, k="4")
    assert body["query"] == product_jpeg.name and body["k"] == 4 and len(body["results"]) == 4
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4]
    distances = [r["distance"] for r in body["results"]]
    assert distances == sorted(distances)
    top = body["results"][0]
    # The catalog holds these very bytes (perhaps also as an exact copy): distance 0.
    assert top["distance"] < 1e-3 and top["similarity"] > 0.999 and top["duplicate"] is True
    assert hashlib.sha256(Path(top["path"]).read_bytes()).digest() == hashlib.sha256(product_jpeg.read_bytes()).digest()
    for r in body["results"]:
        assert {"path", "product_id", "image_id", "title", "category", "thumbnail_url", "similarity"} <= r.keys()
    thumb = client.get(top["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 160
    assert max(Image.open(io.BytesIO(client.get(top["thumbnail_url"] + "?size=64").content)).size) == 64


def test_query_default_k_and_category_filter(client: TestClient, product_jpeg: Path) -> None:
    data = product_jpeg.read_bytes()
    assert len(_query(client, data)["results"]) == 5
    category = _query(client, data)["results"][0]["category"]
    assert category
    filtered = _query(client, data, k="10", category=category.upper())["results"]
    assert filtered and all(r["category"] == category for r in filtered)
    assert _query(client, data, category="no-such-category")["results"] == []


def test_query_argument_errors(client: TestClient, product_jpeg: Path) -> None:
    files = {"image": ("a.jpg", product_jpeg.read_bytes(), "image/jpeg")}
    _assert_error(client.post(Q, data={"k": "3"}), 400, "missing_field")
    for k in ("0", "101", "many", "", " ", "2.5"):  # a blank k used to become the default 5
        _assert_error(client.post(Q, files=files, data={"k": k}), 400, "invalid_field")
    _assert_error(client.post(Q, files=files, data={"per_product": ""}), 400, "invalid_field")
    assert client.post(Q, files=files, data={"k": "2", "category": ""}).status_code == 200  # a blank filter: none
    _assert_error(client.post("/api/v1/compare", files=files), 400, "missing_field")
    _assert_error(client.get("/api/v1/nowhere"), 404, "not_found")
    _assert_error(client.get(Q), 405)


def test_compare_same_and_different(client: TestClient, sample_copy: Path) -> None:
    jpegs = sorted((sample_copy / "products").rglob("*.jpg"))
    a, b = jpegs[0].read_bytes(), jpegs[-1].read_bytes()
    same = client.post("/api/v1/compare", files={"image_a": ("a.jpg", a), "image_b": ("b.jpg", a)}).json()
    assert same["duplicate"] is True and same["similarity"] > 0.999 and same["a"] == "a.jpg"
    diff = client.post("/api/v1/compare", files={"image_a": ("a.jpg", a), "image_b": ("b.jpg", b)}).json()
    assert diff["distance"] > same["distance"] and 0.0 <= diff["similarity"] <= 1.0
    assert diff["threshold"] == same["threshold"] > 0


def test_product_and_unknown_ids(client: TestClient) -> None:
    top = _query(client, next(iter(sorted(SAMPLE_QUERIES.iterdir()))).read_bytes())["results"][0]
    product = client.get(f"/api/v1/products/{top['product_id']}").json()
    assert product["product_id"] == top["product_id"]
    assert top["image_id"] in [i["image_id"] for i in product["images"]]
    assert all(i["thumbnail_url"] for i in product["images"] if i["status"] == "ok")
    _assert_error(client.get("/api/v1/products/NO-SUCH-SKU"), 404, "not_found")
    _assert_error(client.get("/api/v1/images/987654/thumbnail"), 404, "not_found")
    _assert_error(client.get("/api/v1/images/not-a-number/thumbnail"), 400, "invalid_field")
    # Ids past int64 overflowed SQLite into a plain-text 500; "1.0" was read as 1. Both are a JSON 400 now.
    for bad in ("9223372036854775808", "99999999999999999999999", "1.0", "+1", "0", "-3", "1e3"):
        _assert_error(client.get(f"/api/v1/images/{bad}/thumbnail"), 400, "invalid_field")
    _assert_error(client.get("/api/v1/images/9223372036854775807/thumbnail"), 404, "not_found")  # the largest id
    ok = top["image_id"]
    assert client.get(f"/api/v1/images/{ok}/thumbnail").status_code == 200


def test_latest_report(client: TestClient, api_store: Store) -> None:
    latest = api_store.config.reports_dir / "latest.json"
    if latest.exists():
        latest.unlink()
    assert "dedup report" in _assert_error(client.get("/api/v1/reports/latest"), 404, "no_report")["message"]
    build_report(api_store)  # what `dedup report` does, writing <store>/reports/latest.json
    r = client.get("/api/v1/reports/latest")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["clusters"]


# -- bad uploads -------------------------------------------------------------------------------------------


def _bad_uploads(sample_copy: Path) -> dict[str, tuple[bytes, str]]:
    broken = sample_copy / "broken"
    good = sorted((sample_copy / "products").rglob("*.jpg"))[0].read_bytes()
    return {
        "empty": (b"", "empty"),
        "not an image": (b"just some text pretending to be a picture\n" * 20, "not_image"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "truncated sample": ((broken / "truncated.jpg").read_bytes(), "truncated"),
        "not an image sample": ((broken / "not_an_image.jpg").read_bytes(), "not_image"),
        "corrupt header": ((broken / "corrupt_header.png").read_bytes(), "not_image"),
        "corrupt data": ((broken / "corrupt_data.png").read_bytes(), "corrupt"),
        "decompression bomb": ((broken / "bomb.png").read_bytes(), "too_many_pixels"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "not an image",
        "not an image sample",
        "truncated",
        "truncated sample",
        "corrupt header",
        "corrupt data",
        "decompression bomb",
    ],
)
def test_bad_upload_is_422_and_the_server_keeps_serving(
    client: TestClient, sample_copy: Path, product_jpeg: Path, case: str
) -> None:
    data, code = _bad_uploads(sample_copy)[case]
    # Declared as a JPEG with a JPEG name: only the decoder decides.
    for endpoint, files in (
        (Q, {"image": ("photo.jpg", data, "image/jpeg")}),
        ("/api/v1/compare", {"image_a": ("a.jpg", product_jpeg.read_bytes()), "image_b": ("b.jpg", data)}),
        ("/api/v1/images", {"image": ("photo.jpg", data, "image/jpeg")}),
    ):
        form = {"product_id": "BAD-1"} if endpoint.endswith("images") else {}
        err = _assert_error(client.post(endpoint, files=files, data=form), 422, code)
        assert "photo.jpg" not in err["message"]
    assert _query(client, product_jpeg.read_bytes())["results"][0]["distance"] < 1e-3
    assert client.get("/api/v1/products/BAD-1").status_code == 404


@pytest.fixture(scope="module")
def small_limit_client(api_store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(api_store, api_key="", max_upload_bytes=120_000)) as c:
        yield c


def _big_jpeg(min_bytes: int) -> bytes:
    noise = Image.effect_noise((420, 420), 80).convert("RGB")
    out = io.BytesIO()
    noise.save(out, "JPEG", quality=95)
    data = out.getvalue()
    assert min_bytes < len(data) < 2 * min_bytes
    return data


def test_too_large_upload_is_413_and_the_server_keeps_serving(
    small_limit_client: TestClient, product_jpeg: Path
) -> None:
    big = _big_jpeg(130_000)  # over the limit, yet with a small second file under compare's two-file body limit
    client = small_limit_client
    # Declared length over the limit: refused before the body is read.
    _assert_error(client.post(Q, files={"image": ("big.jpg", big)}), 413, "upload_too_large")
    # One file over the per-file limit inside a body the endpoint accepts (compare takes two files).
    files = {"image_a": ("a.jpg", big), "image_b": ("b.jpg", product_jpeg.read_bytes())}
    _assert_error(client.post("/api/v1/compare", files=files), 413, "upload_too_large")
    # No declared length (chunked): counted while it streams in.
    boundary = "dedup-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + big * 3
        + f"\r\n--{boundary}--\r\n".encode()
    )
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
    r = client.post(Q, content=chunks, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    _assert_error(r, 413, "upload_too_large")
    assert product_jpeg.stat().st_size < 120_000
    assert _query(client, product_jpeg.read_bytes())["results"][0]["distance"] < 1e-3


# -- writes ------------------------------------------------------------------------------------------------


def test_add_image_stores_it_under_its_hash_and_indexes_it(client: TestClient, api_store: Store) -> None:
    photo = sorted(SAMPLE_QUERIES.iterdir())[0].read_bytes()  # not in the catalog
    size_before = client.get("/healthz").json()["index_size"]
    form = {"product_id": "NEW-1", "title": "A new product", "category": "tests"}
    r = client.post("/api/v1/images", files={"image": ("../../evil name.png", photo, "image/png")}, data=form)
    assert r.status_code == 201, r.text
    image = r.json()["image"]
    sha = hashlib.sha256(photo).hexdigest()
    stored = api_store.config.root / "uploads" / f"{sha}.jpg"  # named by content and decoded format
    assert image["path"] == str(stored) and stored.read_bytes() == photo
    assert image["product_id"] == "NEW-1" and image["title"] == "A new product" and image["category"] == "tests"
    assert not list(api_store.config.root.rglob("*evil*"))
    assert client.get("/healthz").json()["index_size"] == size_before + 1

    top = _query(client, photo)["results"][0]
    assert top["image_id"] == image["image_id"] and top["distance"] < 1e-3 and top["product_id"] == "NEW-1"
    assert _query(client, photo, category="TESTS")["results"][0]["image_id"] == image["image_id"]
    product = client.get("/api/v1/products/NEW-1").json()
    assert [i["image_id"] for i in product["images"]] == [image["image_id"]]
    assert client.get(image["thumbnail_url"]).status_code == 200

    again = client.post("/api/v1/images", files={"image": ("other.jpg", photo)}, data={"product_id": "NEW-1"})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["image"]["image_id"] == image["image_id"]
    assert client.get("/healthz").json()["index_size"] == size_before + 1


def test_add_image_extension_follows_the_decoded_format(client: TestClient, api_store: Store) -> None:
    png = _png(colour=(10, 120, 200))
    r = client.post("/api/v1/images", files={"image": ("looks.jpg", png, "image/jpeg")}, data={"product_id": "P-PNG"})
    assert r.status_code == 201, r.text
    assert r.json()["image"]["path"].endswith(f"{hashlib.sha256(png).hexdigest()}.png")
    _assert_error(client.post("/api/v1/images", files={"image": ("a.png", png)}), 400, "missing_field")
    blank = client.post("/api/v1/images", files={"image": ("a.png", png)}, data={"product_id": "  "})
    _assert_error(blank, 400, "invalid_field")


def test_api_key_guards_writes_only(api_store: Store, product_jpeg: Path) -> None:
    png = _png(colour=(30, 160, 40))
    files = {"image": ("a.png", png)}
    with TestClient(create_app(api_store, api_key="s3cret")) as client:
        _assert_error(client.post("/api/v1/images", files=files, data={"product_id": "K-1"}), 401, "unauthorized")
        wrong = client.post("/api/v1/images", files=files, data={"product_id": "K-1"}, headers={"X-API-Key": "nope"})
        _assert_error(wrong, 401, "unauthorized")
        assert client.get("/api/v1/products/K-1").status_code == 404
        ok = client.post("/api/v1/images", files=files, data={"product_id": "K-1"}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 201, ok.text
        assert _query(client, product_jpeg.read_bytes())["results"]  # reads stay open
    with TestClient(create_app(api_store, api_key="s3cret", protect_reads=True)) as client:
        _assert_error(client.post(Q, files={"image": ("a.jpg", product_jpeg.read_bytes())}), 401, "unauthorized")
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200


def test_api_key_from_the_environment(api_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEDUP_API_KEY", "from-env")
    client = TestClient(create_app(api_store))
    files = {"image": ("a.png", _png(colour=(90, 90, 20)))}
    _assert_error(client.post("/api/v1/images", files=files, data={"product_id": "E-1"}), 401, "unauthorized")
    ok = client.post("/api/v1/images", files=files, data={"product_id": "E-1"}, headers={"X-API-Key": "from-env"})
    assert ok.status_code == 201, ok.text


# -- caching and freshness ---------------------------------------------------------------------------------


def test_same_bytes_reuse_the_embedding(client: TestClient, sample_copy: Path) -> None:
    data = sorted((sample_copy / "variants").rglob("*.jpg"))[0].read_bytes()
    before = client.get("/healthz").json()["cache"]
    first = _query(client, data)
    middle = client.get("/healthz").json()["cache"]
    second = _query(client, data)
    after = client.get("/healthz").json()["cache"]
    assert middle["misses"] == before["misses"] + 1 and middle["hits"] == before["hits"]
    assert after["hits"] == middle["hits"] + 1 and after["misses"] == middle["misses"]
    assert first["results"] == second["results"]


def test_ingest_by_another_store_handle_is_seen_without_restart(
    client: TestClient, api_store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "late-arrivals"
    folder.mkdir()
    queries = sorted(SAMPLE_QUERIES.iterdir())
    for q in queries[1:3]:
        shutil.copy(q, folder / q.name)
    size_before = client.get("/healthz").json()["index_size"]
    with open_store(api_store.config.root) as other:  # as `dedup ingest` would, from its own process
        summary = ingest_folder(other, folder)
    assert summary.new + summary.reused == 2
    assert client.get("/healthz").json()["index_size"] == size_before + 2
    top = _query(client, queries[1].read_bytes())["results"][0]
    assert top["path"] == str(folder / queries[1].name) and top["distance"] < 1e-3


def test_concurrent_queries_and_an_upload(client: TestClient, sample_copy: Path) -> None:
    photos = [p.read_bytes() for p in sorted((sample_copy / "duplicates").glob("*.jpg"))[:6]]
    new = _png((80, 80), (250, 200, 0))

    def query(data: bytes) -> int:
        return client.post(Q, files={"image": ("p.jpg", data)}, data={"k": "3"}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        upload = pool.submit(
            lambda: client.post("/api/v1/images", files={"image": ("n.png", new)}, data={"product_id": "C-1"})
        )
        codes = list(pool.map(query, photos))
        assert upload.result().status_code == 201
    assert codes == [200] * len(photos)


def test_a_product_id_with_a_slash_reads_back(client: TestClient) -> None:
    png = _png(colour=(200, 40, 90))
    for pid in ("AB/123", "../../etc"):  # an id is data, never a path: both are products like any other
        r = client.post("/api/v1/images", files={"image": ("x.png", png)}, data={"product_id": pid})
        assert r.status_code in (200, 201), r.text
        png = _png(colour=(40, 200, 90))
    assert client.get("/api/v1/products/AB%2F123").json()["product_id"] == "AB/123"
    assert client.get("/api/v1/products/AB/123").json()["product_id"] == "AB/123"
    assert client.get("/api/v1/products/..%2F..%2Fetc").json()["product_id"] == "../../etc"
    for bad in ("tab\there", "nul\x00", "\x7f"):
        r = client.post("/api/v1/images", files={"image": ("x.png", png)}, data={"product_id": bad})
        _assert_error(r, 400, "invalid_field")


def test_the_openapi_document_describes_every_error(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    error_ref = "#/components/schemas/ErrorBody"
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            errors = {code for code in responses if code[0] in "45"}
            assert "422" not in errors or "HTTPValidationError" not in json.dumps(responses["422"]), (path, method)
            if path.startswith("/api/v1"):
                assert {"400", "401", "404", "503"} <= errors, (path, method, errors)
            for code in errors:
                schema = responses[code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (path, method, code)
    uploads = doc["paths"]["/api/v1/query"]["post"]["responses"]
    assert {"408", "413", "422"} <= set(uploads)
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"}

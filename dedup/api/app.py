"""The HTTP API and web page over one store: query, compare, add images, products, thumbnails, reports.

Endpoints are plain (sync) functions: FastAPI runs them in its thread pool, so decoding and inference
never block the event loop. The encoder serialises its own calls; the index is guarded by one lock
here, held only while it is refreshed, searched or updated, never while an image is decoded or
embedded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BeforeValidator

from dedup import __version__
from dedup.api.guards import (
    MULTIPART_OVERHEAD,
    ApiError,
    BodyDeadline,
    BodyLimit,
    check_api_key,
    error_responses,
    image_error,
    install_error_handlers,
    no_blank_fields,
    too_large,
)
from dedup.api.page import PAGE_CSP, PAGE_HTML
from dedup.config import DEFAULT_K
from dedup.errors import ImageError
from dedup.service import (
    EmbeddingCache,
    Store,
    add_image,
    compare_bytes,
    embed_query_bytes,
    image_thumbnail,
    recover_uploads,
    render_report,
    search_vector,
)
from dedup.types import ImageInfo, QueryResult, Report

log = logging.getLogger(__name__)

#: Environment variable holding the API key that write endpoints require.
ENV_API_KEY = "DEDUP_API_KEY"
#: Default byte limit of one uploaded image.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Default pixel limit of one uploaded image (≈ 8192 × 8192); larger ones are refused as decompression bombs.
MAX_UPLOAD_PIXELS = 64 * 1024 * 1024
#: Seconds a request body may go without sending anything, and seconds it may take in all (a stalled upload is
#: answered 408 and dropped; benchmarks/stalled_uploads.py measures it).
BODY_IDLE_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 60.0
#: Requests with a body served at once, in all and from one client address (503 beyond).
MAX_UPLOADS_IN_FLIGHT = 32
MAX_UPLOADS_PER_CLIENT = 8
#: A product id sent to the API: at least one non-space character, and no control characters (a `/` is fine: the
#: product's URL takes it as it is or as %2F).
PRODUCT_ID_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
#: Largest ``k`` a query may ask for.
MAX_K = 100
API = "/api/v1"
#: The error statuses each kind of endpoint documents (dedup.api.guards.ERROR_STATUSES says what each means).
READ_ERRORS = (400, 401, 404, 503)
UPLOAD_ERRORS = (400, 401, 404, 408, 413, 422, 503)


@dataclass
class _State:
    """What the routes share: the store and its guards."""

    store: Store
    cache: EmbeddingCache
    api_key: str | None
    protect_reads: bool
    max_upload_bytes: int
    max_pixels: int
    index_lock: threading.Lock = field(default_factory=threading.Lock)
    index_dirty: bool = False  # images were added since the index was last saved in full


def create_app(
    store: Store,
    api_key: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_UPLOAD_PIXELS,
    *,
    protect_reads: bool = False,
    cache_size: int | None = None,
    body_idle_timeout_s: float = BODY_IDLE_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> FastAPI:
    """The FastAPI app serving ``store`` (the caller keeps it open while the app runs, and closes it).

    ``api_key`` protects the write endpoint (``POST /api/v1/images``); None reads ``DEDUP_API_KEY``
    and an empty string turns the check off. With ``protect_reads`` the key is also required by the
    other ``/api/v1`` endpoints. Uploads over ``max_upload_bytes`` get a 413, images over
    ``max_pixels`` a 422. ``cache_size`` bounds the embedding cache (None: its default, 0: off). A request
    body that sends nothing for ``body_idle_timeout_s`` seconds, or is not complete after ``body_timeout_s``,
    is answered 408 (see :class:`~dedup.api.guards.BodyDeadline`, which also caps uploads in flight).
    """
    key = os.environ.get(ENV_API_KEY) if api_key is None else api_key
    state = _State(
        store=store,
        cache=EmbeddingCache() if cache_size is None else EmbeddingCache(cache_size),
        api_key=key or None,
        protect_reads=protect_reads,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _warm_up(state)
        yield
        if state.index_dirty:
            with state.index_lock:
                state.store.save_index(force=True)

    app = FastAPI(
        title="dedup",
        version=__version__,
        description="Near-duplicate product images: query similar catalog products, compare two images, "
        'add images to the catalog. Errors are JSON: `{"error": {"code": ..., "message": ...}}`.',
        lifespan=lifespan,
    )
    app.state.dedup = state
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit_for=_body_limits(max_upload_bytes), upload_limit=max_upload_bytes)
    # Added last, so it runs first: a stalled or surplus upload is refused before anything else looks at it.
    app.add_middleware(
        BodyDeadline,
        idle_s=body_idle_timeout_s,
        total_s=body_timeout_s,
        max_in_flight=MAX_UPLOADS_IN_FLIGHT,
        max_per_client=MAX_UPLOADS_PER_CLIENT,
    )
    _add_routes(app, state)
    return app


def _body_limits(max_upload_bytes: int) -> Callable[[str], int | None]:
    def limit_for(path: str) -> int | None:
        if path == f"{API}/compare":
            return 2 * max_upload_bytes + MULTIPART_OVERHEAD
        if path.startswith(API):
            return max_upload_bytes + MULTIPART_OVERHEAD
        return MULTIPART_OVERHEAD

    return limit_for


def _warm_up(state: _State) -> None:
    """Finish interrupted uploads, and load the model and the index before the first request pays for them."""
    recover_uploads(state.store)
    encoder = state.store.encoder
    with state.index_lock:
        size = len(state.store.index)
    log.info("serving model %s (%s) over %d indexed images", encoder.model_id, encoder.runtime, size)


def _read_upload(upload: UploadFile, limit: int) -> bytes:
    """The bytes of one uploaded file, at most ``limit`` of them (413 beyond)."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    return data


def _label(upload: UploadFile, default: str) -> str:
    # The client's file name is only ever echoed back as a label, never used as a path.
    return (upload.filename or default)[:200]


def _image_json(info: ImageInfo) -> dict[str, Any]:
    return {
        "image_id": info.image_id,
        "path": info.path,
        "product_id": info.product_id,
        "title": info.title,
        "category": info.category,
        "sha256": info.sha256,
        "width": info.width,
        "height": info.height,
        "bytes": info.bytes,
        "format": info.format,
        "ingested_at": info.ingested_at.isoformat(),
        "thumbnail_url": _thumbnail_url(info.image_id),
    }


#: The largest image id a catalog can hold: its integers are 64-bit signed (SQLite, PostgreSQL).
MAX_IMAGE_ID = 2**63 - 1


def _digits_only(value: object) -> object:
    """Refuse ``1.0``, ``+1`` or ``1e3`` where an id is expected (pydantic would read ``1.0`` as 1)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written in digits")
    return value


#: An image id in a path: digits only, 1 to MAX_IMAGE_ID, else a JSON 400 (never an overflow in the database).
ImageId = Annotated[
    int, Path(ge=1, le=MAX_IMAGE_ID, description="The catalog image id."), BeforeValidator(_digits_only)
]


def _thumbnail_url(image_id: int) -> str:
    return f"{API}/images/{image_id}/thumbnail"


def _query_json(result: QueryResult, model_id: str, threshold: float) -> dict[str, Any]:
    """DESIGN.md's query JSON, plus the model, its threshold and per result the catalog fields."""
    payload: dict[str, Any] = result.as_dict()
    payload["model"] = model_id
    payload["threshold"] = threshold
    for row, hit in zip(payload["results"], result.hits, strict=True):
        row["image_id"] = hit.image.image_id
        row["title"] = hit.image.title
        row["category"] = hit.image.category
        row["thumbnail_url"] = _thumbnail_url(hit.image.image_id)
        row["duplicate"] = hit.distance <= threshold
    return payload


def _add_routes(app: FastAPI, state: _State) -> None:
    store = state.store

    def require_write(request: Request) -> None:
        if state.api_key is not None:
            check_api_key(request, state.api_key)

    def require_read(request: Request) -> None:
        if state.api_key is not None and state.protect_reads:
            check_api_key(request, state.api_key)

    read = [Depends(require_read)]

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML, headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/healthz", tags=["status"], responses=error_responses(503))
    def healthz() -> dict[str, Any]:
        """Liveness and what is served: model, catalog image count, index size, embedding cache."""
        encoder = store.encoder
        with state.index_lock:
            index_size = len(store.index)
        stats = store.catalog.stats()
        images = stats["images"]
        return {
            "status": "ok",
            "version": __version__,
            "model": encoder.model_id,
            "runtime": encoder.runtime,
            "threshold": encoder.threshold,
            "images": images.get("ok", 0) if isinstance(images, dict) else 0,
            "index_size": index_size,
            "generation": stats["generation"],
            "cache": state.cache.stats(),
        }

    # After the GET route, so a 405 for another method (OPTIONS, POST) names the documented GET in its Allow header.
    @app.head("/healthz", include_in_schema=False)
    def healthz_head() -> Response:
        return Response(status_code=200)

    @app.post(
        f"{API}/query",
        tags=["search"],
        dependencies=[*read, Depends(no_blank_fields("k", "per_product"))],
        responses=error_responses(*UPLOAD_ERRORS),
    )
    def query(
        image: Annotated[UploadFile, File(description="The photo to look up (any common image format).")],
        k: Annotated[int, Form(ge=1, le=MAX_K, description="Number of results.")] = DEFAULT_K,
        category: Annotated[str | None, Form(description="Only products of this category (any case).")] = None,
        per_product: Annotated[
            bool, Form(description="One result per product (its closest image), so k results are k products.")
        ] = False,
    ) -> dict[str, Any]:
        """The k catalog images most similar to the uploaded photo, nearest first."""
        data = _read_upload(image, state.max_upload_bytes)
        name = _label(image, "upload")
        try:
            views = embed_query_bytes(store, data, name, cache=state.cache, max_pixels=state.max_pixels)
        except ImageError as exc:
            raise image_error(exc) from exc
        with state.index_lock:
            result = search_vector(store, name, views, k, category or None, per_product)
        encoder = store.encoder
        return _query_json(result, encoder.model_id, encoder.threshold)

    @app.post(f"{API}/compare", tags=["search"], dependencies=read, responses=error_responses(*UPLOAD_ERRORS))
    def compare(
        image_a: Annotated[UploadFile, File(description="First image.")],
        image_b: Annotated[UploadFile, File(description="Second image.")],
    ) -> dict[str, Any]:
        """Similarity and distance of two images, and whether they are near-duplicates at the model's threshold."""
        data_a = _read_upload(image_a, state.max_upload_bytes)
        data_b = _read_upload(image_b, state.max_upload_bytes)
        names = (_label(image_a, "image_a"), _label(image_b, "image_b"))
        try:
            r = compare_bytes(store, data_a, data_b, names, cache=state.cache, max_pixels=state.max_pixels)
        except ImageError as exc:
            raise image_error(exc) from exc
        return r.as_dict()

    @app.post(
        f"{API}/images",
        tags=["catalog"],
        dependencies=[Depends(require_write)],
        status_code=201,
        responses=error_responses(
            *UPLOAD_ERRORS, success={"description": "The same bytes were already in the catalog: their image."}
        ),
    )
    def add(
        response: Response,
        image: Annotated[UploadFile, File(description="The product image.")],
        product_id: Annotated[
            str,
            Form(
                min_length=1,
                max_length=200,
                pattern=PRODUCT_ID_PATTERN,
                description="Product the image shows: printable, not only spaces (leading and trailing ones are "
                "dropped).",
            ),
        ],
        title: Annotated[str | None, Form(max_length=1000)] = None,
        category: Annotated[str | None, Form(max_length=200)] = None,
    ) -> dict[str, Any]:
        """Add an image to the catalog and the index (201); the same bytes again reuse the stored image (200).

        The file is kept as ``<store>/uploads/<sha256><extension of the decoded format>``.
        Requires the ``X-API-Key`` header when the server has an API key.
        """
        data = _read_upload(image, state.max_upload_bytes)
        if not product_id.strip():
            raise ApiError(400, "invalid_field", "product_id must not be blank")
        try:
            added = add_image(
                store,
                data,
                product_id.strip(),
                title or None,
                category or None,
                name=_label(image, "upload"),
                cache=state.cache,
                max_pixels=state.max_pixels,
                index_lock=state.index_lock,
            )
        except ImageError as exc:
            raise image_error(exc) from exc
        if added.created:
            state.index_dirty = True
        else:
            response.status_code = 200
        return {"created": added.created, "image": _image_json(added.image)}

    @app.get(
        f"{API}/products/{{product_id:path}}",
        tags=["catalog"],
        dependencies=read,
        responses=error_responses(*READ_ERRORS),
    )
    def product(
        product_id: Annotated[str, Path(description="The product id; one with a `/` may be sent as it is or as %2F.")],
    ) -> dict[str, Any]:
        """A product's fields and its images (each with a thumbnail URL unless its file failed to decode)."""
        found = store.catalog.product(product_id)
        if found is None:
            raise ApiError(404, "not_found", f"no product {product_id!r} in the catalog")
        images = found.get("images")
        if isinstance(images, list):
            for row in images:
                if row.get("status") != "failed":
                    row["thumbnail_url"] = _thumbnail_url(int(row["image_id"]))
        return found

    @app.get(
        f"{API}/images/{{image_id}}/thumbnail",
        tags=["catalog"],
        dependencies=read,
        response_class=Response,
        responses=error_responses(
            *READ_ERRORS, success={"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail."}
        ),
    )
    def thumbnail(
        image_id: ImageId,
        size: Annotated[int, Query(ge=32, le=512, description="Longer side in pixels.")] = 160,
    ) -> Response:
        """A JPEG thumbnail of a catalog image, made from its stored file."""
        try:
            jpeg = image_thumbnail(store, image_id, size)
        except ImageError as exc:
            raise ApiError(404, "file_unavailable", f"image {image_id}: {exc.reason}") from exc
        if jpeg is None:
            raise ApiError(404, "not_found", f"no image {image_id} in the catalog")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=300"})

    @app.get(
        f"{API}/reports/latest.html",
        tags=["reports"],
        dependencies=read,
        response_model=None,
        responses=error_responses(*READ_ERRORS, 409),
    )
    def latest_report_html() -> HTMLResponse:
        """The latest duplicate report as the HTML page of ``dedup report --format html``, thumbnails served here."""
        path = store.config.reports_dir / "latest.json"
        if not path.is_file():
            raise ApiError(404, "no_report", "no duplicate report yet: run `dedup report` to make one")
        try:
            report = Report.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise ApiError(409, "old_report", f"{exc}; run `dedup report` again to write a new one") from exc
        thumbs = {m.path: _thumbnail_url(m.image_id) for c in report.clusters for m in c.members}
        return HTMLResponse(render_report(report, "html", thumbs))

    @app.get(
        f"{API}/reports/latest",
        tags=["reports"],
        dependencies=read,
        response_model=None,
        responses=error_responses(
            *READ_ERRORS, success={"content": {"application/json": {}}, "description": "The report JSON."}
        ),
    )
    def latest_report() -> FileResponse:
        """The latest duplicate report (JSON), as written by ``dedup report``."""
        path = store.config.reports_dir / "latest.json"
        if not path.is_file():
            raise ApiError(404, "no_report", "no duplicate report yet: run `dedup report` to make one")
        return FileResponse(path, media_type="application/json")

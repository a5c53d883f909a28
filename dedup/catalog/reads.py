"""Queries on the catalog, each run inside a caller's session and transaction."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from dedup.catalog.codec import STORED_DTYPE, decode_vector
from dedup.catalog.models import GENERATION_KEY, IMAGE_STATUSES, Image, IngestRun, Meta, Product, Vector
from dedup.errors import StoreError
from dedup.types import STATUS_FAILED, STATUS_OK, FailedFile, ImageInfo, KnownFile

#: Values per ``IN (...)`` list: stays below SQLite's bound-parameter limit on every version.
IN_CHUNK = 500
#: Rows fetched at a time when streaming large results.
STREAM_ROWS = 2048

T = TypeVar("T")


def chunked(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` values."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def generation(session: Session | Connection) -> int:
    """The index generation counter (0 before the first write)."""
    meta = Meta.__table__.c
    value = session.scalar(select(meta.value).where(meta.key == GENERATION_KEY))
    try:
        return int(value) if value is not None else 0
    except ValueError as exc:
        raise StoreError(f"catalog meta '{GENERATION_KEY}' is not a number: {value!r}") from exc


def known_files(session: Session, paths: Sequence[str] | None) -> dict[str, KnownFile]:
    """What is stored about each path (every image row when ``paths`` is None), by path."""
    columns = (Image.id, Image.path, Image.bytes, Image.mtime, Image.sha256, Image.status, Image.model_id)
    if paths is None:
        statements = [select(*columns).execution_options(yield_per=STREAM_ROWS)]
    else:
        statements = [select(*columns).where(Image.path.in_(c)) for c in chunked(list(dict.fromkeys(paths)))]
    found: dict[str, KnownFile] = {}
    for stmt in statements:
        for image_id, path, size, mtime, sha256, status, model_id in session.execute(stmt):
            found[path] = KnownFile(image_id, path, size, mtime, sha256, status, model_id)
    return found


def ok_images_by_model(session: Session) -> dict[str, int]:
    """How many usable (ok) images each model embedded, by model id."""
    stmt = select(Image.model_id, func.count()).where(Image.status == STATUS_OK).group_by(Image.model_id)
    return {str(model_id): int(n) for model_id, n in session.execute(stmt)}


def vector_ids(session: Session, sha256s: Iterable[str], model_id: str) -> dict[str, int]:
    """Ids of the vectors already stored for these contents under ``model_id``, by sha256."""
    found: dict[str, int] = {}
    for chunk in chunked(list(dict.fromkeys(sha256s))):
        stmt = select(Vector.sha256, Vector.id).where(Vector.model_id == model_id, Vector.sha256.in_(chunk))
        found.update({sha: vid for sha, vid in session.execute(stmt)})
    return found


@functools.cache
def _stored_vectors_stmt() -> Any:
    # Built once: building a select costs more than running it (queries call this every time).
    vec = Vector.__table__.c
    return select(vec.sha256, vec.data, vec.dim).where(
        vec.model_id == bindparam("model_id"), vec.sha256.in_(bindparam("sha256s", expanding=True))
    )


def stored_vectors(session: Session | Connection, sha256s: Iterable[str], model_id: str) -> dict[str, np.ndarray]:
    """The vectors already stored for these contents under ``model_id`` (float32, 1-D), by sha256."""
    found: dict[str, np.ndarray] = {}
    for chunk in chunked(list(dict.fromkeys(sha256s))):
        rows = session.execute(_stored_vectors_stmt(), {"model_id": model_id, "sha256s": list(chunk)})
        found.update({sha: decode_vector(data, dim) for sha, data, dim in rows})
    return found


def indexed_vectors(session: Session, model_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids (int64, (n,)) and vectors (float32, (n, dim)) of the ok images under ``model_id``, by id.

    Rows are streamed into arrays sized by a count first, so memory stays at the size of the result.
    """
    where = (Image.status == STATUS_OK, Image.model_id == model_id, Vector.model_id == model_id)
    joined = select(func.count()).select_from(Image).join(Vector, Image.vector_id == Vector.id).where(*where)
    expected = session.scalar(joined) or 0
    dim = session.scalar(select(Vector.dim).where(Vector.model_id == model_id).limit(1)) or 0
    ids = np.empty(expected, dtype=np.int64)
    out = np.empty((expected, dim), dtype=np.float32)
    stmt = (
        select(Image.id, Vector.dim, Vector.data)
        .join(Vector, Image.vector_id == Vector.id)
        .where(*where)
        .order_by(Image.id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    n = 0
    for image_id, row_dim, data in session.execute(stmt):
        if row_dim != dim:
            raise StoreError(f"model {model_id} has vectors of {row_dim} and {dim} values: the catalog is mixed")
        if n == len(ids):
            # Only without snapshot isolation can rows appear after the count; grow rather than fail.
            ids = np.resize(ids, max(1, 2 * n))
            out = np.resize(out, (max(1, 2 * n), dim))
        ids[n] = image_id
        out[n] = np.frombuffer(data, dtype=STORED_DTYPE)
        n += 1
    if n < len(ids):
        ids, out = ids[:n].copy(), out[:n].copy()
    return ids, out


def _info(row: Any) -> ImageInfo:
    """An :class:`ImageInfo` from a row of :func:`_with_product`."""
    return ImageInfo(
        image_id=row.id,
        path=row.path,
        product_id=row.product_id,
        sha256=row.sha256 or "",
        pixel_hash=row.pixel_hash,
        width=row.width or 0,
        height=row.height or 0,
        bytes=row.bytes or 0,
        format=row.format,
        ingested_at=row.ingested_at,
        title=row.title,
        category=row.category,
    )


def _with_product() -> Any:
    """Image columns joined with their product's, as plain columns: no ORM objects are built for a read."""
    img, prod = Image.__table__.c, Product.__table__.c
    return select(
        img.id,
        img.path,
        img.sha256,
        img.pixel_hash,
        img.width,
        img.height,
        img.bytes,
        img.format,
        img.ingested_at,
        prod.product_id,
        prod.title,
        prod.category,
    ).outerjoin(Product.__table__, img.product_fk == prod.id)


@functools.cache
def _images_stmt() -> Any:
    # Built once, like _stored_vectors_stmt: every query joins its hits through it.
    img = Image.__table__.c
    return _with_product().where(img.id.in_(bindparam("ids", expanding=True)), img.sha256.is_not(None))


def images(session: Session | Connection, ids: Sequence[int]) -> dict[int, ImageInfo]:
    """Decoded images (ok or missing, not failed) by id, joined with their product."""
    found: dict[int, ImageInfo] = {}
    for chunk in chunked(list(dict.fromkeys(int(i) for i in ids))):
        found.update({row.id: _info(row) for row in session.execute(_images_stmt(), {"ids": list(chunk)})})
    return found


def image_by_path(session: Session, path: str) -> ImageInfo | None:
    """The decoded image stored under ``path``; None when unknown or its file failed."""
    img = Image.__table__.c
    row = session.execute(_with_product().where(img.path == path, img.sha256.is_not(None))).first()
    return None if row is None else _info(row)


def vector_of_image(session: Session, image_id: int) -> np.ndarray | None:
    """The stored vector of an image (float32, 1-D), or None when it has none."""
    stmt = select(Vector.data, Vector.dim).join(Image, Image.vector_id == Vector.id).where(Image.id == image_id)
    row = session.execute(stmt).first()
    return None if row is None else decode_vector(row.data, row.dim)


def failed_files(session: Session) -> list[FailedFile]:
    """Every file whose last ingest failed, by path."""
    stmt = select(Image).where(Image.status == STATUS_FAILED).order_by(Image.path)
    return [
        FailedFile(path=r.path, kind=r.error_kind or "", reason=r.error or "", bytes=r.bytes, mtime=r.mtime)
        for r in session.scalars(stmt)
    ]


def product(session: Session, product_id: str) -> dict[str, object] | None:
    """A product's fields and its images (id, path, status), or None when unknown."""
    row = session.scalar(select(Product).where(Product.product_id == product_id))
    if row is None:
        return None
    image_rows = session.execute(
        select(Image.id, Image.path, Image.status).where(Image.product_fk == row.id).order_by(Image.id)
    )
    return {
        "product_id": row.product_id,
        "title": row.title,
        "category": row.category,
        "attributes": dict(row.attributes or {}),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "images": [{"image_id": i, "path": p, "status": s} for i, p, s in image_rows],
    }


def _run_dict(run: IngestRun | None) -> dict[str, object] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "root": run.root,
        "model_id": run.model_id,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "status": run.status,
        "counts": dict(run.counts or {}),
    }


def image_products(session: Session, paths: Sequence[str]) -> dict[str, str | None]:
    """The product id of each readable image at ``paths`` (None for one without a product).

    Unknown paths and rows of files that failed or went missing are left out: those carry no product.
    """
    out: dict[str, str | None] = {}
    for chunk in chunked(list(paths)):
        stmt = (
            select(Image.path, Product.product_id)
            .outerjoin(Product, Image.product_fk == Product.id)
            .where(Image.path.in_(chunk), Image.status == STATUS_OK)
        )
        out.update((path, pid) for path, pid in session.execute(stmt))
    return out


def orphan_products(session: Session) -> list[str]:
    """Product ids that no image row points to any more, sorted."""
    linked = select(Image.id).where(Image.product_fk == Product.id).exists()
    return sorted(session.scalars(select(Product.product_id).where(~linked)))


def image_count(session: Session) -> int:
    """Image rows of any status (ok, failed or missing)."""
    return int(session.scalar(select(func.count()).select_from(Image)) or 0)


def stats(session: Session) -> dict[str, object]:
    """JSON-ready counts: products, images by status, vectors, contents, models, last run, generation."""
    by_status = {status: n for status, n in session.execute(select(Image.status, func.count()).group_by(Image.status))}
    models = session.execute(select(Vector.model_id, func.count()).group_by(Vector.model_id).order_by(Vector.model_id))
    last_run = session.scalar(select(IngestRun).order_by(IngestRun.id.desc()).limit(1))
    return {
        "products": session.scalar(select(func.count()).select_from(Product)) or 0,
        "images": {**{s: by_status.get(s, 0) for s in IMAGE_STATUSES}, "total": sum(by_status.values())},
        "vectors": session.scalar(select(func.count()).select_from(Vector)) or 0,
        "distinct_sha256": session.scalar(select(func.count(func.distinct(Image.sha256)))) or 0,
        "models": {model_id: n for model_id, n in models},
        "last_run": _run_dict(last_run),
        "generation": generation(session),
    }

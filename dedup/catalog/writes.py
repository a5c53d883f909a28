"""Changes to the catalog, each run inside a caller's session and transaction.

Every change to the set of indexed vectors bumps the ``generation`` meta value in the same transaction,
so an index saved with an older generation is known to be stale.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from sqlalchemy import CursorResult, Integer, String, Table, delete, insert, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from dedup.catalog.codec import encode_vector
from dedup.catalog.coltypes import utcnow
from dedup.catalog.models import GENERATION_KEY, Image, Meta, Product, Vector
from dedup.catalog.reads import chunked, vector_ids
from dedup.errors import StoreError
from dedup.types import STATUS_FAILED, STATUS_MISSING, STATUS_OK, FailedFile, ImageRecord, ProductRecord

log = logging.getLogger(__name__)


def bump_generation(session: Session) -> None:
    """Add one to the generation counter (one UPDATE, so concurrent writers cannot lose a bump)."""
    stmt = (
        update(Meta)
        .where(Meta.key == GENERATION_KEY)
        .values(value=sql_cast(sql_cast(Meta.value, Integer) + 1, String))
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], session.execute(stmt))
    if result.rowcount == 0:
        # The migration seeds the row; this only repairs a catalog where it was deleted by hand.
        session.add(Meta(key=GENERATION_KEY, value="1"))
        session.flush()


def upsert_products(session: Session, products: Iterable[ProductRecord]) -> dict[str, int]:
    """Insert products or update known ones by ``product_id``; returns the row id of each.

    Values that are ``None`` do not erase what is stored, and attributes are merged key by key, so a
    sparser source (e.g. a product implied by a file name) never wipes what a metadata CSV said.
    """
    wanted = {p.product_id: p for p in products}  # the last record of a product id wins
    rows = _products_by_id(session, wanted)
    for pid, row in rows.items():
        record = wanted[pid]
        if record.title is not None:
            row.title = record.title
        if record.category is not None:
            row.category = record.category
        if record.attributes:
            row.attributes = {**(row.attributes or {}), **record.attributes}
    session.flush()
    ids = {pid: row.id for pid, row in rows.items()}
    ids.update(_insert_products(session, [r for pid, r in wanted.items() if pid not in rows]))
    return ids


def assign_products(session: Session, assignments: Mapping[str, str]) -> int:
    """Point the images at ``assignments``' paths to those product ids (creating bare products as needed).

    Returns how many images changed product. The vectors do not change, so the generation does not.
    """
    if not assignments:
        return 0
    product_ids = sorted(set(assignments.values()))
    known = _ids_by_key(session, Product.id, Product.product_id, product_ids)
    known.update(_insert_products(session, [ProductRecord(product_id=p) for p in product_ids if p not in known]))
    changed = 0
    now = utcnow()
    for path, row in _images_by_path(session, assignments).items():
        fk = known[assignments[path]]
        if row.product_fk != fk:
            row.product_fk = fk
            row.updated_at = now
            changed += 1
    session.flush()
    return changed


def _insert_products(session: Session, records: Sequence[ProductRecord]) -> dict[str, int]:
    """Insert products known to be new; returns their row ids by ``product_id``."""
    if not records:
        return {}
    now = utcnow()
    added = [
        {
            "product_id": r.product_id,
            "title": r.title,
            "category": r.category,
            "attributes": dict(r.attributes or {}),
            "created_at": now,
            "updated_at": now,
        }
        for r in records
    ]
    # One Core executemany: an ORM object per new product cost ~0.5 ms each during ingest.
    session.execute(insert(cast(Table, Product.__table__)), added)
    return _ids_by_key(session, Product.id, Product.product_id, [r.product_id for r in records])


def _ids_by_key(session: Session, id_column: Any, key_column: Any, keys: Sequence[str]) -> dict[str, int]:
    """Row ids by a unique text key (``Image.path``, ``Product.product_id``), in chunks of bound parameters."""
    found: dict[str, int] = {}
    for chunk in chunked(list(keys)):
        found.update(
            {key: int(i) for i, key in session.execute(select(id_column, key_column).where(key_column.in_(chunk)))}
        )
    return found


def _products_by_id(session: Session, product_ids: Iterable[str]) -> dict[str, Product]:
    found: dict[str, Product] = {}
    for chunk in chunked(list(product_ids)):
        for row in session.scalars(select(Product).where(Product.product_id.in_(chunk))):
            found[row.product_id] = row
    return found


def _images_by_path(session: Session, paths: Iterable[str]) -> dict[str, Image]:
    found: dict[str, Image] = {}
    for chunk in chunked(list(dict.fromkeys(paths))):
        for row in session.scalars(select(Image).where(Image.path.in_(chunk))):
            found[row.path] = row
    return found


def _store_vectors(session: Session, vectors: Mapping[str, np.ndarray], model_id: str) -> dict[str, int]:
    """Insert the vectors not stored yet for ``model_id``; returns vector ids by sha256 (old and new)."""
    known = vector_ids(session, vectors, model_id)
    model_dim = session.scalar(select(Vector.dim).where(Vector.model_id == model_id).limit(1))
    added: list[dict[str, Any]] = []
    now = utcnow()
    for sha, vector in vectors.items():
        if sha in known:
            continue
        data, dim = encode_vector(vector, sha)
        if model_dim is not None and dim != model_dim:
            raise StoreError(f"vector for {sha} has {dim} values, model {model_id} has {model_dim}")
        model_dim = dim
        added.append({"sha256": sha, "model_id": model_id, "dim": dim, "data": data, "created_at": now})
    if added:
        # One Core executemany: building ORM objects cost more than the INSERT itself (measured ~4×).
        session.execute(insert(cast(Table, Vector.__table__)), added)
        known.update(vector_ids(session, [a["sha256"] for a in added], model_id))
    return known


def write_batch(
    session: Session,
    records: Sequence[ImageRecord],
    vectors: Mapping[str, np.ndarray],
    failures: Sequence[FailedFile],
    model_id: str,
    run_id: int | None,
) -> list[int]:
    """Store new vectors, upsert ok and failed image rows by path, bump the generation once.

    Returns the image ids of ``records`` in order. Raises ``StoreError`` when a record's content has
    no vector, neither in ``vectors`` nor stored (the caller forgot to embed it).
    """
    vector_by_sha = _store_vectors(session, vectors, model_id)
    shas = {r.sha256 for r in records}
    vector_by_sha.update(vector_ids(session, shas - vector_by_sha.keys(), model_id))
    missing = shas - vector_by_sha.keys()
    if missing:
        raise StoreError(f"no vector for {len(missing)} image content(s) under model {model_id}, e.g. {min(missing)}")
    product_ids = {r.product_id for r in records if r.product_id}
    known_products = _ids_by_key(session, Product.id, Product.product_id, sorted(product_ids))
    # Products implied by file names carry nothing to merge: the missing ones are inserted bare.
    new_products = [ProductRecord(product_id=pid) for pid in sorted(product_ids - known_products.keys())]
    known_products.update(_insert_products(session, new_products))

    now = utcnow()
    # The values of every row, by path; a failure of a path overrides a record of it, the last one wins.
    values: dict[str, dict[str, Any]] = {}
    for record in records:
        values[record.path] = {
            "sha256": record.sha256,
            "pixel_hash": record.pixel_hash,
            "width": record.width,
            "height": record.height,
            "format": record.format,
            "bytes": record.bytes,
            "mtime": record.mtime,
            "status": STATUS_OK,
            "error_kind": None,
            "error": None,
            "model_id": model_id,
            "vector_id": vector_by_sha[record.sha256],
            "product_fk": known_products[record.product_id] if record.product_id else None,
            "run_id": run_id,
            "updated_at": now,
        }
    for failure in failures:
        # The old content is gone or unreadable: forget what was decoded from it, keep the product link.
        values[failure.path] = {
            **dict.fromkeys(("sha256", "pixel_hash", "format", "width", "height", "vector_id"), None),
            "bytes": failure.bytes,
            "mtime": failure.mtime,
            "status": STATUS_FAILED,
            "error_kind": failure.kind,
            "error": failure.reason,
            "model_id": model_id,
            "run_id": run_id,
            "updated_at": now,
        }
    rows = _images_by_path(session, values)
    for path, row in rows.items():
        for key, value in values[path].items():
            setattr(row, key, value)
    new = [{"path": path, "ingested_at": now, **v} for path, v in values.items() if path not in rows]
    if new:
        # New rows go in with one Core executemany, in input order, so their ids (also their index
        # ids) follow it; ORM objects for thousands of rows cost more than the INSERT itself.
        for row_values in new:
            row_values.setdefault("product_fk", None)
        session.execute(insert(cast(Table, Image.__table__)), new)
    session.flush()
    ids = {path: row.id for path, row in rows.items()}
    if new:
        ids.update(_ids_by_key(session, Image.id, Image.path, [v["path"] for v in new]))
    bump_generation(session)
    log.debug("wrote %d images, %d failures, %d vectors", len(records), len(failures), len(vectors))
    return [ids[r.path] for r in records]


def mark_missing(session: Session, paths: Sequence[str]) -> list[int]:
    """Set the status of the given paths to missing (vectors stay linked); returns the ids changed."""
    changed: list[int] = []
    now = utcnow()
    for row in _images_by_path(session, paths).values():
        if row.status != STATUS_MISSING:
            row.status, row.updated_at = STATUS_MISSING, now
            changed.append(row.id)
    if changed:
        session.flush()
        bump_generation(session)
    return sorted(changed)


def delete_images(session: Session, paths: Sequence[str]) -> list[int]:
    """Delete the image rows of the given paths; returns their ids. Vectors stay for content seen again."""
    ids = sorted(row.id for row in _images_by_path(session, paths).values())
    for chunk in chunked(ids):
        session.execute(delete(Image).where(Image.id.in_(chunk)).execution_options(synchronize_session=False))
    if ids:
        bump_generation(session)
    return ids

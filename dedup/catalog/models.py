"""The catalog schema as SQLAlchemy typed ORM models; Alembic's ``migrations/env.py`` reads ``Base.metadata``.

Every change here needs a revision in ``migrations/versions`` (``tests/test_migrations.py`` checks that the
two agree).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dedup.catalog.coltypes import UTCDateTime, utcnow
from dedup.types import STATUS_FAILED, STATUS_MISSING, STATUS_OK

#: Constraint and index names are fixed by convention so that batch migrations on SQLite can find them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Meta key of the counter bumped with every change to the set of indexed vectors.
GENERATION_KEY = "generation"

IMAGE_STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_MISSING)
RUN_RUNNING = "running"
RUN_STATUSES = (RUN_RUNNING, "finished", "interrupted", "failed")
MARK_DUPLICATE = "duplicate"
MARK_NOT_DUPLICATE = "not_duplicate"
MARK_DECISIONS = (MARK_DUPLICATE, MARK_NOT_DUPLICATE)


def _in(values: tuple[str, ...]) -> str:
    """SQL text ``status IN ('a', 'b')`` for a check constraint (constant values only)."""
    return "status IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class Base(DeclarativeBase):
    """Declarative base holding the catalog's metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Product(Base):
    """A product; images point to it through ``images.product_fk``."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[str] = mapped_column(String(255), unique=True)
    title: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(255), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Vector(Base):
    """One embedding per distinct file content (sha256) and model: float32 little-endian bytes."""

    __tablename__ = "vectors"
    __table_args__ = (UniqueConstraint("sha256", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(255))
    dim: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class IngestRun(Base):
    """One ingest of a folder, with its outcome and counts."""

    __tablename__ = "ingest_runs"
    __table_args__ = (CheckConstraint(_in(RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=RUN_RUNNING)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_id: Mapped[str] = mapped_column(String(255))
    #: The machine and process running it: a run is only declared interrupted by its own host, once its process is
    #: gone (None for runs recorded before revision 0004).
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)


class Image(Base):
    """One image file by absolute path. Its ``id`` is also its id in the vector index."""

    __tablename__ = "images"
    __table_args__ = (CheckConstraint(_in(IMAGE_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)  # NULL when the file failed
    pixel_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(32))
    bytes: Mapped[int | None] = mapped_column(Integer)
    mtime: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str | None] = mapped_column(String(255))
    vector_id: Mapped[int | None] = mapped_column(ForeignKey("vectors.id", ondelete="SET NULL"))
    product_fk: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"), index=True)
    ingested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id", ondelete="SET NULL"))


class Meta(Base):
    """Small key/value settings of the catalog (e.g. the index generation counter)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ReportRun(Base):
    """One duplicate report pass: its parameters and summary; its clusters are in ``report_members``."""

    __tablename__ = "report_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    threshold: Mapped[float] = mapped_column(Float)
    model_id: Mapped[str] = mapped_column(String(255))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ReportMember(Base):
    """One member of one cluster of one report run (path and sha256 kept as they were then)."""

    __tablename__ = "report_members"
    __table_args__ = (Index("ix_report_members_run_cluster", "run_id", "cluster_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("report_runs.id", ondelete="CASCADE"))
    cluster_id: Mapped[str] = mapped_column(String(32))
    image_id: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    is_keeper: Mapped[bool] = mapped_column(Boolean, default=False)
    tier: Mapped[str] = mapped_column(String(16))
    distance: Mapped[float] = mapped_column(Float)


class ReviewMark(Base):
    """A person's decision on a pair of images; ``image_a < image_b``. Later report runs respect it."""

    __tablename__ = "review_marks"
    __table_args__ = (
        UniqueConstraint("image_a", "image_b"),
        CheckConstraint("decision IN ('duplicate', 'not_duplicate')", name="decision"),
        CheckConstraint("image_a < image_b", name="ordered"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_a: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    image_b: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImageSignals(Base):
    """Pixel signals of one file content for the keeper rules, computed when a report first needs them.

    Keyed by content (sha256), so copies at other paths share them; ``version`` names how they were
    computed, and rows of another version are computed again.
    """

    __tablename__ = "image_signals"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    thumb: Mapped[bytes] = mapped_column(LargeBinary)  # 32×32 RGB, uint8, row-major
    detail: Mapped[float] = mapped_column(Float)
    jpeg_quality: Mapped[float | None] = mapped_column(Float)  # from the quantisation tables; NULL unless JPEG
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

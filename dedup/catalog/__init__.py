"""The catalog: SQL source of truth for products, images and vectors (only this package and
``migrations/`` import SQLAlchemy and Alembic)."""

from __future__ import annotations

from dedup.catalog.engine import open_engine
from dedup.catalog.store import Catalog

__all__ = ["Catalog", "open_engine"]

"""Alembic environment of the dedup catalog.

The application passes its own connection in ``config.attributes["connection"]`` (see
``dedup.catalog.engine.upgrade``); run by hand, the URL comes from ``-x url=...``, then the
``DEDUP_DB_URL`` environment variable, then ``sqlalchemy.url`` in ``alembic.ini``.
"""

from __future__ import annotations

import logging
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from dedup.catalog.coltypes import UTCDateTime
from dedup.catalog.models import Base

config = context.config
target_metadata = Base.metadata
log = logging.getLogger("alembic.env")


def _url() -> str:
    """The database URL for a command-line run."""
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DEDUP_DB_URL")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=..., set DEDUP_DB_URL or sqlalchemy.url in alembic.ini")
    return url


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Render our column types as plain SQLAlchemy ones so revision scripts never import dedup."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """Write the SQL to stdout instead of running it (``alembic upgrade head --sql``)."""
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against the connection the application passed, or one made from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _run_on(conn)
    finally:
        engine.dispose()


# Only a command-line run configures logging; the application keeps its own (and its existing loggers).
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

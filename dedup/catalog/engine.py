"""Opening the catalog database: engine, SQLite connection settings and migrations on open."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from dedup.errors import StoreError

log = logging.getLogger(__name__)

#: Execution option that asks for a write transaction (``BEGIN IMMEDIATE`` on SQLite).
WRITE_OPTION = "dedup_write"

#: The newest Alembic revision in migrations/versions (a test checks it is the script directory's head).
#: Opening a store that is already there skips importing Alembic, which costs ~0.5 s of start-up.
SCHEMA_HEAD = "0004"

#: Settings applied to every SQLite connection.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers (query, serve) do not block the writer (ingest)
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
    "PRAGMA synchronous=NORMAL",  # safe with WAL, much faster than FULL
)


def migrations_dir() -> Path:
    """The Alembic scripts, shipped inside the package (``dedup/catalog/migrations``; the repository's top-level
    ``migrations`` links there), so an installed wheel migrates databases as a source checkout does."""
    return Path(str(resources.files("dedup.catalog").joinpath("migrations")))


def safe_url(url: str | URL) -> str:
    """The URL as text with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url)


def _install_sqlite_hooks(engine: Engine) -> None:
    """Apply the pragmas and take over transaction start from the sqlite3 driver.

    Python's sqlite3 module starts transactions lazily and only before writes, so reads would not see one
    snapshot and a read-then-write transaction could fail at once when another process writes. We emit
    BEGIN ourselves; write transactions use BEGIN IMMEDIATE so they wait (busy_timeout) instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database, or None for a new or unversioned one."""
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except SQLAlchemyError:
        return None
    return str(row[0]) if row else None


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it is there already).

    A database with no tables at all gets the newest schema in one step (see :func:`_create_new`).
    """
    if current_revision(engine) == SCHEMA_HEAD:
        return
    if _create_new(engine):
        return
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    script_location = migrations_dir()
    if not (script_location / "env.py").is_file():
        raise StoreError(
            f"cannot migrate catalog {safe_url(engine.url)}: migrations folder {script_location} not found "
            "(install dedup from a source checkout with `pip install -e .`)"
        )
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # One write transaction around the whole upgrade: two processes opening a new store at once take turns.
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            # e.g. the database carries a revision this checkout does not know (written by a newer dedup).
            raise StoreError(f"cannot migrate catalog {safe_url(engine.url)}: {brief(exc)}") from exc


def _create_new(engine: Engine) -> bool:
    """Create the newest schema in an empty database and stamp it; False if the database has tables.

    The models are the newest schema (a test compares this path with the migrations table by table),
    and this skips importing and running Alembic, most of the time it takes to open a new store.
    """
    from sqlalchemy import insert, inspect

    from dedup.catalog.models import GENERATION_KEY, Base, Meta

    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        if inspect(conn).get_table_names():
            return False
        Base.metadata.create_all(conn)
        conn.execute(insert(Meta).values(key=GENERATION_KEY, value="0"))
        # The table Alembic keeps its revision in, as Alembic itself creates it.
        conn.execute(
            text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": SCHEMA_HEAD})
    log.info("created a new catalog schema at revision %s", SCHEMA_HEAD)
    return True


def brief(exc: BaseException) -> str:
    """A database error in one line: SQLAlchemy appends the statement and a "Background on this error" link."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for another database, an in-memory one, a ``file:`` URI
    or a URL that does not parse (:func:`open_engine` then says why)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def open_engine(url: str) -> Engine:
    """An engine for ``url`` whose schema is migrated to the newest revision.

    For SQLite files the parent folder is created and WAL mode, foreign keys and a busy timeout are set on
    every connection. Raises ``StoreError`` when the database cannot be opened or migrated.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"cannot open catalog {url}: not a database URL ({exc})") from exc
    shown = safe_url(parsed)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if (db_file := sqlite_file(url)) is not None:
        try:
            db_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open catalog {shown}: {brief(exc)}") from exc
    try:
        engine = create_engine(parsed)
    except ImportError as exc:
        hint = " (pip install 'dedup[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
        raise StoreError(f"cannot open catalog {shown}: its driver is not installed: {exc}{hint}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open catalog {shown}: {brief(exc)}") from exc
    if is_sqlite:
        _install_sqlite_hooks(engine)
    try:
        upgrade(engine)
    except StoreError:
        engine.dispose()
        raise
    except (SQLAlchemyError, OSError) as exc:
        engine.dispose()
        raise StoreError(f"cannot open catalog {shown}: {brief(exc)}") from exc
    log.debug("catalog %s open and migrated", shown)
    return engine

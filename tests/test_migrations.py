"""The Alembic revisions build the schema the models describe, from the API and from the command line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from dedup.catalog.engine import migrations_dir
from dedup.catalog.models import Base

REPO = Path(__file__).resolve().parents[1]
TABLES = {"products", "vectors", "images", "ingest_runs", "meta", "alembic_version"}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """alembic.ini configures logging when Alembic runs from a file; put the test process's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _config(url: str) -> Config:
    config = Config(str(REPO / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    return config


def _head() -> str:
    head = ScriptDirectory.from_config(_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _assert_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == _head()
            # The index generation starts at 0 so a fresh index sidecar can match it.
            assert conn.scalar(text("SELECT value FROM meta WHERE key = 'generation'")) == "0"
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_the_migrations_ship_inside_the_package() -> None:
    # Package data (an installed wheel migrates too); the repository's top-level folder is a link to it, so
    # `alembic -c alembic.ini` from a checkout runs the same scripts.
    assert migrations_dir() == REPO / "dedup" / "catalog" / "migrations"
    assert (migrations_dir() / "env.py").is_file()
    assert (REPO / "migrations").resolve() == migrations_dir().resolve()


def test_upgrade_via_api_with_ini(tmp_path: Path, restore_logging: None) -> None:
    url = f"sqlite:///{tmp_path / 'api.sqlite'}"
    command.upgrade(_config(url), "head")
    _assert_schema(url)
    command.check(_config(url))  # raises when autogenerate would find anything to do


def test_upgrade_with_shared_connection(tmp_path: Path) -> None:
    # How the application migrates: its own connection handed to env.py.
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    engine.dispose()
    _assert_schema(url)


def test_upgrade_from_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    args = [sys.executable, "-m", "alembic", "-c", "alembic.ini"]
    env = {**os.environ, "DEDUP_DB_URL": url}
    done = subprocess.run([*args, "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _assert_schema(url)
    # `-x url=` wins over the environment; `alembic check` fails when models and revisions disagree.
    env["DEDUP_DB_URL"] = f"sqlite:///{tmp_path / 'not-this-one.sqlite'}"
    checked = subprocess.run([*args, "-x", f"url={url}", "check"], cwd=REPO, env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert not (tmp_path / "not-this-one.sqlite").exists()


def test_command_line_without_url_fails_clearly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DEDUP_DB_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "DEDUP_DB_URL" in done.stderr


def test_downgrade_and_upgrade_again(tmp_path: Path, restore_logging: None) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.sqlite'}"
    command.upgrade(_config(url), "head")
    command.downgrade(_config(url), "base")
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    command.upgrade(_config(url), "head")
    _assert_schema(url)


def test_offline_sql(tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(_config(f"sqlite:///{tmp_path / 'never.sqlite'}"), "head", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE images" in sql
    assert "INSERT INTO meta" in sql
    assert not (tmp_path / "never.sqlite").exists()


def test_schema_head_constant_is_the_script_head() -> None:
    """The fast path that skips Alembic on open must name the real head revision."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from dedup.catalog.engine import SCHEMA_HEAD, migrations_dir

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def _schema(url: str) -> dict[str, object]:
    """Every table's columns, keys, indexes and checks as the database reports them."""
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        out: dict[str, object] = {}
        for table in sorted(insp.get_table_names()):
            out[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in insp.get_columns(table)
                ],
                "pk": insp.get_pk_constraint(table),
                "fks": sorted(map(str, insp.get_foreign_keys(table))),
                "indexes": sorted(map(str, insp.get_indexes(table))),
                "uniques": sorted(map(str, insp.get_unique_constraints(table))),
                "checks": sorted(map(str, insp.get_check_constraints(table))),
            }
        return out
    finally:
        engine.dispose()


def test_a_new_catalog_gets_the_same_schema_as_the_migrations(tmp_path: Path) -> None:
    """A new store skips Alembic (create_all + stamp); what it builds must equal what the migrations build."""
    from dedup.catalog.engine import open_engine

    migrated = f"sqlite:///{tmp_path / 'migrated.sqlite'}"
    command.upgrade(_config(migrated), "head")
    created = f"sqlite:///{tmp_path / 'created.sqlite'}"
    open_engine(created).dispose()
    _assert_schema(created)
    assert _schema(created) == _schema(migrated)

"""The Alembic migrations build exactly the schema the SQLAlchemy models describe, on Postgres and SQLite."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from shrinkray.migrate import alembic_config, upgrade_database
from storage.db import make_engine
from storage.models import Base


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_postgres_schema_matches_models(postgres_url: str) -> None:
    upgrade_database(postgres_url)
    assert _diff(postgres_url) == []


def test_sqlite_schema_matches_models(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    upgrade_database(url)
    assert _diff(url) == []


def test_migrations_downgrade_to_empty_and_back(postgres_url: str) -> None:
    upgrade_database(postgres_url)
    command.downgrade(alembic_config(postgres_url), "base")
    engine = make_engine(postgres_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade_database(postgres_url)
    assert _diff(postgres_url) == []


def test_a_model_change_without_migration_is_detected(postgres_url: str) -> None:
    """The check above can fail: a column the migrations lack shows up in the diff."""
    from sqlalchemy import Column, Integer, MetaData, Table

    upgrade_database(postgres_url)
    extended = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(extended)
    Table("jobs", extended, Column("extra", Integer), extend_existing=True)
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), extended)
    engine.dispose()
    assert any(entry[0] == "add_column" and entry[3].name == "extra" for entry in diff)

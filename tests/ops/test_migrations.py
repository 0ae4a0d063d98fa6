"""The tables the code declares are exactly what the migrations build, and what the tests
build from the migrations' rendered SQL is the same."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import NullPool, create_engine, inspect

from sms_relay.adapters.postgres.tables import metadata

pytestmark = pytest.mark.integration


def test_the_metadata_matches_the_migrated_schema(migrated_database_url: str) -> None:
    engine = create_engine(migrated_database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": False}
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def _described(url: str) -> dict[str, Any]:
    """Every table's columns (defaults included), keys, indexes and constraints; the
    sequences; the migration version."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            seen = inspect(connection)
            tables = {
                name: (
                    [
                        {k: str(v) for k, v in column.items() if k != "comment"}
                        for column in seen.get_columns(name)
                    ],
                    seen.get_pk_constraint(name),
                    sorted(map(str, seen.get_indexes(name))),
                    sorted(map(str, seen.get_unique_constraints(name))),
                    sorted(map(str, seen.get_check_constraints(name))),
                    sorted(map(str, seen.get_foreign_keys(name))),
                )
                for name in seen.get_table_names()
            }
            version = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            return {
                "tables": tables,
                "sequences": sorted(seen.get_sequence_names()),
                "version": version.scalars().all(),
            }
    finally:
        engine.dispose()


def test_the_tests_schema_is_the_migrated_schema(
    database_url: str, migrated_database_url: str
) -> None:
    """Tests get their tables from the migrations' SQL, rendered once (Alembic's offline
    mode), not from running them each time: the two must not differ."""
    assert _described(database_url) == _described(migrated_database_url)

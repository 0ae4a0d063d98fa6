"""Alembic environment: a plain synchronous psycopg connection, target = our metadata."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from sms_relay.adapters.postgres.tables import metadata

url = context.config.get_main_option("sqlalchemy.url")
assert url is not None
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()

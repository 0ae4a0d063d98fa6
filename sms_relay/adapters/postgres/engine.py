"""The one engine factory, and the one place PostgreSQL's failures become our own error.

Every public function and method of `sms_relay.adapters.postgres` runs its statements
under `database_call` (or `database_errors`, or `transaction`), so what SQLAlchemy,
psycopg or the socket raise reaches its caller as `DatabaseUnavailableError`, with the
library's exception as its `__cause__`. An `IntegrityError` an adapter expects is handled
inside that adapter, before this mapping sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sms_relay.errors import (
    ConfigurationError,
    DatabaseStatementError,
    DatabaseUnavailableError,
)

__all__ = [
    "AsyncEngine",
    "answers",
    "create_engine",
    "database_call",
    "database_errors",
    "transaction",
]

P = ParamSpec("P")
R = TypeVar("R")

_DATABASE_FAILURES = (SQLAlchemyError, psycopg.Error, OSError, TimeoutError)
# "The database is away": refused or dropped connections, an exhausted pool, a deadline,
# a conflict PostgreSQL rolled back (psycopg's TransactionRollback is an OperationalError).
# Anything else PostgreSQL refused (a missing table, a bug) is no outage: a retry or a
# fallback would hide it.
_AWAY = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    TimeoutError,
)


def _mapped(error: BaseException) -> Exception:
    away = isinstance(error, _AWAY) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )
    kind = DatabaseUnavailableError if away else DatabaseStatementError
    return kind(describe(error))


def create_engine(
    database_url: str, *, pool_size: int = 5, max_overflow: int = 5, pre_ping: bool = True
) -> AsyncEngine:
    """The one place an engine is made: psycopg 3, async, pre-ping across DB restarts.

    Size the pool for the work in flight: an overflow connection is closed when it is
    returned, so a pool smaller than the usual concurrency opens a new connection (a
    PostgreSQL backend) for most checkouts. Raises ConfigurationError for a URL it cannot
    use.
    """
    try:
        return create_async_engine(
            database_url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_pre_ping=pre_ping,
            pool_recycle=300,
        )
    except ArgumentError:
        # Not the URL itself in the message: it holds the password.
        raise ConfigurationError(
            "DATABASE_URL is not a PostgreSQL URL (postgresql+psycopg://user:password@host/db)"
        ) from None


def describe(error: BaseException) -> str:
    """One line for an operator: what PostgreSQL said, and what to do when it is known."""
    origin = error.orig if isinstance(error, DBAPIError) and error.orig else error
    lines = str(origin).strip().splitlines()
    said = lines[0] if lines else type(origin).__name__
    if "does not exist" in said and "relation" in said:
        return f"database schema is missing ({said}); run `sms-relay migrate`"
    invalidated = isinstance(error, DBAPIError) and error.connection_invalidated
    if invalidated or isinstance(error, OSError) or "connection" in said.lower():
        return f"PostgreSQL is unreachable: {said}"
    if isinstance(error, TimeoutError):
        return "PostgreSQL did not answer in time"
    return f"database error: {said}"


@contextlib.asynccontextmanager
async def database_errors() -> AsyncIterator[None]:
    """Raises DatabaseUnavailableError when the database is away inside the block, and
    DatabaseStatementError when it refused a statement."""
    try:
        yield
    except _DATABASE_FAILURES as error:
        raise _mapped(error) from error


def database_call(function: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Decorates an adapter's public coroutine: it raises DatabaseUnavailableError, never a
    library exception."""

    @functools.wraps(function)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        async with database_errors():
            return await function(*args, **kwargs)

    return call


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction whose begin, commit and rollback raise DatabaseUnavailableError; what
    the block itself raises (a Kafka timeout, an OpsError) passes unchanged, after the
    rollback. Statements in the block are run by adapter functions, which map their own."""
    begun = engine.begin()
    async with database_errors():
        connection = await begun.__aenter__()
    try:
        yield connection
    except BaseException as error:
        async with database_errors():
            await begun.__aexit__(type(error), error, error.__traceback__)
        raise
    async with database_errors():
        await begun.__aexit__(None, None, None)


@database_call
async def answers(engine: AsyncEngine, timeout: float) -> bool:
    """Whether PostgreSQL runs a statement within `timeout` seconds (the readiness probe).
    Raises DatabaseUnavailableError when it does not."""
    async with asyncio.timeout(timeout), engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True

"""Running one table's prune statement: a batch in its own short transaction, or a count.

The statements stay in their tables' owner modules; this module holds none. Each batch
deletes by primary key the rows its subquery picked and locked (`FOR UPDATE SKIP
LOCKED`): a row another transaction holds (a claim, another pruner) is skipped, not
waited for, and the outer statement repeats the rule so a row changed meanwhile stays.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres.engine import database_call


@database_call
async def delete_batch(
    engine: AsyncEngine, statement: TextClause, cutoff: datetime, limit: int
) -> int:
    """Rows deleted by one batch. Raises DatabaseUnavailableError."""
    async with engine.begin() as connection:
        result = await connection.execute(statement, {"cutoff": cutoff, "limit": limit})
        return int(result.rowcount or 0)


@database_call
async def count_rows(engine: AsyncEngine, statement: TextClause, cutoff: datetime) -> int:
    """What a count statement says. Raises DatabaseUnavailableError."""
    async with engine.connect() as connection:
        return int((await connection.execute(statement, {"cutoff": cutoff})).scalar_one())

"""The `erasures` table, and `sms-relay forget`'s one transaction across every table.

Each table's rows are deleted by its owner module; this module writes only the audit
row: who erased, when, and how many rows of each table went, never the number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres import (
    deliveries,
    dlq_replays,
    ingestions,
    rate_windows,
    status_history,
    suppressions,
    verifications,
)
from sms_relay.adapters.postgres.engine import database_call, transaction
from sms_relay.retention.retention_ports import Removed

_AUDIT = text(
    "INSERT INTO erasures (operator, removed) VALUES (:operator, CAST(:removed AS jsonb))"
)


class PostgresErasures:
    """`sms_relay.retention.retention_ports.ErasureStore`; raises DatabaseUnavailableError."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @database_call
    async def erase(self, phone_hash: str, rate_keys: Sequence[str], operator: str) -> Removed:
        async with transaction(self._engine) as connection:
            gone = await deliveries.erase_number(connection, phone_hash)
            event_ids = [event_id for event_id, _sid in gone]
            sids = [sid for _event_id, sid in gone if sid]
            rows = {
                "deliveries": len(gone),
                "status_history": await status_history.forget_steps(connection, event_ids, sids),
                "ingestions": await ingestions.erase_events(connection, event_ids),
                "dlq_replays": await dlq_replays.erase_events(connection, event_ids),
                **await suppressions.erase_keywords(connection, phone_hash),
                "phone_verifications": await verifications.erase_number(connection, phone_hash),
                "rate_limits": await rate_windows.erase_keys(connection, rate_keys),
            }
            await connection.execute(_AUDIT, {"operator": operator, "removed": json.dumps(rows)})
        return Removed(rows, sids)

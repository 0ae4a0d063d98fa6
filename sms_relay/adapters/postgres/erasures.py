"""The `erasures` table, and `sms-relay forget`'s one transaction across every table.

Each table's rows are erased by its owner module; this module writes only the audit
row: who erased, when, how many rows of each table went and how many deliveries in
flight were kept, never the number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres import (
    alert_windows,
    deliveries,
    dlq_replays,
    ingestions,
    rate_windows,
    status_history,
    suppressions,
    verifications,
)
from sms_relay.adapters.postgres.deliveries import scheduled_writes
from sms_relay.adapters.postgres.engine import database_call, transaction
from sms_relay.domain.states import RESUMABLE, DeliveryState
from sms_relay.retention.pruning import PRUNABLE_STATES
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
            # Scheduled sends no claim holds end `canceled`; then settled rows become
            # tombstones (they still dedupe); rows in flight stay whole.
            scheduled = await scheduled_writes.erase_number(
                connection, phone_hash, sorted(RESUMABLE), DeliveryState.CANCELED.value
            )
            gone = await deliveries.erase_number(connection, phone_hash, sorted(PRUNABLE_STATES))
            event_ids, sids = gone.event_ids, gone.message_sids
            rows = {
                "deliveries": len(event_ids),
                "scheduled_sends": scheduled,
                "status_history": await status_history.forget_steps(connection, event_ids, sids),
                "ingestions": await ingestions.erase_events(connection, event_ids),
                "dlq_replays": await dlq_replays.erase_events(connection, event_ids),
                **await suppressions.erase_keywords(connection, phone_hash),
                "phone_verifications": await verifications.erase_number(connection, phone_hash),
                "rate_limits": await rate_windows.erase_keys(connection, rate_keys),
                "alert_windows": await alert_windows.erase_number(connection, phone_hash),
            }
            audit = {**rows, "deliveries_in_flight_kept": gone.in_flight}
            await connection.execute(_AUDIT, {"operator": operator, "removed": json.dumps(audit)})
        return Removed(rows, sids, gone.in_flight)

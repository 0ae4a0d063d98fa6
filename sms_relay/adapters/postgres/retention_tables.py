"""Each table's prunable rows (`sms_relay.retention.retention_ports.PrunableRows`).

The statements live in the tables' owner modules; this module only binds them. A
delivery's status history goes in the same transaction as the delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres import (
    alert_windows,
    api_key_rows,
    callback_outbox,
    deliveries,
    dlq_replay_runs,
    dlq_replays,
    ingestions,
    rate_windows,
    status_history,
    suppressions,
    verifications,
)
from sms_relay.adapters.postgres.batches import count_rows, delete_batch
from sms_relay.adapters.postgres.deliveries import scheduled_writes
from sms_relay.adapters.postgres.engine import database_call, transaction
from sms_relay.retention.retention_ports import PrunableRows


class _Statements:
    """A table pruned by one DELETE and counted by one SELECT."""

    def __init__(
        self, engine: AsyncEngine, table: str, prune: TextClause, count: TextClause
    ) -> None:
        self._engine, self._table = engine, table
        self._prune, self._count = prune, count

    async def prune(self, cutoff: datetime, limit: int) -> dict[str, int]:
        return {self._table: await delete_batch(self._engine, self._prune, cutoff, limit)}

    async def count(self, cutoff: datetime) -> dict[str, int]:
        return {self._table: await count_rows(self._engine, self._count, cutoff)}


class _SettledDeliveries:
    """Settled deliveries past the horizon, with their status history."""

    def __init__(self, engine: AsyncEngine, states: Sequence[str]) -> None:
        self._engine, self._states = engine, list(states)

    @database_call
    async def prune(self, cutoff: datetime, limit: int) -> dict[str, int]:
        async with transaction(self._engine) as connection:
            gone = await deliveries.prune_settled(connection, self._states, cutoff, limit)
            steps = await status_history.forget_steps(
                connection, [e for e, _ in gone], [s for _, s in gone if s]
            )
        return {"deliveries": len(gone), "status_history": steps}

    async def count(self, cutoff: datetime) -> dict[str, int]:
        return {"deliveries": await deliveries.count_settled(self._engine, self._states, cutoff)}


def prunable_tables(engine: AsyncEngine, settled_states: Sequence[str]) -> dict[str, PrunableRows]:
    """Every table with a retention rule, by name (suppressions and erasures have none)."""

    def rows(table: str, prune: TextClause, count: TextClause) -> PrunableRows:
        return _Statements(engine, table, prune, count)

    return {
        "deliveries": _SettledDeliveries(engine, settled_states),
        "status_history": rows(
            "status_history", status_history.PRUNE_ORPHANS, status_history.COUNT_ORPHANS
        ),
        "callback_outbox": rows(
            "callback_outbox", callback_outbox.PRUNE_PUBLISHED, callback_outbox.COUNT_PUBLISHED
        ),
        "inbound_keywords": rows(
            "inbound_keywords", suppressions.PRUNE_KEYWORDS, suppressions.COUNT_KEYWORDS
        ),
        "keyword_latest": rows(
            "keyword_latest", suppressions.PRUNE_LATEST, suppressions.COUNT_LATEST
        ),
        "ingestions": rows("ingestions", ingestions.PRUNE, ingestions.COUNT),
        "phone_verifications": rows(
            "phone_verifications", verifications.PRUNE, verifications.COUNT
        ),
        "rate_limits": rows("rate_limits", rate_windows.PRUNE_EXPIRED, rate_windows.COUNT_EXPIRED),
        "alert_windows": rows("alert_windows", alert_windows.PRUNE, alert_windows.COUNT),
        "dlq_replays": rows("dlq_replays", dlq_replays.PRUNE, dlq_replays.COUNT),
        "dlq_replay_runs": rows("dlq_replay_runs", dlq_replay_runs.PRUNE, dlq_replay_runs.COUNT),
        "api_keys": rows("api_keys", api_key_rows.PRUNE_REVOKED, api_key_rows.COUNT_REVOKED),
        "scheduled_sends": rows(
            "scheduled_sends", scheduled_writes.PRUNE_ORPHANS, scheduled_writes.COUNT_ORPHANS
        ),
        "appointment_cancellations": rows(
            "appointment_cancellations",
            scheduled_writes.PRUNE_CANCELS,
            scheduled_writes.COUNT_CANCELS,
        ),
    }

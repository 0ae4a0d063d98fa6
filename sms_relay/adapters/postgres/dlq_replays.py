"""The `dlq_replays` table: the audit of `sms-relay dlq replay`, one row per record sent back."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres import deliveries, dlq_replay_runs
from sms_relay.adapters.postgres.engine import database_call, transaction

_INSERT = text(
    "INSERT INTO dlq_replays (event_id, dlq_topic, dlq_partition, dlq_offset, reason, operator, "
    "run_id) VALUES (:event_id, :dlq_topic, :dlq_partition, :dlq_offset, :reason, :operator, "
    ":run_id)"
)
# Two arrays, whatever the page's size: a bounded statement (ix_dlq_replays_record).
_COUNTS = text(
    "SELECT r.dlq_partition, r.dlq_offset, count(*) FROM dlq_replays r "
    "JOIN unnest(CAST(:partitions AS integer[]), CAST(:offsets AS bigint[])) AS p(part, off) "
    "ON r.dlq_partition = p.part AND r.dlq_offset = p.off "
    "WHERE r.dlq_topic = :topic GROUP BY r.dlq_partition, r.dlq_offset"
)
_OF = text("SELECT * FROM dlq_replays WHERE event_id = :event_id ORDER BY replayed_at, id")


@dataclass(frozen=True)
class Replay:
    event_id: str | None
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    reason: str | None
    operator: str
    run_id: int | None = None


@dataclass(frozen=True)
class RunStep:
    """How far a run got once this transaction commits (see `dlq_replay_runs`)."""

    run_id: int
    positions: Mapping[int, int]
    matched: int


@database_call
async def replay(
    engine: AsyncEngine,
    replays: Sequence[Replay],
    before_commit: Callable[[], None],
    step: RunStep | None = None,
) -> int:
    """In one transaction: reopen the dead-lettered deliveries among `replays`, write their
    audit rows, move the run to `step`, run `before_commit` (the produce; what it raises
    rolls all back), commit. Returns how many deliveries were reopened."""
    event_ids = sorted({r.event_id for r in replays if r.event_id})
    async with transaction(engine) as connection:
        reopened = await deliveries.reopen_dead_lettered(connection, event_ids)
        if replays:
            await connection.execute(_INSERT, [vars(r) for r in replays])
        if step is not None:
            await dlq_replay_runs.advance_in(
                connection, step.run_id, step.positions, step.matched, len(replays)
            )
        before_commit()
    return len(reopened)


@database_call
async def replay_counts(
    engine: AsyncEngine, topic: str, records: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], int]:
    """How often each of `records` ((partition, offset) on `topic`) was replayed."""
    params = {
        "topic": topic,
        "partitions": [partition for partition, _ in records],
        "offsets": [offset for _, offset in records],
    }
    async with engine.connect() as connection:
        rows = await connection.execute(_COUNTS, params)
        return {(row[0], row[1]): int(row[2]) for row in rows}


@database_call
async def replays_of(engine: AsyncEngine, event_id: str | None) -> list[Any]:
    """Every replay of one event, oldest first (`trace`)."""
    async with engine.connect() as connection:
        return list((await connection.execute(_OF, {"event_id": event_id})).mappings().all())


PRUNE = text(
    "DELETE FROM dlq_replays WHERE id IN (SELECT id FROM dlq_replays "
    "WHERE replayed_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT = text("SELECT count(*) FROM dlq_replays WHERE replayed_at < :cutoff")
_ERASE = text("DELETE FROM dlq_replays WHERE event_id = ANY(:ids)")


@database_call
async def erase_events(connection: AsyncConnection, event_ids: Sequence[str]) -> int:
    """Delete the replay audit of these events (those of an erased number)."""
    if not event_ids:
        return 0
    return int((await connection.execute(_ERASE, {"ids": sorted(event_ids)})).rowcount or 0)

"""The `dlq_replay_runs` table: each `dlq replay` run, its end offsets and how far it got."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres.engine import database_call

_START = text(
    "INSERT INTO dlq_replay_runs (dlq_topic, target_topic, operator, options, end_offsets, "
    "positions) VALUES (:dlq_topic, :target_topic, :operator, CAST(:options AS jsonb), "
    "CAST(:end_offsets AS jsonb), CAST(:positions AS jsonb)) RETURNING id"
)
_LOAD = text("SELECT * FROM dlq_replay_runs WHERE id = :id")
_ADVANCE = text(
    "UPDATE dlq_replay_runs SET positions = CAST(:positions AS jsonb), matched = :matched, "
    "replayed = replayed + :replayed, updated_at = now() WHERE id = :id"
)
_REOPEN = text(
    "UPDATE dlq_replay_runs SET operator = :operator, outcome = 'running', updated_at = now() "
    "WHERE id = :id AND finished_at IS NULL RETURNING id"
)
_FINISH = text(
    "UPDATE dlq_replay_runs SET outcome = :outcome, updated_at = now(), "
    "finished_at = CASE WHEN :outcome = 'finished' THEN now() END WHERE id = :id"
)

Offsets = dict[int, int]


@dataclass(frozen=True)
class Run:
    id: int
    dlq_topic: str
    target_topic: str
    operator: str
    options: dict[str, Any]
    end_offsets: Offsets
    positions: Offsets
    matched: int
    replayed: int
    outcome: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _dump(offsets: Mapping[int, int]) -> str:
    return json.dumps({str(partition): offset for partition, offset in offsets.items()})


def _offsets(stored: Mapping[str, int]) -> Offsets:
    return {int(partition): int(offset) for partition, offset in stored.items()}


@database_call
async def start(
    engine: AsyncEngine,
    dlq_topic: str,
    target_topic: str,
    operator: str,
    options: Mapping[str, Any],
    end_offsets: Mapping[int, int],
    positions: Mapping[int, int],
) -> int:
    """A new run, `running`; returns its id."""
    params = {
        "dlq_topic": dlq_topic,
        "target_topic": target_topic,
        "operator": operator,
        "options": json.dumps(options),
        "end_offsets": _dump(end_offsets),
        "positions": _dump(positions),
    }
    async with engine.begin() as connection:
        return int((await connection.execute(_START, params)).scalar_one())


@database_call
async def load(engine: AsyncEngine, run_id: int) -> Run | None:
    async with engine.connect() as connection:
        row = (await connection.execute(_LOAD, {"id": run_id})).mappings().first()
    if row is None:
        return None
    values = dict(row)
    values["end_offsets"] = _offsets(values["end_offsets"])
    values["positions"] = _offsets(values["positions"])
    return Run(**values)


@database_call
async def reopen(engine: AsyncEngine, run_id: int, operator: str) -> bool:
    """Mark an unfinished run running again (by `operator`); False when it is finished."""
    async with engine.begin() as connection:
        return (
            await connection.execute(_REOPEN, {"id": run_id, "operator": operator})
        ).first() is not None


@database_call
async def advance_in(
    connection: AsyncConnection,
    run_id: int,
    positions: Mapping[int, int],
    matched: int,
    replayed: int,
) -> None:
    """Inside the caller's transaction: the run got to `positions` (per partition, the
    next offset to read), having matched `matched` records so far and replayed `replayed`
    more."""
    params = {"id": run_id, "positions": _dump(positions), "matched": matched}
    await connection.execute(_ADVANCE, {**params, "replayed": replayed})


@database_call
async def advance(
    engine: AsyncEngine, run_id: int, positions: Mapping[int, int], matched: int
) -> None:
    """The run read on to `positions` without replaying anything there."""
    async with engine.begin() as connection:
        await advance_in(connection, run_id, positions, matched, 0)


@database_call
async def finish(engine: AsyncEngine, run_id: int, outcome: str) -> None:
    """`finished` (nothing left to resume), `interrupted` or `failed` (resumable)."""
    async with engine.begin() as connection:
        await connection.execute(_FINISH, {"id": run_id, "outcome": outcome})


# A run is kept as long as the audit rows it wrote; one not moved for that long is gone too.
PRUNE = text(
    "DELETE FROM dlq_replay_runs WHERE id IN (SELECT id FROM dlq_replay_runs "
    "WHERE updated_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT = text("SELECT count(*) FROM dlq_replay_runs WHERE updated_at < :cutoff")

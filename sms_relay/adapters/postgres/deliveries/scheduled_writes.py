"""The scheduled sends and the cancels: `scheduled_sends` and `appointment_cancellations`.

A scheduled send holds what the scheduler needs to send the event when due (its JSON, with
the number); it is deleted in the transaction that marks the event's final step (sent,
failed, suppressed, expired, cancelled or dead-lettered) reported, so a consumer that dies
between that settle and its status record leaves it for the scheduler to take again and
publish the record; by erasure; or pruned as an orphan. A
cancel is remembered for SMS_LEDGER_RETENTION_DAYS, so a reminder read later still ends
`canceled` (docs/scheduling.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sms_relay.delivery.delivery_ports import ScheduledSend, Settlement

STORE = text(
    """
INSERT INTO scheduled_sends AS s (event_id, kind, payload, phone_hash, cancel_key, due_at)
SELECT * FROM unnest(
    CAST(:ids AS text[]), CAST(:kinds AS text[]), CAST(:payloads AS text[]),
    CAST(:hashes AS text[]), CAST(:keys AS text[]), CAST(:dues AS timestamptz[]))
ON CONFLICT (event_id) DO UPDATE SET payload = excluded.payload, due_at = excluded.due_at,
    taken_until = now()
"""
)
# In mark_reported's transaction: the final step is on Kafka, nothing is left to redo.
REPORTED = text(
    """
DELETE FROM scheduled_sends s
USING deliveries d, unnest(CAST(:ids AS text[]), CAST(:states AS text[])) AS v(event_id, state)
WHERE s.event_id = v.event_id AND d.event_id = v.event_id AND d.settled_state = v.state
    AND d.reported AND d.settled_state <> ALL(CAST(:resumable AS text[]))
"""
)

# Another process skips what one has taken: each due send is offered to one claimer at a
# time (the claim's lease still decides who sends, and fences it).
TAKE_DUE = text(
    """
UPDATE scheduled_sends s SET taken_until = clock_timestamp() + make_interval(secs => :lease)
FROM (
    SELECT event_id FROM scheduled_sends
    WHERE due_at <= clock_timestamp() AND taken_until <= clock_timestamp()
    ORDER BY due_at LIMIT :limit FOR UPDATE SKIP LOCKED
) due
WHERE s.event_id = due.event_id
RETURNING s.event_id, s.kind, s.payload, s.due_at, s.phone_hash, s.cancel_key
"""
)
PUT_BACK = text(
    """
UPDATE scheduled_sends s SET taken_until = v.at
FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS v(event_id, at)
WHERE s.event_id = v.event_id
"""
)
# Remembered first; the scheduled sends it names are due at once, so their claims settle
# them `canceled` now rather than at their due time.
CANCEL = text(
    """
WITH input AS (
    SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:ids AS text[])) AS t(cancel_key, event_id)
),
remembered AS (
    INSERT INTO appointment_cancellations (cancel_key, event_id)
    SELECT DISTINCT ON (cancel_key) cancel_key, event_id FROM input
    ON CONFLICT (cancel_key) DO NOTHING
)
UPDATE scheduled_sends s SET due_at = LEAST(s.due_at, clock_timestamp()),
    taken_until = LEAST(s.taken_until, clock_timestamp())
WHERE s.cancel_key IN (SELECT cancel_key FROM input)
RETURNING s.event_id
"""
)
# Erasure: a number's scheduled sends no claim holds end `canceled` (reason `erased`) and
# go; the rows become tombstones with the number's other settled rows.
ERASE = text(
    """
WITH gone AS (
    DELETE FROM scheduled_sends s USING deliveries d
    WHERE s.phone_hash = :h AND d.event_id = s.event_id
        AND (d.lease_until IS NULL OR d.lease_until <= clock_timestamp())
    RETURNING s.event_id
)
UPDATE deliveries d SET state = :canceled, settled_state = :canceled, reported = true,
    last_error = 'erased', updated_at = now()
FROM gone WHERE d.event_id = gone.event_id AND d.state = ANY(CAST(:resumable AS text[]))
RETURNING d.event_id
"""
)
# Orphans only: a send is deleted when its event settles, so one due that long ago is lost.
PRUNE_ORPHANS = text(
    """
DELETE FROM scheduled_sends WHERE event_id IN (
    SELECT event_id FROM scheduled_sends WHERE due_at < :cutoff
    LIMIT :limit FOR UPDATE SKIP LOCKED)
"""
)
COUNT_ORPHANS = text("SELECT count(*) FROM scheduled_sends WHERE due_at < :cutoff")
PRUNE_CANCELS = text(
    """
DELETE FROM appointment_cancellations WHERE cancel_key IN (
    SELECT cancel_key FROM appointment_cancellations WHERE created_at < :cutoff
    LIMIT :limit FOR UPDATE SKIP LOCKED)
"""
)
COUNT_CANCELS = text("SELECT count(*) FROM appointment_cancellations WHERE created_at < :cutoff")


async def after_settle(
    connection: AsyncConnection, settlements: Sequence[Settlement], written: Collection[str]
) -> None:
    """In the settle's transaction: store the newly scheduled (the finished go once
    reported: `after_reported`)."""
    stored = [s.scheduled for s in settlements if s.event_id in written and s.scheduled]
    if stored:
        await connection.execute(STORE, _rows(stored))


async def after_reported(
    connection: AsyncConnection, params: Mapping[str, object], resumable: Sequence[str]
) -> None:
    """In mark_reported's transaction: forget the scheduled sends of the finished."""
    await connection.execute(REPORTED, {**params, "resumable": list(resumable)})


def _rows(sends: Sequence[ScheduledSend]) -> dict[str, list[object]]:
    return {
        "ids": [s.event_id for s in sends],
        "kinds": [s.kind for s in sends],
        "payloads": [s.payload for s in sends],
        "hashes": [s.phone_hash for s in sends],
        "keys": [s.cancel_key for s in sends],
        "dues": [s.due_at for s in sends],
    }


def scheduled_send(row: object) -> ScheduledSend:
    values = row._mapping  # type: ignore[attr-defined]
    return ScheduledSend(
        event_id=values["event_id"],
        kind=values["kind"],
        payload=values["payload"],
        due_at=values["due_at"],
        phone_hash=values["phone_hash"],
        cancel_key=values["cancel_key"],
    )


async def erase_number(
    connection: AsyncConnection, phone_hash: str, resumable: Sequence[str], canceled: str
) -> int:
    """End a number's scheduled sends that no claim holds; how many."""
    params = {"h": phone_hash, "resumable": list(resumable), "canceled": canceled}
    return len((await connection.execute(ERASE, params)).all())

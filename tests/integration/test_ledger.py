"""The ledger on real PostgreSQL: claims, leases and fencing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres import create_engine
from sms_relay.ledger import Claim, ClaimOutcome, ClaimRequest, PostgresLedger, Settlement
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def request(event_id: str) -> ClaimRequest:
    return ClaimRequest(event_id, "order-shipped", "hash", "+*******0123", datetime.now(UTC), None)


async def test_a_second_claimer_waits_for_the_lease_then_finds_the_send_in_doubt(
    engine: AsyncEngine,
) -> None:
    first = PostgresLedger(engine, "first", lease_seconds=0.5)
    second = PostgresLedger(engine, "second", lease_seconds=30)

    claim = (await first.claim([request("evt_000001")]))["evt_000001"]
    assert claim.outcome is ClaimOutcome.NEW
    assert await first.mark_sending([("evt_000001", claim.lease_token or 0, "bodyhash")])
    busy = (await second.claim([request("evt_000001")]))["evt_000001"]
    assert busy.outcome is ClaimOutcome.BUSY

    # The first holder stalls past its lease; the second then takes the claim over.
    claims: list[Claim] = []

    async def taken_over() -> bool:
        claims.append((await second.claim([request("evt_000001")]))["evt_000001"])
        return claims[-1].outcome is not ClaimOutcome.BUSY

    await eventually(taken_over, timeout=5, what="the lease to run out")
    taken = claims[-1]
    assert taken.outcome is ClaimOutcome.IN_DOUBT
    assert taken.sending_started_at is not None

    late = Settlement("evt_000001", claim.lease_token or 0, "accepted", 1, message_sid="SM1")
    assert await first.settle([late]) == set(), "a fenced writer must not write"
    mine = Settlement("evt_000001", taken.lease_token or 0, "accepted", 1, message_sid="SM2")
    assert await second.settle([mine]) == {"evt_000001"}

    again = (await first.claim([request("evt_000001")]))["evt_000001"]
    assert again.outcome is ClaimOutcome.DUPLICATE
    assert again.message_sid == "SM2"


async def test_concurrent_claims_of_one_event_admit_exactly_one(engine: AsyncEngine) -> None:
    ledgers = [PostgresLedger(engine, f"owner{i}", lease_seconds=30) for i in range(8)]
    claims = await asyncio.gather(*(ledger.claim([request("evt_race01")]) for ledger in ledgers))
    outcomes = [c["evt_race01"].outcome for c in claims]
    assert outcomes.count(ClaimOutcome.NEW) == 1
    assert set(outcomes) == {ClaimOutcome.NEW, ClaimOutcome.BUSY}


async def test_a_scheduled_retry_can_be_claimed_at_once(engine: AsyncEngine) -> None:
    ledger = PostgresLedger(engine, "owner", lease_seconds=30)
    claim = (await ledger.claim([request("evt_retry1")]))["evt_retry1"]
    token = claim.lease_token or 0
    await ledger.mark_sending([("evt_retry1", token, "h")])
    await ledger.settle([Settlement("evt_retry1", token, "retry_scheduled", 3)])
    resumed = (await ledger.claim([request("evt_retry1")]))["evt_retry1"]
    assert resumed.outcome is ClaimOutcome.RESUMED
    assert resumed.attempts == 3


async def test_the_same_owner_reclaims_its_claim_after_a_rewound_batch(
    engine: AsyncEngine,
) -> None:
    ledger = PostgresLedger(engine, "owner", lease_seconds=30)
    claim = (await ledger.claim([request("evt_rewind")]))["evt_rewind"]
    await ledger.mark_sending([("evt_rewind", claim.lease_token or 0, "h")])
    # The batch failed before settling (database gone); the same process tries again.
    again = (await ledger.claim([request("evt_rewind")]))["evt_rewind"]
    assert again.outcome is ClaimOutcome.IN_DOUBT
    assert (again.lease_token or 0) > (claim.lease_token or 0)

"""The ledger's scheduled sends and cancels, one contract for PostgreSQL and memory:
`take_due`, `put_back`, `cancel`, `Claim.canceled`, and when a scheduled send goes.

As tests/contract/test_ledger_contract.py: every test runs against both ledgers, so the
deterministic simulation's scheduler meets the ledger PostgreSQL is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from sms_relay.adapters.memory.memory_ledger import InMemoryLedger, MemoryDatabase
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.delivery.delivery_ports import ClaimRequest, Ledger, ScheduledSend, Settlement
from sms_relay.domain.states import DeliveryState
from tests.contract.test_ledger_contract import lease_end, past

S = DeliveryState
MakeLedger = Callable[[str, float], Ledger]
KIND = "appointment-reminder"


@pytest.fixture(params=["postgres", "memory"])
async def make_ledger(request: pytest.FixtureRequest) -> AsyncIterator[MakeLedger]:
    if request.param == "memory":
        database = MemoryDatabase(clock=lambda: datetime.now(UTC))
        yield lambda owner, lease: InMemoryLedger(database, owner, lease)
        return
    engine = create_engine(request.getfixturevalue("database_url"))
    yield lambda owner, lease: PostgresLedger(engine, owner, lease)
    await engine.dispose()


def ask(event_id: str, cancel_key: str | None = None) -> ClaimRequest:
    return ClaimRequest(event_id, KIND, "hash", "+*******0123", None, None, cancel_key=cancel_key)


def waiting(event_id: str, due_in: float, cancel_key: str | None = None) -> ScheduledSend:
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=due_in)
    payload = f'{{"eventId": "{event_id}"}}'
    return ScheduledSend(event_id, KIND, payload, due, "hash", cancel_key)


async def schedule(ledger: Ledger, *sends: ScheduledSend) -> None:
    """Claim each event and settle it `scheduled` with its send."""
    claims = await ledger.claim([ask(s.event_id, s.cancel_key) for s in sends])
    settled = await ledger.settle(
        [
            Settlement(s.event_id, claims[s.event_id].held_token(), S.SCHEDULED, 0, scheduled=s)
            for s in sends
        ]
    )
    assert settled.written == {s.event_id for s in sends}


async def test_a_due_send_is_taken_by_one_scheduler_and_a_future_one_by_none(
    make_ledger: MakeLedger,
) -> None:
    first, second = make_ledger("first", 30), make_ledger("second", 30)
    due, later = waiting("evt_sch_due", -1, "appt-1"), waiting("evt_sch_later", 3600)
    await schedule(first, due, later)
    assert await first.take_due(10) == [due], "every field as stored; the future one waits"
    assert await second.take_due(10) == [], "taken for one lease: the others skip it"
    assert await first.take_due(10) == [], "the taker too"


async def test_due_sends_come_earliest_first_up_to_the_limit(make_ledger: MakeLedger) -> None:
    ledger = make_ledger("owner", 30)
    sends = [waiting(f"evt_sch_order_{n}", due_in) for n, due_in in enumerate((-5, -60, -30))]
    await schedule(ledger, *sends)
    taken = await ledger.take_due(2)
    assert [s.event_id for s in taken] == ["evt_sch_order_1", "evt_sch_order_2"]
    assert [s.event_id for s in await ledger.take_due(2)] == ["evt_sch_order_0"]


async def test_a_taken_send_is_offered_again_once_its_lease_has_run_out(
    make_ledger: MakeLedger,
) -> None:
    dying, heir = make_ledger("dying", 0.3), make_ledger("heir", 30)
    send = waiting("evt_sch_lease", -1)
    await schedule(heir, send)
    assert await dying.take_due(10) == [send]
    await past(lease_end(0.3))
    assert await heir.take_due(10) == [send]


async def test_a_send_put_back_waits_until_then_and_unknown_ids_are_ignored(
    make_ledger: MakeLedger,
) -> None:
    ledger, other = make_ledger("owner", 30), make_ledger("other", 30)
    send = waiting("evt_sch_back", -1)
    await schedule(ledger, send)
    assert await ledger.take_due(10) == [send]
    until = datetime.now(UTC) + timedelta(seconds=0.3)
    await ledger.put_back({"evt_sch_back": until, "evt_sch_unknown": until})
    assert await other.take_due(10) == [], "put back until later"
    await past(until)
    assert await other.take_due(10) == [send]
    await other.put_back({"evt_sch_back": datetime.now(UTC) - timedelta(seconds=1)})
    assert await ledger.take_due(10) == [send], "put back to the past: due at once"


async def test_scheduling_again_replaces_the_send_and_frees_it(make_ledger: MakeLedger) -> None:
    ledger = make_ledger("owner", 30)
    await schedule(ledger, waiting("evt_sch_again", -10))
    assert len(await ledger.take_due(10)) == 1
    # Claimed again (held by no one) and still not due: the new due time is stored.
    claim = (await ledger.claim([ask("evt_sch_again")]))["evt_sch_again"]
    again = waiting("evt_sch_again", -1)
    await ledger.settle(
        [Settlement("evt_sch_again", claim.held_token(), S.SCHEDULED, 0, scheduled=again)]
    )
    assert await ledger.take_due(10) == [again], "the new due time, taken again at once"


async def test_a_cancel_is_remembered_and_makes_its_sends_due_at_once(
    make_ledger: MakeLedger,
) -> None:
    ledger, other = make_ledger("owner", 30), make_ledger("other", 30)
    mine = [waiting("evt_sch_c1", 3600, "appt-c"), waiting("evt_sch_c2", -1, "appt-c")]
    theirs = waiting("evt_sch_c3", 3600, "appt-d")
    await schedule(ledger, *mine, theirs)
    assert (await ledger.take_due(10))[0].event_id == "evt_sch_c2"  # taken: cancel frees it
    before = await other.claim([ask("evt_sch_c4", "appt-c")])
    assert before["evt_sch_c4"].canceled is False

    assert await other.cancel([("appt-c", "cancel_1"), ("appt-c", "cancel_1")]) == 2
    taken = await other.take_due(10)
    assert sorted(s.event_id for s in taken) == ["evt_sch_c1", "evt_sch_c2"]
    assert all(s.due_at <= datetime.now(UTC) for s in taken)
    assert await other.cancel([("appt-c", "cancel_2")]) == 2, "idempotent: found again"
    assert await other.cancel([("appt-none", "cancel_3")]) == 0, "remembered without sends"

    claims = await ledger.claim(
        [ask("evt_sch_c5", "appt-c"), ask("evt_sch_c6", "appt-none"), ask("evt_sch_c7", None)]
    )
    assert claims["evt_sch_c5"].canceled is True, "a reminder read after its cancel"
    assert claims["evt_sch_c6"].canceled is True
    assert claims["evt_sch_c7"].canceled is False
    assert (await ledger.claim([ask("evt_sch_c8", "appt-d")]))["evt_sch_c8"].canceled is False
    assert await other.cancel([]) == 0


async def test_a_finished_send_stays_until_its_final_step_is_reported(
    make_ledger: MakeLedger,
) -> None:
    """A consumer that dies between the settle and the status record leaves the send, so
    a scheduler takes it again, finds the step unreported and publishes it."""
    ledger, heir = make_ledger("owner", 0.3), make_ledger("heir", 30)
    send = waiting("evt_sch_done", -1)
    await schedule(heir, send)
    await heir.mark_reported([("evt_sch_done", S.SCHEDULED)])
    assert await ledger.take_due(10) == [send], "reporting `scheduled` keeps it"
    token = (await ledger.claim([ask("evt_sch_done")]))["evt_sch_done"].held_token()
    await ledger.mark_sending([("evt_sch_done", token, "h")])
    sent = Settlement("evt_sch_done", token, S.ACCEPTED, 1, message_sid="SMsch")
    assert (await ledger.settle([sent])).written == {"evt_sch_done"}
    await past(lease_end(0.3))
    assert await heir.take_due(10) == [send], "settled, not yet reported: taken again"
    claim = (await heir.claim([ask("evt_sch_done")]))["evt_sch_done"]
    assert (claim.settled_state, claim.reported) == (S.ACCEPTED, False)
    await heir.put_back({"evt_sch_done": datetime.now(UTC)})
    await heir.mark_reported([("evt_sch_done", S.FAILED)])  # not its step: kept
    assert await heir.take_due(10) == [send]
    await heir.put_back({"evt_sch_done": datetime.now(UTC)})
    await heir.mark_reported([("evt_sch_done", S.ACCEPTED)])
    assert await heir.take_due(10) == [], "reported: gone"

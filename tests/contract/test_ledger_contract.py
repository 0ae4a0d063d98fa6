"""One contract, two ledgers: PostgreSQL (the product) and memory (the simulation's).

Every test here runs against both, so the deterministic simulation's fake cannot drift
from what PostgreSQL does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sms_relay.adapters.memory.memory_ledger import InMemoryLedger, MemoryDatabase
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.delivery.delivery_ports import ClaimRequest, Ledger, Settlement
from sms_relay.domain.collapse import HOURLY_CAP, REPEAT, CollapseRule
from sms_relay.domain.outcomes import ClaimOutcome
from sms_relay.domain.states import DeliveryState
from tests.support import eventually

S = DeliveryState
MakeLedger = Callable[[str, float], Ledger]


@pytest.fixture(params=["postgres", "memory"])
async def make_ledger(request: pytest.FixtureRequest) -> AsyncIterator[MakeLedger]:
    if request.param == "memory":
        database = MemoryDatabase(clock=lambda: datetime.now(UTC))
        yield lambda owner, lease: InMemoryLedger(database, owner, lease)
        return
    engine = create_engine(request.getfixturevalue("database_url"))
    yield lambda owner, lease: PostgresLedger(engine, owner, lease)
    await engine.dispose()


def ask(event_id: str, phone_hash: str = "hash") -> ClaimRequest:
    return ClaimRequest(event_id, "order-shipped", phone_hash, "+*******0123", None, None)


def lease_end(lease_seconds: float) -> datetime:
    """The latest a lease granted or renewed before this call can end (the database and
    the test read the same clock)."""
    return datetime.now(UTC) + timedelta(seconds=lease_seconds)


async def past(moment: datetime) -> None:
    """Until the wall clock is past `moment`: a lease has run out."""
    await eventually(lambda: datetime.now(UTC) > moment, interval=0.02, what=f"past {moment}")


async def claim_one(ledger: Ledger, event_id: str, phone_hash: str = "hash") -> tuple[int, object]:
    claim = (await ledger.claim([ask(event_id, phone_hash)]))[event_id]
    return claim.lease_token or 0, claim


async def test_a_new_event_is_claimed_once_and_a_second_claimer_is_told_how_long_to_wait(
    make_ledger: MakeLedger,
) -> None:
    first, second = make_ledger("first", 30), make_ledger("second", 30)
    claim = (await first.claim([ask("evt_000001")]))["evt_000001"]
    assert claim.outcome is ClaimOutcome.NEW
    assert claim.lease_token is not None
    busy = (await second.claim([ask("evt_000001")]))["evt_000001"]
    assert busy.outcome is ClaimOutcome.BUSY
    assert busy.lease_token is None
    assert 25 < busy.busy_for <= 30


async def test_a_send_left_behind_is_taken_over_in_doubt_from_the_end_of_its_lease(
    make_ledger: MakeLedger,
) -> None:
    dead, heir = make_ledger("dead", 0.3), make_ledger("heir", 30)
    earliest = lease_end(0.3)  # the lease runs from the claim (or the mark) on
    token = (await dead.claim([ask("evt_000002")]))["evt_000002"].lease_token or 0
    started = await dead.mark_sending([("evt_000002", token, "body-1")])
    assert set(started) == {"evt_000002"}
    latest = lease_end(0.3)
    await past(latest)

    taken = (await heir.claim([ask("evt_000002")]))["evt_000002"]
    assert taken.outcome is ClaimOutcome.IN_DOUBT
    assert taken.prior_state is S.SENDING
    assert taken.window_start == started["evt_000002"]
    assert taken.sent_body_hashes == ("body-1",)
    assert taken.doubt_since is not None
    slack = timedelta(seconds=0.05)  # the clock's resolution in each store
    assert earliest - slack <= taken.doubt_since <= latest + slack, "from the lease's end"

    late = Settlement("evt_000002", token, S.ACCEPTED, 1, message_sid="SM1")
    assert (await dead.settle([late])).written == frozenset(), "a fenced writer must not write"
    mine = Settlement("evt_000002", taken.lease_token or 0, S.ACCEPTED, 1, message_sid="SM2")
    assert (await heir.settle([mine])).written == {"evt_000002"}
    again = (await dead.claim([ask("evt_000002")]))["evt_000002"]
    assert again.outcome is ClaimOutcome.DUPLICATE
    assert again.message_sid == "SM2"
    assert again.settled_state is S.ACCEPTED
    assert again.reported is False


async def test_a_takeover_counts_the_doubt_from_the_lease_end_even_after_an_older_doubt(
    make_ledger: MakeLedger,
) -> None:
    # The holder was in doubt once, then (past the horizon) sending again when it died:
    # that resend may land late, so the heir's doubt must start at the lease's end.
    holder, heir = make_ledger("holder", 30), make_ledger("heir", 0.3)
    token = (await holder.claim([ask("evt_doubt2")]))["evt_doubt2"].lease_token or 0
    await holder.mark_sending([("evt_doubt2", token, "h")])
    old = datetime.now(UTC) - timedelta(minutes=5)
    await holder.settle([Settlement("evt_doubt2", token, S.RETRY_SCHEDULED, 1, doubt_since=old)])
    dying = make_ledger("dying", 0.3)
    token = (await dying.claim([ask("evt_doubt2")]))["evt_doubt2"].lease_token or 0
    assert await dying.mark_sending([("evt_doubt2", token, "h")])
    await past(lease_end(0.3))
    taken = (await heir.claim([ask("evt_doubt2")]))["evt_doubt2"]
    assert taken.outcome is ClaimOutcome.IN_DOUBT
    assert taken.doubt_since is not None
    assert taken.doubt_since > old + timedelta(minutes=4)


async def test_a_takeover_that_dies_before_it_sends_again_leaves_the_doubt_where_it_was(
    make_ledger: MakeLedger,
) -> None:
    # The heir only reconciled (it never marked the row `sending`, so it never called
    # create) when it died: its lease's end is no new doubt.
    dead, heir, last = make_ledger("dead", 0.3), make_ledger("heir", 0.3), make_ledger("last", 30)
    token = (await dead.claim([ask("evt_doubt3")]))["evt_doubt3"].lease_token or 0
    await dead.mark_sending([("evt_doubt3", token, "h")])
    await past(lease_end(0.3))
    taken = (await heir.claim([ask("evt_doubt3")]))["evt_doubt3"]
    assert taken.outcome is ClaimOutcome.IN_DOUBT
    assert taken.prior_state is S.SENDING
    await past(lease_end(0.3))

    again = (await last.claim([ask("evt_doubt3")]))["evt_doubt3"]
    assert again.outcome is ClaimOutcome.IN_DOUBT
    assert again.prior_state is S.RETRY_SCHEDULED, "the takeover recorded the doubt"
    assert again.doubt_since == taken.doubt_since
    # Reconciliation found the message: settled from there, no `sending` in between.
    found = Settlement("evt_doubt3", again.lease_token or 0, S.ACCEPTED, 1, message_sid="SM3")
    assert (await last.settle([found])).written == {"evt_doubt3"}


async def test_concurrent_claims_of_one_event_admit_exactly_one(make_ledger: MakeLedger) -> None:
    ledgers = [make_ledger(f"owner{i}", 30) for i in range(8)]
    claims = await asyncio.gather(*(ledger.claim([ask("evt_race01")]) for ledger in ledgers))
    outcomes = [c["evt_race01"].outcome for c in claims]
    assert outcomes.count(ClaimOutcome.NEW) == 1
    assert set(outcomes) == {ClaimOutcome.NEW, ClaimOutcome.BUSY}


async def test_a_scheduled_retry_hands_the_event_on_at_once(make_ledger: MakeLedger) -> None:
    ledger, other = make_ledger("owner", 30), make_ledger("other", 30)
    token = (await ledger.claim([ask("evt_retry1")]))["evt_retry1"].lease_token or 0
    await ledger.mark_sending([("evt_retry1", token, "h")])
    await ledger.settle([Settlement("evt_retry1", token, S.RETRY_SCHEDULED, 3)])
    resumed = (await other.claim([ask("evt_retry1")]))["evt_retry1"]
    assert resumed.outcome is ClaimOutcome.RESUMED
    assert resumed.attempts == 3


async def test_a_doubt_survives_a_scheduled_retry_and_every_later_claim_sees_it(
    make_ledger: MakeLedger,
) -> None:
    ledger, other = make_ledger("owner", 30), make_ledger("other", 30)
    token = (await ledger.claim([ask("evt_doubt1")]))["evt_doubt1"].lease_token or 0
    await ledger.mark_sending([("evt_doubt1", token, "h")])
    doubt = datetime.now(UTC).replace(microsecond=0)
    scheduled = Settlement("evt_doubt1", token, S.RETRY_SCHEDULED, 1, doubt_since=doubt)
    await ledger.settle([scheduled])
    again = (await other.claim([ask("evt_doubt1")]))["evt_doubt1"]
    assert again.outcome is ClaimOutcome.IN_DOUBT
    assert again.doubt_since == doubt
    # Resolved: later claims no longer reconcile.
    token = again.lease_token or 0
    await other.mark_sending([("evt_doubt1", token, "h")])
    await other.settle([Settlement("evt_doubt1", token, S.RETRY_SCHEDULED, 1)])
    resolved = (await ledger.claim([ask("evt_doubt1")]))["evt_doubt1"]
    assert resolved.outcome is ClaimOutcome.RESUMED
    assert resolved.doubt_since is None


async def test_the_same_owner_reclaims_its_claim_after_a_rewound_batch(
    make_ledger: MakeLedger,
) -> None:
    ledger = make_ledger("owner", 30)
    claim = (await ledger.claim([ask("evt_rewind")]))["evt_rewind"]
    await ledger.mark_sending([("evt_rewind", claim.lease_token or 0, "h")])
    # The batch failed before settling (database gone); the same process tries again.
    again = (await ledger.claim([ask("evt_rewind")]))["evt_rewind"]
    assert again.outcome is ClaimOutcome.IN_DOUBT
    assert (again.lease_token or 0) > (claim.lease_token or 0)


async def test_every_body_sent_is_remembered_for_reconciliation(make_ledger: MakeLedger) -> None:
    ledger = make_ledger("owner", 30)
    token = (await ledger.claim([ask("evt_bodies")]))["evt_bodies"].lease_token or 0
    await ledger.mark_sending([("evt_bodies", token, "old-template")])
    await ledger.settle([Settlement("evt_bodies", token, S.RETRY_SCHEDULED, 1)])
    token = (await ledger.claim([ask("evt_bodies")]))["evt_bodies"].lease_token or 0
    await ledger.mark_sending([("evt_bodies", token, "new-template")])
    await ledger.mark_sending([("evt_bodies", token, "new-template")])
    await ledger.settle([Settlement("evt_bodies", token, S.RETRY_SCHEDULED, 2)])
    claim = (await ledger.claim([ask("evt_bodies")]))["evt_bodies"]
    assert claim.sent_body_hashes == ("old-template", "new-template")


async def test_a_sid_another_event_owns_is_refused_for_that_row_only(
    make_ledger: MakeLedger,
) -> None:
    ledger = make_ledger("owner", 30)
    claims = await ledger.claim([ask("evt_sid_a"), ask("evt_sid_b"), ask("evt_sid_c")])
    tokens = {e: c.lease_token or 0 for e, c in claims.items()}
    await ledger.mark_sending([(e, t, "h") for e, t in tokens.items()])
    first = Settlement("evt_sid_a", tokens["evt_sid_a"], S.ACCEPTED, 1, message_sid="SMshared")
    assert (await ledger.settle([first])).written == {"evt_sid_a"}
    assert await ledger.owned_sids(["SMshared", "SMother"], "evt_sid_b") == {"SMshared"}
    assert await ledger.owned_sids(["SMshared"], "evt_sid_a") == set()

    result = await ledger.settle(
        [
            Settlement("evt_sid_b", tokens["evt_sid_b"], S.ACCEPTED, 1, message_sid="SMshared"),
            Settlement("evt_sid_c", tokens["evt_sid_c"], S.ACCEPTED, 1, message_sid="SMown"),
        ]
    )
    assert result.written == {"evt_sid_c"}, "one row's conflict never stalls the others"
    assert result.sid_taken == {"evt_sid_b"}
    # Still held: it can be settled as not found.
    retry = Settlement("evt_sid_b", tokens["evt_sid_b"], S.RETRY_SCHEDULED, 1)
    assert (await ledger.settle([retry])).written == {"evt_sid_b"}


async def test_renewal_extends_a_held_lease_and_tells_when_it_was_taken(
    make_ledger: MakeLedger,
) -> None:
    # A lease of 1 s renewed every 0.1 s or so: a renewal late by most of a second on a
    # busy host still finds it held.
    holder, other = make_ledger("holder", 1.0), make_ledger("other", 30)
    unrenewed = lease_end(1.0)
    token = (await holder.claim([ask("evt_renew")]))["evt_renew"].lease_token or 0

    async def renewed_well_past_the_unrenewed_lease() -> bool:
        assert await holder.renew({"evt_renew": token}) == {"evt_renew"}
        return datetime.now(UTC) > unrenewed + timedelta(seconds=1)

    await eventually(renewed_well_past_the_unrenewed_lease, interval=0.1)
    assert await holder.renew({"evt_renew": token}) == {"evt_renew"}
    renewed_until = lease_end(1.0)
    assert (await other.claim([ask("evt_renew")]))["evt_renew"].outcome is ClaimOutcome.BUSY
    await past(renewed_until)
    taken = (await other.claim([ask("evt_renew")]))["evt_renew"]
    assert taken.outcome is ClaimOutcome.RESUMED
    assert await holder.renew({"evt_renew": token}) == set(), "fenced"


async def test_a_heartbeat_after_the_settle_never_extends_the_released_lease(
    make_ledger: MakeLedger,
) -> None:
    """A heartbeat sent just before a settle (in PostgreSQL: blocked on its row lock) runs
    after it with the same token. Renewing then handed the released row a whole new
    lease, and the next claimer waited it out as busy (13 s in the chaos test)."""
    holder, other = make_ledger("holder", 30), make_ledger("other", 30)
    for state in (S.RETRY_SCHEDULED, S.ACCEPTED):
        event_id = f"evt_late_beat_{state}"
        token = (await holder.claim([ask(event_id)]))[event_id].lease_token or 0
        await holder.mark_sending([(event_id, token, "h")])
        sid = "SM_late_beat" if state is S.ACCEPTED else None
        settled = Settlement(event_id, token, state, 1, message_sid=sid)
        assert (await holder.settle([settled])).written == {event_id}
        assert await holder.renew({event_id: token}) == set(), "released: not renewed"
        after = (await other.claim([ask(event_id)]))[event_id]
        assert after.outcome is not ClaimOutcome.BUSY, f"{state}: claimable at once"


async def test_a_lease_that_ran_out_is_not_renewed_even_when_no_one_took_it(
    make_ledger: MakeLedger,
) -> None:
    holder = make_ledger("holder", 0.2)
    token = (await holder.claim([ask("evt_ran_out")]))["evt_ran_out"].lease_token or 0
    await past(lease_end(0.2))
    assert await holder.renew({"evt_ran_out": token}) == set()


async def test_reported_is_kept_per_settled_step(make_ledger: MakeLedger) -> None:
    ledger = make_ledger("owner", 30)
    token = (await ledger.claim([ask("evt_report")]))["evt_report"].lease_token or 0
    await ledger.mark_sending([("evt_report", token, "h")])
    await ledger.settle([Settlement("evt_report", token, S.FAILED, 1, error_code=21211)])
    await ledger.mark_reported([("evt_report", S.ACCEPTED)])  # not the step it settled
    claim = (await ledger.claim([ask("evt_report")]))["evt_report"]
    assert (claim.settled_state, claim.reported) == (S.FAILED, False)
    await ledger.mark_reported([("evt_report", S.FAILED)])
    claim = (await ledger.claim([ask("evt_report")]))["evt_report"]
    assert (claim.outcome, claim.reported) == (ClaimOutcome.DUPLICATE, True)


async def test_a_suppressed_number_shows_in_the_claim(make_ledger: MakeLedger) -> None:
    ledger = make_ledger("owner", 30)
    await ledger.suppress("stopped-hash", "+*******0199", "stop")
    await ledger.suppress("stopped-hash", "+*******0199", "again")  # idempotent
    claims = await ledger.claim([ask("evt_supp_1", "stopped-hash"), ask("evt_supp_2")])
    assert claims["evt_supp_1"].suppressed is True
    assert claims["evt_supp_2"].suppressed is False


async def test_a_first_claim_sent_at_once_is_marked_sending_by_the_claim(
    make_ledger: MakeLedger,
) -> None:
    ledger = make_ledger("owner", 30)
    claim = (await ledger.claim([replace(ask("evt_hot"), send_hash="body-1")]))["evt_hot"]
    assert claim.outcome is ClaimOutcome.NEW
    assert claim.marked is True
    assert claim.window_start is not None
    assert claim.sent_body_hashes == ("body-1",)
    # Marked in the ledger, not only in the answer: taking it over (here: the same owner's
    # rewound batch) finds a send that may have happened.
    taken = await ledger.claim([ask("evt_hot")])
    assert taken["evt_hot"].outcome is ClaimOutcome.IN_DOUBT
    assert taken["evt_hot"].window_start == claim.window_start
    assert taken["evt_hot"].sent_body_hashes == ("body-1",)
    assert taken["evt_hot"].marked is False


async def test_a_stop_a_cancel_or_an_existing_row_leaves_the_claim_unmarked(
    make_ledger: MakeLedger,
) -> None:
    ledger = make_ledger("owner", 30)
    await ledger.suppress("stopped-hash", "+*******0199", "stop")
    await ledger.cancel([("appt-1", "evt_cancel")])
    await ledger.claim([ask("evt_seen")])
    claims = await ledger.claim(
        [
            replace(ask("evt_stopped", "stopped-hash"), send_hash="b"),
            replace(ask("evt_cancelled"), cancel_key="appt-1", send_hash="b"),
            replace(ask("evt_seen"), send_hash="b"),
            ask("evt_plain"),
        ]
    )
    assert {e: c.marked for e, c in claims.items()} == dict.fromkeys(claims, False)
    assert claims["evt_stopped"].suppressed
    assert claims["evt_cancelled"].canceled
    assert claims["evt_seen"].outcome is ClaimOutcome.RESUMED  # its own rewound batch
    assert all(c.window_start is None and c.sent_body_hashes == () for c in claims.values())
    # Unmarked rows are `claimed`: a takeover finds no doubt.
    again = await ledger.claim([ask(e) for e in claims])
    assert {c.outcome for c in again.values()} == {ClaimOutcome.RESUMED}
    assert all(c.doubt_since is None for c in again.values())


def alert(event_id: str, key: str, phone_hash: str = "alert-hash", **rule: float) -> ClaimRequest:
    window, cap = rule.get("window", 900.0), int(rule.get("cap", 10))
    return replace(ask(event_id, phone_hash), collapse=CollapseRule(key, window, cap))


async def test_one_alert_per_number_and_key_per_window_the_holder_keeps_it(
    make_ledger: MakeLedger,
) -> None:
    ledger, other = make_ledger("owner", 0.3), make_ledger("other", 30)
    claims = await ledger.claim([alert("evt_al_1", "disk"), alert("evt_al_2", "disk")])
    assert claims["evt_al_1"].collapsed is None, "the first opens the window"
    assert claims["evt_al_2"].collapsed == REPEAT
    other_key = (await other.claim([alert("evt_al_3", "cpu")]))["evt_al_3"]
    assert other_key.collapsed is None, "another key has its own window"
    other_number = (await other.claim([alert("evt_al_4", "disk", "hash-2")]))["evt_al_4"]
    assert other_number.collapsed is None, "another number has its own window"

    # The holder died before it sent: its redelivery still sends, a repeat still does not.
    await past(lease_end(0.3))
    again = await other.claim([alert("evt_al_1", "disk"), alert("evt_al_5", "disk")])
    assert again["evt_al_1"].outcome is ClaimOutcome.RESUMED
    assert again["evt_al_1"].collapsed is None
    assert again["evt_al_5"].collapsed == REPEAT


async def test_a_window_past_its_length_opens_again(make_ledger: MakeLedger) -> None:
    ledger = make_ledger("owner", 30)
    first = (await ledger.claim([alert("evt_aw_1", "disk", window=0.3)]))["evt_aw_1"]
    assert first.collapsed is None
    opened = datetime.now(UTC)
    inside = (await ledger.claim([alert("evt_aw_2", "disk", window=0.3)]))["evt_aw_2"]
    assert inside.collapsed == REPEAT
    await past(opened + timedelta(seconds=0.35))
    after = (await ledger.claim([alert("evt_aw_3", "disk", window=0.3)]))["evt_aw_3"]
    assert after.collapsed is None


async def test_the_hourly_cap_counts_every_key_of_a_number(make_ledger: MakeLedger) -> None:
    ledger, other = make_ledger("owner", 30), make_ledger("other", 30)
    asks = [alert(f"evt_cap_{i}", f"key-{i}", cap=3) for i in range(3)]
    assert all(c.collapsed is None for c in (await ledger.claim(asks)).values())
    capped = (await other.claim([alert("evt_cap_3", "key-3", cap=3)]))["evt_cap_3"]
    assert capped.collapsed == HOURLY_CAP
    elsewhere = (await other.claim([alert("evt_cap_4", "key-3", "hash-3", cap=3)]))["evt_cap_4"]
    assert elsewhere.collapsed is None


async def test_a_suppressed_number_or_a_plain_event_opens_no_window(
    make_ledger: MakeLedger,
) -> None:
    ledger = make_ledger("owner", 30)
    await ledger.suppress("stopped-alert", "+*******0199", "stop")
    stopped = (await ledger.claim([alert("evt_as_1", "disk", "stopped-alert")]))["evt_as_1"]
    assert (stopped.suppressed, stopped.collapsed) == (True, None)
    await ledger.claim([ask("evt_as_2", "plain-hash")])
    # Neither took the window: after the STOP is lifted the first alert of the key sends.
    fresh = (await ledger.claim([alert("evt_as_3", "disk", "plain-hash")]))["evt_as_3"]
    assert fresh.collapsed is None


async def test_concurrent_claims_of_one_alert_key_open_one_window(make_ledger: MakeLedger) -> None:
    ledgers = [make_ledger(f"owner{i}", 30) for i in range(6)]
    claims = await asyncio.gather(
        *(
            ledger.claim([alert(f"evt_acc_{i}_{j}", "flood") for j in range(5)])
            for i, ledger in enumerate(ledgers)
        )
    )
    open_ = [e for batch in claims for e, c in batch.items() if c.collapsed is None]
    assert len(open_) == 1, open_

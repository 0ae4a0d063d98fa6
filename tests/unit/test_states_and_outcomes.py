"""The core's vocabulary: ledger states, wire statuses and outcomes agree with each other."""

from __future__ import annotations

import pytest

from schemas.events import Status
from sms_relay.domain.outcomes import OUTCOME_OF_SETTLED, SETTLED_AS, AttemptEnd
from sms_relay.domain.states import (
    CONSUMER_SETTLED,
    LEDGER_ONLY,
    TRANSITIONS,
    DeliveryState,
    may_move,
    wire_status,
)
from sms_relay.domain.twilio_codes import ACCOUNT_CODES, RECIPIENT_CODES, Fault, fault_of

S = DeliveryState


@pytest.mark.parametrize("state", list(DeliveryState))
def test_every_state_but_the_ledgers_own_is_published_under_its_own_name(
    state: DeliveryState,
) -> None:
    expected = None if state in LEDGER_ONLY else Status(state.value)
    assert wire_status(state) is expected


def test_ours_sending_is_never_twilios_sending() -> None:
    assert wire_status(S.SENDING) is None


def test_every_step_the_consumer_publishes_has_a_status_and_an_outcome() -> None:
    for state in CONSUMER_SETTLED:
        assert wire_status(state) is not None
        assert state in OUTCOME_OF_SETTLED


def test_every_end_of_the_sends_is_settled_by_a_move_the_ledger_allows() -> None:
    # A transient end goes to a tier (retry_scheduled) or the DLQ; a handed-on one is
    # not settled at all; a not-now one is settled as its timing says (scheduled, expired).
    assert set(AttemptEnd) - set(SETTLED_AS) == {
        AttemptEnd.TRANSIENT,
        AttemptEnd.HANDED_ON,
        AttemptEnd.NOT_NOW,
    }
    assert may_move(S.SENDING, S.SCHEDULED)
    assert may_move(S.SENDING, S.EXPIRED)
    for state in SETTLED_AS.values():
        assert state in OUTCOME_OF_SETTLED
        assert may_move(S.SENDING, state)


def test_a_failed_event_is_never_sent_again_and_a_dead_letter_only_by_a_replay() -> None:
    assert not may_move(S.FAILED, S.SENDING)
    assert TRANSITIONS[S.DEAD_LETTERED] == {S.RETRY_SCHEDULED}


def test_the_twilio_code_tables_agree_with_fault_of() -> None:
    assert not set(ACCOUNT_CODES) & set(RECIPIENT_CODES)
    assert all(fault_of(400, code) is Fault.ACCOUNT for code in ACCOUNT_CODES)
    assert all(fault_of(400, code) is Fault.RECIPIENT for code in RECIPIENT_CODES)

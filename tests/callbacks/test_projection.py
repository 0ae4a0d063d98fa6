"""The status projection: monotonic, idempotent, order-independent; 21610 and unknown SIDs."""

from __future__ import annotations

import pytest

from sms_relay.masking import phone_hash
from sms_relay.settings import Settings
from tests.callbacks.conftest import (
    Callbacks,
    callback_form,
    execute,
    insert_delivery,
    new_event_id,
    new_sid,
    query_rows,
)
from tests.support import DEFAULT_PHONE, eventually, produce

pytestmark = pytest.mark.integration


def delivery(database_url: str, event_id: str) -> dict[str, object]:
    rows = query_rows(
        database_url,
        "SELECT state, error_code FROM deliveries WHERE event_id = :e",
        e=event_id,
    )
    return rows[0]


def history(database_url: str, event_id: str) -> list[str]:
    rows = query_rows(
        database_url,
        "SELECT status FROM status_history WHERE event_id = :e ORDER BY id",
        e=event_id,
    )
    return [str(r["status"]) for r in rows]


async def test_out_of_order_callbacks_keep_the_final_status(
    callbacks: Callbacks, database_url: str
) -> None:
    account = callbacks.settings.twilio.account_sid
    delivered_id, delivered_sid = new_event_id(), new_sid()
    failed_id, failed_sid = new_event_id(), new_sid()
    insert_delivery(database_url, delivered_id, sid=delivered_sid)
    insert_delivery(database_url, failed_id, sid=failed_sid)

    for event_id, sid, form in [
        (
            delivered_id,
            delivered_sid,
            callback_form(delivered_sid, "delivered", account_sid=account),
        ),
        (delivered_id, delivered_sid, callback_form(delivered_sid, "sent", account_sid=account)),
        (delivered_id, delivered_sid, callback_form(delivered_sid, "queued", account_sid=account)),
        (
            failed_id,
            failed_sid,
            callback_form(failed_sid, "undelivered", account_sid=account, error_code=30003),
        ),
        (failed_id, failed_sid, callback_form(failed_sid, "sent", account_sid=account)),
        (failed_id, failed_sid, callback_form(failed_sid, "delivered", account_sid=account)),
    ]:
        path = f"/twilio/status-callback?eventId={event_id}"
        status, _ = await callbacks.post_signed(path, form, token=f"{sid}:{form['MessageStatus']}")
        assert status == 200

    await eventually(lambda: len(history(database_url, delivered_id)) == 4, what="history")
    await eventually(lambda: len(history(database_url, failed_id)) == 4, what="history")
    assert delivery(database_url, delivered_id) == {"state": "delivered", "error_code": None}
    # The first final status stays, and so does its error code.
    assert delivery(database_url, failed_id) == {"state": "undelivered", "error_code": 30003}
    assert callbacks.sample("sms_relay_accepted_to_delivered_seconds_count") == 1


async def test_a_callback_before_accepted_is_applied_when_accepted_arrives(
    callbacks: Callbacks, database_url: str
) -> None:
    """Twilio can call back before the consumer recorded the SID: the ledger's row is still
    `sending`, which the projection never touches; the consumer's `accepted` record moves it."""
    settings = callbacks.settings
    event_id, sid = new_event_id(), new_sid()
    insert_delivery(database_url, event_id, state="sending")
    form = callback_form(sid, "delivered", account_sid=settings.twilio.account_sid)
    await callbacks.post_signed(f"/twilio/status-callback?eventId={event_id}", form)
    await eventually(lambda: history(database_url, event_id) == ["delivered"], what="history")
    assert delivery(database_url, event_id)["state"] == "sending"

    execute(
        database_url,
        "UPDATE deliveries SET state = 'accepted', message_sid = :s WHERE event_id = :e",
        s=sid,
        e=event_id,
    )
    accepted = {
        "schemaVersion": 1,
        "eventId": event_id,
        "messageSid": sid,
        "status": "accepted",
        "attempt": 1,
        "source": "consumer",
        "occurredAt": "2026-01-01T00:00:00Z",
    }
    produce(settings, settings.kafka.topic_delivery_status, [accepted])
    await eventually(
        lambda: delivery(database_url, event_id)["state"] == "delivered", what="delivered"
    )


async def test_a_callback_for_an_unknown_message_is_counted(
    callbacks: Callbacks, database_url: str
) -> None:
    event_id, sid = new_event_id(), new_sid()
    form = callback_form(sid, "delivered", account_sid=callbacks.settings.twilio.account_sid)
    await callbacks.post_signed(f"/twilio/status-callback?eventId={event_id}", form)
    await eventually(
        lambda: callbacks.sample("sms_relay_callbacks_unknown_sid_total") == 1,
        what="the unknown SID counted",
    )
    assert history(database_url, event_id) == ["delivered"]
    assert query_rows(database_url, "SELECT * FROM deliveries") == []


async def test_error_21610_suppresses_a_known_number_only(
    callbacks: Callbacks, database_url: str, settings: Settings
) -> None:
    account = settings.twilio.account_sid
    key = settings.phone_hash_key.get_secret_value()
    known_id, known_sid = new_event_id(), new_sid()
    insert_delivery(
        database_url, known_id, sid=known_sid, phone_hash=phone_hash(key, DEFAULT_PHONE)
    )
    stranger_id = new_event_id()
    for event_id, sid in [(known_id, known_sid), (stranger_id, new_sid())]:
        form = callback_form(sid, "undelivered", account_sid=account, error_code=21610)
        await callbacks.post_signed(f"/twilio/status-callback?eventId={event_id}", form)
    await eventually(
        lambda: callbacks.sample("sms_relay_callbacks_unknown_sid_total") == 1,
        what="both applied",
    )
    await eventually(
        lambda: delivery(database_url, known_id)["state"] == "undelivered", what="projected"
    )
    rows = query_rows(database_url, "SELECT phone_hash, phone_masked, reason FROM suppressions")
    assert rows == [
        {
            "phone_hash": phone_hash(key, DEFAULT_PHONE),
            "phone_masked": "+*******0123",
            "reason": "error_21610",
        }
    ]

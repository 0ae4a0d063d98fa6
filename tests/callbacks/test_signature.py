"""X-Twilio-Signature: only requests signed over our public URL and the exact form get in."""

from __future__ import annotations

import json

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from sms_relay.adapters.twilio.webhook_signature import webhook_signature_valid
from sms_relay.settings import Settings
from tests.callbacks.conftest import (
    Callbacks,
    callback_form,
    callbacks_settings,
    new_event_id,
    new_sid,
    running_callbacks,
)
from tests.support import eventually, read_to_end, read_values_to_end, topic_reader

pytestmark = pytest.mark.integration

# Twilio's published example (twilio-python tests/unit/test_request_validator.py).
EXAMPLE_TOKEN = "12345"
EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
EXAMPLE_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
EXAMPLE_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_twilio_published_example_vector_validates() -> None:
    validator = RequestValidator(EXAMPLE_TOKEN)
    assert validator.compute_signature(EXAMPLE_URL, EXAMPLE_PARAMS) == EXAMPLE_SIGNATURE
    assert webhook_signature_valid(EXAMPLE_TOKEN, EXAMPLE_URL, EXAMPLE_PARAMS, EXAMPLE_SIGNATURE)
    # A MultiDict of the same single values is signed the same.
    assert webhook_signature_valid(
        EXAMPLE_TOKEN, EXAMPLE_URL, MultiDict(EXAMPLE_PARAMS), EXAMPLE_SIGNATURE
    )
    assert not webhook_signature_valid(
        EXAMPLE_TOKEN, EXAMPLE_URL, {**EXAMPLE_PARAMS, "Digits": "1235"}, EXAMPLE_SIGNATURE
    )
    assert not webhook_signature_valid("54321", EXAMPLE_URL, EXAMPLE_PARAMS, EXAMPLE_SIGNATURE)
    assert not webhook_signature_valid(EXAMPLE_TOKEN, EXAMPLE_URL, EXAMPLE_PARAMS, "")


async def test_valid_signature_publishes_one_record_with_the_event_id(
    callbacks: Callbacks,
) -> None:
    settings = callbacks.settings
    event_id, sid = new_event_id(), new_sid()
    form = callback_form(sid, "delivered", account_sid=settings.twilio.account_sid)
    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        status, body = await callbacks.post_signed(
            f"/twilio/status-callback?eventId={event_id}", form, token="tok-" + sid
        )
        assert (status, body) == (200, {"result": "published"})
        await eventually(lambda: len(statuses.values()) >= 1, what="the status record")
    # Published (not outboxed): on the topic before the 200, so the topic holds all there is.
    topic = read_to_end(settings, settings.kafka.topic_delivery_status)
    records = [json.loads(m.value() or b"null") for m in topic]
    keys = [m.key() for m in topic]
    assert len(records) == 1
    record = records[0]
    assert record["eventId"] == event_id
    assert record["messageSid"] == sid
    assert record["status"] == "delivered"
    assert record["source"] == "callbacks"
    assert record["to"] == "+*******0123"
    # What the signature covers, not the unsigned I-Twilio-Idempotency-Token.
    assert record["idempotencyToken"] == f"callbacks:{sid}:delivered:None"
    assert keys == [event_id.encode()]


def _tamper(callbacks: Callbacks, case: str, path: str, form: dict[str, str]) -> dict[str, object]:
    """What each kind of bad request sends: the form posted and the signature header."""
    signed = callbacks.sign(path, form)
    url = callbacks.public_base_url + path
    cases: dict[str, tuple[dict[str, str], str]] = {
        "forged": (form, "Zm9yZ2VkIHNpZ25hdHVyZSE="),
        "missing": (form, ""),
        "wrong_url": (form, callbacks.sign(path.replace("eventId=", "eventId=x"), form)),
        "wrong_host": (form, callbacks.sign(path, form, base="https://attacker.example")),
        "changed_param": ({**form, "MessageStatus": "failed"}, signed),
        "added_param": ({**form, "ErrorCode": "30003"}, signed),
        "other_token": (form, RequestValidator("0" * 32).compute_signature(url, form)),
    }
    posted, signature = cases[case]
    return {"form": posted, "signature": signature}


BAD_CASES = [
    "forged",
    "missing",
    "wrong_url",
    "wrong_host",
    "changed_param",
    "added_param",
    "other_token",
]


async def test_bad_signatures_are_refused_and_nothing_is_published(callbacks: Callbacks) -> None:
    settings = callbacks.settings
    event_id = new_event_id()
    path = f"/twilio/status-callback?eventId={event_id}"
    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        for case in BAD_CASES:
            form = callback_form(new_sid(), "delivered", account_sid=settings.twilio.account_sid)
            bad = _tamper(callbacks, case, path, form)
            status, body = await callbacks.post_signed(
                path,
                bad["form"],  # type: ignore[arg-type]
                signature=str(bad["signature"]),
            )
            assert status == 403, case
            assert body["error"] == "invalid_signature"
        # A valid one afterwards shows the reader works and that nothing came before it.
        good = callback_form(new_sid(), "sent", account_sid=settings.twilio.account_sid)
        assert (await callbacks.post_signed(path, good))[0] == 200
        await eventually(lambda: len(statuses.values()) >= 1, what="the valid record")
    # Refused ones are neither published nor outboxed: with the good one there, the topic
    # holds all there will be.
    published = read_values_to_end(settings, settings.kafka.topic_delivery_status)
    assert [r["messageSid"] for r in published] == [good["MessageSid"]]
    failures = {"endpoint": "/twilio/status-callback"}
    assert callbacks.sample("sms_relay_signature_failures_total", failures) == len(BAD_CASES)


async def test_inbound_webhook_is_signature_checked_too(callbacks: Callbacks) -> None:
    form = {
        "AccountSid": callbacks.settings.twilio.account_sid,
        "MessageSid": new_sid(),
        "From": "+12125550187",
        "To": "+15005550006",
        "Body": "STOP",
    }
    status, _ = await callbacks.post_signed("/twilio/inbound", form, signature="bm9wZQ==")
    assert status == 403
    assert callbacks.sample("sms_relay_signature_failures_total", {"endpoint": "/twilio/inbound"})


async def test_multi_valued_fields_are_signed_with_every_value(callbacks: Callbacks) -> None:
    settings = callbacks.settings
    path = f"/twilio/status-callback?eventId={new_event_id()}"
    base = callback_form(new_sid(), "sent", account_sid=settings.twilio.account_sid)
    form = MultiDict(base)
    form.add("MediaUrl", "https://example.com/a.png")
    form.add("MediaUrl", "https://example.com/b.png")
    assert (await callbacks.post_signed(path, form))[0] == 200
    # Signed over one value only, posted with two: refused.
    one_value = MultiDict(base)
    one_value.add("MediaUrl", "https://example.com/a.png")
    status, _ = await callbacks.post_signed(path, form, signature=callbacks.sign(path, one_value))
    assert status == 403


async def test_signature_is_checked_against_the_public_url_behind_a_proxy(
    settings: Settings,
) -> None:
    """Twilio called https://hooks.example.com; the app itself listens on plain http."""
    proxied = callbacks_settings(settings, public_base_url="https://hooks.example.com/")
    async with running_callbacks(proxied) as callbacks:
        path = f"/twilio/status-callback?eventId={new_event_id()}"
        form = callback_form(new_sid(), "sent", account_sid=settings.twilio.account_sid)
        assert callbacks.public_base_url == "https://hooks.example.com"
        assert (await callbacks.post_signed(path, form))[0] == 200
        local = callbacks.sign(path, form, base=callbacks.base_url)
        assert (await callbacks.post_signed(path, form, signature=local))[0] == 403


async def test_bad_form_is_400_and_never_echoes_values(callbacks: Callbacks) -> None:
    form = {
        "AccountSid": callbacks.settings.twilio.account_sid,
        "MessageSid": "not-a-sid-+12125550123",
        "MessageStatus": "delivered",
    }
    status, body = await callbacks.post_signed("/twilio/status-callback?eventId=abcdefgh", form)
    assert status == 400
    assert body["error"] == "invalid_request"
    assert [f["field"] for f in body["fields"]] == ["MessageSid"]
    assert "not-a-sid" not in json.dumps(body)


async def test_oversized_form_is_413(callbacks: Callbacks) -> None:
    form = callback_form(new_sid(), "sent", account_sid=callbacks.settings.twilio.account_sid)
    form["Padding"] = "x" * (callbacks.settings.callbacks_max_body_bytes + 1)
    status, _ = await callbacks.post_signed("/twilio/status-callback?eventId=abcdefgh", form)
    assert status == 413


async def test_signature_off_in_development_lets_unsigned_callbacks_in(
    settings: Settings,
) -> None:
    unsigned = callbacks_settings(settings, require_twilio_signature=False)
    async with running_callbacks(unsigned) as callbacks:
        form = callback_form(new_sid(), "sent", account_sid=settings.twilio.account_sid)
        status, body = await callbacks.post_signed(
            f"/twilio/status-callback?eventId={new_event_id()}", form, signature=""
        )
    assert (status, body) == (200, {"result": "published"})

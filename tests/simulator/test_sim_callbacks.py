"""Status callbacks: signed like Twilio's, in order, retried, and with the configured faults."""

from __future__ import annotations

import socket
from typing import Any

from twilio.request_validator import RequestValidator

from sms_relay.simulator.server import SimulatorServer
from tests.support import eventually

from .conftest import MakeAsyncClient, MakeSimulator
from .helpers import ACCOUNT_SID, AUTH_TOKEN, SENDER, WebhookReceiver

TO = "+12125550123"


async def _send(client: Any, callback_url: str, to: str = TO) -> Any:
    return await client.messages.create_async(
        to=to, from_=SENDER, body="Your order shipped", status_callback=callback_url
    )


def _valid(received: Any) -> bool:
    signature = received.headers["X-Twilio-Signature"]
    return bool(RequestValidator(AUTH_TOKEN).validate(received.url, received.form, signature))


async def test_callbacks_arrive_signed_sent_then_delivered(
    async_twilio_client: Any, receiver: WebhookReceiver
) -> None:
    message = await _send(async_twilio_client, receiver.url("/twilio/status-callback"))

    await eventually(lambda: len(receiver.requests) >= 2)

    sent, delivered = receiver.requests
    assert [sent.form["MessageStatus"], delivered.form["MessageStatus"]] == ["sent", "delivered"]
    assert all(_valid(r) for r in receiver.requests)
    assert sent.form == {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": SENDER,
        "MessageSid": message.sid,
        "MessageStatus": "sent",
        "SmsSid": message.sid,
        "SmsStatus": "sent",
        "To": TO,
    }
    assert "RawDlrDoneDate" in delivered.form
    assert sent.headers["User-Agent"] == "TwilioProxy/1.1"
    tokens = {r.headers["I-Twilio-Idempotency-Token"] for r in receiver.requests}
    assert len(tokens) == 2
    fetched = await async_twilio_client.messages(message.sid).fetch_async()
    assert fetched.status == "delivered"


async def test_signature_covers_the_query_string(
    async_twilio_client: Any, receiver: WebhookReceiver
) -> None:
    url = receiver.url("/twilio/status-callback?eventId=abc")
    await _send(async_twilio_client, url)

    first = await eventually(lambda: receiver.requests[0] if receiver.requests else None)

    assert first.url == url
    assert _valid(first)
    signature = first.headers["X-Twilio-Signature"]
    validator = RequestValidator(AUTH_TOKEN)
    assert not validator.validate(url.replace("abc", "abd"), first.form, signature)
    assert not validator.validate(url.split("?")[0], first.form, signature)


async def test_a_500_answer_is_retried_with_the_same_idempotency_token(
    async_twilio_client: Any, receiver: WebhookReceiver, simulator: SimulatorServer
) -> None:
    receiver.answers.extend([500])
    await _send(async_twilio_client, receiver.url("/status"))

    await eventually(lambda: len(receiver.requests) >= 3)

    statuses = [r.form["MessageStatus"] for r in receiver.requests]
    assert statuses == ["sent", "sent", "delivered"]
    first, retry = receiver.requests[:2]
    token = "I-Twilio-Idempotency-Token"
    assert first.headers[token] == retry.headers[token]
    assert first.headers["X-Twilio-Signature"] == retry.headers["X-Twilio-Signature"]
    log = await simulator.aclient.callbacks()
    assert [(e["message_status"], e["attempt"], e["status"]) for e in log] == [
        ("sent", 1, 500),
        ("sent", 2, 200),
        ("delivered", 1, 200),
    ]


async def test_unreachable_callback_url_is_tried_three_times(
    async_twilio_client: Any, simulator: SimulatorServer
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    # Nothing listens there any more: every attempt is a connection error.
    await _send(async_twilio_client, f"http://127.0.0.1:{closed_port}/status")

    log = await eventually(
        lambda: entries if len(entries := simulator.callbacks()) >= 6 else None, timeout=10
    )

    assert [e["attempt"] for e in log if e["message_status"] == "sent"] == [1, 2, 3]
    assert all(e["status"] is None and e["error"] for e in log)


async def test_fail_number_ends_undelivered_with_its_code(
    make_simulator: MakeSimulator,
    make_async_client: MakeAsyncClient,
    receiver: WebhookReceiver,
) -> None:
    sim = make_simulator(fail_numbers={TO: 30003, "+12125550124": 30001})
    client = make_async_client(sim)
    undelivered = await _send(client, receiver.url("/status"))
    failed = await _send(client, receiver.url("/status"), to="+12125550124")

    await eventually(lambda: len(receiver.requests) >= 3)

    by_sid: dict[str, list[tuple[str, str | None]]] = {}
    for r in receiver.requests:
        entry = (r.form["MessageStatus"], r.form.get("ErrorCode"))
        by_sid.setdefault(r.form["MessageSid"], []).append(entry)
    assert by_sid[undelivered.sid] == [("sent", None), ("undelivered", "30003")]
    assert by_sid[failed.sid] == [("failed", "30001")]
    fetched = await client.messages(undelivered.sid).fetch_async()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


async def test_duplicates_carry_the_same_token(
    make_simulator: MakeSimulator,
    make_async_client: MakeAsyncClient,
    receiver: WebhookReceiver,
) -> None:
    sim = make_simulator(duplicate_callbacks=1.0)
    client = make_async_client(sim)
    await _send(client, receiver.url("/status"))

    await eventually(lambda: len(receiver.requests) >= 4)

    statuses = [r.form["MessageStatus"] for r in receiver.requests]
    assert statuses == ["sent", "sent", "delivered", "delivered"]
    tokens = [r.headers["I-Twilio-Idempotency-Token"] for r in receiver.requests]
    assert tokens[0] == tokens[1] != tokens[2] == tokens[3]


async def test_reordered_callbacks_deliver_before_sent(
    make_simulator: MakeSimulator,
    make_async_client: MakeAsyncClient,
    receiver: WebhookReceiver,
) -> None:
    sim = make_simulator(reorder_callbacks=True)
    client = make_async_client(sim)
    await _send(client, receiver.url("/status"))

    await eventually(lambda: len(receiver.requests) >= 2)

    assert [r.form["MessageStatus"] for r in receiver.requests] == ["delivered", "sent"]


async def test_dropped_callbacks_are_logged_but_never_sent(
    make_simulator: MakeSimulator,
    make_async_client: MakeAsyncClient,
    receiver: WebhookReceiver,
) -> None:
    sim = make_simulator(drop_callbacks=1.0)
    client = make_async_client(sim)
    message = await _send(client, receiver.url("/status"))

    log = await eventually(lambda: entries if len(entries := sim.callbacks()) >= 2 else None)
    fetched = await client.messages(message.sid).fetch_async()

    assert [(e["message_status"], e["dropped"]) for e in log] == [
        ("sent", True),
        ("delivered", True),
    ]
    assert receiver.requests == []
    assert fetched.status == "delivered"


async def test_reset_forgets_messages_and_stops_pending_callbacks(
    make_simulator: MakeSimulator,
    make_async_client: MakeAsyncClient,
    receiver: WebhookReceiver,
) -> None:
    sim = make_simulator(callback_delay_ms=100)
    client = make_async_client(sim)
    forgotten = await _send(client, receiver.url("/status"))
    await sim.aclient.reset()

    assert await client.messages.list_async() == []
    assert await sim.aclient.messages() == []
    # A later message's last callback comes after the forgotten one's would have.
    later = await _send(client, receiver.url("/status"))
    await eventually(lambda: receiver.with_status("delivered"))
    assert {r.form["MessageSid"] for r in receiver.requests} == {later.sid}
    assert forgotten.sid not in {e["message_sid"] for e in await sim.aclient.callbacks()}

"""Status callbacks: signed like Twilio's, in order, retried, and with the configured faults."""

from __future__ import annotations

from typing import Any

from twilio.request_validator import RequestValidator

from sms_relay.simulator.server import SimulatorServer
from tests.support import eventually, reserved_port

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


def _closed_port_url() -> str:
    # Nothing listens there: every attempt is a connection error.
    return f"http://127.0.0.1:{reserved_port()}/status"


def _attempts(log: list[dict[str, Any]], status: str = "sent") -> list[tuple[Any, ...]]:
    return [(e["attempt"], e["status"], e["failure"]) for e in log if e["message_status"] == status]


async def test_a_500_answer_is_final_by_default(
    async_twilio_client: Any, receiver: WebhookReceiver, simulator: SimulatorServer
) -> None:
    receiver.answers.extend([500])
    await _send(async_twilio_client, receiver.url("/status"))

    await eventually(lambda: receiver.with_status("delivered"))

    assert [r.form["MessageStatus"] for r in receiver.requests] == ["sent", "delivered"]
    log = await simulator.aclient.callbacks()
    assert _attempts(log) == [(1, 500, "5xx")]
    assert _attempts(log, "delivered") == [(1, 200, None)]


async def test_an_unreachable_url_is_retried_once_by_default(
    async_twilio_client: Any, simulator: SimulatorServer
) -> None:
    await _send(async_twilio_client, _closed_port_url())

    log = await eventually(
        lambda: entries if len(entries := simulator.callbacks()) >= 4 else None, timeout=10
    )

    assert _attempts(log) == [(1, None, "ct"), (2, None, "ct")]
    assert _attempts(log, "delivered") == [(1, None, "ct"), (2, None, "ct")]
    assert all(e["error"] for e in log)


async def test_a_read_timeout_is_final_by_default(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient, receiver: WebhookReceiver
) -> None:
    sim = make_simulator(callback_timeout_ms=200)
    client = make_async_client(sim)
    receiver.delays.extend([1.0])
    await _send(client, receiver.url("/status"))

    log = await eventually(
        lambda: entries if len(entries := sim.callbacks()) >= 2 else None, timeout=10
    )

    assert _attempts(log) == [(1, None, "rt")]
    assert _attempts(log, "delivered") == [(1, 200, None)]


async def test_old_behaviour_retries_5xx_with_the_same_idempotency_token(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient, receiver: WebhookReceiver
) -> None:
    sim = make_simulator(callback_retry_count=2, callback_retry_policy="ct,rt,5xx")
    client = make_async_client(sim)
    receiver.answers.extend([500])
    await _send(client, receiver.url("/status"))

    await eventually(lambda: len(receiver.requests) >= 3)

    statuses = [r.form["MessageStatus"] for r in receiver.requests]
    assert statuses == ["sent", "sent", "delivered"]
    first, retry = receiver.requests[:2]
    token = "I-Twilio-Idempotency-Token"
    assert first.headers[token] == retry.headers[token]
    assert first.headers["X-Twilio-Signature"] == retry.headers["X-Twilio-Signature"]
    log = await sim.aclient.callbacks()
    assert [(e["message_status"], e["attempt"], e["status"]) for e in log] == [
        ("sent", 1, 500),
        ("sent", 2, 200),
        ("delivered", 1, 200),
    ]


async def test_old_behaviour_tries_an_unreachable_url_three_times(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient
) -> None:
    sim = make_simulator(callback_retry_count=2, callback_retry_policy="ct,rt,5xx")
    client = make_async_client(sim)
    await _send(client, _closed_port_url())

    log = await eventually(
        lambda: entries if len(entries := sim.callbacks()) >= 6 else None, timeout=10
    )

    assert [e["attempt"] for e in log if e["message_status"] == "sent"] == [1, 2, 3]


async def test_url_fragment_overrides_retries_and_is_not_sent(
    async_twilio_client: Any, receiver: WebhookReceiver, simulator: SimulatorServer
) -> None:
    # Twilio's webhook connection overrides: retry 5xx and read timeouts, up to 3 times.
    url = receiver.url("/status?eventId=abc")
    receiver.answers.extend([503, 500])
    receiver.delays.extend([0, 0, 1.0])
    await _send(async_twilio_client, url + "#rc=3&rp=5xx,rt&rt=200")

    await eventually(lambda: receiver.with_status("delivered"), timeout=10)

    log = await simulator.aclient.callbacks()
    assert _attempts(log) == [(1, 503, "5xx"), (2, 500, "5xx"), (3, None, "rt"), (4, 200, None)]
    assert {r.url for r in receiver.requests} == {url}
    assert all(_valid(r) for r in receiver.requests)
    assert {e["url"] for e in log} == {url}


async def test_url_fragment_can_turn_retries_off_and_bounds_the_total_time(
    async_twilio_client: Any, receiver: WebhookReceiver, simulator: SimulatorServer
) -> None:
    await _send(async_twilio_client, _closed_port_url() + "#rc=0")
    # Every `sent` attempt outlasts its 200 ms read timeout; `delivered` is answered at
    # once. (A fixed number of slow answers, shared by both, left `delivered` to time
    # out too on a busy host, where fewer `sent` attempts fit into the total time.)
    receiver.delays_by_status["sent"] = 1.0
    await _send(async_twilio_client, receiver.url("/slow#rc=5&rp=rt&rt=200&tt=1000"))

    def settled() -> list[dict[str, Any]] | None:
        log = simulator.callbacks()
        unreachable = [e for e in log if not e["url"].endswith("/slow")]
        delivered = [
            e for e in log if e["url"].endswith("/slow") and e["message_status"] == "delivered"
        ]
        return log if len(unreachable) >= 2 and delivered else None

    # The simulator posts a message's callbacks in order: once `delivered` was posted,
    # every `sent` attempt is logged.
    log = await eventually(settled, timeout=20)

    unreachable = [e for e in log if not e["url"].endswith("/slow")]
    assert [(e["message_status"], e["attempt"]) for e in unreachable] == [
        ("sent", 1),
        ("delivered", 1),
    ]
    slow_sent = [e for e in log if e["url"].endswith("/slow") and e["message_status"] == "sent"]
    # 1 s of 200 ms read timeouts and 10-80 ms backoffs: five attempts on an idle host,
    # fewer on a busy one, never the 6 that rc=5 allows; and more than one, as rc and rp
    # ask (the first attempt ends at 200 ms, far inside the total time).
    assert 2 <= len(slow_sent) < 6, slow_sent
    assert all(e["failure"] == "rt" for e in slow_sent)
    slow_delivered = [
        e for e in log if e["url"].endswith("/slow") and e["message_status"] == "delivered"
    ]
    assert [(e["attempt"], e["status"]) for e in slow_delivered] == [(1, 200)]


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

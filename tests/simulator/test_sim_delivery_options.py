"""What the new creates send, as Twilio documents it: ValidityPeriod (1-36,000 s; a message
that outwaits it in the queue fails with 30036), SendAt with ScheduleType=fixed on a
Messaging Service (15 minutes to 35 days ahead; 35111, 35114, 35126), and cancelling a
scheduled message (Status=canceled; 30409 once it is no longer scheduled)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from sms_relay.adapters.twilio.sms_sender import TwilioSmsSender
from sms_relay.adapters.twilio.twilio_client import close_client, create_client
from sms_relay.errors import ProviderRejectedError
from sms_relay.settings import TwilioSettings
from sms_relay.simulator.server import SimulatorServer
from tests.support import eventually

from .conftest import MakeAsyncClient, MakeClient, MakeSimulator
from .helpers import ACCOUNT_SID, AUTH_TOKEN, SENDER, WebhookReceiver

TO = "+12125550123"
OTHER = "+12125550124"
SERVICE = "MG" + "c3" * 16


def _rejected(call: Any) -> tuple[int, int]:
    with pytest.raises(TwilioRestException) as raised:
        call()
    return raised.value.status, raised.value.code


# ---- ValidityPeriod.


@pytest.mark.parametrize("validity", [0, 36001, -5])
def test_a_validity_period_outside_1_to_36000_is_refused_with_21624(
    twilio_client: Any, simulator: SimulatorServer, validity: int
) -> None:
    create = lambda: twilio_client.messages.create(  # noqa: E731
        to=TO, from_=SENDER, body="hi", validity_period=validity
    )
    assert _rejected(create) == (400, 21624)
    assert not any(entry["created"] for entry in simulator.messages())


@pytest.mark.parametrize("validity", [1, 600, 36000])
def test_a_validity_period_within_range_is_accepted(twilio_client: Any, validity: int) -> None:
    created = twilio_client.messages.create(
        to=TO, from_=SENDER, body="hi", validity_period=validity
    )
    assert created.status == "queued"


async def test_a_message_that_outwaits_its_validity_period_fails_with_30036_unsent(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient, receiver: WebhookReceiver
) -> None:
    # One segment a second: the third message would wait two seconds, its validity is one.
    sim = make_simulator(sender_mps=1)
    client = make_async_client(sim)
    sids = [
        (
            await client.messages.create_async(
                to=TO,
                from_=SENDER,
                body=f"alert {n}",
                validity_period=1,
                status_callback=receiver.url(f"/status/{n}"),
            )
        ).sid
        for n in range(3)
    ]

    async def settled() -> list[Any] | None:
        fetched = [await client.messages(sid).fetch_async() for sid in sids]
        done = all(m.status in {"delivered", "failed"} for m in fetched)
        return fetched if done else None

    first, second, third = await eventually(settled, timeout=10, what="all three settled")
    assert (first.status, second.status) == ("delivered", "delivered")
    assert (third.status, third.error_code, third.date_sent) == ("failed", 30036, None)
    callbacks = [r for r in receiver.requests if r.path == "/status/2"]
    assert [(r.form["MessageStatus"], r.form.get("ErrorCode")) for r in callbacks] == [
        ("failed", "30036")
    ]


# ---- SendAt and ScheduleType.


def _in(delta: timedelta) -> datetime:
    return (datetime.now(UTC) + delta).replace(microsecond=0)


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"schedule_type": "fixed"}, 35111),
        ({"schedule_type": "fixed", "send_at": _in(timedelta(minutes=5))}, 35114),
        ({"schedule_type": "fixed", "send_at": _in(timedelta(days=36))}, 35114),
        ({"schedule_type": "recurring", "send_at": _in(timedelta(hours=1))}, 35126),
    ],
    ids=["no SendAt", "too soon", "too late", "unknown type"],
)
def test_a_bad_schedule_is_refused_with_twilios_code(
    twilio_client: Any, options: dict[str, Any], code: int
) -> None:
    create = lambda: twilio_client.messages.create(  # noqa: E731
        to=TO, messaging_service_sid=SERVICE, body="hi", **options
    )
    assert _rejected(create) == (400, code)


def test_a_bad_send_at_string_is_refused_with_35114(twilio_client: Any) -> None:
    create = lambda: twilio_client.messages.create(  # noqa: E731
        to=TO, messaging_service_sid=SERVICE, body="hi", schedule_type="fixed", send_at="soon"
    )
    assert _rejected(create) == (400, 35114)


def test_without_a_messaging_service_the_schedule_is_dropped_and_it_sends_at_once(
    twilio_client: Any,
) -> None:
    created = twilio_client.messages.create(
        to=TO, from_=SENDER, body="hi", schedule_type="fixed", send_at=_in(timedelta(hours=1))
    )
    assert created.status == "queued"


async def test_a_scheduled_message_waits_for_send_at_then_goes_out(
    simulator: SimulatorServer, async_twilio_client: Any, receiver: WebhookReceiver
) -> None:
    created = await async_twilio_client.messages.create_async(
        to=TO,
        messaging_service_sid=SERVICE,
        body="Your appointment is tomorrow at 10:00",
        schedule_type="fixed",
        send_at=_in(timedelta(hours=2)),
        status_callback=receiver.url("/status"),
    )
    assert (created.status, created.date_sent) == ("scheduled", None)
    fetched = await async_twilio_client.messages(created.sid).fetch_async()
    assert fetched.status == "scheduled"

    await simulator.aclient.advance_clock(2 * 3600)

    await eventually(lambda: receiver.with_status("delivered"), timeout=10, what="delivered")
    statuses = [r.form["MessageStatus"] for r in receiver.requests]
    assert statuses == ["sent", "delivered"]  # no callback for `scheduled` or `accepted`


async def test_a_canceled_scheduled_message_is_never_sent(
    simulator: SimulatorServer, async_twilio_client: Any, receiver: WebhookReceiver
) -> None:
    scheduled = {}
    for to in (TO, OTHER):
        scheduled[to] = await async_twilio_client.messages.create_async(
            to=to,
            messaging_service_sid=SERVICE,
            body="Reminder",
            schedule_type="fixed",
            send_at=_in(timedelta(hours=1)),
            status_callback=receiver.url(f"/status/{to}"),
        )

    canceled = await async_twilio_client.messages(scheduled[TO].sid).update_async(status="canceled")
    assert canceled.status == "canceled"
    await simulator.aclient.advance_clock(3600)

    # The other one, due at the same instant, goes out: by then the canceled one would have.
    await eventually(lambda: receiver.with_status("delivered"), timeout=10, what="delivered")
    fetched = await async_twilio_client.messages(scheduled[TO].sid).fetch_async()
    assert (fetched.status, fetched.date_sent) == ("canceled", None)
    mine = [r.form["MessageStatus"] for r in receiver.requests if r.path == f"/status/{TO}"]
    assert mine == ["canceled"]


def test_only_a_scheduled_message_can_be_canceled(twilio_client: Any) -> None:
    created = twilio_client.messages.create(to=TO, from_=SENDER, body="hi")
    cancel = lambda: twilio_client.messages(created.sid).update(status="canceled")  # noqa: E731
    assert _rejected(cancel) == (400, 30409)


# ---- Our adapter sends ValidityPeriod as the SDK's validity_period does.


async def test_the_sender_passes_a_validity_period_like_the_sdk_and_none_by_default(
    simulator: SimulatorServer, make_client: MakeClient
) -> None:
    settings = TwilioSettings(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=SENDER,
        api_base_url=simulator.base_url,
    )
    client = create_client(settings)
    try:
        sender = TwilioSmsSender(client, settings)
        await sender.send(TO, "with validity", None, validity_seconds=600)
        await sender.send(TO, "without", None)
    finally:
        await close_client(client)
    make_client(simulator).messages.create(to=TO, from_=SENDER, body="sdk", validity_period=600)

    params = [entry["params"] for entry in simulator.messages()]
    assert params[0].get("ValidityPeriod") == params[2].get("ValidityPeriod") == "600"
    assert "ValidityPeriod" not in params[1]
    assert all(entry["status"] == 201 for entry in simulator.messages())


async def test_the_sender_surfaces_a_refused_validity_period(simulator: SimulatorServer) -> None:
    settings = TwilioSettings(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=SENDER,
        api_base_url=simulator.base_url,
    )
    client = create_client(settings)
    try:
        with pytest.raises(ProviderRejectedError) as raised:
            await TwilioSmsSender(client, settings).send(TO, "x", None, validity_seconds=0)
    finally:
        await close_client(client)
    assert raised.value.code == 21624

"""TwilioSmsSender.send posts the create itself: what Twilio sees, and the errors it
raises, are the SDK's own create's (the SDK's exception types, translated alike)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sms_relay.adapters.twilio.sms_sender import TwilioSmsSender
from sms_relay.adapters.twilio.twilio_client import close_client, create_client, provider_call
from sms_relay.delivery.delivery_ports import SentMessage
from sms_relay.errors import (
    ProviderError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
)
from sms_relay.settings import TwilioSettings
from sms_relay.simulator.server import SimulatorServer

TO = "+12125550123"
INVALID_TO = "+15005550001"  # Twilio's magic number: 400, code 21211
FROM = "+15005550006"
CALLBACK = "http://127.0.0.1:8080/twilio/status-callback?eventId=order_1001_shipped_v1"


def twilio_settings(simulator: SimulatorServer, **changes: Any) -> TwilioSettings:
    config = simulator.config
    values: dict[str, Any] = {
        "account_sid": config.account_sid,
        "auth_token": config.auth_token,
        "from_number": FROM,
        "api_base_url": simulator.base_url,
        "request_timeout_seconds": 3,
        **changes,
    }
    return TwilioSettings(**values)


@pytest.fixture
async def clients(simulator: SimulatorServer) -> AsyncIterator[list[Any]]:
    made: list[Any] = []
    yield made
    for client in made:
        await close_client(client)


def sender_for(settings: TwilioSettings, clients: list[Any]) -> TwilioSmsSender:
    client = create_client(settings)
    clients.append(client)
    return TwilioSmsSender(client, settings)


async def sdk_create(settings: TwilioSettings, clients: list[Any], to: str) -> SentMessage:
    """The same create through the SDK's own `messages.create_async`."""
    client = create_client(settings)
    clients.append(client)
    async with provider_call(settings.request_timeout_seconds):
        message = await client.messages.create_async(
            to=to, from_=FROM, body="Your order 1001 has shipped.", status_callback=CALLBACK
        )
    return SentMessage(sid=str(message.sid), status=str(message.status))


async def failure(create: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await create
    return caught.value


async def test_send_posts_what_the_sdk_posts(
    simulator: SimulatorServer, clients: list[Any]
) -> None:
    settings = twilio_settings(simulator)
    ours = await sender_for(settings, clients).send(TO, "Your order 1001 has shipped.", CALLBACK)
    theirs = await sdk_create(settings, clients, TO)
    first, second = await simulator.aclient.messages()
    assert (
        first["params"]
        == second["params"]
        == {
            "To": TO,
            "From": FROM,
            "Body": "Your order 1001 has shipped.",
            "StatusCallback": CALLBACK,
        }
    )
    assert ours.sid.startswith("SM")
    assert ours.sid == first["sid"]
    assert ours.status == theirs.status == "queued"


async def test_send_through_a_messaging_service(
    simulator: SimulatorServer, clients: list[Any]
) -> None:
    service = "MG" + "0" * 32
    settings = twilio_settings(simulator, messaging_service_sid=service, from_number=None)
    sent = await sender_for(settings, clients).send(TO, "hello", None)
    (entry,) = await simulator.aclient.messages()
    assert entry["params"] == {"To": TO, "Body": "hello", "MessagingServiceSid": service}
    assert sent.status == "accepted"


@pytest.mark.parametrize(
    ("script", "error", "status", "code"),
    [
        (["429"], ProviderThrottledError, 429, 20429),
        (["500"], ProviderUnavailableError, 500, 20500),
        (["503"], ProviderUnavailableError, 503, 20503),
    ],
)
async def test_error_answers_raise_what_the_sdk_raises(
    simulator: SimulatorServer,
    clients: list[Any],
    script: list[str],
    error: type[ProviderError],
    status: int,
    code: int,
) -> None:
    settings = twilio_settings(simulator)
    await simulator.aclient.script(TO, script * 2)
    ours = await failure(sender_for(settings, clients).send(TO, "hello", CALLBACK))
    theirs = await failure(sdk_create(settings, clients, TO))
    assert type(ours) is type(theirs) is error
    assert (ours.status, ours.code) == (theirs.status, theirs.code) == (status, code)


async def test_rejections_carry_twilios_code(
    simulator: SimulatorServer, clients: list[Any]
) -> None:
    settings = twilio_settings(simulator)
    ours = await failure(sender_for(settings, clients).send(INVALID_TO, "hello", None))
    theirs = await failure(sdk_create(settings, clients, INVALID_TO))
    assert isinstance(ours, ProviderRejectedError)
    assert (ours.status, ours.code) == (theirs.status, theirs.code) == (400, 21211)


async def test_wrong_credentials_are_rejected_like_the_sdks(
    simulator: SimulatorServer, clients: list[Any]
) -> None:
    settings = twilio_settings(simulator, auth_token="not-the-token")
    ours = await failure(sender_for(settings, clients).send(TO, "hello", None))
    theirs = await failure(sdk_create(settings, clients, TO))
    assert isinstance(ours, ProviderRejectedError)
    assert (ours.status, ours.code) == (theirs.status, theirs.code) == (401, 20003)
    assert await simulator.aclient.messages() == []


async def test_no_answer_within_the_deadline_is_unavailable(
    simulator: SimulatorServer, clients: list[Any]
) -> None:
    settings = twilio_settings(simulator, request_timeout_seconds=0.3)
    await simulator.aclient.script(TO, ["timeout"])
    error = await failure(sender_for(settings, clients).send(TO, "hello", None))
    assert isinstance(error, ProviderUnavailableError)
    assert str(error) == "twilio timeout"

"""Fixtures: simulators on free ports, twilio SDK clients pointed at them, a webhook receiver."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from twilio.rest import Client

from sms_relay.adapters.twilio.twilio_client import HeaderAuthHttpClient
from sms_relay.simulator.config import SimulatorConfig
from sms_relay.simulator.server import SimulatorServer

from .helpers import ACCOUNT_SID, AUTH_TOKEN, WebhookReceiver

MakeSimulator = Callable[..., SimulatorServer]
MakeClient = Callable[..., Any]
MakeAsyncClient = Callable[[SimulatorServer], Any]


@pytest.fixture
def make_simulator() -> Iterator[MakeSimulator]:
    """Start simulators with fast callbacks and a fixed seed; overrides as keyword arguments."""
    with contextlib.ExitStack() as stack:

        def make(**overrides: Any) -> SimulatorServer:
            settings: dict[str, Any] = {
                "callback_delay_ms": 10,
                "callback_retry_backoff_ms": 10,
                "callback_timeout_ms": 2000,
                "seed": 1,
            }
            settings.update(overrides)
            config = SimulatorConfig(ACCOUNT_SID, AUTH_TOKEN, **settings)
            return stack.enter_context(SimulatorServer(config))

        yield make


@pytest.fixture
def simulator(make_simulator: MakeSimulator) -> SimulatorServer:
    return make_simulator()


@pytest.fixture
def make_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeClient]:
    """Sync twilio clients pointed at a simulator; their HTTP sessions close at teardown."""
    for name in ("TWILIO_EDGE", "TWILIO_REGION"):
        monkeypatch.delenv(name, raising=False)
    clients: list[Any] = []

    def make(sim: SimulatorServer, **kwargs: Any) -> Any:
        options: dict[str, Any] = {"username": ACCOUNT_SID, "password": AUTH_TOKEN}
        options.update(kwargs)
        client = Client(**options)
        client.api.base_url = sim.base_url
        client.verify.base_url = sim.base_url
        clients.append(client)
        return client

    yield make
    for client in clients:
        if client.http_client.session is not None:
            client.http_client.session.close()


@pytest.fixture
def twilio_client(simulator: SimulatorServer, make_client: MakeClient) -> Any:
    return make_client(simulator)


@pytest.fixture
async def make_async_client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeAsyncClient]:
    """The SDK's async (aiohttp) clients pointed at a simulator; closed at teardown."""
    for name in ("TWILIO_EDGE", "TWILIO_REGION"):
        monkeypatch.delenv(name, raising=False)
    http_clients: list[HeaderAuthHttpClient] = []

    def make(sim: SimulatorServer) -> Any:
        http_client = HeaderAuthHttpClient()
        http_clients.append(http_client)
        client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http_client)
        client.api.base_url = sim.base_url
        client.verify.base_url = sim.base_url
        return client

    yield make
    for http_client in http_clients:
        await http_client.close()


@pytest.fixture
async def async_twilio_client(
    simulator: SimulatorServer, make_async_client: MakeAsyncClient
) -> Any:
    # Async so the client's aiohttp session is created on the test's event loop.
    return make_async_client(simulator)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """Records the status callbacks and inbound SMS the simulator posts."""
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()

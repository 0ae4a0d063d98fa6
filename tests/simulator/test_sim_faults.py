"""Faults: scripted per-recipient outcomes, seeded random rates and the messages-per-second cap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient

from sms_relay.simulator.control_client import SimulatorError
from sms_relay.simulator.server import SimulatorServer
from tests.support import eventually_sync

from .conftest import MakeAsyncClient, MakeClient, MakeSimulator
from .helpers import SENDER

TO = "+12125550123"


def _create(client: Any, body: str = "hello", to: str = TO) -> Any:
    return client.messages.create(to=to, from_=SENDER, body=body)


def test_scripted_429s_then_ok(twilio_client: Any, simulator: SimulatorServer) -> None:
    simulator.script(TO, ["429", "429", "ok"])

    codes = []
    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            _create(twilio_client)
        codes.append((caught.value.status, caught.value.code))
    message = _create(twilio_client)

    assert codes == [(429, 20429), (429, 20429)]
    assert message.status == "queued"
    log = simulator.messages()
    assert [e["outcome"] for e in log] == ["429", "429", "ok"]
    assert [e["source"] for e in log] == ["script", "script", "script"]
    assert [e["created"] for e in log] == [False, False, True]


def test_script_only_applies_to_its_number(twilio_client: Any, simulator: SimulatorServer) -> None:
    simulator.script(TO, ["503"])

    other = _create(twilio_client, to="+12125550777")
    with pytest.raises(TwilioRestException) as caught:
        _create(twilio_client)
    after = _create(twilio_client)

    assert other.sid
    assert after.sid
    assert (caught.value.status, caught.value.code) == (503, 20503)


def test_scripted_500_creates_nothing(twilio_client: Any, simulator: SimulatorServer) -> None:
    simulator.script(TO, ["500"])

    with pytest.raises(TwilioRestException) as caught:
        _create(twilio_client)

    assert (caught.value.status, caught.value.code) == (500, 20500)
    assert twilio_client.messages.list(to=TO) == []


def test_500_after_create_leaves_a_message_behind(
    twilio_client: Any, simulator: SimulatorServer
) -> None:
    simulator.script(TO, ["500_after_create"])

    with pytest.raises(TwilioRestException) as caught:
        _create(twilio_client, body="in doubt")

    assert (caught.value.status, caught.value.code) == (500, 20500)
    listed = twilio_client.messages.list(to=TO)
    assert [m.body for m in listed] == ["in doubt"]
    entry = simulator.messages()[-1]
    assert entry["created"] is True
    assert entry["status"] == 500
    assert entry["sid"] == listed[0].sid
    eventually_sync(lambda: twilio_client.messages(listed[0].sid).fetch().status == "delivered")


def test_drop_after_create_closes_the_connection_but_creates(
    twilio_client: Any, simulator: SimulatorServer
) -> None:
    simulator.script(TO, ["drop_after_create"])

    with pytest.raises(requests.exceptions.ConnectionError):
        _create(twilio_client, body="dropped")

    listed = twilio_client.messages.list(to=TO)
    assert [m.body for m in listed] == ["dropped"]
    entry = simulator.messages()[-1]
    assert (entry["outcome"], entry["status"], entry["created"]) == (
        "drop_after_create",
        None,
        True,
    )


async def test_drop_before_create_with_the_async_client(
    async_twilio_client: Any, simulator: SimulatorServer
) -> None:
    await simulator.aclient.script(TO, ["drop_before_create"])

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await async_twilio_client.messages.create_async(to=TO, from_=SENDER, body="x")

    assert await async_twilio_client.messages.list_async(to=TO) == []
    entries = await simulator.aclient.messages()
    assert (entries[-1]["outcome"], entries[-1]["created"]) == ("drop_before_create", False)


async def test_html_page_makes_the_sdk_raise_a_non_twilio_error_and_creates_nothing(
    async_twilio_client: Any, twilio_client: Any, simulator: SimulatorServer
) -> None:
    # A proxy's 200 with an HTML page: the SDK's JSON parse fails (a ValueError), outside
    # the SDK's own exceptions.
    await simulator.aclient.script(TO, ["html", "html"])

    with pytest.raises(json.JSONDecodeError) as caught:
        await async_twilio_client.messages.create_async(to=TO, from_=SENDER, body="x")
    with pytest.raises(json.JSONDecodeError) as caught_sync:
        _create(twilio_client)

    assert not isinstance(caught.value, TwilioException)
    assert not isinstance(caught_sync.value, TwilioException)
    assert await async_twilio_client.messages.list_async(to=TO) == []
    entries = await simulator.aclient.messages()
    assert [(e["outcome"], e["status"], e["created"]) for e in entries] == [
        ("html", 200, False),
        ("html", 200, False),
    ]


def test_timeout_holds_the_request_without_creating(
    simulator: SimulatorServer, make_client: MakeClient
) -> None:
    client = make_client(simulator, http_client=TwilioHttpClient(timeout=0.3))
    simulator.script(TO, ["timeout"])

    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        _create(client)

    assert time.monotonic() - started < 5
    assert client.messages.list(to=TO) == []
    assert simulator.messages()[-1]["outcome"] == "timeout"


def test_script_rejects_unknown_outcomes(simulator: SimulatorServer) -> None:
    with pytest.raises(SimulatorError):
        simulator.script(TO, ["explode"])


def test_rate_429_of_one_rejects_every_create(
    make_simulator: MakeSimulator, make_client: MakeClient
) -> None:
    sim = make_simulator(rate_429=1.0)
    client = make_client(sim)

    for _ in range(3):
        with pytest.raises(TwilioRestException) as caught:
            _create(client)
        assert caught.value.code == 20429

    assert {e["source"] for e in sim.messages()} == {"random"}


def test_same_seed_gives_the_same_faults(
    make_simulator: MakeSimulator, make_client: MakeClient
) -> None:
    def outcomes(seed: int) -> list[str]:
        sim = make_simulator(rate_500=0.3, rate_503=0.3, seed=seed)
        client = make_client(sim)
        for _ in range(20):
            with contextlib.suppress(TwilioRestException):
                _create(client)
        return [e["outcome"] for e in sim.messages()]

    first, second = outcomes(7), outcomes(7)

    assert first == second
    assert {"ok", "500", "503"} <= set(first)


def test_max_mps_answers_429_20429_above_the_rate(
    make_simulator: MakeSimulator, make_client: MakeClient
) -> None:
    sim = make_simulator(max_mps=2)
    client = make_client(sim)

    started = time.monotonic()
    results = []
    for _ in range(8):
        try:
            _create(client)
            results.append("ok")
        except TwilioRestException as exc:
            results.append(f"{exc.status}/{exc.code}")
    elapsed = time.monotonic() - started

    assert results[:2] == ["ok", "ok"]
    assert "429/20429" in results
    # A burst of max_mps, then max_mps per second.
    assert results.count("ok") <= 2 + int(elapsed * 2) + 1
    assert {e["source"] for e in sim.messages() if e["status"] == 429} == {"rate_limit"}


def test_scripted_ok_bypasses_random_faults(
    make_simulator: MakeSimulator, make_client: MakeClient
) -> None:
    sim = make_simulator(rate_503=1.0)
    client = make_client(sim)
    sim.script(TO, ["ok"])

    message = _create(client)

    assert message.sid
    with pytest.raises(TwilioRestException):
        _create(client)


def test_configure_changes_rates_at_runtime(twilio_client: Any, simulator: SimulatorServer) -> None:
    simulator.configure(rate_503=1.0)
    with pytest.raises(TwilioRestException):
        _create(twilio_client)

    settings = simulator.configure(rate_503=0.0)

    assert _create(twilio_client).sid
    assert settings["rate_503"] == 0.0
    assert "auth_token" not in settings
    with pytest.raises(SimulatorError):
        simulator.configure(auth_token="x")
    with pytest.raises(SimulatorError):
        simulator.configure(rate_500=2)


def test_timeout_after_create_creates_the_message_while_the_client_times_out(
    simulator: SimulatorServer, make_client: MakeClient
) -> None:
    client = make_client(simulator, http_client=TwilioHttpClient(timeout=0.3))
    simulator.script(TO, ["timeout_after_create"])

    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        _create(client, body="in doubt")

    assert time.monotonic() - started < 5
    listed = client.messages.list(to=TO)
    assert [m.body for m in listed] == ["in doubt"]
    entry = simulator.messages()[-1]
    assert (entry["outcome"], entry["created"], entry["sid"]) == (
        "timeout_after_create",
        True,
        listed[0].sid,
    )
    eventually_sync(lambda: client.messages(listed[0].sid).fetch().status == "delivered")


async def test_random_timeout_after_create_closes_without_an_answer_after_the_hold(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient
) -> None:
    sim = make_simulator(rate_timeout_after_create=1.0, timeout_hold_s=0.5)
    client = make_async_client(sim)

    # A client that waits longer than the hold sees the connection close, no answer.
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.messages.create_async(to=TO, from_=SENDER, body="in doubt")
    # One that gives up first (as our adapter does) times out.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.messages.create_async(to=TO, from_=SENDER, body="in doubt")

    entries = await sim.aclient.messages()
    assert [(e["outcome"], e["source"], e["created"]) for e in entries] == [
        ("timeout_after_create", "random", True)
    ] * 2
    assert len(await client.messages.list_async(to=TO)) == 2


async def test_random_timeout_before_create_creates_nothing(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient
) -> None:
    sim = make_simulator(rate_timeout=1.0, timeout_hold_s=0.3)
    client = make_async_client(sim)

    with pytest.raises(aiohttp.ClientConnectionError):
        await client.messages.create_async(to=TO, from_=SENDER, body="x")

    assert await client.messages.list_async(to=TO) == []
    entries = await sim.aclient.messages()
    assert [(e["outcome"], e["created"]) for e in entries] == [("timeout", False)]


def _list_status(client: Any, to: str = TO) -> int:
    """The HTTP status of a list call (the SDK raises a bare TwilioException on failure)."""
    try:
        client.messages.list(to=to)
    except TwilioException as exc:
        return int(exc.args[1].status_code)
    return 200


def test_scripted_list_failures_then_ok(twilio_client: Any, simulator: SimulatorServer) -> None:
    _create(twilio_client)
    simulator.script(TO, ["503", "500", "429", "ok"], on="list")

    statuses = [_list_status(twilio_client) for _ in range(5)]

    assert statuses == [503, 500, 429, 200, 200]
    # A script is per recipient, and a create to it is not affected by a list script.
    simulator.script(TO, ["500"], on="list")
    assert _list_status(twilio_client, to="+12125550777") == 200
    assert _create(twilio_client).sid
    log = simulator.lists()
    assert [(e["outcome"], e["source"]) for e in log[:5]] == [
        ("503", "script"),
        ("500", "script"),
        ("429", "script"),
        ("ok", "script"),
        ("ok", None),
    ]


async def test_random_list_failures_with_the_async_client(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient
) -> None:
    sim = make_simulator(rate_list_500=1.0)
    client = make_async_client(sim)
    created = await client.messages.create_async(to=TO, from_=SENDER, body="x")

    with pytest.raises(TwilioException) as caught:
        await client.messages.list_async(to=TO)

    assert caught.value.args[1].status_code == 500
    assert (await client.messages(created.sid).fetch_async()).sid == created.sid
    await sim.aclient.configure(rate_list_500=0.0)
    assert [m.sid for m in await client.messages.list_async(to=TO)] == [created.sid]
    assert [e["source"] for e in await sim.aclient.lists()] == ["random", None]


def test_scripted_list_timeout_holds_the_list_call(
    simulator: SimulatorServer, make_client: MakeClient
) -> None:
    client = make_client(simulator, http_client=TwilioHttpClient(timeout=0.3))
    simulator.script(TO, ["timeout"], on="list")

    with pytest.raises(requests.exceptions.ReadTimeout):
        client.messages.list(to=TO)

    assert simulator.lists()[-1]["outcome"] == "timeout"


@pytest.mark.parametrize(
    ("outcomes", "on"), [(["500_after_create"], "list"), (["ok"], "fetch"), (["hang"], "create")]
)
def test_script_rejects_outcomes_its_call_cannot_have(
    simulator: SimulatorServer, outcomes: list[str], on: str
) -> None:
    with pytest.raises(SimulatorError):
        simulator.script(TO, outcomes, on=on)

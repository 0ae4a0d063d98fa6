"""The control API: signed inbound SMS, health, bad requests, the async server form."""

from __future__ import annotations

from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from sms_relay.simulator.config import DEFAULT_ACCOUNT_SID, SimulatorConfig
from sms_relay.simulator.control_client import SimulatorClient, SimulatorError
from sms_relay.simulator.server import SimulatorServer

from .conftest import MakeSimulator
from .helpers import ACCOUNT_SID, AUTH_TOKEN, SENDER, WebhookReceiver

FROM = "+12125550123"


async def test_inbound_sms_is_signed_and_the_apps_answer_returned(
    simulator: SimulatorServer, receiver: WebhookReceiver
) -> None:
    url = receiver.url("/twilio/inbound?source=sim")

    answer = await simulator.aclient.send_inbound(FROM, "STOP", url=url)

    assert (answer.status, answer.body) == (200, "<Response/>")
    assert answer.content_type == "text/xml"
    (request,) = receiver.requests
    assert request.url == url
    signature = request.headers["X-Twilio-Signature"]
    assert RequestValidator(AUTH_TOKEN).validate(url, request.form, signature)
    assert request.form["Body"] == "STOP"
    assert request.form["From"] == FROM
    assert request.form["To"] == SENDER
    assert request.form["AccountSid"] == ACCOUNT_SID
    assert request.form["NumMedia"] == "0"
    assert request.form["MessageSid"] == answer.message_sid
    assert request.headers["User-Agent"] == "TwilioProxy/1.1"


async def test_inbound_goes_to_the_configured_url_and_relays_errors(
    make_simulator: MakeSimulator, receiver: WebhookReceiver
) -> None:
    sim = make_simulator(inbound_url=receiver.url("/twilio/inbound"))
    receiver.answers.append(403)

    answer = await sim.aclient.send_inbound(FROM, "HELP", to="+15005550010")

    assert answer.status == 403
    assert receiver.requests[0].path == "/twilio/inbound"
    assert receiver.requests[0].form["To"] == "+15005550010"


def test_inbound_without_any_url_is_refused(simulator: SimulatorServer) -> None:
    with pytest.raises(SimulatorError):
        simulator.send_inbound(FROM, "STOP")


def test_a_client_controls_a_simulator_by_url_alone(simulator: SimulatorServer) -> None:
    client = SimulatorClient(simulator.base_url)

    assert client.health()["status"] == "ok"
    client.script(FROM, ["429"])
    assert client.messages() == []
    assert client.verification_code(FROM) is None
    client.reset()


def test_unreachable_simulator_raises_simulator_error() -> None:
    with SimulatorServer(SimulatorConfig(ACCOUNT_SID, AUTH_TOKEN)) as sim:
        url = sim.base_url

    with pytest.raises(SimulatorError):
        SimulatorClient(url, timeout=2).health()


async def test_server_runs_as_an_async_context_manager() -> None:
    async with SimulatorServer() as sim:
        assert (await sim.aclient.callbacks()) == []
        assert sim.health()["account_sid"] == DEFAULT_ACCOUNT_SID


def test_realism_knobs_change_at_runtime(simulator: SimulatorServer) -> None:
    settings = simulator.configure(
        queue_hold_ms=250,
        sender_mps=1,
        list_lag_ms=500,
        rate_timeout_after_create=0.1,
        rate_list_503=0.2,
        callback_retry_count=2,
        callback_retry_policy="ct,rt,5xx",
    )

    assert (settings["queue_hold_ms"], settings["sender_mps"], settings["list_lag_ms"]) == (
        250,
        1,
        500,
    )
    assert (settings["rate_timeout_after_create"], settings["rate_list_503"]) == (0.1, 0.2)
    assert (settings["callback_retry_count"], settings["callback_retry_policy"]) == (
        2,
        "ct,rt,5xx",
    )


def test_bad_settings_are_refused_at_start() -> None:
    with pytest.raises(SimulatorError, match="rate_429"):
        SimulatorServer(SimulatorConfig(ACCOUNT_SID, AUTH_TOKEN, rate_429=1.5)).start()


def test_a_taken_port_is_refused(simulator: SimulatorServer) -> None:
    with pytest.raises(SimulatorError, match="could not start"):
        SimulatorServer(port=simulator.port).start()


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/_simulator/script", {"to": FROM}),
        ("/_simulator/script", {"to": "", "outcomes": ["ok"]}),
        ("/_simulator/script", {"to": FROM, "outcomes": ["drop_after_create"], "on": "list"}),
        ("/_simulator/script", {"to": FROM, "outcomes": ["ok"], "on": "verify"}),
        ("/_simulator/config", {"callback_retry_policy": "often"}),
        ("/_simulator/config", {"callback_retry_count": 1.5}),
        ("/_simulator/config", {"rate_list_500": 0.6, "rate_list_503": 0.6}),
        ("/_simulator/config", {"rate_timeout": 0.6, "rate_timeout_after_create": 0.6}),
        ("/_simulator/config", {"list_lag_ms": -1}),
        ("/_simulator/config", {"no_such_setting": 1}),
        ("/_simulator/clock", {"advance_seconds": -5}),
        ("/_simulator/inbound", {"body": "no sender"}),
    ],
)
def test_control_api_rejects_bad_requests(
    simulator: SimulatorServer, path: str, payload: dict[str, Any]
) -> None:
    status, body = simulator._call("POST", path, payload)

    assert status == 400
    assert "error" in body

"""`sms-relay simulator`: flags, settings from the environment, a real process until SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import pytest
from twilio.rest import Client

from sms_relay.simulator.command import build_config, configure_parser
from sms_relay.simulator.config import DEFAULT_ACCOUNT_SID
from sms_relay.simulator.control_client import SimulatorClient, SimulatorError
from tests.support import eventually_sync, reserved_port

from .helpers import ACCOUNT_SID, AUTH_TOKEN, SENDER


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def test_flags_map_onto_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    args = _parse(
        "--port=9999",
        "--latency-ms=5",
        "--latency-jitter-ms=2",
        "--rate-429=0.1",
        "--rate-500=0.05",
        "--rate-503=0.05",
        "--rate-500-after-create=0.01",
        "--rate-drop-after-create=0.02",
        "--max-mps=30",
        "--callback-delay-ms=10",
        "--fail-number=+15551230000=30003",
        "--fail-number=+15551230001=30005",
        "--duplicate-callbacks=0.1",
        "--reorder-callbacks",
        "--drop-callbacks=0.05",
        "--inbound-url=http://127.0.0.1:8080/twilio/inbound",
        "--seed=42",
        "--rate-timeout=0.01",
        "--rate-timeout-after-create=0.03",
        "--rate-list-500=0.1",
        "--rate-list-503=0.2",
        "--rate-list-timeout=0.05",
        "--timeout-hold-s=12",
        "--queue-hold-ms=1500",
        "--sender-mps=1",
        "--list-lag-ms=2000",
        "--callback-retry-count=2",
        "--callback-retry-policy=ct,rt,5xx",
        "--callback-timeout-ms=3000",
    )

    config = build_config(args)

    assert (args.host, args.port) == ("127.0.0.1", 9999)
    assert (config.account_sid, config.auth_token) == (ACCOUNT_SID, AUTH_TOKEN)
    assert config.fail_numbers == {"+15551230000": 30003, "+15551230001": 30005}
    assert (config.rate_429, config.max_mps, config.seed) == (0.1, 30, 42)
    assert config.reorder_callbacks is True
    assert config.inbound_url == "http://127.0.0.1:8080/twilio/inbound"
    assert (config.rate_timeout, config.rate_timeout_after_create) == (0.01, 0.03)
    assert (config.rate_list_500, config.rate_list_503, config.rate_list_timeout) == (
        0.1,
        0.2,
        0.05,
    )
    assert (config.queue_hold_ms, config.sender_mps, config.list_lag_ms) == (1500, 1, 2000)
    assert (config.timeout_hold_s, config.callback_timeout_ms) == (12, 3000)
    assert (config.callback_retry_count, config.callback_retry_policy) == (2, "ct,rt,5xx")
    config.validate()


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "SIMULATOR_PORT"):
        monkeypatch.delenv(name, raising=False)

    args = _parse()
    config = build_config(args)

    assert args.port == 8031
    assert config.account_sid == DEFAULT_ACCOUNT_SID
    assert len(config.account_sid) == 34
    assert config.auth_token
    assert config.fail_numbers == {}
    # Twilio's webhook defaults: one retry, on connection failures only.
    assert (config.callback_retry_count, config.callback_retry_policy) == (1, "ct")
    assert (config.queue_hold_ms, config.sender_mps, config.list_lag_ms) == (0, 0, 0)


def test_port_comes_from_simulator_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMULATOR_PORT", "8123")

    assert _parse().port == 8123


@pytest.mark.parametrize(
    "argv",
    [
        ["--rate-429=1.5"],
        ["--fail-number=+1555"],
        ["--port=70000"],
        ["--max-mps=-1"],
        ["--queue-hold-ms=-1"],
        ["--rate-list-500=2"],
        ["--callback-retry-count=6"],
        ["--callback-retry-policy=sometimes"],
        ["--callback-timeout-ms=0"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        _parse(*argv)

    assert caught.value.code == 2


def _healthy(client: SimulatorClient) -> bool:
    try:
        return bool(client.health()["status"] == "ok")
    except SimulatorError:
        return False


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_runs_as_a_process_until_signalled(stop_signal: signal.Signals) -> None:
    port = reserved_port()
    env = {**os.environ, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    env.pop("TWILIO_EDGE", None)
    env.pop("TWILIO_REGION", None)
    command = [sys.executable, "-m", "sms_relay.simulator.command", f"--port={port}"]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            base_url = f"http://127.0.0.1:{port}"
            control = SimulatorClient(base_url, timeout=2)
            eventually_sync(lambda: _healthy(control), timeout=10)
            twilio = Client(ACCOUNT_SID, AUTH_TOKEN)
            twilio.api.base_url = base_url
            try:
                message = twilio.messages.create(to="+12125550123", from_=SENDER, body="hi")
            finally:
                twilio.http_client.session.close()
            assert [e["sid"] for e in control.messages()] == [message.sid]
        finally:
            process.send_signal(stop_signal)
            try:
                _, errors = process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()  # never left running (the `with` would wait for it forever)
                raise

    assert "simulator" in banner
    assert "no real SMS" in banner
    assert AUTH_TOKEN not in banner
    assert process.returncode == 0, errors

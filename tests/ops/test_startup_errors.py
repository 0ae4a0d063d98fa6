"""Start-up problems of `sms-relay consumer` and `sms-relay callbacks`, run as processes:
each is one line on stderr and a non-zero exit, found at once rather than by waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest

from sms_relay.adapters.kafka.topics import STARTUP_DEADLINE_SECONDS
from sms_relay.settings import Settings
from tests.support import eventually, reserved_port, settings_env

pytestmark = pytest.mark.integration


def run_cli(command: str, settings: Settings, **env: str) -> tuple[int, str, float]:
    """`sms-relay COMMAND` with the test's settings: (exit code, stderr, seconds taken)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", command],
        env={**os.environ, **settings_env(settings), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stderr, time.monotonic() - started


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


def closed_port() -> str:
    """An address where no broker listens."""
    return f"127.0.0.1:{reserved_port()}"


def test_consumer_without_its_topics_names_them_and_sms_relay_topics(settings: Settings) -> None:
    missing = settings.kafka.topic_order_shipped + "-missing"
    code, err, _ = run_cli("consumer", settings, KAFKA_TOPIC_ORDER_SHIPPED=missing)
    assert code == 2
    assert err.count("\n") == 1, err
    for name in (missing, f"{missing}.retry.1", f"{missing}.retry.2", f"{missing}.dlq"):
        assert name in err
    assert settings.kafka.topic_delivery_status not in err, "that one exists"
    assert "sms-relay topics" in err


def test_consumer_without_a_broker_says_so_within_its_deadline(settings: Settings) -> None:
    code, err, took = run_cli("consumer", settings, KAFKA_BOOTSTRAP_SERVERS=closed_port())
    assert code == 2
    assert err.count("\n") == 1, err
    assert "KAFKA_BOOTSTRAP_SERVERS" in err
    # It gave up after its own deadline; the wall clock adds an interpreter's cold start
    # (seconds on a busy host), so only a generous bound on it: it did not wait forever.
    assert f"within {STARTUP_DEADLINE_SECONDS:g}s" in err
    print(f"consumer without a broker: exited after {took:.1f}s")
    assert took < 3 * STARTUP_DEADLINE_SECONDS


def test_consumer_metrics_port_in_use_names_it(settings: Settings, taken_port: int) -> None:
    code, err, _ = run_cli("consumer", settings, METRICS_PORT=str(taken_port))
    assert code == 2
    assert err.count("\n") == 1, err
    assert "METRICS_PORT" in err
    assert str(taken_port) in err


def test_callbacks_port_in_use_names_it(settings: Settings, taken_port: int) -> None:
    # No broker either: had the app asked Kafka before binding its port, it would have
    # logged that it starts without Kafka first.
    code, err, took = run_cli(
        "callbacks", settings, PORT=str(taken_port), KAFKA_BOOTSTRAP_SERVERS=closed_port()
    )
    assert code == 2
    assert err.count("\n") == 1, err
    assert "PORT" in err
    assert str(taken_port) in err
    assert "Kafka" not in err, "found before any resource starts"
    print(f"callbacks with its port taken: exited after {took:.1f}s")


def test_callbacks_without_a_topic_it_writes_names_it(settings: Settings) -> None:
    missing = settings.kafka.topic_phone_verified + "-missing"
    code, err, _ = run_cli(
        "callbacks", settings, PORT=str(reserved_port()), KAFKA_TOPIC_PHONE_VERIFIED=missing
    )
    assert code == 2
    assert err.count("\n") == 1, err
    assert missing in err
    assert "sms-relay topics" in err


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_callbacks_start_without_a_broker_because_the_outbox_holds_callbacks(
    settings: Settings,
) -> None:
    port = reserved_port()
    env = {**os.environ, **settings_env(settings), "PORT": str(port)}
    env["KAFKA_BOOTSTRAP_SERVERS"] = closed_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "callbacks",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await eventually(lambda: _healthy(f"http://127.0.0.1:{port}/healthz"), what="healthz")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:  # never left running for the next test
                process.kill()
                await process.wait()
    assert process.returncode == 0
    assert "starting without Kafka" in stderr.decode()

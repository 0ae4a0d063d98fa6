"""A counted chaos suite: kill consumers, restart the broker and the database mid-stream,
then count. Every event must end accepted with exactly one message at the simulator."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.chaos.conftest import Stack
from tests.support import (
    ConsumerProcess,
    created_bodies,
    deliveries,
    eventually,
    order_event,
    produce,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.integration]
log = logging.getLogger(__name__)


def accepted(settings: Settings) -> int:
    return sum(row["state"] == "accepted" for row in deliveries(settings).values())


def count(simulator: SimulatorServer, events: int) -> Counter[str]:
    """Messages per body; logs the tally so a failing run shows what happened."""
    bodies = Counter(created_bodies(simulator.messages()))
    twice = sum(1 for n in bodies.values() if n > 1)
    log.warning("chaos tally: events=%d sent=%d duplicated=%d", events, len(bodies), twice)
    return bodies


def stream(settings: Settings, prefix: str, n: int) -> None:
    events = [
        order_event(order_id=f"{prefix}{i:04}", phone=f"+1212555{i % 100:04}") for i in range(n)
    ]
    produce(settings, settings.kafka.topic_order_shipped, events)


async def test_repeated_sigkills_lose_nothing_and_send_nothing_twice(
    settings: Settings, simulator: SimulatorServer, tmp_path: Path
) -> None:
    simulator.configure(latency_ms=30, rate_500_after_create=0.05, rate_drop_after_create=0.05)
    stream(settings, "k", 300)

    for kill in range(3):
        victim = ConsumerProcess(settings, str(tmp_path / f"victim{kill}.log"))
        target = len(created_bodies(simulator.messages())) + 40
        await eventually(
            lambda t=target: len(created_bodies(simulator.messages())) >= t,
            timeout=90,
            what=f"progress before kill {kill}",
        )
        victim.kill()
    survivor = ConsumerProcess(settings, str(tmp_path / "survivor.log"))
    try:
        await eventually(lambda: accepted(settings) == 300, timeout=180, what="300 accepted")
    finally:
        survivor.stop()

    bodies = count(simulator, 300)
    assert len(bodies) == 300
    assert max(bodies.values()) == 1


@pytest.mark.parametrize("service", ["kafka", "postgres"])
async def test_service_restart_mid_stream(
    service: str, settings: Settings, simulator: SimulatorServer, stack: Stack, tmp_path: Path
) -> None:
    simulator.configure(latency_ms=20)
    # 20 messages/s: the 200 events take ten seconds, so the restart lands mid-stream.
    sending = settings.sending.model_copy(update={"messages_per_second": 20})
    settings = settings.model_copy(update={"sending": sending})
    stream(settings, service[0], 200)
    consumer = ConsumerProcess(settings, str(tmp_path / "consumer.log"))
    try:
        await eventually(lambda: accepted(settings) >= 30, timeout=60, what="progress")
        before = accepted(settings)
        try:
            stack.stop(service)
        finally:
            stack.start()
        assert before < 200, "the restart must land mid-stream"
        await eventually(lambda: accepted(settings) == 200, timeout=180, what="200 accepted")
    finally:
        consumer.stop(60)

    bodies = count(simulator, 200)
    assert len(bodies) == 200
    assert max(bodies.values()) == 1

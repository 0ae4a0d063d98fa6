"""A counted chaos suite: kill consumers, restart the broker and the database mid-stream,
then count. Every event must end accepted with exactly one message at the simulator.

Only the tests that stop the stack's services are marked `chaos` (they run alone, after
the rest); the one that kills consumers of its own runs beside other tests."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.callbacks.conftest import (
    callback_form,
    callbacks_settings,
    new_event_id,
    new_sid,
    query_rows,
    running_callbacks,
)
from tests.chaos.conftest import Stack
from tests.support import (
    ConsumerProcess,
    created_bodies,
    deliveries,
    eventually,
    order_event,
    produce,
    read_values_to_end,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]
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
        with ConsumerProcess(settings, str(tmp_path / f"victim{kill}.log")) as victim:
            target = len(created_bodies(simulator.messages())) + 40

            def progressed(target: int = target) -> bool:
                return len(created_bodies(simulator.messages())) >= target

            await eventually(progressed, timeout=90, what=f"progress before kill {kill}")
            victim.kill()
    with ConsumerProcess(settings, str(tmp_path / "survivor.log")):
        await eventually(lambda: accepted(settings) == 300, timeout=180, what="300 accepted")

    bodies = count(simulator, 300)
    assert len(bodies) == 300
    assert max(bodies.values()) == 1


@pytest.mark.chaos
@pytest.mark.parametrize("service", ["kafka", "postgres"])
async def test_service_restart_mid_stream(
    service: str, settings: Settings, simulator: SimulatorServer, stack: Stack, tmp_path: Path
) -> None:
    simulator.configure(latency_ms=20)
    # 20 messages/s: the 200 events take ten seconds, so the restart lands mid-stream.
    sending = settings.sending.model_copy(update={"messages_per_second": 20})
    settings = settings.model_copy(update={"sending": sending})
    stream(settings, service[0], 200)
    with ConsumerProcess(settings, str(tmp_path / "consumer.log")) as consumer:
        await eventually(lambda: accepted(settings) >= 30, timeout=60, what="progress")
        before = accepted(settings)
        try:
            stack.stop(service)
        finally:
            stack.start()
        assert before < 200, "the restart must land mid-stream"
        await eventually(lambda: accepted(settings) == 200, timeout=180, what="200 accepted")
        consumer.stop(60)

    bodies = count(simulator, 200)
    assert len(bodies) == 200
    assert max(bodies.values()) == 1


@pytest.mark.chaos
async def test_callbacks_during_a_kafka_outage_are_published_exactly_once_after_it(
    settings: Settings, stack: Stack
) -> None:
    """Issue 5's outage: every callback answered 2xx while the broker is down is on
    delivery-status after it is back, once per idempotency token; the same process drains
    its outbox."""
    app_settings = callbacks_settings(settings, callbacks_run_projection=False)
    account = settings.twilio.account_sid
    sent: dict[str, str] = {}  # idempotency token -> eventId
    async with running_callbacks(app_settings) as callbacks:
        try:
            stack.stop("kafka")
            for _ in range(20):
                event_id, sid = new_event_id(), new_sid()
                path = f"/twilio/status-callback?eventId={event_id}"
                form = callback_form(sid, "delivered", account_sid=account)
                status, _body = await callbacks.post_signed(path, form, token=f"{sid}:d")
                assert 200 <= status < 300
                # The record's token: what the signature covers, not Twilio's header.
                sent[f"callbacks:{sid}:delivered:None"] = event_id
        finally:
            stack.start()
        # Every row marked published: nothing is left that could be published again.
        await eventually(
            lambda: (
                not query_rows(
                    settings.database_url.get_secret_value(),
                    "SELECT id FROM callback_outbox WHERE published_at IS NULL",
                )
            ),
            timeout=120,
            what="the outbox drained",
        )
    # The app is closed and its outbox drained: read to its end, the topic holds all of it.
    records = read_values_to_end(settings, settings.kafka.topic_delivery_status)

    tokens = Counter(r["idempotencyToken"] for r in records)
    copies = sum(n - 1 for n in tokens.values())
    log.warning("outage tally: answered=%d published=%d copies=%d", len(sent), len(tokens), copies)
    assert set(tokens) == set(sent), "every callback answered 2xx is on delivery-status"
    assert {r["eventId"] for r in records} == set(sent.values())
    # librdkafka may report a record sent while the broker came back as timed out though
    # the broker kept it; the relay then sends it again. A copy is the same record with
    # the same token, which every reader (the projection included) drops.
    for token in (t for t, n in tokens.items() if n > 1):
        assert (
            len({json.dumps(r, sort_keys=True) for r in records if r["idempotencyToken"] == token})
            == 1
        )

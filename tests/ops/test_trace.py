"""`sms-relay trace` against real Kafka, PostgreSQL and the simulator."""

from __future__ import annotations

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.ops.conftest import Cli
from tests.ops.helpers import query, state_of
from tests.support import eventually, order_event, produce, running_consumer

pytestmark = pytest.mark.integration

PHONE = "+12125550177"
INVALID_NUMBER = "+15005550001"  # the simulator answers 400 / 21211, like Twilio's magic number


async def test_trace_tells_the_story_of_a_sent_message_by_event_id_and_sid(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    event = order_event(phone=PHONE, order_id="7001")
    produce(settings, settings.kafka.topic_order_shipped, [event])
    async with running_consumer(settings):
        await eventually(lambda: state_of(settings, event["eventId"]) == "accepted")
    # A later step from Twilio, as the status projection would record it.
    sid = query(settings, "SELECT message_sid FROM deliveries")[0]["message_sid"]
    query(
        settings,
        "INSERT INTO status_history (event_id, message_sid, status, source, idempotency_token,"
        " occurred_at) VALUES (NULL, :sid, 'delivered', 'callbacks', 'tok-1', now())",
        sid=sid,
    )

    human = await cli.run_async("trace", event["eventId"])
    assert human.code == 0, human.err
    assert "accepted" in human.out
    assert "attempts=1" in human.out
    assert "+*******0177" in human.out
    assert PHONE not in human.out
    assert sid in human.out
    assert "delivered" in human.out
    assert "callbacks" in human.out
    assert "segments   1  encoding=GSM-7" in human.out

    story = (await cli.run_async("trace", sid, "--json")).json()
    delivery = story["delivery"]
    assert delivery["eventId"] == event["eventId"]
    assert delivery["state"] == "accepted"
    assert delivery["attempts"] == 1
    assert delivery["to"] == "+*******0177"
    assert delivery["messageSid"] == sid
    assert (delivery["segments"], delivery["encoding"]) == (1, "GSM-7")
    assert delivery["consentAt"] is not None
    assert delivery["leaseOwner"]
    assert [(h["status"], h["source"]) for h in story["history"]] == [
        ("accepted", "consumer"),
        ("delivered", "callbacks"),
    ]
    assert story["replays"] == []


async def test_trace_shows_twilios_error_code_of_a_failed_message(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    event = order_event(phone=INVALID_NUMBER, order_id="7002")
    produce(settings, settings.kafka.topic_order_shipped, [event])
    async with running_consumer(settings):
        await eventually(lambda: state_of(settings, event["eventId"]) == "failed")

    story = (await cli.run_async("trace", event["eventId"], "--json")).json()
    assert story["delivery"]["errorCode"] == 21211
    assert [(h["status"], h["errorCode"]) for h in story["history"]] == [("failed", 21211)]
    human = await cli.run_async("trace", event["eventId"])
    assert "21211" in human.out
    assert INVALID_NUMBER not in human.out


async def test_trace_shows_the_segments_and_encoding_of_a_long_message(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    # 203 characters of GSM-7: two parts of 153.
    url = "https://example.com/track/7003?" + "&".join(f"leg{i}=ok" for i in range(16))
    event = order_event(phone=PHONE, order_id="7003", trackingUrl=url)
    produce(settings, settings.kafka.topic_order_shipped, [event])
    async with running_consumer(settings):
        await eventually(lambda: state_of(settings, event["eventId"]) == "accepted")

    story = (await cli.run_async("trace", event["eventId"], "--json")).json()
    assert (story["delivery"]["segments"], story["delivery"]["encoding"]) == (2, "GSM-7")
    human = await cli.run_async("trace", event["eventId"])
    assert "segments   2  encoding=GSM-7" in human.out


def test_trace_of_an_unknown_id_exits_1_with_one_line(settings: Settings, cli: Cli) -> None:
    result = cli("trace", "order_9999_shipped_v1")
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        "sms-relay trace: no message with eventId or Message SID 'order_9999_shipped_v1'\n"
    )


def test_trace_without_a_database_fails_with_one_line(
    settings: Settings, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody:hunter2secret@127.0.0.1:9/x")
    result = cli("trace", "order_9999_shipped_v1")
    assert result.code == 2
    assert result.err.startswith("sms-relay trace: PostgreSQL is unreachable")
    assert result.err.count("\n") == 1
    assert "hunter2secret" not in result.err
